"""The raw-window model behind ``POST /tflite-impl``: raw window in, embedding out.

Studio runs the file returned by ``/tflite-impl`` directly on the block's raw input signal
(see the protocol notes, section 1.5), so the model must do everything ``/run`` does: the
front-end block (spectrogram or MFE) and then the int8 embedder ``<name>.tflite``.

How the model is built
----------------------
1. The front-end is written as a TF graph with a fixed input of shape [1, window_samples],
   float32, mirroring `dsp.audio.spectrogram.spectrogram` and `dsp.audio.mfe.mfe` step by step:
   one slice per frame (frames longer than the FFT truncated, shorter ones zero-padded; the
   window is never copied whole, which would cost its size again in a TFLM arena), the power
   spectrum ``|rfft|**2 / fft_length`` as the radix-2 FFT of `models.radix2_fft` (TFLM has no
   RFFT2D and no complex types; its exact differences keep the bins that are exactly zero in
   float64 exactly zero, where a float32 DFT matrix leaks -40 to -60 dB and ruins the dB
   scaling), frames through the FFT in groups of at most `FFT_GROUP_FLOATS` floats, then the
   version's scaling. Conditionals are arithmetic on comparison results (EQUAL/LESS then CAST)
   instead of SELECT, which only the EI fork has. Every op is one that upstream TFLM and Edge
   Impulse's TFLM fork both run (`../shared/docs/on-device.md`).
2. That graph is converted to a float32 TFLite flatbuffer with built-in ops only. The
   front-end stays float: int8 would destroy the dB scaling.
3. The front-end flatbuffer and the shipped int8 embedder flatbuffer are stitched into one
   subgraph (tensors, buffers, operator codes and operators of the embedder appended with
   remapped indices; the front-end output feeds the embedder's first operator), so the raw
   model holds byte for byte the same int8 embedder as ``/run`` uses.

Supported front-ends: spectrogram versions 1 to 4 and MFE versions 3 and 4. MFE versions 1
and 2 (sliding-window mean normalisation, then a min-max that depends on exact zeros) and
MFCC are not supported; asking for them raises `UnsupportedFrontend`.

Agreement with ``/run`` is measured on `models.hard_windows.hard_windows` with
`relative_l2` (see there for the all-zero embedding case) in LiteRT, upstream TFLM and the EI
fork (`models.device_runtimes`), and recorded in the metadata with the model's footprint.

Usage::

    python -m models.raw_window_model models/<name>.json

writes ``<name>.raw.tflite`` beside the metadata and records ``raw_model`` in it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from dsp.audio.framing import check_fft_length, check_noise_floor, frame_layout
from dsp.audio.mel import ZERO_ENERGY, mel_filterbank
from models import radix2_fft

__all__ = [
    "SUPPORTED_FRONTENDS",
    "UnsupportedFrontend",
    "ONE_TREE_OPS",
    "RELATIVE_L2_FLOOR",
    "MAX_RELATIVE_L2",
    "build_raw_window_model",
    "build_frontend_tflite",
    "stitch_models",
    "frontend_features",
    "embedder_outputs",
    "raw_model_outputs",
    "relative_l2",
    "agreement",
    "op_names",
    "check_raw_window_model",
    "build_and_record",
    "main",
]

# Front-end block -> implementation versions the raw model reproduces.
SUPPORTED_FRONTENDS = {"spectrogram": (1, 2, 3, 4), "mfe": (3, 4)}

# Denominator floor of the relative L2 error: an all-zero /run embedding (silence through
# ReLUs) would otherwise divide by zero. Below it the figure is the absolute L2 error / 1e-6.
RELATIVE_L2_FLOOR = 1e-6
# The bar: the raw model's embedding within 1e-2 (relative L2) of /run's on every window.
MAX_RELATIVE_L2 = 1e-2

INT16_FULL_SCALE = 2**15
# MFE versions 3 and 4 (fixed in the block, not parameters).
MFE_PREEMPHASIS = 0.98
MFE_LEVELS = 2**8
# noise_floor_scale clips powers here before the logarithm.
POWER_FLOOR = 1e-30

# Flatbuffer buffers are aligned like the converter aligns them, so float weights stay
# loadable in place on micro-controllers.
_BUFFER_ALIGNMENT = 16

_FRONTEND_INPUT_NAME = "raw_window"
# TFLM's CONCATENATION kernel takes at most 10 inputs.
MAX_CONCAT_INPUTS = 8
# Floats per FFT intermediate tensor (frames x fft_length) at most, where a frame fits.
FFT_GROUP_FLOATS = 8192


# Ops that only one of the two TFLM trees runs (`../shared/docs/on-device.md`): the EI fork's
# extra ops and upstream's. RFFT2D is among the fork's, and computed wrongly there.
ONE_TREE_OPS = frozenset({
    "COMPLEX_ABS", "IMAG", "REAL", "REDUCE_ANY", "RFFT2D", "SCATTER_ND", "SELECT", "SELECT_V2",
    "TILE", "TOPK_V2", "DECODE", "DELAY", "DYNAMIC_UPDATE_SLICE", "EMBEDDING_LOOKUP", "REVERSE_V2"})


class UnsupportedFrontend(ValueError):
    """The metadata asks for a front-end the raw-window model cannot reproduce."""


# ---------------------------------------------------------------------------------------------
# The front-end graph
# ---------------------------------------------------------------------------------------------

def _check_supported(metadata: dict) -> tuple[str, int]:
    frontend = metadata["frontend"]
    block = frontend["block"]
    version = int(frontend["implementation_version"])
    supported = ", ".join(f"{name} v{'/'.join(map(str, versions))}"
                          for name, versions in SUPPORTED_FRONTENDS.items())
    if block not in SUPPORTED_FRONTENDS or version not in SUPPORTED_FRONTENDS[block]:
        raise UnsupportedFrontend(
            f"No raw-window model for the {block} block, implementation version {version}: "
            f"supported front-ends are {supported}. Use one of them for a model that "
            f"'POST /tflite-impl' can serve."
        )
    if int(metadata.get("axes", 1)) != 1:
        raise UnsupportedFrontend(
            f"The raw-window model takes one audio axis; the metadata has {metadata['axes']}."
        )
    return block, version


def _frontend_block(metadata: dict):
    """The server's front-end block object (what `/run` calls) for this metadata."""
    from dsp.audio import mfe, spectrogram

    _check_supported(metadata)
    return {"spectrogram": spectrogram.BLOCK, "mfe": mfe.BLOCK}[metadata["frontend"]["block"]]


def _resolved_params(metadata: dict) -> dict:
    """The front-end parameters typed and completed exactly as the embeddings block does."""
    from dsp.core.params import parameter_specs, resolve_params

    block = _frontend_block(metadata)
    return resolve_params(parameter_specs(block.parameters), metadata["frontend"]["params"])


def _frame_geometry(metadata: dict) -> tuple[int, int, int, int]:
    """(frame count, samples kept per frame, stride, fft_length), from the server's framing."""
    params = _resolved_params(metadata)
    version = int(metadata["frontend"]["implementation_version"])
    fft_length = int(params["fft_length"])
    check_fft_length(fft_length)
    layout = frame_layout(int(metadata["window_samples"]), float(metadata["sampling_freq"]),
                          float(params["frame_length"]), float(params["frame_stride"]), version)
    return layout.count, min(layout.length, fft_length), layout.stride, fft_length


def _make_frontend_function(metadata: dict):
    """The front-end as a tf.function of a float32 [1, window_samples] window.

    Returns
    -------
    tf.types.experimental.ConcreteFunction
        Output float32 [1, n_features], frame-major like the block's features.
    """
    tf = _tensorflow()

    block, version = _check_supported(metadata)
    params = _resolved_params(metadata)
    n_samples = int(metadata["window_samples"])
    n_frames, kept, stride, fft_length = _frame_geometry(metadata)
    if version >= 3:
        check_noise_floor(float(params["noise_floor_db"]))
    filterbank = None
    if block == "mfe":
        filterbank = mel_filterbank(int(params["num_filters"]), fft_length,
                                    float(metadata["sampling_freq"]), params["low_frequency"],
                                    params["high_frequency"], old_mels=version <= 3)

    if (n_frames - 1) * stride + kept > n_samples:
        raise ValueError("Frames run past the window's end; the block never does that.")
    # Frames go through the FFT in groups, so its intermediate tensors (a dozen per stage, each
    # group x fft_length floats) stay small in a TFLM arena; more groups cost more operators.
    group_size = max(1, FFT_GROUP_FLOATS // fft_length)
    groups = [range(first, min(first + group_size, n_frames))
              for first in range(0, n_frames, group_size)]

    def concatenated(parts, axis):
        while len(parts) > 1:
            parts = [tf.concat(parts[at:at + MAX_CONCAT_INPUTS], axis=axis)
                     if len(parts[at:at + MAX_CONCAT_INPUTS]) > 1 else parts[at]
                     for at in range(0, len(parts), MAX_CONCAT_INPUTS)]
        return parts[0]

    def frames_of(signal, frames: range, history: int = 0):
        # Frame k is signal[k*stride - history : k*stride + kept], one slice per frame, the
        # samples before the window's start taken from its end (np.roll, for the pre-emphasis).
        # Slicing frame by frame never copies the whole window: on the device, the float32
        # window is 64 KB for 1 s at 16 kHz, and every copy of it adds that much arena.
        pieces = []
        for frame in frames:
            start, stop = frame * stride - history, frame * stride + kept
            if start < 0:
                pieces.append(tf.concat([signal[:, start:], signal[:, :stop]], axis=1))
            else:
                pieces.append(signal[:, start:stop])
        return concatenated(pieces, axis=0)

    def padded(frames):
        if kept < fft_length:
            frames = tf.pad(frames, [[0, 0], [0, fft_length - kept]])
        return frames

    def power_spectrum(frames, count):
        backend = radix2_fft.Backend(
            concat=lambda parts, axis: tf.concat(parts, axis=axis),
            reshape=tf.reshape,
            gather=lambda x, indices, axis: tf.gather(x, tf.constant(indices), axis=axis),
            constant=lambda values: tf.constant(values, tf.float32))
        return radix2_fft.power_spectrum(frames, count, fft_length, backend)

    def grouped_power(prepare):
        # prepare(frames range) -> [frames, kept] samples ready for the FFT.
        return concatenated([power_spectrum(padded(prepare(frames)), len(frames))
                             for frames in groups], axis=0)

    def noise_floor_scale(power, clip_max):
        # (10 log10(max(P, 1e-30)) - floor) / (12 - floor), folded into one multiply-add.
        floor_db = float(params["noise_floor_db"])
        gain = 10.0 / math.log(10.0) / (12.0 - floor_db)
        offset = -floor_db / (12.0 - floor_db)
        scaled = tf.math.log(tf.maximum(power, POWER_FLOOR)) * gain + offset
        scaled = tf.maximum(scaled, 0.0)
        return scaled if clip_max is None else tf.minimum(scaled, clip_max)

    def as_float(condition):
        return tf.cast(condition, tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, n_samples], tf.float32,
                                                name=_FRONTEND_INPUT_NAME)])
    def frontend(window):
        if block == "spectrogram":
            if version == 3:
                # int16 audio (any |x| > 1) is brought to [-1, 1):
                # x * (1 + is_int16 * (2**-15 - 1)), exact in float32.
                is_int16 = as_float(tf.reduce_max(tf.abs(window)) > 1.0)
                gain = 1.0 + is_int16 * (1.0 / INT16_FULL_SCALE - 1.0)
                power = grouped_power(lambda frames: frames_of(window, frames) * gain)
            else:
                power = grouped_power(lambda frames: frames_of(window, frames))
            if version <= 2:
                lowest = tf.reduce_min(power)
                span = tf.reduce_max(power) - lowest
                # Silence (span 0) gives zeros, as upstream: divide by 1 instead of 0.
                features = (power - lowest) / (span + as_float(tf.equal(span, 0.0)))
            else:
                features = noise_floor_scale(power, clip_max=1.0 if version == 3 else None)
        else:
            # Each frame with the sample before it (the window's last one for the first frame,
            # as np.roll by one gives), so the pre-emphasis is done frame by frame.
            def emphasised(frames):
                scaled = frames_of(window, frames, history=1) * (1.0 / INT16_FULL_SCALE)
                return scaled[:, 1:] - tf.constant(MFE_PREEMPHASIS, tf.float32) * scaled[:, :-1]

            power = grouped_power(emphasised)
            energies = tf.matmul(power, tf.constant(filterbank.T, tf.float32))
            energies = energies + as_float(tf.equal(energies, 0.0)) * ZERO_ENERGY
            levels = tf.round(noise_floor_scale(energies, clip_max=1.0) * MFE_LEVELS)
            # uint8 wraps 256 to 0.
            levels = levels * as_float(levels < MFE_LEVELS)
            features = levels * (1.0 / MFE_LEVELS)
        return tf.reshape(features, [1, -1])

    return frontend.get_concrete_function()


def build_frontend_tflite(metadata: dict) -> bytes:
    """The front-end alone as a float32 TFLite flatbuffer (built-in ops only).

    Parameters
    ----------
    metadata : dict
        The model metadata (`models/README.md`): ``frontend``, ``sampling_freq``,
        ``window_samples``, ``axes``.

    Returns
    -------
    bytes
        Input float32 [1, window_samples], output float32 [1, n_features].

    Raises
    ------
    UnsupportedFrontend
        For a front-end other than spectrogram v1-v4 and MFE v3/v4.
    dsp.core.errors.ConfigurationError
        For parameters the block itself rejects.
    """
    tf = _tensorflow()

    concrete = _make_frontend_function(metadata)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = []
    return bytes(converter.convert())


# ---------------------------------------------------------------------------------------------
# Stitching two flatbuffers
# ---------------------------------------------------------------------------------------------

def _tensorflow():
    """TensorFlow with capped thread pools (shared build machines), imported on first use."""
    from models.tf_setup import configure_tensorflow

    return configure_tensorflow()


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _read(model_bytes: bytes):
    from tensorflow.lite.tools import flatbuffer_utils
    return flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))


def _pack(model) -> bytes:
    """Serialise a ModelT with every buffer 16-byte aligned."""
    import flatbuffers

    schema = _schema()

    class AlignedBuffer(schema.BufferT):
        def Pack(self, builder):  # noqa: N802 (flatbuffers' naming)
            data = None
            if self.data is not None and len(self.data):
                payload = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(payload), _BUFFER_ALIGNMENT)
                builder.head = builder.head - len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = payload
                builder.vectorNumElems = len(payload)
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            return schema.BufferEnd(builder)

    aligned = []
    for buffer in model.buffers:
        copy = AlignedBuffer()
        copy.data = buffer.data
        aligned.append(copy)
    model.buffers = aligned
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _opcode_key(code) -> tuple:
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
    return builtin, custom, code.version


def _opcode_index(model, builtin: int, version: int = 1) -> int:
    """Index of (builtin, version) in model.operatorCodes, appended when missing."""
    schema = _schema()
    for index, code in enumerate(model.operatorCodes):
        if _opcode_key(code) == (builtin, None, version):
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    # Codes above 127 live only in builtinCode; the deprecated field saturates there.
    code.deprecatedBuiltinCode = min(builtin,
                                     schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _quantization_of(tensor) -> tuple[list, list]:
    q = tensor.quantization
    if q is None or q.scale is None:
        return [], []
    return list(np.asarray(q.scale).ravel()), list(np.asarray(q.zeroPoint).ravel())


def stitch_models(frontend_tflite: bytes, embedder_tflite: bytes,
                  description: Optional[str] = None) -> bytes:
    """One flatbuffer that runs the front-end, then the embedder, unchanged.

    The embedder's tensors, buffers, operator codes and operators are appended to the
    front-end's single subgraph with remapped indices; the embedder's input tensor is replaced
    by the front-end's output (through a QUANTIZE op when the embedder takes int8 directly),
    and the model's outputs become the embedder's (through a DEQUANTIZE op when it returns
    int8), so the result is float32 in and out.

    Parameters
    ----------
    frontend_tflite : bytes
        One subgraph, one float32 input, one float32 output of shape [1, n_features].
    embedder_tflite : bytes
        One subgraph, one input of the front-end output's shape (float32, or int8 with
        quantization parameters), one output.
    description : str, optional
        Stored as the model's description.

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        When the two graphs cannot be joined (several subgraphs, inputs or outputs,
        mismatched feature counts, unsupported input type).
    """
    schema = _schema()
    frontend = _read(frontend_tflite)
    embedder = _read(embedder_tflite)
    for label, model in (("front-end", frontend), ("embedder", embedder)):
        if len(model.subgraphs) != 1:
            raise ValueError(f"The {label} model has {len(model.subgraphs)} subgraphs; "
                             f"stitching needs exactly one.")
        if getattr(model, "externalBuffers", None):
            raise ValueError(f"The {label} model keeps weights in external buffers.")
    graph, embedder_graph = frontend.subgraphs[0], embedder.subgraphs[0]
    if len(graph.outputs) != 1 or len(embedder_graph.inputs) != 1:
        raise ValueError("The front-end must have one output and the embedder one input.")
    if len(embedder_graph.outputs) != 1:
        raise ValueError(f"The embedder has {len(embedder_graph.outputs)} outputs; expected one.")

    features = graph.tensors[graph.outputs[0]]
    embedder_input = embedder_graph.tensors[embedder_graph.inputs[0]]
    n_features = int(np.prod(features.shape))
    if list(embedder_input.shape) != list(features.shape):
        raise ValueError(
            f"The front-end gives {n_features} features (shape {list(features.shape)}) but the "
            f"embedder takes shape {list(embedder_input.shape)}: check the metadata's "
            f"frontend parameters against the embedder."
        )
    if embedder_input.type not in (schema.TensorType.FLOAT32, schema.TensorType.INT8):
        raise ValueError(f"Embedder input type {embedder_input.type} is not float32 or int8.")
    float_input = embedder_input.type == schema.TensorType.FLOAT32

    # Buffers: copied only when an embedder tensor uses them (its metadata buffers are not).
    buffer_map = {0: 0}

    def buffer_index(old: int) -> int:
        if old not in buffer_map:
            frontend.buffers.append(embedder.buffers[old])
            buffer_map[old] = len(frontend.buffers) - 1
        return buffer_map[old]

    tensor_map = {-1: -1}
    for old_index, tensor in enumerate(embedder_graph.tensors):
        if old_index == embedder_graph.inputs[0] and float_input:
            # The float features tensor simply becomes the embedder's input.
            tensor_map[old_index] = graph.outputs[0]
            continue
        tensor.buffer = buffer_index(tensor.buffer)
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else (tensor.name or "")
        tensor.name = f"embedder/{name}"
        graph.tensors.append(tensor)
        tensor_map[old_index] = len(graph.tensors) - 1

    opcode_map = {}
    for old_index, code in enumerate(embedder.operatorCodes):
        key = _opcode_key(code)
        match = next((i for i, existing in enumerate(frontend.operatorCodes)
                      if _opcode_key(existing) == key), None)
        if match is None:
            frontend.operatorCodes.append(code)
            match = len(frontend.operatorCodes) - 1
        opcode_map[old_index] = match

    if not float_input:
        # An int8-input embedder expects its caller to quantise: do it in the graph.
        quantize = schema.OperatorT()
        quantize.opcodeIndex = _opcode_index(frontend, schema.BuiltinOperator.QUANTIZE)
        quantize.inputs = [graph.outputs[0]]
        quantize.outputs = [tensor_map[embedder_graph.inputs[0]]]
        graph.operators.append(quantize)

    for operator in embedder_graph.operators:
        operator.opcodeIndex = opcode_map[operator.opcodeIndex]
        operator.inputs = [tensor_map[i] for i in operator.inputs]
        operator.outputs = [tensor_map[i] for i in operator.outputs]
        if operator.intermediates is not None:
            operator.intermediates = [tensor_map[i] for i in operator.intermediates]
        graph.operators.append(operator)

    output_index = tensor_map[embedder_graph.outputs[0]]
    output = graph.tensors[output_index]
    if output.type != schema.TensorType.FLOAT32:
        if output.type != schema.TensorType.INT8:
            raise ValueError(f"Embedder output type {output.type} is not float32 or int8.")
        dequantized = schema.TensorT()
        dequantized.shape = list(output.shape)
        dequantized.type = schema.TensorType.FLOAT32
        dequantized.buffer = 0
        dequantized.name = "embedding"
        graph.tensors.append(dequantized)
        dequantize = schema.OperatorT()
        dequantize.opcodeIndex = _opcode_index(frontend, schema.BuiltinOperator.DEQUANTIZE)
        dequantize.inputs = [output_index]
        dequantize.outputs = [len(graph.tensors) - 1]
        graph.operators.append(dequantize)
        output_index = len(graph.tensors) - 1

    graph.outputs = [output_index]
    for signature in frontend.signatureDefs or []:
        signature.outputs = [schema.TensorMapT()]
        signature.outputs[0].name = "embedding"
        signature.outputs[0].tensorIndex = output_index
    _raise_min_runtime_version(frontend, embedder)
    if description is not None:
        frontend.description = description
    return _pack(frontend)


def _metadata_text(model, name: str) -> Optional[str]:
    for entry in model.metadata or []:
        entry_name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if entry_name == name:
            data = model.buffers[entry.buffer].data
            return bytes(np.asarray(data, dtype=np.uint8)).split(b"\0", 1)[0].decode()
    return None


def _raise_min_runtime_version(model, other) -> None:
    """Keep the 'min_runtime_version' metadata at the higher of the two models' values."""
    ours = _metadata_text(model, "min_runtime_version")
    theirs = _metadata_text(other, "min_runtime_version")
    if ours is None or theirs is None:
        return

    def as_tuple(text: str) -> tuple:
        return tuple(int(part) if part.isdigit() else 0 for part in text.split("."))

    if as_tuple(theirs) > as_tuple(ours):
        for entry in model.metadata:
            entry_name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
            if entry_name == "min_runtime_version":
                # The converter stores it as a zero-padded 16-byte string.
                padded = theirs.encode().ljust(max(16, len(theirs) + 1), b"\0")
                model.buffers[entry.buffer].data = np.frombuffer(padded, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Building, running and checking
# ---------------------------------------------------------------------------------------------

def build_raw_window_model(metadata: dict, embedder_tflite: bytes) -> bytes:
    """The raw-window model: float32 [1, window_samples] in, float32 embedding out.

    Parameters
    ----------
    metadata : dict
        The model metadata (`models/README.md`).
    embedder_tflite : bytes
        The shipped int8 embedder, ``<name>.tflite``, exactly as ``/run`` runs it.

    Returns
    -------
    bytes
        The TFLite flatbuffer: the float32 front-end followed by the unchanged embedder.

    Raises
    ------
    UnsupportedFrontend
        For a front-end other than spectrogram v1-v4 and MFE v3/v4 (the message names the
        supported ones).
    ValueError
        When the embedder does not take the front-end's features.
    """
    return stitch_models(build_frontend_tflite(metadata), embedder_tflite, _description(metadata))


def _description(metadata: dict) -> str:
    frontend = metadata["frontend"]
    return (f"Raw window ({metadata['window_samples']} samples at {metadata['sampling_freq']} Hz)"
            f" -> {frontend['block']} v{frontend['implementation_version']} front-end (float32)"
            f" -> {metadata.get('name', 'embedder')} int8 embedder")


def _interpreter(model_bytes: bytes):
    from dsp.embeddings.model import make_interpreter

    # As the server runs its embedder: one thread, builtin kernels (TFLM's numbers; XNNPACK's
    # int8 rounding differs).
    return make_interpreter(model_bytes)


def _run_rows(model_bytes: bytes, rows: np.ndarray) -> np.ndarray:
    """Run a one-input, one-output model on each row (a batch of 1 each time)."""
    interpreter = _interpreter(model_bytes)
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]
    outputs = []
    for row in rows:
        interpreter.set_tensor(source["index"],
                               row.reshape(source["shape"]).astype(source["dtype"]))
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_tensor(target["index"])).reshape(-1))
    return np.stack(outputs)


def frontend_features(metadata: dict, windows: np.ndarray) -> np.ndarray:
    """The features ``/run`` computes with the server's numpy blocks.

    Parameters
    ----------
    metadata : dict
    windows : numpy.ndarray
        Shape (windows, window_samples).

    Returns
    -------
    numpy.ndarray
        float64, shape (windows, n_features), frame-major.
    """
    from dsp.core.block import Request

    block = _frontend_block(metadata)
    raw = np.asarray(windows, dtype=np.float64)[:, :, None]
    request = Request(raw=raw, axes=["audio"], sampling_freq=float(metadata["sampling_freq"]),
                      implementation_version=int(metadata["frontend"]["implementation_version"]),
                      params=_resolved_params(metadata))
    return np.asarray(block.compute_batch(request).features, dtype=np.float64)


def embedder_outputs(embedder_tflite: bytes, features: np.ndarray) -> np.ndarray:
    """``/run``'s embeddings: features cast to float32, then the int8 embedder."""
    return _run_rows(embedder_tflite, np.asarray(features, dtype=np.float32))


def raw_model_outputs(raw_tflite: bytes, windows: np.ndarray) -> np.ndarray:
    """The raw-window model's embeddings for each window (float32 input)."""
    return _run_rows(raw_tflite, np.asarray(windows, dtype=np.float32))


def relative_l2(actual: np.ndarray, reference: np.ndarray,
                floor: float = RELATIVE_L2_FLOOR) -> float:
    """||actual - reference|| / max(||reference||, floor).

    With an all-zero reference (silence through ReLUs can give one), this is the absolute L2
    error divided by `floor`: any difference above 1e-8 then counts as a 1e-2 error.
    """
    difference = np.linalg.norm(np.asarray(actual, np.float64) - np.asarray(reference, np.float64))
    return float(difference / max(float(np.linalg.norm(reference)), floor))


def agreement(metadata: dict, raw_tflite: bytes, embedder_tflite: bytes,
              windows: dict[str, np.ndarray]) -> dict[str, float]:
    """Relative L2 error of the raw model against ``/run`` (numpy front-end + int8 embedder).

    Parameters
    ----------
    metadata : dict
    raw_tflite, embedder_tflite : bytes
    windows : dict of str to numpy.ndarray
        Named windows of window_samples samples (e.g. `models.hard_windows.hard_windows`).

    Returns
    -------
    dict of str to float
        Window name to `relative_l2`, in the order of `windows`.
    """
    names = list(windows)
    stacked = np.stack([np.asarray(windows[name], dtype=np.float64) for name in names])
    reference = embedder_outputs(embedder_tflite, frontend_features(metadata, stacked))
    actual = raw_model_outputs(raw_tflite, stacked)
    return {name: relative_l2(a, b) for name, a, b in zip(names, actual, reference)}


def op_names(model_bytes: bytes) -> list[str]:
    """Sorted names of the operator codes in a flatbuffer ('CUSTOM:<name>' for custom ops)."""
    schema = _schema()
    by_code = {value: name for name, value in vars(schema.BuiltinOperator).items()
               if not name.startswith("_")}
    names = set()
    for code in _read(model_bytes).operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.add(f"CUSTOM:{_opcode_key(code)[1]}")
        else:
            names.add(by_code.get(builtin, f"BUILTIN_{builtin}"))
    return sorted(names)


def check_raw_window_model(raw_tflite: bytes, window_samples: int,
                           embedding_size: Optional[int] = None) -> list[str]:
    """Check that the raw model loads and has the contract's inputs, outputs and ops.

    Parameters
    ----------
    raw_tflite : bytes
    window_samples : int
    embedding_size : int, optional
        Expected output width; not checked when None.

    Returns
    -------
    list of str
        The model's operator names (`op_names`).

    Raises
    ------
    ValueError
        On a custom or Flex (SELECT_TF_OPS) op, an op in `ONE_TREE_OPS`, or an input or output
        of the wrong shape or type.
    """
    names = op_names(raw_tflite)
    foreign = [name for name in names if name.startswith("CUSTOM") or "FLEX" in name.upper()]
    if foreign:
        raise ValueError(f"The raw model uses non-builtin ops: {foreign}.")
    one_tree = sorted(set(names) & ONE_TREE_OPS)
    if one_tree:
        raise ValueError(f"The raw model uses ops only one TFLM tree runs: {one_tree}.")
    interpreter = _interpreter(raw_tflite)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or list(inputs[0]["shape"]) != [1, window_samples] \
            or inputs[0]["dtype"] != np.float32:
        raise ValueError(f"Expected one float32 input [1, {window_samples}]; got "
                         f"{[(list(d['shape']), d['dtype'].__name__) for d in inputs]}.")
    expected_output = [1, embedding_size] if embedding_size is not None else None
    if len(outputs) != 1 or outputs[0]["dtype"] != np.float32 or len(outputs[0]["shape"]) != 2 \
            or (expected_output is not None and list(outputs[0]["shape"]) != expected_output):
        raise ValueError(f"Expected one float32 output {expected_output or '[1, n]'}; got "
                         f"{[(list(d['shape']), d['dtype'].__name__) for d in outputs]}.")
    runtime_ops = {detail["op_name"] for detail in interpreter._get_ops_details()}
    if any("Flex" in name or name == "CUSTOM" for name in runtime_ops):
        raise ValueError(f"The raw model runs non-builtin ops: {sorted(runtime_ops)}.")
    return names


# ---------------------------------------------------------------------------------------------
# Command line: build beside a shipped model and record the figures
# ---------------------------------------------------------------------------------------------

def build_and_record(metadata_path: Path, log: Callable[[str], None] = print) -> dict:
    """Build ``<name>.raw.tflite`` beside the metadata and record ``raw_model`` in it.

    Parameters
    ----------
    metadata_path : pathlib.Path
        ``models/<name>.json``; its ``files.int8`` names the embedder and ``files.raw`` (set
        to ``<name>.raw.tflite`` when missing) the file to write.
    log : callable
        Receives one progress line at a time.

    Returns
    -------
    dict
        The ``raw_model`` record written into the metadata.

    Raises
    ------
    ValueError
        When the raw model fails its checks or disagrees with ``/run`` beyond 1e-2 on a window
        (nothing is written then).
    """
    from models.device_runtimes import DeviceRuntimeError, check_on_devices
    from models.footprint import constant_bytes, footprint, smallest_board
    from models.hard_windows import hard_windows

    started = time.perf_counter()
    metadata_path = Path(metadata_path)
    metadata = json.loads(metadata_path.read_text())
    folder = metadata_path.parent
    files = metadata.setdefault("files", {})
    files.setdefault("raw", f"{metadata['name']}.raw.tflite")
    embedder = (folder / files["int8"]).read_bytes()

    frontend = build_frontend_tflite(metadata)
    raw = stitch_models(frontend, embedder, _description(metadata))
    embedding_size = metadata.get("output", {}).get("shape", [None, None])[-1]
    ops = check_raw_window_model(raw, int(metadata["window_samples"]), embedding_size)
    windows = hard_windows(int(metadata["window_samples"]), float(metadata["sampling_freq"]))
    names = list(windows)
    stacked = np.stack([windows[name] for name in names])
    run_features = frontend_features(metadata, stacked)
    run_embeddings = embedder_outputs(embedder, run_features)
    errors = dict(zip(names, (relative_l2(a, b) for a, b in
                              zip(raw_model_outputs(raw, stacked), run_embeddings))))
    worst_window = max(errors, key=errors.get)
    # The int8 embedder absorbs most float32 rounding; the features show what is left of it.
    feature_errors = [relative_l2(a, b) for a, b in zip(
        _run_rows(frontend, stacked.astype(np.float32)), run_features)]
    worst_feature = int(np.argmax(feature_errors))
    for name, error, feature_error in zip(errors, errors.values(), feature_errors):
        log(f"{name:32s} embedding relative L2 {error:.3g}, features {feature_error:.3g}")
    if errors[worst_window] > MAX_RELATIVE_L2:
        raise ValueError(f"The raw model disagrees with /run on '{worst_window}': relative L2 "
                         f"{errors[worst_window]:.3g} > {MAX_RELATIVE_L2:g}. Nothing written.")
    # An embedder kept per channel (convert_embeddings --per-channel-dense) is wrong on the EI
    # fork by design: not checked there, and not served by /tflite-impl.
    per_channel = metadata.get("conversion", {}).get("dense_quantization") == "per-channel"
    try:
        # Raises, naming the runtime, where the model does not load, run or give /run's numbers.
        devices = check_on_devices(raw, stacked, MAX_RELATIVE_L2, reference=run_embeddings,
                                   skip_ei_fork=per_channel)
    except DeviceRuntimeError as error:
        raise ValueError(f"The raw model fails on a device runtime: {error}. Nothing written.") from None
    if per_channel:
        devices["EI SDK fork"] = {"skipped": "per-channel dense layers, which the EI fork computes wrongly"}
    figures = footprint(raw, arena=False)
    figures["arena_used_bytes"] = devices.get("EI SDK fork", {}).get("arena_used_bytes")
    figures["smallest_board"] = smallest_board(figures["file_bytes"], figures["arena_used_bytes"])
    figures["frontend_file_bytes"] = len(raw) - len(embedder)
    figures["frontend_constant_bytes"] = figures["constant_bytes"] - constant_bytes(embedder)
    seconds = time.perf_counter() - started

    record = {
        # Studio's C++ export runs the EI fork: only a model right there is device-ready.
        "device_ready": not per_channel,
        "worst_relative_l2": errors[worst_window],
        # None when every window agrees exactly (no window is worse than another).
        "worst_window": worst_window if errors[worst_window] > 0 else None,
        "windows": list(errors),
        "relative_l2": errors,
        "features_worst_relative_l2": feature_errors[worst_feature],
        "features_worst_window": list(errors)[worst_feature],
        "metric": ("||raw - run|| / max(||run||, 1e-6) per window (absolute L2 / 1e-6 when the "
                   "/run embedding is all zeros); run = numpy front-end (float64) -> float32 -> "
                   "int8 embedder; windows from models.hard_windows.hard_windows(seed=0); "
                   "both run with ai-edge-litert (builtin kernels, 1 thread); features_*: the "
                   "same metric on the front-end output alone"),
        "on_devices": {**devices, "how": "the same windows and metric, the raw model run on "
                                         "upstream TFLM (tflite-micro) and on the EI SDK fork's "
                                         "TFLM (reference kernels, x86-64), against /run"},
        "footprint": {**figures, "how": "python -m models.footprint (arena: the EI SDK fork on "
                                        "a 64-bit host; frontend_*: the raw model minus the "
                                        "embedder)"},
        "ops": ops,
        "size_bytes": len(raw),
        "embedder_size_bytes": len(embedder),
        "build_seconds": round(seconds, 2),
        "command": f"python -m models.raw_window_model {metadata_path}",
    }
    (folder / files["raw"]).write_bytes(raw)
    metadata["raw_model"] = record
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
    log(f"wrote {folder / files['raw']} ({len(raw)} bytes); worst embedding relative L2 "
        f"{errors[worst_window]:.3g} ({record['worst_window'] or 'every window agrees exactly'}); "
        f"{seconds:.1f} s")
    return record


def main(argv: Optional[Iterable[str]] = None) -> int:
    """``python -m models.raw_window_model models/<name>.json [...]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("metadata", nargs="+", type=Path, help="models/<name>.json")
    args = parser.parse_args(list(argv) if argv is not None else None)
    for path in args.metadata:
        try:
            build_and_record(path)
        except (UnsupportedFrontend, ValueError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
