"""The contract between the server and a block: what a block computes and what it returns.

A block is a `parameters.json` (in `dsp/parameters/<name>.json`) plus a `compute` function.
The server resolves the request's parameters against the declared ones (see `dsp.core.params`),
reshapes the window to (samples, axes) and calls `compute`; the block never sees JSON or HTTP.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from dsp.core.errors import ConfigurationError

PARAMETERS_DIR = Path(__file__).resolve().parents[1] / "parameters"


@dataclass
class Request:
    """One window, ready for a block.

    raw:                    float64 array of shape (samples, axes), axes de-interleaved.
    axes:                   the input axis names, one per column of `raw`.
    sampling_freq:          in Hz.
    implementation_version: already checked against the block's supported versions.
    params:                 every declared parameter, keyed by its underscore name, coerced to
                            its declared type, defaults filled in.
    draw_graphs:            build `graphs` only when true.
    state:                  the block state carried from the previous window ("" when none).
    lead_only:              only the state after these samples is wanted: they lead a window
                            whose whole passed the block's plausibility checks (which a short
                            lead, say the free fall at the start of a drop, need not pass alone).
    """

    raw: np.ndarray
    axes: list[str]
    sampling_freq: float
    implementation_version: int
    params: dict[str, Any]
    draw_graphs: bool = False
    state: str = ""
    lead_only: bool = False


@dataclass
class Features:
    """What a block returns for one window.

    features:      1-D float64 array (finite values; the server rejects NaN/inf).
    labels:        feature names (may be shorter than features: per-axis convention).
    output_config: {"type": "flat", "shape": {"width": n}} or a spectrogram/image shape.
    fft_used:      FFT sizes used, so device builds can drop unused tables.
    graphs:        Studio graph objects (dicts), [] unless draw_graphs.
    state:         state to carry into the next window ("" for stateless blocks).
    state_string:  human-readable form of the state, shown by Studio.
    """

    features: np.ndarray
    labels: list[str] = field(default_factory=list)
    output_config: dict = field(default_factory=dict)
    fft_used: list[int] = field(default_factory=list)
    graphs: list[dict] = field(default_factory=list)
    state: str = ""
    state_string: str = ""


@dataclass
class BatchFeatures:
    """What a block returns for many windows: `features` is (windows, features)."""

    features: np.ndarray
    labels: list[str]
    output_config: dict
    fft_used: list[int]
    state: str = ""
    state_string: str = ""


ComputeFn = Callable[[Request], Features]
# Optional vectorised path: raw is (windows, samples, axes); params etc. as in Request.
ComputeBatchFn = Callable[[Request], BatchFeatures]
# Optional `/tflite-impl`: a TFLite flatbuffer mapping the raw window to the features (raw is None).
TfliteImplementationFn = Callable[[Request], bytes]


@dataclass
class Block:
    """A processing block: its declared parameters and the functions that compute it."""

    name: str
    parameters: dict
    compute: ComputeFn
    compute_batch: Optional[ComputeBatchFn] = None
    tflite_implementation: Optional[TfliteImplementationFn] = None
    # Optional readiness check for `/healthz`: raises, with the reason, if this process (a forked
    # worker) cannot serve the block, e.g. its model's interpreter or its C library fails to load.
    ready: Optional[Callable[[], None]] = None

    @property
    def info(self) -> dict:
        return self.parameters["info"]

    @property
    def latest_version(self) -> int:
        return int(self.info.get("latestImplementationVersion", 1))


def load_parameters(name: str) -> dict:
    """The block's parameters.json, with the top-level keys Studio and the CLI expect."""
    with open(PARAMETERS_DIR / f"{name}.json", encoding="utf-8") as f:
        spec = json.load(f)
    spec["version"] = 1
    spec["type"] = "dsp"
    return spec


def time_frequency_block(
    name: str,
    transform: Callable[[Request, np.ndarray], np.ndarray],
    fft_used: Callable[[dict], list[int]],
    graphs: Optional[Callable[[Request, np.ndarray], list[dict]]] = None,
) -> Block:
    """A block whose output per window is a (frames, rows) matrix: spectrogram, MFE, MFCC.

    transform: (request, windows of shape (windows, samples, axes)) -> (windows, frames, rows).
    fft_used:  the request's params -> FFT sizes used.
    graphs:    (request, one window's matrix) -> graph dicts; called only when draw_graphs.

    One window goes through the batch path as a batch of one, so the two cannot drift. Features
    are frame-major and `output_config` is {"type": "spectrogram", "shape": {width: frames,
    height: rows}}, as Edge Impulse's blocks lay them out.
    """

    def output_config(frames: int, rows: int) -> dict:
        return {"type": "spectrogram", "shape": {"width": frames, "height": rows}}

    def compute_batch(req: Request) -> BatchFeatures:
        result = transform(req, req.raw)
        windows, frames, rows = result.shape
        return BatchFeatures(features=result.reshape(windows, frames * rows).astype(np.float64),
                             labels=[], output_config=output_config(frames, rows),
                             fft_used=fft_used(req.params))

    def compute(req: Request) -> Features:
        result = transform(req, req.raw[np.newaxis])[0]
        frames, rows = result.shape
        return Features(features=result.reshape(-1).astype(np.float64), labels=[],
                        output_config=output_config(frames, rows), fft_used=fft_used(req.params),
                        graphs=graphs(req, result) if req.draw_graphs and graphs else [])

    return Block(name=name, parameters=load_parameters(name), compute=compute,
                 compute_batch=compute_batch)


def compute_in_order(block: Block, req: Request, windows: Iterable[np.ndarray],
                     prepare: Callable[[np.ndarray], np.ndarray] = lambda window: window) -> BatchFeatures:
    """Windows through `block.compute` one at a time, in order, each starting from the state the
    previous one returned (the first from `req.state`). `prepare` turns a window into the
    (samples, axes) array the block takes.

    A user error names the window it happened on ("Window 3: ..."); windows that give feature
    vectors of different lengths are refused, as Studio needs one width.
    """
    rows, first, fft_used, result = [], None, [], None
    for index, window in enumerate(windows):
        try:
            req.raw = prepare(window)
            result = block.compute(req)
        except ConfigurationError as exc:
            raise ConfigurationError(f"Window {index}: {exc}") from None
        rows.append(np.asarray(result.features, dtype=np.float64).reshape(-1))
        first = first or result
        fft_used.extend(n for n in result.fft_used if n not in fft_used)
        req.state = result.state
    if first is None:
        raise ConfigurationError("There are no windows to compute.")
    if any(row.size != rows[0].size for row in rows):
        raise ConfigurationError("The windows gave feature vectors of different lengths; send windows of one length.")
    return BatchFeatures(features=np.stack(rows), labels=first.labels, output_config=first.output_config,
                         fft_used=fft_used, state=result.state, state_string=result.state_string)
