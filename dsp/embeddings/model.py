"""A shipped embedding model: its metadata, its TFLite files, and one interpreter per thread.

The files are described in `models/README.md`: `<name>.json` (metadata) beside `<name>.tflite`
(the int8 embedder: front-end features in, embedding out) and, optionally, `<name>.raw.tflite`
(raw window in, embedding out, for `/tflite-impl`).

TFLite interpreters are not thread-safe and must not cross a fork: each thread creates its own,
lazily, on first use (gunicorn workers are forked from a master that only validates the model).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
DEFAULT_MODEL = MODELS_DIR / "coffee-machine.json"
FRONTEND_BLOCKS = ("spectrogram", "mfe", "mfcc")


class ModelLoadError(Exception):
    """The model cannot be used; the message names the path and the reason, on one line."""


@dataclass(frozen=True)
class ModelMetadata:
    """What the server needs from `<name>.json`."""

    name: str
    frontend_block: str
    frontend_version: int
    frontend_params: dict
    sampling_freq: float
    window_samples: int
    axes: int
    input_width: int
    embedding_size: int
    classes: tuple[str, ...]
    raw: dict  # the whole JSON, as shipped

    def describe_input(self) -> str:
        axes = "axis" if self.axes == 1 else "axes"
        return f"{self.window_samples} samples of {self.axes} {axes} at {self.sampling_freq:g} Hz"


class EmbeddingModel:
    """The int8 embedder and its metadata; `embed` is safe to call from any thread."""

    def __init__(self, metadata: ModelMetadata, embedder: bytes, raw_window_model: Optional[bytes],
                 path: Path):
        self.metadata = metadata
        self.embedder = embedder
        self.raw_window_model = raw_window_model
        self.path = path
        self._local = threading.local()

    def embed(self, features: np.ndarray) -> np.ndarray:
        """Embeddings of front-end features.

        Parameters
        ----------
        features : numpy.ndarray
            (windows, input_width) front-end features.

        Returns
        -------
        numpy.ndarray
            (windows, embedding_size) float32 embeddings.
        """
        interpreter, input_index, output_index = self._interpreter()
        out = np.empty((features.shape[0], self.metadata.embedding_size), dtype=np.float32)
        rows = np.ascontiguousarray(features, dtype=np.float32)
        # The embedder is converted with a fixed batch of 1 (as Studio's models are): invoke per row.
        for i in range(rows.shape[0]):
            interpreter.set_tensor(input_index, rows[i:i + 1])
            interpreter.invoke()
            out[i] = interpreter.get_tensor(output_index)[0]
        return out

    def check(self) -> None:
        """Raise if this thread cannot get an interpreter (`/healthz`); builds the one it reuses."""
        self._interpreter()

    def _interpreter(self):
        cached = getattr(self._local, "interpreter", None)
        if cached is None:
            interpreter = make_interpreter(self.embedder)
            cached = (interpreter, interpreter.get_input_details()[0]["index"],
                      interpreter.get_output_details()[0]["index"])
            self._local.interpreter = cached
        return cached


def make_interpreter(model: bytes):
    """A LiteRT interpreter as the server runs models: LiteRT's builtin kernels, one thread.

    Not the default XNNPACK delegate: its int8 kernels round differently from TensorFlow Lite
    Micro's, and an embedding differed from the device's by up to relative L2 0.029 (an ESC-10
    model); the builtin kernels give TFLM's numbers to 1e-7, so `/run` equals the device. They
    are about 2.5 to 3.5 times slower per invoke (measured: 45 and 249 us for coffee-machine and
    esc10, against 17 and 68 us). One thread: concurrency comes from gunicorn's threads and workers.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model, num_threads=1,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter


def load_model(path: "str | Path") -> EmbeddingModel:
    """Load and check a model from its metadata JSON or its `.tflite` (the JSON beside it).

    Raises ModelLoadError (one line: path and reason) if anything is missing or inconsistent.
    The embedder is run once here, on zeros, so a corrupt file fails at start, not per request;
    that interpreter is discarded, so nothing TFLite survives into forked workers.
    """
    path = Path(path)
    json_path = _metadata_path(path)
    try:
        raw = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{json_path}: unreadable model metadata ({exc})") from None
    metadata = _parse_metadata(raw, json_path)
    files = raw.get("files") or {}
    embedder_path = json_path.parent / files.get("int8", json_path.with_suffix(".tflite").name)
    embedder = _read(embedder_path)
    raw_path = json_path.parent / files["raw"] if files.get("raw") else None
    # /tflite-impl serves only a model that was run and agreed on the device runtimes (upstream
    # TFLM and the EI fork Studio's export compiles); an older raw model (RFFT2D) is not.
    device_ready = (raw.get("raw_model") or {}).get("device_ready") is True
    raw_window_model = (_read(raw_path) if device_ready and raw_path is not None and raw_path.exists()
                        else None)
    _check_embedder(embedder, embedder_path, metadata)
    return EmbeddingModel(metadata, embedder, raw_window_model, json_path)


def _metadata_path(given: Path) -> Path:
    """The metadata JSON for the path the user gave; the error names that path first, then what
    was looked for beside it."""
    if given.is_dir():
        raise ModelLoadError(f"{given}: is a folder; give a model's metadata .json or its .tflite")
    if given.suffix not in (".json", ".tflite"):
        raise ModelLoadError(f"{given}: not a model; give its metadata .json or its .tflite")
    if given.suffix == ".json":
        if not given.exists():
            raise ModelLoadError(f"{given}: no such model metadata file")
        return given
    json_path = given.with_suffix(".json")
    if not json_path.exists():
        if not given.exists():
            raise ModelLoadError(f"{given}: no such model file (nor its metadata {json_path.name} beside it)")
        raise ModelLoadError(f"{given}: no model metadata beside it (looked for {json_path})")
    return json_path


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such model file") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: unreadable model file ({exc})") from None


def _parse_metadata(raw: dict, path: Path) -> ModelMetadata:
    def field(*keys, kind=None):
        value = raw
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                raise ModelLoadError(f"{path}: metadata has no '{'.'.join(keys)}'")
            value = value[key]
        if kind is not None and not isinstance(value, kind):
            raise ModelLoadError(f"{path}: metadata '{'.'.join(keys)}' has the wrong type")
        return value

    block = field("frontend", "block", kind=str)
    if block not in FRONTEND_BLOCKS:
        raise ModelLoadError(f"{path}: front-end '{block}' is not one of {', '.join(FRONTEND_BLOCKS)}")
    input_shape = field("input", "shape", kind=list)
    output_shape = field("output", "shape", kind=list)
    return ModelMetadata(
        name=str(raw.get("name", path.stem)),
        frontend_block=block,
        frontend_version=int(field("frontend", "implementation_version", kind=int)),
        frontend_params=dict(field("frontend", "params", kind=dict)),
        sampling_freq=float(field("sampling_freq", kind=(int, float))),
        window_samples=int(field("window_samples", kind=int)),
        axes=int(raw.get("axes", 1)),
        input_width=int(np.prod(input_shape[1:])),
        embedding_size=int(np.prod(output_shape[1:])),
        classes=tuple(raw.get("classes", ())),
        raw=raw,
    )


def _check_embedder(embedder: bytes, path: Path, metadata: ModelMetadata) -> None:
    try:
        interpreter = make_interpreter(embedder)
        input_index, output_index = (interpreter.get_input_details()[0]["index"],
                                     interpreter.get_output_details()[0]["index"])
        details = interpreter.get_input_details()[0]
        shape = [int(n) for n in details["shape"]]
        if int(np.prod(shape[1:])) != metadata.input_width or details["dtype"] != np.float32:
            raise ModelLoadError(
                f"{path}: the model takes {details['dtype'].__name__} {shape}, the metadata says "
                f"float32 [1, {metadata.input_width}]"
            )
        interpreter.set_tensor(input_index, np.zeros(shape, dtype=np.float32))
        interpreter.invoke()
        out = interpreter.get_tensor(output_index)
    except ModelLoadError:
        raise
    except Exception as exc:  # the TFLite runtime raises ValueError/RuntimeError for bad files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: not a usable TFLite model ({reason})") from None
    if out.size != metadata.embedding_size:
        raise ModelLoadError(
            f"{path}: the model outputs {out.size} values, the metadata says {metadata.embedding_size}"
        )
