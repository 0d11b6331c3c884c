"""Cut a trained classifier before its classifier layer and convert the rest to TFLite embedders.

The seed's `saved-model-to-embeddings.py` (`docs/ei-protocol.md` section 6.2), with its defects
fixed (section 7, item 13, and code reading):

* every failure stops the command with a non-zero exit and a one-line message (the seed printed
  converter exceptions and exited 0 with no model written);
* the int8 model is calibrated on a seeded random subset of `input.npy` (a few hundred rows), not
  on every row, and the agreement of int8 with float32 is measured on rows it was not calibrated
  on, and recorded;
* the int8 model keeps float32 input and output (what the embeddings block feeds and returns), with
  int8 weights and activations and built-in int8 kernels only; the float32 model uses built-in ops
  only (the server's LiteRT runtime has no TensorFlow-ops delegate);
* a final separate Softmax/Activation layer is not taken for the classifier: the cut goes before the
  last Dense layer whatever squashes its scores afterwards (`--layer` cuts anywhere else);
* Keras variables are frozen into constants (a concrete function with a fixed batch of 1) before
  conversion, so both converters see the same graph;
* `input.npy` and the front-end are checked against the model input width before anything runs.

Usage::

    python -m models.convert_embeddings MODEL INPUT_NPY --out-dir models --name NAME \\
        --frontend-json FRONTEND.json [--layer NAME] [--classes a,b,c] \\
        [--calibration-samples N] [--data-json DATA.json] [--quality-json QUALITY.json]

MODEL is a `.keras` file or a SavedModel directory (Studio's `saved_model`, or the folder that
holds it). INPUT_NPY is the front-end features as Studio exports them (`X_train.npy`): (rows,
features) float32. FRONTEND.json describes the front-end the features came from::

    {"block": "spectrogram", "implementation_version": 4,
     "params": {"frame_length": 0.032, "frame_stride": 0.024, "fft_length": 128,
                "noise_floor_db": -85},
     "sampling_freq": 16000, "window_samples": 16000, "axes": 1}

The command writes `<name>.float32.tflite`, `<name>.tflite` (int8) and `<name>.json` (the
metadata of `models/README.md`). The pieces are functions, for training scripts to call in
process: `cut_embedding_model`, `convert_float32`, `convert_int8`, `agreement`, `write_metadata`;
`make_embedder` (cut, convert, measure) and `save_embedder` (write) chain them, and
`export_embedder` is both.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

FORMAT_VERSION = 1
FRONTEND_BLOCKS = ("spectrogram", "mfe", "mfcc")
DEFAULT_CALIBRATION_SAMPLES = 300
DEFAULT_AGREEMENT_SAMPLES = 1000
# Held-out rows run on the device runtimes, and how far their embeddings may be from LiteRT's
# (the raw-window model's parity bar; the runtimes agree to an output step or two).
DEVICE_CHECK_ROWS = 32
MAX_DEVICE_RELATIVE_L2 = 1e-2
PER_CHANNEL_WARNING = ("per-channel dense layers: Edge Impulse's SDK fork of TFLM (Studio's C++ export) "
                       "computes them with one scale and gives wrong embeddings; use this only for "
                       "runtimes that support per-channel FULLY_CONNECTED (upstream TFLM, LiteRT)")
# Layers after a classifier that only squash its scores (the argmax is unchanged by them).
SCORE_SQUASHING_LAYERS = ("Softmax", "Activation")
# TFLite ops of the converted graph that implement a Dense layer (the classifier) in TF graphs.
MATMUL_OPS = ("MatMul", "BatchMatMulV2", "BatchMatMulV3")
# Relative difference above which the float32 TFLite model is not the model it was made from.
FLOAT32_TOLERANCE = 1e-3
INPUT_LAYOUT = "frames x bins, frame-major (as the front-end block outputs)"


class ConversionError(Exception):
    """The model cannot be converted as asked; the message says why, on one line."""


@dataclass
class EmbeddingCut:
    """A model cut before its classifier, frozen, ready to convert.

    Attributes
    ----------
    function : tensorflow ConcreteFunction
        Frozen (no variables): float32 (1, input_width) -> float32 (1, embedding_size).
    input_width : int
        Features per window the model takes (the front-end output, flat).
    embedding_size : int
        Values per embedding.
    cut_layer : str
        The layer whose output is the embedding.
    how : str
        How the cut point was chosen, in words (recorded in the metadata).
    layers : tuple of str
        Every layer of the model, input to output (graph scopes for a SavedModel).
    head : callable or None
        Embeddings (rows, embedding_size) -> class scores (rows, classes): the part of the model
        that was cut off, for the argmax agreement; None when it cannot be rebuilt.
    source : str
        "keras" or "saved_model".
    class_count : int or None
        Outputs of the original model (the classes), when known.
    """

    function: Any
    input_width: int
    embedding_size: int
    cut_layer: str
    how: str
    layers: tuple[str, ...]
    head: Optional[Callable[[np.ndarray], np.ndarray]]
    source: str
    class_count: Optional[int] = None


@dataclass
class Embedder:
    """A converted embedder, not yet written (see `make_embedder`).

    Attributes
    ----------
    cut : EmbeddingCut
    float32_model, int8_model : bytes
        TFLite flatbuffers.
    conversion : dict
        The metadata's `conversion` section: command, cut, calibration, agreement, sizes.
    classes : list of str
    held_out_rows : numpy.ndarray
        Indices of the input rows the agreement was measured on (never calibrated on).
    """

    cut: EmbeddingCut
    float32_model: bytes
    int8_model: bytes
    conversion: dict
    classes: list[str]
    held_out_rows: np.ndarray = field(repr=False)


@dataclass
class ExportResult:
    """What `export_embedder` wrote."""

    metadata: dict
    paths: dict[str, Path]
    embedder: Embedder


# --------------------------------------------------------------------------------------------
# Inputs: features and front-end


def load_features(path: "str | Path") -> np.ndarray:
    """Load front-end features as Studio exports them (`X_train.npy`) and check them.

    Parameters
    ----------
    path : str or Path
        A `.npy` file holding a (rows, features) numeric array.

    Returns
    -------
    numpy.ndarray
        float32 array of shape (rows, features), finite, at least 2 rows.

    Raises
    ------
    ConversionError
        Missing or unreadable file, wrong rank or dtype, fewer than 2 rows, NaN or infinity.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such input file (the front-end features, .npy)")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path}: not a readable .npy array ({_first_line(exc)})") from None
    return check_features(array, str(path))


def check_features(array: np.ndarray, source: str = "features") -> np.ndarray:
    """Check an in-memory feature array as `load_features` does; returns it as float32."""
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ConversionError(f"{source}: holds {array.dtype} values, expected real numbers")
    if array.ndim != 2:
        raise ConversionError(
            f"{source}: shape {array.shape}, expected (rows, features): one flat row of front-end "
            f"features per window, as Studio's X_train.npy"
        )
    if array.shape[0] < 2:
        raise ConversionError(f"{source}: {array.shape[0]} row(s); need at least 2 (calibration "
                              f"and held-out rows)")
    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad_rows.size:
        raise ConversionError(f"{source}: {bad_rows.size} row(s) contain NaN or infinity "
                              f"(first: row {bad_rows[0]}); front-end features are always finite")
    return np.ascontiguousarray(array, dtype=np.float32)


def load_frontend(path: "str | Path") -> dict:
    """Read and check a front-end description (see the module docstring).

    Returns
    -------
    dict
        block, implementation_version, params (every parameter the block uses, typed),
        sampling_freq, window_samples, axes, and width (features per window it produces).

    Raises
    ------
    ConversionError
        Missing file, bad JSON, unknown block, missing or invalid parameters, or a front-end
        that cannot process a window of the given length.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such front-end JSON file") from None
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path}: unreadable front-end JSON ({_first_line(exc)})") from None
    return check_frontend(raw, str(path))


def check_frontend(raw: Any, source: str = "front-end") -> dict:
    """Check a front-end description and compute the width of its output (see `load_frontend`)."""
    from dsp.core.block import Request
    from dsp.core.errors import ConfigurationError
    from dsp.core.params import parameter_specs, resolve_params

    if not isinstance(raw, dict):
        raise ConversionError(f"{source}: expected a JSON object")
    required = ("block", "implementation_version", "params", "sampling_freq", "window_samples")
    missing = [key for key in required if key not in raw]
    if missing:
        raise ConversionError(f"{source}: missing {', '.join(missing)} (needs {', '.join(required)}"
                              f" and optionally axes)")
    block_name = raw["block"]
    if block_name not in FRONTEND_BLOCKS:
        raise ConversionError(f"{source}: block '{block_name}' is not one of "
                              f"{', '.join(FRONTEND_BLOCKS)}")
    version, sampling_freq = raw["implementation_version"], raw["sampling_freq"]
    window_samples, axes = raw["window_samples"], raw.get("axes", 1)
    if not _is_int(version) or not _is_int(window_samples) or not _is_int(axes):
        raise ConversionError(f"{source}: implementation_version, window_samples and axes must be "
                              f"integers")
    if not isinstance(sampling_freq, (int, float)) or isinstance(sampling_freq, bool) \
            or sampling_freq <= 0 or window_samples <= 0 or axes < 1:
        raise ConversionError(f"{source}: sampling_freq, window_samples and axes must be positive")
    if not isinstance(raw["params"], dict):
        raise ConversionError(f"{source}: params must be an object")

    block = _frontend_block(block_name)
    supported = range(1, block.latest_version + 1)
    if version not in supported:
        raise ConversionError(f"{source}: {block_name} implementation_version {version} is not one "
                              f"of {', '.join(map(str, supported))}")
    # The server fills nothing in: every parameter this version uses must be written down.
    needed = [item["param"].replace("-", "_")
              for group in block.parameters["parameters"] for item in group["items"]
              if version in item.get("showForImplementationVersion", [version])]
    given = {key.replace("-", "_"): value for key, value in raw["params"].items()}
    absent = [name for name in needed if name not in given]
    if absent:
        raise ConversionError(f"{source}: {block_name} params lack {', '.join(absent)} (the server "
                              f"fills nothing in; give every parameter the block uses)")
    try:
        typed = resolve_params(parameter_specs(block.parameters), given)
        # A seeded noise window: zeros would not exercise the log scaling the same way.
        window = np.random.default_rng(0).normal(0, 1000, (1, int(window_samples), int(axes)))
        request = Request(raw=window, axes=[f"axis{i}" for i in range(int(axes))],
                          sampling_freq=float(sampling_freq), implementation_version=int(version),
                          params=typed)
        width = int(block.compute_batch(request).features.shape[1])
    except ConfigurationError as exc:
        raise ConversionError(f"{source}: {block_name} rejects these settings: {exc}") from None
    return {
        "block": block_name,
        "implementation_version": int(version),
        "params": {name: typed[name] for name in needed},
        "sampling_freq": sampling_freq,
        "window_samples": int(window_samples),
        "axes": int(axes),
        "width": width,
    }


def _frontend_block(name: str):
    from dsp.audio import mfcc, mfe, spectrogram

    return {"spectrogram": spectrogram.BLOCK, "mfe": mfe.BLOCK, "mfcc": mfcc.BLOCK}[name]


# --------------------------------------------------------------------------------------------
# Cutting


def cut_embedding_model(model: Any, layer: Optional[str] = None) -> EmbeddingCut:
    """Cut a classifier before its classifier layer (or at `layer`) and freeze it.

    Parameters
    ----------
    model : keras.Model, str or Path
        A Keras model, a `.keras` (or legacy `.h5`) file, or a SavedModel directory (or a folder
        holding one in `saved_model/`, as in the seed's layout).
    layer : str, optional
        Cut at this layer's output. Default: the input of the last Dense layer (the classifier),
        i.e. the output of the layer before it, skipping a final Softmax/Activation layer. For a
        SavedModel, layer names are the graph's name scopes (listed in the error message).

    Returns
    -------
    EmbeddingCut

    Raises
    ------
    ConversionError
        Unreadable model, several inputs, unknown layer (the message lists the layers), no Dense
        classifier to cut before.
    """
    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.is_dir():
            return _cut_saved_model(_saved_model_dir(path), layer)
        if not path.is_file():
            raise ConversionError(f"{path}: no such model (a .keras file or a SavedModel "
                                  f"directory)")
        return _cut_keras(_load_keras(path), layer)
    return _cut_keras(model, layer)


def _load_keras(path: Path):
    import keras

    if path.suffix not in (".keras", ".h5"):
        raise ConversionError(f"{path}: not a .keras or .h5 file nor a SavedModel directory")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # keras raises many types for a bad file
        raise ConversionError(f"{path}: cannot load the Keras model ({_first_line(exc)})") from None


def _cut_keras(model, layer: Optional[str]) -> EmbeddingCut:
    import keras

    tf = _tensorflow()
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConversionError(f"model '{model.name}' has {len(model.inputs)} inputs and "
                              f"{len(model.outputs)} outputs; an embedder has one of each")
    layer_names = tuple(each.name for each in model.layers
                        if not isinstance(each, keras.layers.InputLayer))
    if layer is not None:
        try:
            cut_tensor = model.get_layer(layer).output
        except ValueError:
            raise ConversionError(f"no layer named '{layer}'; the model's layers: "
                                  f"{', '.join(layer_names)}") from None
        cut_name, how = layer, f"output of layer '{layer}' (chosen with --layer)"
    else:
        classifier = _keras_classifier(model, layer_names)
        cut_tensor = classifier.input
        cut_name = cut_tensor._keras_history.operation.name
        how = (f"input of the classifier, the last Dense layer '{classifier.name}' (the output of "
               f"'{cut_name}')")

    input_shape = tuple(model.inputs[0].shape[1:])
    cut_shape = tuple(cut_tensor.shape[1:])
    if None in input_shape or None in cut_shape:
        raise ConversionError(f"the model input {input_shape} or the cut output {cut_shape} has an "
                              f"unknown size; an embedder needs fixed shapes")
    input_width, embedding_size = int(np.prod(input_shape)), int(np.prod(cut_shape))
    embedder = keras.Model(model.inputs[0], cut_tensor)

    @tf.function(input_signature=[tf.TensorSpec((1, input_width), tf.float32, name="features")])
    def embed(features):
        # Studio's features are flat; a model whose input is not flat gets them reshaped here.
        shaped = tf.reshape(features, (1, *input_shape))
        return tf.reshape(embedder(shaped, training=False), (1, embedding_size))

    head, class_count = _keras_head(keras, cut_tensor, model.outputs[0], cut_shape)
    return EmbeddingCut(function=_freeze(tf, embed.get_concrete_function()),
                        input_width=input_width, embedding_size=embedding_size, cut_layer=cut_name,
                        how=how, layers=layer_names, head=head, source="keras",
                        class_count=class_count)


def _keras_classifier(model, layer_names: tuple[str, ...]):
    """The Dense layer that computes the class scores, skipping squashing layers after it."""
    operation = model.outputs[0]._keras_history.operation
    while type(operation).__name__ in SCORE_SQUASHING_LAYERS:
        operation = operation.input._keras_history.operation
    if type(operation).__name__ != "Dense":
        raise ConversionError(
            f"the model ends with {type(operation).__name__} '{operation.name}', not a Dense "
            f"classifier; pass --layer to choose the cut (layers: {', '.join(layer_names)})")
    return operation


def _keras_head(keras, cut_tensor, output_tensor, cut_shape):
    """The cut-off part as a function of embeddings, or None if Keras cannot rebuild it."""
    try:
        head_model = keras.Model(cut_tensor, output_tensor)
    except Exception:  # e.g. a cut inside a branch the output also needs from elsewhere
        return None, None

    def head(embeddings: np.ndarray) -> np.ndarray:
        shaped = embeddings.reshape((-1, *cut_shape)).astype(np.float32)
        return np.asarray(head_model(shaped, training=False)).reshape(len(embeddings), -1)

    return head, int(np.prod(output_tensor.shape[1:]))


def _saved_model_dir(path: Path) -> Path:
    if (path / "saved_model.pb").is_file():
        return path
    if (path / "saved_model" / "saved_model.pb").is_file():
        return path / "saved_model"
    raise ConversionError(f"{path}: a directory without saved_model.pb (nor saved_model/"
                          f"saved_model.pb); expected a SavedModel")


def _cut_saved_model(path: Path, layer: Optional[str]) -> EmbeddingCut:
    """Cut a SavedModel at graph level: it may come from Keras 2 or 3, with no layer objects."""
    tf = _tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ConversionError(f"{path}: cannot load the SavedModel ({_first_line(exc)})") from None
    signatures = dict(loaded.signatures)
    if not signatures:
        raise ConversionError(f"{path}: the SavedModel has no signature to convert")
    signature = signatures.get("serving_default") or signatures[sorted(signatures)[0]]
    frozen = _freeze(tf, signature)
    if len(frozen.inputs) != 1 or len(frozen.outputs) != 1:
        raise ConversionError(f"{path}: the signature has {len(frozen.inputs)} inputs and "
                              f"{len(frozen.outputs)} outputs; an embedder has one of each")
    input_name, output_name = frozen.inputs[0].name, frozen.outputs[0].name
    input_shape = tuple(frozen.inputs[0].shape.as_list()[1:])
    if None in input_shape:
        raise ConversionError(f"{path}: the model input {input_shape} has an unknown size")
    input_width = int(np.prod(input_shape))

    graph_def = frozen.graph.as_graph_def()
    _fix_batch_of_one(graph_def, input_name.split(":")[0])
    graph_function = tf.compat.v1.wrap_function(
        lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
    graph = graph_function.graph
    input_tensor = graph.get_tensor_by_name(input_name)
    output_tensor = graph.get_tensor_by_name(output_name)
    scopes = _graph_layers(graph)
    layer_names = tuple(scopes)

    if layer is not None:
        scope = _match_scope(layer, layer_names)
        cut_tensor = _scope_output(scopes[scope], scope)
        cut_name, how = scope, f"output of graph scope '{scope}' (chosen with --layer {layer})"
    else:
        classifier = _graph_classifier(graph, output_tensor, layer_names)
        cut_tensor = classifier.inputs[0]
        cut_name = _scope_of(cut_tensor.op.name, scopes) or cut_tensor.op.name
        how = (f"input of the classifier, the last matrix product '{classifier.name}' (the "
               f"output of '{cut_name}')")
    cut_shape = tuple(cut_tensor.shape.as_list()[1:])
    if None in cut_shape:
        raise ConversionError(f"the cut output {cut_shape} has an unknown size")
    embedding_size = int(np.prod(cut_shape))
    embedder = graph_function.prune(feeds=input_tensor, fetches=cut_tensor)

    @tf.function(input_signature=[tf.TensorSpec((1, input_width), tf.float32, name="features")])
    def embed(features):
        shaped = tf.reshape(features, (1, *input_shape))
        return tf.reshape(embedder(shaped), (1, embedding_size))

    head_function = graph_function.prune(feeds=cut_tensor, fetches=output_tensor)

    def head(embeddings: np.ndarray) -> np.ndarray:
        # The graph has a fixed batch of 1 now: one row at a time.
        rows = embeddings.reshape((-1, 1, *cut_shape)).astype(np.float32)
        return np.concatenate([np.asarray(head_function(tf.constant(row))).reshape(1, -1)
                               for row in rows])

    return EmbeddingCut(function=_freeze(tf, embed.get_concrete_function()),
                        input_width=input_width, embedding_size=embedding_size, cut_layer=cut_name,
                        how=how, layers=layer_names, head=head, source="saved_model",
                        class_count=int(np.prod(output_tensor.shape.as_list()[1:])))


def _fix_batch_of_one(graph_def, placeholder_name: str) -> None:
    for node in graph_def.node:
        if node.name == placeholder_name and node.op == "Placeholder":
            dims = node.attr["shape"].shape.dim
            if dims:
                dims[0].size = 1


# Ops that carry no computation of a layer (variables read, plumbing of inlined calls).
_PLUMBING_OPS = ("Const", "Identity", "NoOp", "Placeholder")


def _graph_layers(graph) -> dict[str, list]:
    """The graph's layers: name scope just under the model's scope -> its ops, in graph order."""
    compute_ops = [op for op in graph.get_operations()
                   if op.type not in _PLUMBING_OPS and not op.name.startswith("Func/")]
    if not compute_ops:
        return {}
    paths = [op.name.split("/") for op in compute_ops]
    prefix = paths[0][:-1]
    for path in paths[1:]:
        depth = 0
        while depth < min(len(prefix), len(path) - 1) and prefix[depth] == path[depth]:
            depth += 1
        prefix = prefix[:depth]
    scopes: dict[str, list] = {}
    for op, path in zip(compute_ops, paths):
        scopes.setdefault(path[len(prefix)], []).append(op)
    return scopes


def _scope_of(op_name: str, scopes: dict[str, list]) -> Optional[str]:
    for scope, ops in scopes.items():
        if any(op.name == op_name for op in ops):
            return scope
    return None


def _match_scope(layer: str, scopes: Sequence[str]) -> str:
    if layer in scopes:
        return layer
    # Keras 3 traces layers under uniquified scopes ("embedding" becomes "embedding_1").
    traced = [scope for scope in scopes if re.fullmatch(re.escape(layer) + r"_\d+", scope)]
    if len(traced) == 1:
        return traced[0]
    raise ConversionError(f"no layer named '{layer}'; the model's layers (graph scopes): "
                          f"{', '.join(scopes)}")


def _scope_output(ops: list, scope: str):
    """The last tensor a scope hands to ops outside it: the layer's output."""
    inside = {op.name for op in ops}
    for op in reversed(ops):
        for tensor in op.outputs:
            consumers = tensor.consumers()
            if tensor.dtype.is_floating and any(c.name not in inside for c in consumers):
                return tensor
    raise ConversionError(f"graph scope '{scope}' has no output used by the rest of the model")


def _graph_classifier(graph, output_tensor, layer_names: Sequence[str]):
    """The last matrix product on the way to the output: the classifier's Dense layer."""
    ancestors, stack = set(), [output_tensor.op]
    while stack:
        op = stack.pop()
        if op.name in ancestors:
            continue
        ancestors.add(op.name)
        stack.extend(tensor.op for tensor in op.inputs)
    products = [op for op in graph.get_operations()
                if op.type in MATMUL_OPS and op.name in ancestors]
    if not products:
        raise ConversionError(f"the model has no Dense classifier before its output; pass --layer "
                              f"to choose the cut (layers: {', '.join(layer_names)})")
    return products[-1]


def _freeze(tf, concrete_function):
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    try:
        return convert_variables_to_constants_v2(concrete_function)
    except Exception as exc:
        raise ConversionError(f"cannot freeze the model's variables ({_first_line(exc)})") from None


def _tensorflow():
    from models.tf_setup import configure_tensorflow

    return configure_tensorflow()


# --------------------------------------------------------------------------------------------
# Converting


def convert_float32(cut: EmbeddingCut) -> bytes:
    """Convert the frozen embedder to a float32 TFLite flatbuffer, built-in ops only.

    Raises
    ------
    ConversionError
        The converter failed (for example an op with no built-in TFLite kernel).
    """
    tf = _tensorflow()
    converter = _converter(tf, cut)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    model = _run_converter(converter, "float32")
    _check_io(model, "float32", cut)
    return model


def convert_int8(cut: EmbeddingCut, calibration_rows: np.ndarray, per_channel_dense: bool = False) -> bytes:
    """Convert the frozen embedder to a full-int8 TFLite flatbuffer with float32 input and output.

    Parameters
    ----------
    cut : EmbeddingCut
    calibration_rows : numpy.ndarray
        (rows, input_width) front-end features that set the activation ranges: a few hundred
        representative rows are enough.
    per_channel_dense : bool
        Quantize dense (FULLY_CONNECTED) weights with one scale per output channel, the
        converter's default. Off by default: Edge Impulse's SDK fork of TFLM, which Studio's C++
        export compiles, applies one scale to the whole layer and silently computes wrong
        embeddings from a per-channel layer (`../shared/docs/on-device.md`).

    Raises
    ------
    ConversionError
        The converter failed, or an op inside the model is not int8.
    """
    tf = _tensorflow()
    rows = np.asarray(calibration_rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != cut.input_width or len(rows) == 0:
        raise ConversionError(f"calibration rows of shape {rows.shape}; the model takes "
                              f"(rows, {cut.input_width})")
    if not np.isfinite(rows).all():
        raise ConversionError("calibration rows contain NaN or infinity")

    def representative_dataset():
        for row in rows:
            yield [row[np.newaxis]]

    converter = _converter(tf, cut)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel_dense
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # The block feeds float features and returns float embeddings; quantizing stays inside.
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    model = _run_converter(converter, "int8")
    _check_io(model, "int8", cut)
    violations = float_ops_inside(model)
    if violations:
        raise ConversionError(f"the int8 model still computes in float: "
                              f"{'; '.join(violations[:5])}")
    return model


def check_int8_on_devices(int8_model: bytes, rows: np.ndarray, per_channel_dense: bool = False) -> dict:
    """The int8 embedder on upstream TFLM and the EI SDK fork against LiteRT, on `rows`.

    Returns per runtime the worst relative L2 to LiteRT and the arena used (the EI fork runner
    measures it on a 64-bit host). Raises ConversionError naming the runtime and why when the
    model does not load, run or agree.
    """
    from models.device_runtimes import DeviceRuntimeError, check_on_devices

    try:
        results = check_on_devices(int8_model, rows, MAX_DEVICE_RELATIVE_L2, skip_ei_fork=per_channel_dense)
    except DeviceRuntimeError as exc:
        raise ConversionError(f"the int8 model fails on the device: {exc}") from None
    if per_channel_dense:
        results["EI SDK fork"] = {"skipped": "per-channel dense layers, which it computes wrongly"}
    results["rows"] = int(len(rows))
    return {name: ({k: _round(v) if isinstance(v, float) else v for k, v in value.items()}
                   if isinstance(value, dict) else value) for name, value in results.items()}


def _converter(tf, cut: EmbeddingCut):
    # The frozen function has no variables; the holder only avoids the deprecated code path.
    holder = tf.Module()
    holder.embed = cut.function
    return tf.lite.TFLiteConverter.from_concrete_functions([cut.function], holder)


def _run_converter(converter, kind: str) -> bytes:
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
        raise ConversionError(f"{kind} conversion failed: {_first_line(exc)}") from None


def _check_io(model: bytes, kind: str, cut: EmbeddingCut) -> None:
    interpreter = _interpreter(model)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    expected_in, expected_out = [1, cut.input_width], [1, cut.embedding_size]
    actual = [(list(d["shape"]), d["dtype"]) for d in (*inputs, *outputs)]
    if actual != [(expected_in, np.float32), (expected_out, np.float32)]:
        raise ConversionError(f"the {kind} model has tensors {actual}; expected float32 "
                              f"{expected_in} in and float32 {expected_out} out")


def float_ops_inside(model: bytes) -> list[str]:
    """Ops of a TFLite model that compute in float, apart from the int8 model's edges.

    Parameters
    ----------
    model : bytes
        A TFLite flatbuffer.

    Returns
    -------
    list of str
        One description per offending op; empty when every op but the QUANTIZE of the input and
        the DEQUANTIZE of the output works on integer tensors.
    """
    interpreter = _interpreter(model)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    edges = {d["index"] for d in (*interpreter.get_input_details(),
                                   *interpreter.get_output_details())}
    violations = []
    for op in interpreter._get_ops_details():
        used = [i for i in (*op["inputs"], *op["outputs"]) if i >= 0 and i not in edges]
        floats = [tensors[i]["name"] for i in used
                  if np.issubdtype(tensors[i]["dtype"], np.floating)]
        if floats:
            violations.append(f"{op['op_name']} on float tensor(s) {', '.join(floats)}")
    return violations


def _interpreter(model: bytes, threads: int = 1):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        # Without default delegates, ops are listed as converted (XNNPACK would merge them).
        interpreter = Interpreter(
            model_content=model, num_threads=threads,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    except Exception as exc:
        raise ConversionError(f"the converted model does not load in LiteRT "
                              f"({_first_line(exc)})") from None
    return interpreter


def run_tflite(model: bytes, rows: np.ndarray) -> np.ndarray:
    """Run a batch-of-one TFLite embedder on each row.

    Parameters
    ----------
    model : bytes
        TFLite flatbuffer with float32 (1, width) input and float32 (1, size) output.
    rows : numpy.ndarray
        (rows, width) features.

    Returns
    -------
    numpy.ndarray
        (rows, size) float32.
    """
    from dsp.embeddings.model import make_interpreter

    # As the server runs it, so training figures are the served embeddings'.
    interpreter = make_interpreter(model)
    input_index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]
    result = np.empty((len(rows), int(np.prod(output["shape"][1:]))), dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    for i in range(len(rows)):
        interpreter.set_tensor(input_index, rows[i:i + 1])
        interpreter.invoke()
        result[i] = interpreter.get_tensor(output["index"]).reshape(-1)
    return result


def run_tensorflow(cut: EmbeddingCut, rows: np.ndarray) -> np.ndarray:
    """The frozen embedder run by TensorFlow, one row at a time: the conversion's reference."""
    tf = _tensorflow()
    outputs = []
    for row in np.asarray(rows, dtype=np.float32):
        result = cut.function(tf.constant(row[np.newaxis]))
        # A frozen function may return its single output bare or in a list.
        outputs.append(np.asarray(result[0] if isinstance(result, (list, tuple)) else result))
    return np.concatenate(outputs).reshape(len(outputs), -1)


def check_float32_matches(cut: EmbeddingCut, float32_model: bytes, rows: np.ndarray) -> float:
    """Largest relative L2 difference between TensorFlow and the float32 TFLite model.

    Raises
    ------
    ConversionError
        When it exceeds FLOAT32_TOLERANCE: the float32 model is not the model it came from.
    """
    reference = run_tensorflow(cut, rows)
    converted = run_tflite(float32_model, rows)
    difference = float(np.max(_relative_l2(converted, reference)))
    if difference > FLOAT32_TOLERANCE:
        raise ConversionError(f"the float32 TFLite model differs from TensorFlow by "
                              f"{difference:.2g} (relative L2; tolerance {FLOAT32_TOLERANCE:g})")
    return difference


# --------------------------------------------------------------------------------------------
# Measuring


def split_rows(row_count: int, calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
               agreement_samples: int = DEFAULT_AGREEMENT_SAMPLES,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint row indices: calibration rows and held-out rows for the agreement.

    At most half the rows calibrate, so a small file still leaves rows to measure on.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Sorted calibration indices, sorted held-out indices (at most `agreement_samples`).
    """
    if row_count < 2:
        raise ConversionError(f"{row_count} row(s); need at least 2 (calibration and held-out)")
    if calibration_samples < 1 or agreement_samples < 1:
        raise ConversionError("calibration and agreement sample counts must be at least 1")
    order = np.random.default_rng(seed).permutation(row_count)
    calibration_count = min(calibration_samples, row_count // 2)
    calibration = np.sort(order[:calibration_count])
    held_out = np.sort(order[calibration_count:calibration_count + agreement_samples])
    return calibration, held_out


def agreement(float32_model: bytes, int8_model: bytes, rows: np.ndarray,
              head: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> dict:
    """How closely the int8 embedder follows the float32 one.

    Parameters
    ----------
    float32_model, int8_model : bytes
        TFLite flatbuffers of the same embedder.
    rows : numpy.ndarray
        (rows, width) features the int8 model was not calibrated on.
    head : callable, optional
        Embeddings -> class scores (the cut-off classifier); adds the argmax agreement.

    Returns
    -------
    dict
        rows; relative_l2 (|int8 - float32| / |float32| per embedding: mean, p95, max);
        cosine (cosine similarity per embedding: mean, p5, min); argmax_agreement (fraction of
        rows where the classifier picks the same class from both embeddings) when `head` is given;
        each figure with how it was measured.
    """
    reference = run_tflite(float32_model, rows)
    quantized = run_tflite(int8_model, rows)
    relative = _relative_l2(quantized, reference)
    cosine = _cosine(quantized, reference)
    figures = {
        "rows": int(len(rows)),
        "relative_l2": {"mean": _round(relative.mean()), "p95": _round(np.percentile(relative, 95)),
                        "max": _round(relative.max()),
                        "how": "per held-out row: L2 norm of (int8 - float32 embedding) / L2 norm "
                               "of the float32 embedding"},
        "cosine": {"mean": _round(cosine.mean()), "p5": _round(np.percentile(cosine, 5)),
                   "min": _round(cosine.min()),
                   "how": "per held-out row: cosine similarity of the int8 and float32 embeddings"},
    }
    if head is not None:
        same = np.argmax(head(quantized), axis=1) == np.argmax(head(reference), axis=1)
        figures["argmax_agreement"] = {
            "value": _round(same.mean()),
            "how": "fraction of held-out rows where the original classifier layers, applied to the "
                   "int8 and to the float32 embedding, pick the same class"}
    return figures


def _relative_l2(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(reference, axis=1)
    return np.linalg.norm(values - reference, axis=1) / np.maximum(norms, 1e-12)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cosine = np.sum(a * b, axis=1) / np.maximum(norm_a * norm_b, 1e-24)
    # Two all-zero embeddings (all-ReLU-dead) agree perfectly.
    return np.where((norm_a == 0) & (norm_b == 0), 1.0, cosine)


def _round(value: float) -> float:
    return float(f"{float(value):.6g}")


# --------------------------------------------------------------------------------------------
# Metadata


def build_metadata(*, name: str, description: str, frontend: dict, input_width: int,
                   embedding_size: int, classes: Sequence[str], data: dict, quality: dict,
                   conversion: dict, files: dict, extra: Optional[dict] = None) -> dict:
    """The `<name>.json` metadata of `models/README.md`, checked (see `validate_metadata`)."""
    metadata = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "frontend": {key: frontend[key] for key in ("block", "implementation_version", "params")},
        "sampling_freq": frontend["sampling_freq"],
        "window_samples": frontend["window_samples"],
        "axes": frontend.get("axes", 1),
        "input": {"shape": [1, int(input_width)], "dtype": "float32", "layout": INPUT_LAYOUT},
        "output": {"shape": [1, int(embedding_size)], "dtype": "float32"},
        "classes": list(classes),
        "files": dict(files),
        "data": dict(data),
        "quality": dict(quality),
        "conversion": dict(conversion),
        **(extra or {}),
    }
    validate_metadata(metadata)
    return metadata


def write_metadata(path: "str | Path", metadata: dict) -> Path:
    """Check the metadata and write it as `path` (indented JSON).

    Raises
    ------
    ConversionError
        Incomplete or invalid metadata (nothing is written then).
    """
    validate_metadata(metadata)
    path = Path(path)
    path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return path


def validate_metadata(metadata: dict) -> None:
    """Check that the metadata has every field of `models/README.md`, with sensible values.

    Raises
    ------
    ConversionError
        Listing every problem found.
    """
    problems = []

    def get(*keys):
        value = metadata
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                problems.append(f"no '{'.'.join(keys)}'")
                return None
            value = value[key]
        return value

    def require(condition: bool, text: str):
        if not condition:
            problems.append(text)

    require(get("format_version") == FORMAT_VERSION, f"format_version is not {FORMAT_VERSION}")
    for key in ("name", "description"):
        value = get(key)
        require(isinstance(value, str) and value != "", f"'{key}' is not a non-empty string")
    require(get("frontend", "block") in FRONTEND_BLOCKS,
            f"frontend.block is not one of {', '.join(FRONTEND_BLOCKS)}")
    require(_is_int(get("frontend", "implementation_version")),
            "frontend.implementation_version is not an integer")
    params = get("frontend", "params")
    require(isinstance(params, dict) and len(params) > 0, "frontend.params is empty")
    sampling_freq = get("sampling_freq")
    require(isinstance(sampling_freq, (int, float)) and sampling_freq > 0,
            "sampling_freq is not a positive number")
    for key in ("window_samples", "axes"):
        value = get(key)
        require(_is_int(value) and value > 0, f"'{key}' is not a positive integer")
    for key in ("input", "output"):
        shape = get(key, "shape")
        require(isinstance(shape, list) and len(shape) == 2 and shape[0] == 1
                and _is_int(shape[1]) and shape[1] > 0, f"{key}.shape is not [1, n]")
        require(get(key, "dtype") == "float32", f"{key}.dtype is not float32")
    classes = get("classes")
    require(isinstance(classes, list) and all(isinstance(c, str) for c in classes or []),
            "classes is not a list of strings")
    for key in ("int8", "float32"):
        value = get("files", key)
        require(isinstance(value, str) and value.endswith(".tflite"),
                f"files.{key} is not a .tflite file name")
    for key in ("dataset", "licence", "attribution", "made_by"):
        value = get("data", key)
        require(isinstance(value, str) and value != "", f"data.{key} is not a non-empty string")
    require(isinstance(get("quality"), dict), "quality is not an object")
    command = get("conversion", "command")
    require(isinstance(command, str) and command != "", "conversion.command is empty")
    require(isinstance(get("conversion", "int8_vs_float32"), dict),
            "conversion.int8_vs_float32 is not an object")
    if problems:
        raise ConversionError("invalid metadata: " + "; ".join(dict.fromkeys(problems)))


# --------------------------------------------------------------------------------------------
# The whole step


def make_embedder(model: Any, features: np.ndarray, *, frontend: dict, command: str,
                  layer: Optional[str] = None, classes: Optional[Sequence[str]] = None,
                  calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
                  agreement_samples: int = DEFAULT_AGREEMENT_SAMPLES,
                  seed: int = 0, per_channel_dense: bool = False,
                  device_check: bool = True) -> Embedder:
    """Cut, check, convert to float32 and int8, measure their agreement, and run the int8 model
    on the device runtimes (writes nothing).

    Parameters
    ----------
    model : keras.Model, str or Path
        See `cut_embedding_model`.
    features : numpy.ndarray
        (rows, input_width) front-end features (`input.npy`).
    frontend : dict
        As returned by `load_frontend` / `check_frontend`.
    command : str
        The command that made the model files (recorded in the metadata).
    layer : str, optional
        Cut layer (default: before the classifier).
    classes : sequence of str, optional
        Class names in the classifier's output order.
    calibration_samples, agreement_samples, seed : int
        Rows that calibrate the int8 model, rows held out to measure it, and the seed that
        draws them.
    per_channel_dense : bool
        See `convert_int8` (default per tensor, which every device runtime computes right).
    device_check : bool
        Run the int8 model on upstream TFLM and, where `../shared/device/ei-sdk-tflm` is
        present, on Edge Impulse's SDK fork (skipped for per-channel dense layers, which it
        computes wrongly), on held-out rows; their embeddings must be within
        `MAX_DEVICE_RELATIVE_L2` of LiteRT's.

    Returns
    -------
    Embedder

    Raises
    ------
    ConversionError
        Any step failed.
    """
    import keras

    tf = _tensorflow()
    features = check_features(np.asarray(features), "input features")
    cut = cut_embedding_model(model, layer)
    if features.shape[1] != cut.input_width:
        raise ConversionError(f"input features have {features.shape[1]} values per row; the model "
                              f"takes {cut.input_width}")
    if frontend["width"] != cut.input_width:
        raise ConversionError(
            f"the front-end ({frontend['block']} v{frontend['implementation_version']} on "
            f"{frontend['window_samples']} samples) gives {frontend['width']} features per window; "
            f"the model takes {cut.input_width}")
    classes = list(classes or [])
    if classes and cut.class_count is not None and len(classes) != cut.class_count:
        raise ConversionError(f"{len(classes)} class names for a classifier with "
                              f"{cut.class_count} outputs")

    from models.footprint import footprint

    calibration_index, held_out_index = split_rows(len(features), calibration_samples,
                                                   agreement_samples, seed)
    float32_model = convert_float32(cut)
    float32_difference = check_float32_matches(cut, float32_model,
                                               features[held_out_index[:20]])
    int8_model = convert_int8(cut, features[calibration_index], per_channel_dense)
    figures = agreement(float32_model, int8_model, features[held_out_index], cut.head)
    devices = (check_int8_on_devices(int8_model, features[held_out_index[:DEVICE_CHECK_ROWS]], per_channel_dense)
               if device_check else {"skipped": "not asked for"})
    conversion = {
        "command": command,
        "cut": {"layer": cut.cut_layer, "how": cut.how, "source": cut.source},
        "calibration": {"rows": int(len(calibration_index)), "of_rows": int(len(features)),
                        "seed": seed, "how": "seeded random subset of the input features, each "
                        "row fed as a batch of 1; disjoint from the held-out rows"},
        "float32_vs_tensorflow_max_relative_l2": _round(float32_difference),
        "int8_vs_float32": figures,
        "dense_quantization": "per-channel" if per_channel_dense else "per-tensor",
        "int8_on_devices": devices,
        "sizes_bytes": {"int8": len(int8_model), "float32": len(float32_model)},
        "int8_footprint": footprint(int8_model, arena=device_check),
        "int8_ops": _op_counts(int8_model),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    return Embedder(cut=cut, float32_model=float32_model, int8_model=int8_model,
                    conversion=conversion, classes=classes, held_out_rows=held_out_index)


def save_embedder(embedder: Embedder, *, out_dir: "str | Path", name: str, frontend: dict,
                  data: Optional[dict] = None, quality: Optional[dict] = None,
                  description: Optional[str] = None,
                  extra: Optional[dict] = None) -> tuple[dict, dict[str, Path]]:
    """Write `<name>.float32.tflite`, `<name>.tflite` and `<name>.json` into `out_dir`.

    Parameters
    ----------
    embedder : Embedder
        From `make_embedder`.
    out_dir : str or Path
        Created if needed.
    name : str
        File stem and metadata name: letters, digits, '.', '_', '-'.
    frontend : dict
        As returned by `load_frontend` / `check_frontend`.
    data : dict, optional
        Provenance: dataset, licence, attribution, made_by (default: marked unknown).
    quality : dict, optional
        Measured figures, each with how it was measured.
    description : str, optional
        One sentence (default: made from the cut).
    extra : dict, optional
        More top-level metadata keys (for example how the model was trained).

    Returns
    -------
    (dict, dict of str to Path)
        The metadata, and the paths written (int8, float32, metadata).

    Raises
    ------
    ConversionError
        Bad name or incomplete metadata; nothing is written then.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConversionError(f"model name '{name}' must be letters, digits, '.', '_' or '-'")
    cut = embedder.cut
    data = data or {
        "dataset": "front-end features given to the conversion command (provenance not given)",
        "licence": "unknown (pass --data-json)",
        "attribution": "unknown (pass --data-json)",
        "made_by": "unknown (pass --data-json)",
    }
    description = description or (f"Embeddings ({cut.embedding_size} values) of a classifier "
                                  f"cut at '{cut.cut_layer}', on {frontend['block']} features.")
    files = {"int8": f"{name}.tflite", "float32": f"{name}.float32.tflite"}
    metadata = build_metadata(name=name, description=description, frontend=frontend,
                              input_width=cut.input_width, embedding_size=cut.embedding_size,
                              classes=embedder.classes, data=data, quality=quality or {},
                              conversion=embedder.conversion, files=files, extra=extra)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"int8": out_dir / files["int8"], "float32": out_dir / files["float32"],
             "metadata": out_dir / f"{name}.json"}
    paths["float32"].write_bytes(embedder.float32_model)
    paths["int8"].write_bytes(embedder.int8_model)
    write_metadata(paths["metadata"], metadata)
    return metadata, paths


def export_embedder(model: Any, features: np.ndarray, *, out_dir: "str | Path", name: str,
                    frontend: dict, command: str, layer: Optional[str] = None,
                    classes: Optional[Sequence[str]] = None, data: Optional[dict] = None,
                    quality: Optional[dict] = None, description: Optional[str] = None,
                    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
                    agreement_samples: int = DEFAULT_AGREEMENT_SAMPLES, seed: int = 0,
                    extra: Optional[dict] = None, per_channel_dense: bool = False) -> ExportResult:
    """`make_embedder` then `save_embedder`: the whole command, as a function.

    Nothing is written unless every step succeeded. See those two functions for the parameters.
    """
    embedder = make_embedder(model, features, frontend=frontend, command=command, layer=layer,
                             classes=classes, calibration_samples=calibration_samples,
                             agreement_samples=agreement_samples, seed=seed,
                             per_channel_dense=per_channel_dense)
    metadata, paths = save_embedder(embedder, out_dir=out_dir, name=name, frontend=frontend,
                                    data=data, quality=quality, description=description,
                                    extra=extra)
    return ExportResult(metadata=metadata, paths=paths, embedder=embedder)


def _op_counts(model: bytes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in _interpreter(model)._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts


# --------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.convert_embeddings",
        description="Cut a trained classifier before its classifier layer and write int8 and "
                    "float32 TFLite embedders plus their metadata.")
    parser.add_argument("model", help=".keras file or SavedModel directory")
    parser.add_argument("input_npy", help="front-end features (rows, features), as Studio's "
                                          "X_train.npy")
    parser.add_argument("--out-dir", default="models", help="where to write (default: models)")
    parser.add_argument("--name", required=True, help="file stem and model name")
    parser.add_argument("--frontend-json", required=True,
                        help="front-end block, version, params, sampling_freq, window_samples")
    parser.add_argument("--layer", help="cut at this layer's output (default: before the "
                                        "classifier)")
    parser.add_argument("--classes", help="comma-separated class names, in output order")
    parser.add_argument("--calibration-samples", type=int, default=DEFAULT_CALIBRATION_SAMPLES,
                        help=f"rows that calibrate int8 (default {DEFAULT_CALIBRATION_SAMPLES})")
    parser.add_argument("--agreement-samples", type=int, default=DEFAULT_AGREEMENT_SAMPLES,
                        help=f"held-out rows for the int8 agreement (default "
                             f"{DEFAULT_AGREEMENT_SAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the row draw (default 0)")
    parser.add_argument("--data-json", help="data provenance: dataset, licence, attribution, "
                                            "made_by")
    parser.add_argument("--quality-json", help="measured quality figures to record")
    parser.add_argument("--description", help="one sentence for the metadata")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow threads (default 2)")
    parser.add_argument("--per-channel-dense", action="store_true",
                        help="quantize dense layers per channel (default per tensor: Edge Impulse's "
                             "device runtime computes per-channel dense layers wrongly)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; returns the exit status (0 only when every file was written)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        # Cheap checks first: a typo fails before TensorFlow loads.
        features = load_features(args.input_npy)
        frontend = load_frontend(args.frontend_json)
        data = _load_json_object(args.data_json, "data") if args.data_json else None
        quality = _load_json_object(args.quality_json, "quality") if args.quality_json else None
        if not Path(args.model).exists():
            raise ConversionError(f"{args.model}: no such model (a .keras file or a SavedModel "
                                  f"directory)")
        from models.tf_setup import configure_tensorflow

        configure_tensorflow(args.threads)
        command = " ".join(shlex.quote(a) for a in ["python", "-m", "models.convert_embeddings",
                                                     *argv])
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        if args.per_channel_dense:
            print(f"convert_embeddings: warning: {PER_CHANNEL_WARNING}", file=sys.stderr)
        result = export_embedder(
            args.model, features, out_dir=args.out_dir, name=args.name, frontend=frontend,
            command=command, layer=args.layer, classes=classes, data=data, quality=quality,
            description=args.description, calibration_samples=args.calibration_samples,
            agreement_samples=args.agreement_samples, seed=args.seed,
            per_channel_dense=args.per_channel_dense)
    except ConversionError as exc:
        print(f"convert_embeddings: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an unforeseen TensorFlow failure: still one line
        print(f"convert_embeddings: error: unexpected {type(exc).__name__}: {_first_line(exc)}",
              file=sys.stderr)
        return 1
    _print_summary(result)
    return _build_raw_window_model(result.paths["metadata"])


def _build_raw_window_model(metadata_path: Path) -> int:
    """The raw-window model for /tflite-impl, beside the embedder (when the front-end allows)."""
    from models.raw_window_model import UnsupportedFrontend, build_and_record

    try:
        build_and_record(metadata_path, log=lambda line: print(line) if line.startswith("wrote") else None)
    except UnsupportedFrontend as exc:
        # The embedder is still served by /run and /batch; only /tflite-impl is unavailable.
        print(f"convert_embeddings: note: no raw-window model ({_one_line(str(exc))}); "
              "the block will announce hasTfliteImplementation false", file=sys.stderr)
    except ValueError as exc:
        print(f"convert_embeddings: error: raw-window model: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    return 0


def _print_summary(result: ExportResult) -> None:
    figures = result.metadata["conversion"]["int8_vs_float32"]
    for path in result.paths.values():
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    cut = result.embedder.cut
    print(f"cut: {cut.how}; embedding of {cut.embedding_size} values")
    line = (f"int8 vs float32 on {figures['rows']} held-out rows: relative L2 mean "
            f"{figures['relative_l2']['mean']:.4g}, p95 {figures['relative_l2']['p95']:.4g}, max "
            f"{figures['relative_l2']['max']:.4g}; cosine mean {figures['cosine']['mean']:.4g}, "
            f"min {figures['cosine']['min']:.4g}")
    if "argmax_agreement" in figures:
        line += f"; classifier argmax agreement {figures['argmax_agreement']['value']:.4g}"
    print(line)


def _load_json_object(path: str, what: str) -> dict:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such {what} JSON file") from None
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path}: unreadable {what} JSON ({_first_line(exc)})") from None
    if not isinstance(value, dict):
        raise ConversionError(f"{path}: the {what} JSON must be an object")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
