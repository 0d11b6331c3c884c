"""Offline feature extraction: a whole dataset through one block, into `.npy` files.

    python -m dsp.datasets.extract --block spectrogram --params '{"fft-length": 128}' \\
        --window-ms 1000 --increase-ms 500 --axes audio --out features/ data/training

Each recording (acquisition JSON, CSV or WAV: see `dsp.datasets.readers`) is cut into windows as Studio
cuts a sample: `--window-ms` long, starting every `--increase-ms` (default: the window size),
while a whole window fits. A recording shorter than one window gives one window padded with
zeros at the end (`--short pad`, like Studio's "zero-pad data") or none (`--short skip`).

The windows go through the block exactly as `/batch` would take them: the block's vectorised
`compute_batch` when it has one (many windows per call; across recordings for stateless blocks),
otherwise `compute` window by window. A stateful block's state goes from window to window within
a recording, and every recording starts with a fresh state (""). For blocks with a
`window-increase-ms` parameter (the stateful ones), it defaults to `--increase-ms`, so
overlapping windows do not filter their shared samples twice.

Writes to `--out`: `X.npy` (windows, features) float32, `y.npy` (windows,) int32 indices into
`classes`, and `labels.json` (classes, feature labels, output_config, the block, its resolved
parameters, and each window's source file and offset). The label of a recording is its file
name up to the first dot (`idle.1234.json` -> `idle`) unless `--labels` maps it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

import numpy as np

from dsp.core.block import Block, Request, compute_in_order
from dsp.core.errors import ConfigurationError
from dsp.core.params import parameter_specs, resolve_params
from dsp.core.window import AxisMap
from dsp.datasets.readers import Recording, find_recordings, label_for, read_label_map, read_recording

# Windows per compute_batch call, by default: as many as fit in about this many bytes of samples.
# Small batches stay in cache: for 1 s at 16 kHz, 32 windows per call ran the spectrogram at
# 5,900 windows/s and 256 per call at 2,700 (mfe 2,470 vs 1,920; see the extraction docs).
BATCH_BYTES = 4 * 1024 * 1024
MAX_BATCH_WINDOWS = 1024
SHORT_POLICIES = ("pad", "skip")
FLOAT32_MAX = float(np.finfo(np.float32).max)


# --- windowing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Windowing:
    """How recordings are cut: window size and increase in ms, and what to do with short ones."""

    window_ms: float
    increase_ms: float
    short: str = "pad"

    def __post_init__(self):
        for name, value in (("--window-ms", self.window_ms), ("--increase-ms", self.increase_ms)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a positive number of ms; got {value!r}.")
        if self.short not in SHORT_POLICIES:
            raise ConfigurationError(f"--short must be one of {', '.join(SHORT_POLICIES)}; got {self.short!r}.")

    def samples(self, sampling_freq: float) -> tuple[int, int]:
        """(window, increase) in whole samples at `sampling_freq`."""
        window = int(round(self.window_ms * sampling_freq / 1000.0))
        increase = int(round(self.increase_ms * sampling_freq / 1000.0))
        if window < 1 or increase < 1:
            raise ConfigurationError(
                f"At {sampling_freq:g} Hz a window of {self.window_ms:g} ms and an increase of "
                f"{self.increase_ms:g} ms are {window} and {increase} samples; both must be at least 1.")
        return window, increase

    def cut(self, values: np.ndarray, sampling_freq: float) -> tuple[np.ndarray, np.ndarray, bool]:
        """(windows (n, window, axes), start sample of each, padded) for one recording.

        The windows are a strided view of `values` (no copy) unless the recording was padded.
        """
        window, increase = self.samples(sampling_freq)
        samples = values.shape[0]
        if samples < window:
            if self.short == "skip":
                return values[:0, np.newaxis], np.zeros(0, dtype=np.int64), False
            padded = np.zeros((window, values.shape[1]), dtype=np.float64)
            padded[:samples] = values
            return padded[np.newaxis], np.zeros(1, dtype=np.int64), True
        count = 1 + (samples - window) // increase
        views = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)[::increase][:count]
        # sliding_window_view puts the window last: (n, axes, window) -> (n, window, axes).
        return views.transpose(0, 2, 1), np.arange(count, dtype=np.int64) * increase, False


# --- axes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisChoice:
    """`--axes`: input columns to use (a list), or the block's named axes mapped to inputs."""

    columns: Optional[tuple[str, ...]] = None
    named_axes: Optional[dict] = None

    @staticmethod
    def parse(text: Optional[str], block: Block) -> "AxisChoice":
        if text is None or not text.strip():
            return AxisChoice()
        text = text.strip()
        if text[0] in "[{":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"--axes is not valid JSON ({exc.msg}).") from None
        else:
            value = [name.strip() for name in text.split(",")]
        if isinstance(value, dict):
            if not block.info.get("axes"):
                raise ConfigurationError(
                    f"Block '{block.name}' declares no named axes; give --axes as the input axes to "
                    "use, comma-separated (e.g. --axes audio).")
            return AxisChoice(named_axes=value)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ConfigurationError(
                "--axes must be input axis names, comma-separated (--axes accX,accY,accZ), or a JSON "
                "object mapping the block's axes to input axes (--axes '{\"light\": \"lux\"}').")
        if len(set(value)) != len(value):
            raise ConfigurationError(f"--axes names an axis twice: {', '.join(value)}.")
        return AxisChoice(columns=tuple(value))

    def describe(self) -> Any:
        return self.named_axes if self.named_axes is not None else (list(self.columns) if self.columns else None)


class AxisRouting:
    """Per distinct set of input axes: which columns the block gets, and their names."""

    def __init__(self, block: Block, choice: AxisChoice):
        self.block, self.choice = block, choice
        self._cache: dict[tuple[str, ...], tuple[list[int], list[str]]] = {}

    def route(self, axes: list[str]) -> tuple[list[int], list[str]]:
        """(column indices into the recording, the block's axis names for them)."""
        key = tuple(axes)
        if key not in self._cache:
            selected = list(axes)
            indices = list(range(len(axes)))
            if self.choice.columns is not None:
                missing = [name for name in self.choice.columns if name not in axes]
                if missing:
                    raise ConfigurationError(
                        f"no axis {', '.join(map(repr, missing))} (its axes: {', '.join(axes)}).")
                selected = list(self.choice.columns)
                indices = [axes.index(name) for name in selected]
            axis_map = AxisMap(selected, self.block.info.get("axes"), self.choice.named_axes)
            columns = indices if axis_map.columns is None else [indices[c] for c in axis_map.columns]
            self._cache[key] = (columns, axis_map.axes)
        return self._cache[key]


# --- extraction -----------------------------------------------------------------------------


@dataclass
class Extraction:
    """The features of a dataset and where every window came from."""

    features: Optional[np.ndarray]  # (windows, features) float32; None when written to a sink
    shape: tuple[int, int]
    window_labels: list[str]
    feature_labels: list[str]
    output_config: dict
    fft_used: list[int]
    files: list[dict] = field(default_factory=list)
    windows: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    """Windows waiting for one compute_batch call; all share rate, axes and window length."""

    key: Optional[tuple] = None
    request: Optional[Request] = None
    chunks: list = field(default_factory=list)
    files: list = field(default_factory=list)
    count: int = 0


class Extractor:
    """Runs one block over recordings; `add` each recording, then `finish`."""

    def __init__(self, block: Block, params: dict, windowing: Windowing, axes: AxisChoice,
                 implementation_version: Optional[int] = None, batch_windows: Optional[int] = None,
                 sink: Optional[Callable[[np.ndarray], None]] = None):
        """sink: takes each block of float32 feature rows, in order (e.g. `NpyWriter.write`);
        without one the rows are kept and concatenated into `Extraction.features`."""
        if batch_windows is not None and batch_windows < 1:
            raise ConfigurationError(f"--batch must be at least 1; got {batch_windows}.")
        self.block, self.windowing, self.batch_windows = block, windowing, batch_windows
        self.params = params
        self.version = _check_version(block, implementation_version)
        self.routing = AxisRouting(block, axes)
        self.stateful = bool(block.info.get("usesState"))
        self.batched = block.compute_batch is not None and not self.stateful
        self._rows: list[np.ndarray] = []
        self._sink = sink or self._rows.append
        self._kept = 0
        self._pending = _Pending()
        self._first: Optional[tuple] = None  # (labels, output_config, width, rate)
        self._fft_used: list[int] = []
        self.window_count = 0
        self.result = Extraction(features=None, shape=(0, 0), window_labels=[],
                                 feature_labels=[], output_config={}, fft_used=[])

    def add(self, recording: Recording, name: str) -> int:
        """Cut `recording` into windows and compute (or queue) their features; returns the count."""
        try:
            columns, block_axes = self.routing.route(recording.axes)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{name}: {exc}") from None
        values = recording.values[:, columns] if columns != list(range(recording.values.shape[1])) \
            else recording.values
        rate = recording.sampling_freq
        windows, starts, padded = self.windowing.cut(values, rate)
        self.result.files.append({"file": name, "label": recording.label, "sampling_freq": rate,
                                  "samples": int(recording.values.shape[0]), "windows": int(len(starts))})
        if len(starts) == 0:
            self.result.skipped.append(name)
            return 0
        for start in starts.tolist():
            self.result.windows.append({"file": name, "start_sample": start,
                                        "offset_ms": round(start * 1000.0 / rate, 6), "padded": padded})
        self.result.window_labels.extend([recording.label] * len(starts))
        request = Request(raw=None, axes=block_axes, sampling_freq=rate, implementation_version=self.version,
                          params=self.params, state="")
        if self.batched:
            self._queue(request, windows, name)
        else:
            self._flush()
            self._stream(request, windows, name)
        self.window_count += len(starts)
        return len(starts)

    def finish(self) -> Extraction:
        self._flush()
        if not self._kept:
            raise ConfigurationError("No windows: every recording was shorter than one window "
                                     "(use --short pad) or no recording was found.")
        self.result.shape = (self._kept, self._first[2])
        if self._rows:
            self.result.features = np.concatenate(self._rows)
        self.result.fft_used = self._fft_used
        return self.result

    def _queue(self, request: Request, windows: np.ndarray, name: str) -> None:
        key = (request.sampling_freq, tuple(request.axes), windows.shape[1:])
        limit = self._batch_limit(windows)
        if key != self._pending.key:
            self._flush()
            self._pending.key = key
        self._pending.request = request  # same rate, axes and params as the queued windows
        start = 0
        while start < len(windows):
            take = min(limit - self._pending.count, len(windows) - start)
            self._pending.chunks.append(windows[start:start + take])
            self._pending.files.append(name)
            self._pending.count += take
            start += take
            if self._pending.count >= limit:
                self._flush()
                self._pending.key, self._pending.request = key, request

    def _batch_limit(self, windows: np.ndarray) -> int:
        return self.batch_windows or min(MAX_BATCH_WINDOWS, max(1, BATCH_BYTES // (windows[0].size * 8)))

    def _flush(self) -> None:
        pending = self._pending
        if pending.count:
            request = pending.request
            request.raw = np.concatenate(pending.chunks) if len(pending.chunks) > 1 \
                else np.ascontiguousarray(pending.chunks[0])
            files = list(dict.fromkeys(pending.files))
            where = files[0] + (f" (or one of {len(files) - 1} more files in its batch)" if len(files) > 1 else "")
            with self._blamed_on(where):
                result = self.block.compute_batch(request)
            self._keep(np.asarray(result.features, dtype=np.float64), result.labels, result.output_config,
                       result.fft_used, request.sampling_freq, where)
        self._pending = _Pending()

    def _stream(self, request: Request, windows: np.ndarray, name: str) -> None:
        """One recording as one stream: the state goes from window to window, fresh ("") at its
        start. In chunks through compute_batch when the block has it, else window by window."""
        if self.block.compute_batch is not None:
            self._stream_batches(request, windows, name)
            return
        request.state = ""
        with self._blamed_on(name):
            result = compute_in_order(self.block, request, windows, prepare=np.ascontiguousarray)
        self._keep(result.features, result.labels, result.output_config, result.fft_used,
                   request.sampling_freq, name)

    def _stream_batches(self, request: Request, windows: np.ndarray, name: str) -> None:
        limit, state = self._batch_limit(windows), ""
        for start in range(0, len(windows), limit):
            request.raw, request.state = np.ascontiguousarray(windows[start:start + limit]), state
            with self._blamed_on(name):
                result = self.block.compute_batch(request)
            self._keep(np.asarray(result.features, dtype=np.float64), result.labels, result.output_config,
                       result.fft_used, request.sampling_freq, name)
            state = result.state

    @contextmanager
    def _blamed_on(self, where: str):
        """A user error names the recording; a bug in the block becomes one BlockFailure line."""
        try:
            yield
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        except Exception as exc:
            raise BlockFailure(self.block.name, where, exc) from exc

    def _keep(self, features: np.ndarray, labels: list, output_config: dict, fft_used: list,
              rate: float, where: str) -> None:
        if features.ndim != 2:
            raise ConfigurationError(f"{where}: block '{self.block.name}' returned features of shape {features.shape}.")
        if not np.isfinite(features).all() or np.abs(features).max(initial=0.0) > FLOAT32_MAX:
            raise ConfigurationError(
                f"{where}: block '{self.block.name}' produced non-finite features (or beyond float32); "
                "check that the recording holds a real signal in the expected units.")
        if self._first is None:
            self._first = (list(labels), output_config, features.shape[1], rate)
        elif features.shape[1] != self._first[2]:
            raise ConfigurationError(
                f"{where}: {features.shape[1]} features per window at {rate:g} Hz, but the first recordings "
                f"gave {self._first[2]} at {self._first[3]:g} Hz; give every recording the same sampling rate.")
        self.result.feature_labels, self.result.output_config = self._first[0], self._first[1]
        self._fft_used.extend(n for n in fft_used if n not in self._fft_used)
        self._sink(features.astype(np.float32))
        self._kept += len(features)


class BlockFailure(Exception):
    """A bug in a block (not a user error): reported in one line with the file it happened on."""

    def __init__(self, block: str, where: str, cause: Exception):
        super().__init__(f"internal error in block '{block}' on {where}: {type(cause).__name__}: {cause}")


def _check_version(block: Block, version: Optional[int]) -> int:
    if version is None:
        return block.latest_version
    if not 1 <= version <= block.latest_version:
        raise ConfigurationError(
            f"--implementation-version {version} is not supported by block '{block.name}'; "
            f"supported: {', '.join(map(str, range(1, block.latest_version + 1)))}.")
    return version


def resolve_block_params(block: Block, given: Any, windowing: Windowing) -> tuple[dict, list[str]]:
    """The block's parameters from `given` (dict or None) with defaults, plus warnings.

    A block with a `window-increase-ms` parameter gets `--increase-ms` unless told otherwise:
    that is what makes its state correct for overlapping windows.
    """
    specs = parameter_specs(block.parameters)
    given = dict(given) if isinstance(given, dict) else ({} if given is None else given)
    notes = []
    if isinstance(given, dict) and "window_increase_ms" in specs:
        keys = [k for k in given if str(k).replace("-", "_") == "window_increase_ms"]
        if not keys:
            given["window-increase-ms"] = windowing.increase_ms
        elif windowing.increase_ms < windowing.window_ms:
            value = given[keys[0]]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value != windowing.increase_ms:
                notes.append(f"'window-increase-ms' is {value:g} but windows overlap ({windowing.increase_ms:g} ms "
                             "apart): overlapping samples will be filtered twice.")
    return resolve_params(specs, given), notes


def declared_params(block: Block, params: dict) -> dict:
    """Resolved parameters keyed by their declared names (dashes), ready for `--params`."""
    return {spec.param: params[key] for key, spec in parameter_specs(block.parameters).items()}


def class_indices(window_labels: list[str], classes: Optional[list[str]]) -> tuple[list[str], np.ndarray]:
    """(classes, y): sorted unique labels unless given; y indexes into classes."""
    if classes is None:
        classes = sorted(set(window_labels))
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(window_labels) - set(index))
    if unknown:
        raise ConfigurationError(f"Labels {', '.join(map(repr, unknown))} are not among --classes "
                                 f"({', '.join(classes)}).")
    return classes, np.fromiter((index[label] for label in window_labels), dtype=np.int32,
                                count=len(window_labels))


class NpyWriter:
    """A float32 (rows, width) `.npy` file written as rows arrive, so memory stays flat whatever
    the dataset's size. Written to `<name>.partial` and renamed by `close`; `discard` removes it."""

    # Room for the largest shape; the format pads its header with spaces to a multiple of 64.
    HEADER_BYTES = 128

    def __init__(self, path: Path):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.file = open(self.partial, "wb")
        self.file.write(b"\0" * self.HEADER_BYTES)
        self.rows, self.width = 0, None

    def write(self, rows: np.ndarray) -> None:
        if self.width is None:
            self.width = rows.shape[1]
        self.file.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())
        self.rows += rows.shape[0]

    def close(self) -> None:
        header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({self.rows}, {self.width or 0}), }}"
        room = self.HEADER_BYTES - 10  # magic (6), version (2), header length (2)
        self.file.seek(0)
        self.file.write(b"\x93NUMPY\x01\x00" + room.to_bytes(2, "little")
                        + header.ljust(room - 1).encode("latin1") + b"\n")
        self.file.close()
        self.partial.replace(self.path)

    def discard(self) -> None:
        self.file.close()
        self.partial.unlink(missing_ok=True)


# --- progress -------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on a terminal: files done, windows so far, elapsed time."""

    WIDTH = 30
    INTERVAL_S = 0.1

    def __init__(self, stream: TextIO, enabled: bool):
        self.stream, self.enabled = stream, enabled
        self.start(1)

    def start(self, total_files: int) -> None:
        self.total, self.started, self._shown = max(total_files, 1), time.perf_counter(), 0.0

    def update(self, files: int, windows: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._shown < self.INTERVAL_S:
            return
        self._shown = now
        filled = int(self.WIDTH * files / self.total)
        elapsed = now - self.started
        rate = f"  {windows / elapsed:,.0f} windows/s" if elapsed > 0 else ""
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {files}/{self.total} files  "
                          f"{windows} windows  {elapsed:.1f} s{rate}")
        self.stream.flush()

    def done(self, files: int, windows: int) -> None:
        if self.enabled:
            self.update(files, windows, force=True)
            self.stream.write("\n")
            self.stream.flush()


# --- command line ---------------------------------------------------------------------------


def extract(block: Block, data_paths: list, windowing: Windowing, params: Any = None,
            axes: Optional[str] = None, labels_csv: Optional[str] = None, classes: Optional[list[str]] = None,
            rate: Optional[float] = None, implementation_version: Optional[int] = None,
            batch_windows: Optional[int] = None, progress: Optional[Progress] = None,
            warn=lambda message: None, sink: Optional[Callable[[np.ndarray], None]] = None
            ) -> tuple[Extraction, dict]:
    """Extract the features of every recording under `data_paths`; (extraction, labels.json)."""
    resolved, notes = resolve_block_params(block, params, windowing)
    for note in notes:
        warn(note)
    axis_choice = AxisChoice.parse(axes, block)
    extractor = Extractor(block, resolved, windowing, axis_choice, implementation_version, batch_windows, sink)
    label_map = read_label_map(labels_csv) if labels_csv else None
    files = find_recordings(data_paths)
    if not files:
        raise ConfigurationError(f"No .json, .csv or .wav files in {', '.join(map(str, data_paths))}.")
    progress = progress or Progress(sys.stderr, enabled=False)
    progress.start(len(files))
    for done, (path, name) in enumerate(files, start=1):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            recording = read_recording(path, rate, label_for(label_map, path, name))
        for item in caught:
            warn(str(item.message))
        extractor.add(recording, name)
        progress.update(done, extractor.window_count)
    result = extractor.finish()
    progress.done(len(files), len(result.window_labels))
    class_names, _ = class_indices(result.window_labels, classes)
    metadata = {
        "classes": class_names,
        "feature_labels": result.feature_labels,
        "output_config": result.output_config,
        "fft_used": result.fft_used,
        "block": block.name,
        "implementation_version": extractor.version,
        "params": declared_params(block, resolved),
        "axes": axis_choice.describe(),
        "window_ms": windowing.window_ms,
        "increase_ms": windowing.increase_ms,
        "short": windowing.short,
        "shape": list(result.shape),
        "files": result.files,
        "skipped": result.skipped,
        "windows": result.windows,
    }
    return result, metadata


def _parse_params(text: Optional[str]) -> Any:
    if text is None:
        return None
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"--params {text[1:]}: cannot read ({exc.strerror or exc}).") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"--params is not valid JSON ({exc.msg}); expected an object such as "
                                 "'{\"fft-length\": 128}'.") from None
    if not isinstance(value, dict):
        raise ConfigurationError("--params must be a JSON object mapping parameter names to values.")
    return value


def _parse_classes(text: Optional[str]) -> Optional[list[str]]:
    """--classes: comma-separated names, or a labels.json from an earlier run (same y indices)."""
    if text is None:
        return None
    path = Path(text)
    if path.suffix == ".json" and path.is_file():
        try:
            classes = json.loads(path.read_text(encoding="utf-8")).get("classes")
        except (json.JSONDecodeError, AttributeError):
            classes = None
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ConfigurationError(f"--classes {text}: expected a labels.json with a 'classes' list.")
        return classes
    classes = [name.strip() for name in text.split(",") if name.strip()]
    if not classes or len(set(classes)) != len(classes):
        raise ConfigurationError("--classes must list distinct class names, comma-separated, or name a labels.json.")
    return classes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dsp.datasets.extract",
        description="Extract a block's features for a whole dataset (Edge Impulse acquisition JSON, "
                    "CSV, WAV) into X.npy, y.npy and labels.json, like Studio's X_train.npy.")
    parser.add_argument("data", nargs="+", metavar="DATA_PATH", help="files or directories (searched recursively)")
    parser.add_argument("--block", required=True, help="block name, as in /blocks/<name>/ (e.g. spectrogram)")
    parser.add_argument("--params", help="the block's parameters as a JSON object, or @file.json; "
                                         "missing ones take their defaults")
    parser.add_argument("--implementation-version", type=int, help="default: the block's latest")
    parser.add_argument("--window-ms", type=float, required=True, help="window size in ms")
    parser.add_argument("--increase-ms", type=float, help="window increase (stride) in ms; default: the window size")
    parser.add_argument("--short", choices=SHORT_POLICIES, default="pad",
                        help="a recording shorter than one window: one zero-padded window (pad, "
                             "default, like Studio's 'zero-pad data') or none (skip)")
    parser.add_argument("--axes", help="input axes to use, comma-separated (e.g. audio), or a JSON object "
                                       "mapping the block's named axes to input axes")
    parser.add_argument("--labels", help="CSV 'file,label' overriding the file-name labels")
    parser.add_argument("--classes", help="class order for y: comma-separated, or an earlier labels.json "
                                          "(default: the labels found, sorted)")
    parser.add_argument("--rate", type=float, help="sampling rate in Hz for CSV files without a time column")
    parser.add_argument("--batch", type=int,
                        help=f"windows per compute_batch call (default: about {BATCH_BYTES >> 20} MiB of "
                             f"samples, e.g. 32 windows of 1 s at 16 kHz)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    return parser


def main(argv: Optional[list[str]] = None, blocks: Optional[dict[str, Block]] = None,
         stderr: Optional[TextIO] = None) -> int:
    """The command line; returns the exit status. `blocks` defaults to the server's registry."""
    args = build_parser().parse_args(argv)
    stderr = stderr or sys.stderr
    started = time.perf_counter()

    def warn(message: str) -> None:
        stderr.write(f"warning: {message}\n")

    try:
        params = _parse_params(args.params)
        classes = _parse_classes(args.classes)
        windowing = Windowing(args.window_ms, args.increase_ms if args.increase_ms is not None else args.window_ms,
                              args.short)
        if args.rate is not None and not (math.isfinite(args.rate) and args.rate > 0):
            raise ConfigurationError(f"--rate must be a positive number of Hz; got {args.rate!r}.")
        if blocks is None:
            from dsp.registry import all_blocks

            blocks = all_blocks()
        started = time.perf_counter()  # the rate reported is the extraction's, not start-up's
        if args.block not in blocks:
            raise ConfigurationError(f"Unknown block '{args.block}'; blocks: {', '.join(blocks)}.")
        progress = Progress(stderr, enabled=not args.quiet and _is_terminal(stderr))
        args.out.mkdir(parents=True, exist_ok=True)
        writer = NpyWriter(args.out / "X.npy")
        try:
            result, metadata = extract(blocks[args.block], args.data, windowing, params, args.axes, args.labels,
                                       classes, args.rate, args.implementation_version, args.batch, progress,
                                       warn, sink=writer.write)
            _, y = class_indices(result.window_labels, metadata["classes"])
        except BaseException:
            writer.discard()
            raise
        writer.close()
        np.save(args.out / "y.npy", y)
        (args.out / "labels.json").write_text(json.dumps(metadata, indent=1) + "\n", encoding="utf-8")
    except ConfigurationError as exc:
        stderr.write(f"error: {exc}\n")
        return 1
    except BlockFailure as exc:
        stderr.write(f"error: {exc}\n")
        return 1
    except OSError as exc:
        stderr.write(f"error: {exc.filename or args.out}: {exc.strerror or exc}\n")
        return 1
    elapsed = time.perf_counter() - started
    if not args.quiet:
        windows, width = result.shape
        stderr.write(f"{windows} windows x {width} features from {len(metadata['files'])} files "
                     f"({len(metadata['skipped'])} skipped), {len(metadata['classes'])} "
                     f"{'class' if len(metadata['classes']) == 1 else 'classes'}, in "
                     f"{elapsed:.1f} s ({windows / max(elapsed, 1e-9):,.0f} windows/s) -> {args.out}\n")
    return 0


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


if __name__ == "__main__":
    raise SystemExit(main())
