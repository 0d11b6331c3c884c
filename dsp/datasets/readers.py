"""Recordings on disk, read into arrays: Edge Impulse acquisition JSON, CSV and WAV.

Each reader returns a `Recording`: values (samples, axes) float64, the axis names, the sampling
rate in Hz and the label. The label comes from the file name, as Edge Impulse's uploader takes
it (the part before the first '.': `idle.1234.json` -> `idle`), unless a label map (`read_label_map`)
names the file. Every problem with a file raises ConfigurationError naming the file.

Formats and the assumptions made
--------------------------------
* Acquisition JSON (`.json`): Edge Impulse's data acquisition format, `{"protected": ...,
  "signature": ..., "payload": {"device_type", "interval_ms", "sensors": [{"name", "units"}],
  "values": [[a, b, ...], ...]}}`; with one sensor `values` may also be flat `[v, ...]` (every
  sample in one form, not mixed). The rate is 1000 / interval_ms. The signature is not checked.
  (The CBOR encoding is not read.)
* CSV (`.csv`): one header row, then one row per sample, comma-separated (semicolon or tab also
  recognised from the header). A time column gives the rate: `timestamp`, `time` or `t`, with an
  optional unit suffix `_s`, `_ms`, `_us` or `_ns` (`t_ns`, `timestamp_us`), or `seconds`;
  without a suffix `timestamp` is in milliseconds, `time` and `t` in seconds (names compared
  case-insensitively; the first such column is the time). Timestamps must increase; the rate is
  the mean over the recording
  ((samples - 1) / duration), so a steady clock jitter is harmless. Without a time column the
  rate must be given (`default_rate`). Every other column is an axis, named by its header, and
  must hold numbers (no empty cells). Blank lines, even with spaces, are skipped; a separator
  ending every row (as Excel writes) is an empty last column and is dropped.
* WAV (`.wav`): PCM via scipy.io.wavfile, mono or multi-channel. Samples are given on the 16-bit
  scale Studio stores audio on: int16 as is, 8-bit unsigned re-centred and times 256, 24/32-bit
  integers divided by 65536, float samples (nominally -1..1) times 32768. Axes: `audio` for mono,
  `audio0`, `audio1`, ... for several channels.

`read_stream` reads the same files for aligning streams on their clocks (`dsp.datasets.samples`):
it keeps a CSV's time column as written instead of turning it into a rate, and the axes' units
(acquisition `units`; `wav` for WAV channels, as Studio names them; `N/A` for CSV columns, which
carry none).
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import simdjson

from dsp.core.errors import ConfigurationError

SUPPORTED_SUFFIXES = (".json", ".csv", ".wav")

# CSV time columns: `timestamp`, `time` or `t` with an optional unit suffix, or `seconds`.
TIME_UNITS_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_TIME_COLUMN = re.compile(r"(timestamp|time|t)(?:_(s|ms|us|ns))?|(seconds)")
_DEFAULT_TIME_UNIT = {"timestamp": "ms", "time": "s", "t": "s"}
# Timestamps this far (relative) from the mean interval make the derived rate doubtful: warn.
IRREGULAR_INTERVAL = 0.5


def time_column_unit(name: str) -> Optional[tuple[str, bool]]:
    """(unit, stated) when `name` is a CSV time column, else None; `stated` is True when the name
    carries the unit (`t_ns`, `seconds`) and False for the default of a bare `timestamp` (ms) or
    `time`/`t` (s). Units are keys of TIME_UNITS_S."""
    match = _TIME_COLUMN.fullmatch(name.strip().lower())
    if match is None:
        return None
    if match.group(3):
        return "s", True
    return (match.group(2), True) if match.group(2) else (_DEFAULT_TIME_UNIT[match.group(1)], False)


@dataclass
class Recording:
    """One recording: values (samples, axes) float64, axis names, rate in Hz, label."""

    path: Path
    values: np.ndarray
    axes: list[str]
    sampling_freq: float
    label: str


def label_from_name(path: Path) -> str:
    """Edge Impulse's convention: the file name up to its first dot (`idle.1234.json` -> `idle`)."""
    return path.name.split(".")[0]


def find_recordings(data_paths: Iterable["str | Path"]) -> list[tuple[Path, str]]:
    """Supported files under `data_paths` (files or directories, walked recursively), sorted.

    Returns (path, name relative to the directory it was found under, or the path as given).
    Hidden files and other suffixes in directories are skipped; a file named explicitly must
    have a supported suffix.
    """
    found: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for given in data_paths:
        root = Path(given)
        if root.is_dir():
            for directory, subdirs, files in os.walk(root):
                subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
                for name in sorted(files):
                    path = Path(directory) / name
                    if not name.startswith(".") and path.suffix.lower() in SUPPORTED_SUFFIXES \
                            and path.resolve() not in seen:
                        seen.add(path.resolve())
                        found.append((path, path.relative_to(root).as_posix()))
        elif root.is_file():
            if root.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise ConfigurationError(
                    f"{given}: unsupported file type '{root.suffix}'; expected "
                    f"{', '.join(SUPPORTED_SUFFIXES)} (acquisition JSON, CSV or WAV).")
            if root.resolve() not in seen:  # named twice, or also inside a directory given
                seen.add(root.resolve())
                found.append((root, str(given)))
        else:
            raise ConfigurationError(f"{given}: no such file or directory.")
    return found


def read_recording(path: Path, default_rate: Optional[float] = None,
                   label: Optional[str] = None) -> Recording:
    """The recording in `path`, by its suffix; `label` overrides the file-name label.

    default_rate: Hz, for CSV files without a time column.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ConfigurationError(
            f"{path}: unsupported file type '{path.suffix}'; expected {', '.join(SUPPORTED_SUFFIXES)}.")
    values, axes, rate = _read_checked(path, lambda: reader(path, default_rate))
    _check_rate(path, rate)
    return Recording(path=path, values=values, axes=axes, sampling_freq=float(rate),
                     label=label if label is not None else label_from_name(path))


@dataclass
class Stream:
    """One recording with its clock as recorded, for aligning it with others.

    values (samples, axes) float64, axis names and units. The clock is either a CSV's time
    column as written (`times`, unconverted: `time_column` names it, and `time_column_unit`
    says what its name implies) or a rate from the format (`sampling_freq`: the WAV's, the
    acquisition file's 1000 / interval_ms, or the rate given for a CSV without a time column).
    """

    path: Path
    values: np.ndarray
    axes: list[str]
    units: list[str]
    sampling_freq: Optional[float] = None
    times: Optional[np.ndarray] = None
    time_column: Optional[str] = None


def read_stream(path: "str | Path", default_rate: Optional[float] = None) -> Stream:
    """The recording in `path` with its own clock (see `Stream`); errors name the file.

    default_rate: Hz, for CSV files without a time column. A CSV's timestamps must increase.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise ConfigurationError(
            f"{path}: unsupported file type '{path.suffix}'; expected {', '.join(SUPPORTED_SUFFIXES)}.")

    def read() -> tuple[np.ndarray, list[str], Stream]:
        if suffix == ".json":
            values, axes, units, rate = _read_acquisition(path)
            return values, axes, Stream(path, values, axes, units, sampling_freq=rate)
        if suffix == ".wav":
            values, axes, rate = read_wav(path)
            return values, axes, Stream(path, values, axes, ["wav"] * len(axes), sampling_freq=rate)
        table, header = _read_csv_table(path)
        time_index = _time_column(header)
        axes, values = _csv_axes(table, header, time_index)
        stream = Stream(path, values, axes, ["N/A"] * len(axes))
        if time_index is not None:
            if table.shape[0] < 2:
                raise ConfigurationError("one row only: aligning needs at least two timestamps.")
            stream.times = table[:, time_index].copy()
            stream.time_column = header[time_index]
            _increasing_steps(stream.times)
        elif default_rate is None:
            raise ConfigurationError(
                "no time column ('timestamp', 'time', 't_ns', ...) to take the clock from; add one or "
                "pass the rate (--rate HZ).")
        else:
            stream.sampling_freq = float(default_rate)
        return values, axes, stream

    _, _, stream = _read_checked(path, read)
    if stream.sampling_freq is not None:
        _check_rate(path, stream.sampling_freq)
    return stream


def _read_checked(path: Path, read: Callable[[], tuple]) -> tuple:
    """`read()`, whose first two items are (values, axes), with every problem naming the file:
    an empty file, unreadable, holding no samples or a non-finite value."""
    try:
        if path.stat().st_size == 0:
            raise ConfigurationError("the file is empty.")
        result = read()
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the file ({exc.strerror or exc}).") from None
    values, axes = result[0], result[1]
    if values.shape[0] == 0:
        raise ConfigurationError(f"{path}: the recording holds no samples.")
    if not np.isfinite(values).all():
        row, column = np.argwhere(~np.isfinite(values))[0]
        raise ConfigurationError(
            f"{path}: sample {row} of axis '{axes[column]}' is {values[row, column]!r}; "
            "expected finite numbers.")
    return result


def _check_rate(path: Path, rate: float) -> None:
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigurationError(f"{path}: the sampling rate must be a positive number of Hz; got {rate!r}.")


# --- acquisition JSON -----------------------------------------------------------------------


def read_acquisition_json(path: Path, default_rate: Optional[float] = None
                          ) -> tuple[np.ndarray, list[str], float]:
    """(values (samples, sensors), sensor names, rate in Hz) of an acquisition JSON file."""
    values, names, _, rate = _read_acquisition(path)
    return values, names, rate


def _read_acquisition(path: Path) -> tuple[np.ndarray, list[str], list[str], float]:
    """(values, sensor names, their units, rate in Hz); a sensor without `units` is `N/A`."""
    data = path.read_bytes()
    try:
        document = _parse_json(data)
    except ValueError as exc:
        raise ConfigurationError(f"not valid JSON ({exc}); expected an Edge Impulse acquisition file.") from None
    try:
        # Nested lists in a flat 'values' each add a '[' byte; sensors and values are two.
        return _acquisition_arrays(document, may_nest=data.count(b"[") > 2)
    finally:
        del document  # the parser can be reused only once no proxy into it is left


_parsers = threading.local()


def _parse_json(data: bytes):
    """Parse with this thread's reusable parser (re-allocating its buffers per file costs more
    than the rest of the reading); a fresh one if proxies of an earlier document survive."""
    parser = getattr(_parsers, "parser", None)
    if parser is not None:
        try:
            return parser.parse(data)
        except RuntimeError:
            pass
    parser = _parsers.parser = simdjson.Parser()
    return parser.parse(data)


def _acquisition_arrays(document, may_nest: bool = True) -> tuple[np.ndarray, list[str], list[str], float]:
    """may_nest False: the caller knows no list sits inside a flat 'values' (saves a scan)."""
    payload = document.get("payload") if isinstance(document, simdjson.Object) else None
    if not isinstance(payload, simdjson.Object):
        raise ConfigurationError(
            "no 'payload' object; expected Edge Impulse's data acquisition format ({\"protected\", "
            "\"signature\", \"payload\": {\"interval_ms\", \"sensors\", \"values\"}}).")
    interval_ms = payload.get("interval_ms")
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, (int, float)) or not interval_ms > 0:
        raise ConfigurationError(f"'payload.interval_ms' must be a positive number of ms; got {interval_ms!r}.")
    sensors = payload.get("sensors")
    names, units = [], []
    if isinstance(sensors, simdjson.Array):
        for sensor in sensors:
            name = sensor.get("name") if isinstance(sensor, simdjson.Object) else None
            if not isinstance(name, str) or not name:
                break
            names.append(name)
            unit = sensor.get("units")
            units.append(unit if isinstance(unit, str) and unit else "N/A")
    if not names or len(names) != len(sensors):
        raise ConfigurationError("'payload.sensors' must be a non-empty list of {\"name\", \"units\"} objects.")
    values = payload.get("values")
    if not isinstance(values, simdjson.Array):
        raise ConfigurationError("'payload.values' must be a list of samples.")
    rows = len(values)
    if rows == 0:
        raise ConfigurationError("the recording holds no samples ('payload.values' is empty).")
    if isinstance(values[0], simdjson.Array):
        # Flattening below would hide rows of the wrong length that happen to add up.
        try:
            lengths = set(map(len, values))
        except TypeError:  # a bare number among the rows
            lengths = None
        if lengths != {len(names)}:
            bad = next(i for i, row in enumerate(values)
                       if not isinstance(row, simdjson.Array) or len(row) != len(names))
            raise ConfigurationError(
                f"every sample in 'payload.values' must be a list of {len(names)} numbers "
                f"(one per sensor: {', '.join(names)}); payload.values[{bad}] is {_json_text(values[bad])}.")
    elif len(names) != 1:
        raise ConfigurationError(
            f"'payload.values' is a flat list but there are {len(names)} sensors; expected one list "
            "of numbers per sample.")
    elif may_nest and simdjson.Array in set(map(type, values)):
        # Flattening below would silently accept [1, [2], 3].
        bad = next(i for i, row in enumerate(values) if isinstance(row, simdjson.Array))
        raise ConfigurationError(
            f"'payload.values' mixes numbers and lists: payload.values[{bad}] is {_json_text(values[bad])}; "
            "expected every sample to be a number (flat form, one sensor) or every sample a list of "
            "one number per sensor.")
    try:
        flat = np.frombuffer(values.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigurationError("'payload.values' must hold only numbers.") from None
    if flat.size != rows * len(names):
        raise ConfigurationError("'payload.values' must hold only numbers, one per sensor per sample.")
    return flat.reshape(rows, len(names)).copy(), names, units, 1000.0 / float(interval_ms)


def _json_text(value, limit: int = 60) -> str:
    """A JSON value as short text for a message."""
    text = value.mini.decode("utf-8", "replace") if hasattr(value, "mini") else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --- CSV ------------------------------------------------------------------------------------


def read_csv(path: Path, default_rate: Optional[float] = None) -> tuple[np.ndarray, list[str], float]:
    """(values (samples, axes), axis names, rate in Hz) of a CSV file with a header row."""
    table, header = _read_csv_table(path)
    time_index = _time_column(header)
    if time_index is None:
        if default_rate is None:
            raise ConfigurationError(
                "no time column ('timestamp' in ms, or 'time' in s) to take the sampling rate from; "
                "add one or pass the rate (--rate HZ).")
        rate = float(default_rate)
    else:
        unit, _ = time_column_unit(header[time_index])
        rate = _rate_from_times(table[:, time_index] * (TIME_UNITS_S[unit] * 1000.0), path)
    axes, values = _csv_axes(table, header, time_index)
    return values, axes, rate


def _time_column(header: list[str]) -> Optional[int]:
    return next((i for i, name in enumerate(header) if time_column_unit(name) is not None), None)


def _csv_axes(table: np.ndarray, header: list[str], time_index: Optional[int]) -> tuple[list[str], np.ndarray]:
    """The axis names and values: every column but the time column."""
    axes = [name for i, name in enumerate(header) if i != time_index]
    if not axes:
        raise ConfigurationError("no columns besides the time column.")
    if len(set(axes)) != len(axes):
        raise ConfigurationError(f"the header repeats a column name ({', '.join(axes)}).")
    values = table if time_index is None else np.delete(table, time_index, axis=1)
    return axes, np.ascontiguousarray(values)


def _read_csv_table(path: Path) -> tuple[np.ndarray, list[str]]:
    """(every column as float64 (rows, columns), the header's names) of a CSV file."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"not a text CSV file (byte {exc.object[exc.start]:#04x} at offset "
                                 f"{exc.start} is not UTF-8).") from None
    header_line, _, body = text.partition("\n")
    delimiter = max(",;\t", key=header_line.count)
    header = [name.strip() for name in next(csv.reader([header_line], delimiter=delimiter), [])]
    if not header or not any(header):
        raise ConfigurationError("the first line must be a header naming the columns.")
    # Excel-style exports end every row with the separator: an empty last column, dropped.
    if len(header) > 1 and header[-1] == "":
        header.pop()
        trailing_separator = True
    else:
        first_line = re.search(r"^.+$", body, re.MULTILINE)
        first_row = next(csv.reader([first_line.group() if first_line else ""], delimiter=delimiter), [])
        trailing_separator = len(first_row) == len(header) + 1 and not first_row[-1].strip()
    if trailing_separator:
        body = re.sub(re.escape(delimiter) + r" *$", "", body, flags=re.MULTILINE)
    try:
        table = _load_table(body, delimiter)
    except ValueError:
        # numpy skips empty lines but not whitespace-only ones (an editor's trailing blank lines);
        # blanking them only on failure spares every good file a scan.
        body = _WHITESPACE_LINE.sub("", body)
        try:
            table = _load_table(body, delimiter)
        except ValueError:
            raise ConfigurationError(_csv_row_problem(body, delimiter, header)) from None
    if table.size == 0:
        raise ConfigurationError("no rows after the header.")
    if table.shape[1] != len(header):
        raise ConfigurationError(f"the header names {len(header)} columns but the rows hold {table.shape[1]}.")
    return table, header


def _load_table(body: str, delimiter: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns on a header-only file; read_csv handles it
        return np.loadtxt(io.StringIO(body), delimiter=delimiter, dtype=np.float64, ndmin=2, quotechar='"')


_WHITESPACE_LINE = re.compile(r"^[^\S\n]+$", re.MULTILINE)


def _csv_row_problem(body: str, delimiter: str, header: list[str]) -> str:
    """The first row numpy refused, described in the file's terms (line number, columns)."""
    for line_number, line in enumerate(body.split("\n"), start=2):  # line 1 is the header
        line = line.split("#", 1)[0]  # numpy's comment character
        if not line.strip():
            continue
        cells = next(csv.reader([line], delimiter=delimiter))
        if len(cells) != len(header):
            return (f"line {line_number}: expected {len(header)} columns ({', '.join(header)}), "
                    f"found {len(cells)}: {line.strip()[:80]!r}.")
        for name, cell in zip(header, cells):
            try:
                float(cell)
            except ValueError:
                found = repr(cell.strip()[:40]) if cell.strip() else "an empty cell"
                return f"line {line_number}, column '{name}': expected a number, found {found}."
    return "expected a number in every cell after the header."


def _rate_from_times(times_ms: np.ndarray, path: Path) -> float:
    if times_ms.size < 2:
        raise ConfigurationError("one row only: the sampling rate needs two timestamps (or pass --rate).")
    steps = _increasing_steps(times_ms)
    mean_step = (times_ms[-1] - times_ms[0]) / (times_ms.size - 1)
    if np.abs(steps - mean_step).max() > IRREGULAR_INTERVAL * mean_step:
        warnings.warn(f"{path}: irregular timestamps (intervals {steps.min():g} to {steps.max():g} ms); "
                      f"taking the mean interval, {mean_step:g} ms.", stacklevel=3)
    return 1000.0 / mean_step


def _increasing_steps(times: np.ndarray) -> np.ndarray:
    """The intervals between timestamps, refused unless every one is positive."""
    steps = np.diff(times)
    if not (steps > 0).all():
        row = int(np.flatnonzero(~(steps > 0))[0]) + 1
        raise ConfigurationError(f"the timestamps must increase; data row {row + 1} does not.")
    return steps


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# --- WAV ------------------------------------------------------------------------------------


def read_wav(path: Path, default_rate: Optional[float] = None) -> tuple[np.ndarray, list[str], float]:
    """(samples (samples, channels) on the int16 scale, channel names, rate in Hz) of a WAV file."""
    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown chunks (LIST, ...) are harmless
            rate, data = wavfile.read(path)
    except (ValueError, EOFError, IndexError, struct.error) as exc:
        raise ConfigurationError(f"not a readable WAV file ({_first_line(exc)}).") from None
    if data.size == 0:  # reshape below cannot infer the channel count of nothing
        raise ConfigurationError("the recording holds no samples (the WAV file has 0 frames).")
    data = data.reshape(data.shape[0], -1)
    scale = _WAV_SCALES.get(data.dtype.kind + str(data.dtype.itemsize))
    if scale is None:
        raise ConfigurationError(f"unsupported WAV sample format {data.dtype}.")
    values = scale(data)
    channels = values.shape[1]
    axes = ["audio"] if channels == 1 else [f"audio{i}" for i in range(channels)]
    return values, axes, float(rate)


_WAV_SCALES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "i2": lambda d: d.astype(np.float64),
    "u1": lambda d: (d.astype(np.float64) - 128.0) * 256.0,
    "i4": lambda d: d.astype(np.float64) / 65536.0,
    "i8": lambda d: d.astype(np.float64) / 2.0 ** 48,
    "f4": lambda d: d.astype(np.float64) * 32768.0,
    "f8": lambda d: d.astype(np.float64) * 32768.0,
}

_READERS = {".json": read_acquisition_json, ".csv": read_csv, ".wav": read_wav}


# --- labels ---------------------------------------------------------------------------------


def read_label_map(path: "str | Path") -> dict[str, str]:
    """A CSV mapping file names to labels: two columns, file then label, optional header row.

    A file is matched by its path relative to the data directory it was found under (as given
    on the command line for a file) or by its bare name.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the label map ({exc.strerror or exc}).") from None
    mapping: dict[str, str] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ConfigurationError(f"{path}: line {number} must be 'file,label'.")
        file_name, label = row[0].strip(), row[1].strip()
        if number == 1 and file_name.lower() in ("file", "filename", "name", "path", "sample") \
                and label.lower() in ("label", "class", "category"):
            continue
        mapping[file_name] = label
    if not mapping:
        raise ConfigurationError(f"{path}: the label map is empty; expected lines 'file,label'.")
    return mapping


def label_for(mapping: Optional[dict[str, str]], path: Path, relative_name: str) -> Optional[str]:
    """The mapped label of a file (by relative name, then bare name); None without a map."""
    if mapping is None:
        return None
    for key in (relative_name, path.name):
        if key in mapping:
            return mapping[key]
    raise ConfigurationError(f"{relative_name}: not in the label map (looked for '{relative_name}' and '{path.name}').")
