"""What a TFLite model costs a device: file size, constants, multiply-accumulates, TFLM arena.

* `file_bytes`: the flatbuffer as flashed.
* `constant_bytes`: the bytes of every constant buffer (weights, biases, DFT and filterbank
  matrices); the rest of the file is the graph's description.
* `macs`: multiply-accumulates per invocation in the ops that do the arithmetic (CONV_2D,
  DEPTHWISE_CONV_2D, FULLY_CONNECTED, BATCH_MATMUL), counted from the tensors' shapes;
  `elementwise_ops` counts the output values of every other arithmetic op (MUL, ADD, LOG, ...).
* `arena_used_bytes`: what Edge Impulse's SDK fork of TFLM allocated to run the model on a
  64-bit host (`models.device_runtimes`; pointers are 8 bytes there, so a 32-bit device needs
  somewhat less); None where the fork's sources are absent.

`smallest_board` names the first of `BOARD_CLASSES` where the model leaves the application room:
arena at most 5/8 of the RAM and the file at most 1/4 of the flash (for the Nano 33 BLE Sense
class, 160 KB and 256 KB).

Usage: `.venv/bin/python -m models.footprint MODEL.tflite [...]` prints one JSON object a model.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

# Output values of these ops are computed one arithmetic operation each (or a few).
ELEMENTWISE_OPS = ("ADD", "SUB", "MUL", "DIV", "SQUARE", "SQRT", "RSQRT", "LOG", "EXP", "MAXIMUM", "MINIMUM",
                   "ABS", "ROUND", "FLOOR", "RELU", "RELU6", "LOGISTIC", "TANH", "QUANTIZE", "DEQUANTIZE",
                   "MEAN", "SUM", "MAX_POOL_2D", "AVERAGE_POOL_2D", "SOFTMAX", "EQUAL", "LESS", "GREATER",
                   "CAST", "SQUARED_DIFFERENCE", "POW")


# (name, RAM bytes, flash bytes), smallest first: boards Edge Impulse deploys to.
BOARD_CLASSES = (
    ("nRF52840 (Arduino Nano 33 BLE Sense)", 256 * 1024, 1024 * 1024),
    ("nRF5340 (Nordic Thingy:53)", 512 * 1024, 1024 * 1024),
    ("STM32H747 (Arduino Portenta H7)", 1024 * 1024, 2048 * 1024),
)
ARENA_SHARE_OF_RAM = 5 / 8
FILE_SHARE_OF_FLASH = 1 / 4


def smallest_board(file_bytes: int, arena_bytes: Optional[int]) -> Optional[str]:
    """The first board class with room for the model and an application; None if none has."""
    if arena_bytes is None:
        return None
    for name, ram, flash in BOARD_CLASSES:
        if arena_bytes <= ARENA_SHARE_OF_RAM * ram and file_bytes <= FILE_SHARE_OF_FLASH * flash:
            return name
    return None


def constant_bytes(model: bytes) -> int:
    """Bytes held in the flatbuffer's constant buffers."""
    from tensorflow.lite.python import schema_py_generated as schema

    parsed = schema.Model.GetRootAsModel(bytearray(model), 0)
    return int(sum(parsed.Buffers(i).DataLength() for i in range(parsed.BuffersLength())))


def arithmetic(model: bytes) -> dict:
    """Multiply-accumulates and elementwise operations per invocation, from the op shapes."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the default delegate, so each op is seen as converted, not as XNNPACK's fused node.
    interpreter = Interpreter(model_content=model,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    shapes = {t["index"]: tuple(int(d) for d in t["shape"]) for t in interpreter.get_tensor_details()}
    macs: dict[str, int] = {}
    elementwise = 0
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        outputs = int(sum(np.prod(shapes[i]) for i in op["outputs"] if i >= 0))
        if name in ("CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"):
            # The reduced dimension is the weights' (or right operand's) last one (CONV_2D:
            # kernel height x width x input channels).
            weights = shapes[op["inputs"][1]]
            reduced = int(np.prod(weights[1:])) if name == "CONV_2D" else weights[-1]
            if name == "BATCH_MATMUL":
                reduced = weights[-2]
            macs[name] = macs.get(name, 0) + outputs * reduced
        elif name == "DEPTHWISE_CONV_2D":
            weights = shapes[op["inputs"][1]]
            macs[name] = macs.get(name, 0) + outputs * weights[1] * weights[2]
        elif name in ELEMENTWISE_OPS:
            elementwise += outputs
    return {"macs": int(sum(macs.values())), "macs_by_op": macs, "elementwise_ops": int(elementwise)}


def footprint(model: bytes, arena: bool = True) -> dict:
    """The figures in the module docstring for one model."""
    figures = {"file_bytes": len(model), "constant_bytes": constant_bytes(model), **arithmetic(model)}
    figures["arena_used_bytes"] = _ei_fork_arena(model) if arena else None
    figures["smallest_board"] = smallest_board(figures["file_bytes"], figures["arena_used_bytes"])
    return figures


def _ei_fork_arena(model: bytes) -> Optional[int]:
    from ai_edge_litert.interpreter import Interpreter

    from models.device_runtimes import ei_fork_runner, run_ei_fork

    runner = ei_fork_runner()
    if runner is None:
        return None
    interpreter = Interpreter(model_content=model)
    shape = interpreter.get_input_details()[0]["shape"]
    return run_ei_fork(model, np.zeros((1, int(np.prod(shape))), dtype=np.float32), runner).arena_used_bytes


def main(argv: Optional[Sequence[str]] = None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m models.footprint MODEL.tflite [...]", file=sys.stderr)
        return 2
    for path in paths:
        try:
            model = Path(path).read_bytes()
        except OSError as exc:
            print(f"footprint: error: {path}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(json.dumps({"model": path, **footprint(model)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
