"""The device build of the fusion blocks, driven from Python: the same request body as `/batch`,
features computed by the C code in `device/lib` (the host build through ctypes, or the Cortex-M4F
firmware under QEMU).

    .venv/bin/python -m device.host kalman < body.json          # {"features": [[...], ...]}
    .venv/bin/python -m device.host fuzzy-off-arm --qemu < body.json

The body is a `/batch` body: `features` (windows, each the input axes interleaved), `axes`,
`sampling_freq`, `params`, `named_axes`. Parameters get the server's defaults and axes are mapped
as the server maps them (both with the server's own code); windows run in order through one block
instance, so the state carries from window to window as it does on a device. A block's C names
come from its `cppType`, as in Studio's export: `<cppType>_init`, `<cppType>_process`, ...
"""
from __future__ import annotations

import ctypes
import json
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from device import build
from dsp.core.block import load_parameters
from dsp.core.errors import ConfigurationError
from dsp.core.params import parameter_specs, resolve_params
from dsp.core.window import AxisMap

__all__ = ["DeviceError", "DeviceRun", "run_batch", "run_windows", "BLOCK_IDS"]

# The harness's block numbers (device/firmware/harness.c).
BLOCK_IDS = {"fuzzy-off-arm": 0, "kalman": 1}
HARNESS_MAGIC = b"FSN1"
HARNESS_TIMEOUT_S = 120
# Instructions per tick of the harness's timer under `-icount shift=0` (1 GHz virtual, 25 MHz timer).
INSTRUCTIONS_PER_TICK = 40
CTYPES = {"select": ctypes.c_char_p, "string": ctypes.c_char_p, "float": ctypes.c_float,
          "int": ctypes.c_int, "boolean": ctypes.c_bool}


class DeviceError(RuntimeError):
    """The C code refused the configuration or a window: its FUSION_* code and message."""

    def __init__(self, code: int, message: str, window: int | None = None):
        where = "at init" if window is None else f"on window {window}"
        super().__init__(f"device error {code} {where}: {message}")
        self.code, self.message, self.window = code, message, window


@dataclass
class DeviceRun:
    features: list[list[float]]
    # Per window, measured in QEMU (None elsewhere): instructions, and stack bytes the call used.
    instructions: list[int] | None = None
    stack_bytes: list[int] | None = None


class _Window(ctypes.Structure):
    _fields_ = [("read", ctypes.c_void_p), ("context", ctypes.c_void_p), ("samples", ctypes.c_size_t),
                ("input_axes", ctypes.c_size_t)]


@dataclass(frozen=True)
class _Configured:
    """A request resolved as the server resolves it, ready for the C code."""

    block: str
    prefix: str
    parameters: list[dict]            # parameters.json entries, in order
    params: dict[str, Any]            # resolved values by field name (dashes -> underscores)
    columns: list[int]                # input column per declared axis, -1 when unmapped
    input_axes: int
    sampling_freq: float


def _parameters_json(block: str) -> dict:
    if block not in BLOCK_IDS:
        raise ConfigurationError(f"No device build for block '{block}'; blocks with one: {', '.join(BLOCK_IDS)}.")
    return load_parameters(block)


def _flat_parameters(parameters_json: dict) -> list[dict]:
    flat = []
    for entry in parameters_json["parameters"]:
        flat.extend(entry["items"] if "items" in entry else [entry])
    return flat


def _configure(block: str, body: dict) -> _Configured:
    parameters_json = _parameters_json(block)
    info = parameters_json["info"]
    input_axes = body.get("axes")
    if not isinstance(input_axes, list) or not all(isinstance(a, str) for a in input_axes):
        raise ConfigurationError("'axes' must be a list of axis names.")
    axis_map = AxisMap(input_axes, info.get("axes"), body.get("named_axes"))
    mapped = dict(zip(axis_map.axes, axis_map.columns or range(len(axis_map.axes))))
    columns = [mapped.get(axis["name"], -1) for axis in info["axes"]]
    if body.get("state"):
        raise ConfigurationError("The device build keeps its own state from window to window; it cannot "
                                 "continue a server's state: send \"\" (or no state).")
    params = resolve_params(parameter_specs(parameters_json), body.get("params"))
    return _Configured(block=block, prefix=info["cppType"], parameters=_flat_parameters(parameters_json),
                       params=params, columns=columns, input_axes=len(input_axes),
                       sampling_freq=float(body["sampling_freq"]))


def _windows(body: dict, input_axes: int) -> list[np.ndarray]:
    windows = body.get("features")
    if not isinstance(windows, list) or not windows:
        raise ConfigurationError("'features' must be a non-empty list of windows.")
    out = []
    for index, window in enumerate(windows):
        values = np.ascontiguousarray(window, dtype=np.float32).reshape(-1)
        if values.size % input_axes:
            raise ConfigurationError(f"Window {index} has {values.size} values, not a multiple of the "
                                     f"{input_axes} axes.")
        out.append(values)
    return out


# --- host build ---------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    return ctypes.CDLL(str(build.host_library()))


def _function(prefix: str, name: str, restype, *argtypes):
    function = getattr(_library(), f"{prefix}_{name}")
    function.restype = restype
    function.argtypes = list(argtypes)
    return function


def _params_struct(config: _Configured):
    fields = [(p["param"].replace("-", "_"), CTYPES[p["type"]]) for p in config.parameters]
    Params = type(f"{config.prefix}_params_t", (ctypes.Structure,), {"_fields_": fields})
    values = {}
    for name, kind in fields:
        value = config.params[name]
        values[name] = str(value).encode() if kind is ctypes.c_char_p else value
    return Params(**values)


ENGINES = ("host", "qemu", "adapter")


def run_windows(block: str, body: dict, engine: str = "host", sdk_types: Path | None = None) -> DeviceRun:
    """Every window of `body` through the device build, state carried; raises DeviceError when
    the C code refuses the configuration or a window, ConfigurationError for a malformed body.

    engine: "host" (the block API through ctypes), "qemu" (the Cortex-M4F firmware under QEMU) or
    "adapter" (Studio's entry points `extract_<cppType>_features`, compiled for this machine
    against the SDK type headers in `sdk_types`; its error codes are EIDSP_* codes).
    """
    config = _configure(block, body)
    windows = _windows(body, config.input_axes)
    if engine == "qemu":
        command = ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-icount", "shift=0",
                   "-semihosting-config", "enable=on,target=native", "-kernel", str(build.firmware())]
        return _run_harness(command, config, windows, measured=True)
    if engine == "adapter":
        if sdk_types is None:
            raise ValueError("the adapter engine needs sdk_types: the folder of the SDK's type headers")
        return _run_harness([str(build.adapter_harness(sdk_types))], config, windows, measured=False)
    if engine != "host":
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    prefix = config.prefix
    instance = ctypes.create_string_buffer(_function(prefix, "instance_size", ctypes.c_size_t)())
    message = _function(prefix, "message", ctypes.c_char_p, ctypes.c_void_p)
    init = _function(prefix, "init", ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float,
                     ctypes.POINTER(ctypes.c_int), ctypes.c_size_t)
    process = _function(prefix, "process", ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(_Window),
                        ctypes.POINTER(ctypes.c_float), ctypes.c_size_t)
    feature_count = _function(prefix, "feature_count", ctypes.c_size_t, ctypes.c_void_p)
    params = _params_struct(config)
    columns = (ctypes.c_int * len(config.columns))(*config.columns)
    code = init(instance, ctypes.byref(params), config.sampling_freq, columns, config.input_axes)
    if code != 0:
        raise DeviceError(code, message(instance).decode(errors="replace"))
    reader = ctypes.cast(_library().fusion_read_memory, ctypes.c_void_p)
    count = feature_count(instance)
    output = (ctypes.c_float * max(count, 1))()
    features = []
    for index, values in enumerate(windows):
        window = _Window(reader, values.ctypes.data, values.size // config.input_axes, config.input_axes)
        code = process(instance, ctypes.byref(window), output, count)
        if code != 0:
            raise DeviceError(code, message(instance).decode(errors="replace"), index)
        features.append([float(v) for v in output[:count]])
    return DeviceRun(features=features)


def run_batch(block: str, body: dict, qemu: bool = False) -> list[list[float]]:
    """The features of every window of a `/batch` body, computed by the device build."""
    return run_windows(block, body, engine="qemu" if qemu else "host").features


# --- the harness: the firmware under QEMU, or the adapters on this machine --------------------------

def _harness_input(config: _Configured, windows: list[np.ndarray]) -> bytes:
    parts = [HARNESS_MAGIC, struct.pack("<IfII", BLOCK_IDS[config.block], config.sampling_freq,
                                        config.input_axes, len(config.columns)),
             struct.pack(f"<{len(config.columns)}i", *config.columns)]
    for parameter in config.parameters:
        value = config.params[parameter["param"].replace("-", "_")]
        kind = parameter["type"]
        if kind in ("select", "string"):
            text = str(value).encode()
            parts.append(struct.pack("<I", len(text)) + text)
        elif kind == "float":
            parts.append(struct.pack("<f", value))
        elif kind == "int":
            parts.append(struct.pack("<i", value))
        else:
            parts.append(struct.pack("<B", 1 if value else 0))
    parts.append(struct.pack("<I", len(windows)))
    for values in windows:
        parts.append(struct.pack("<I", values.size // config.input_axes))
        parts.append(values.astype("<f4").tobytes())
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return values

    def status(self) -> tuple[int, str]:
        code, length = self.take("<iI")
        text = self.data[self.offset:self.offset + length].decode(errors="replace")
        self.offset += length
        return code, text

    @property
    def done(self) -> bool:
        return self.offset >= len(self.data)


def _run_harness(command: list[str], config: _Configured, windows: list[np.ndarray], measured: bool) -> DeviceRun:
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "fusion_input.bin").write_bytes(_harness_input(config, windows))
        proc = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=HARNESS_TIMEOUT_S)
        output = Path(folder, "fusion_output.bin")
        if not output.exists():
            raise RuntimeError(f"the firmware wrote no output (exit {proc.returncode}): {proc.stdout}{proc.stderr}")
        reader = _Reader(output.read_bytes())
    code, message = reader.status()
    if code != 0:
        raise DeviceError(code, message)
    features, instructions, stack = [], [], []
    for index in range(len(windows)):
        if reader.done:
            raise RuntimeError(f"the firmware stopped after {index} of {len(windows)} windows "
                               f"(exit {proc.returncode}): {proc.stdout}{proc.stderr}")
        code, message = reader.status()
        (count,) = reader.take("<I")
        values = reader.take(f"<{count}f")
        ticks, stack_bytes = reader.take("<II")
        if code != 0:
            raise DeviceError(code, message, index)
        features.append([float(v) for v in values])
        instructions.append(ticks * INSTRUCTIONS_PER_TICK)
        stack.append(stack_bytes)
    return DeviceRun(features=features, instructions=instructions if measured else None,
                     stack_bytes=stack if measured else None)


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--qemu"]
    if len(args) != 1:
        print("usage: python -m device.host BLOCK [--qemu] < body.json   (BLOCK: "
              f"{', '.join(BLOCK_IDS)})", file=sys.stderr)
        return 2
    try:
        body = json.load(sys.stdin)
        features = run_batch(args[0], body, qemu="--qemu" in argv)
    except json.JSONDecodeError as exc:
        print(json.dumps({"success": False, "error": f"the body is not JSON: {exc}"}))
        return 1
    except (ConfigurationError, DeviceError, build.BuildError) as exc:
        print(json.dumps({"success": False, "error": str(exc)}))
        return 1
    print(json.dumps({"features": features}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
