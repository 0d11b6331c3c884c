"""The device build as an embedded engineer receives it: the parameter structs say what Studio
generates, the library calls nothing beyond libm (no heap), the Edge Impulse adapters compile
against the SDK's type headers and give the block API's features through Studio's entry points,
and `make device-sdk` writes a folder that compiles on its own."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device import build, sdk
from device.host import DeviceError, run_batch, run_windows
from device.studio_config import model_metadata_header, parameter_fields
from dsp.core.block import load_parameters
from tests.shared_data import EI_DSP_TYPES

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = {"fuzzy-off-arm": "fuzzy_off_arm.h", "kalman": "kalman.h"}
# What the blocks may call: <math.h>, <string.h>'s memory and string functions (none of which
# allocates) and the compiler's own helpers (__aeabi_*: soft double, division).
LIBM = {f"{name}{suffix}" for suffix in ("", "f") for name in (
    "sqrt", "sin", "cos", "tan", "atan", "atan2", "asin", "acos", "exp", "log", "log10", "pow", "floor", "ceil",
    "round", "lround", "rint", "fmod", "fabs", "fmin", "fmax", "nan")}
MEMORY = {"memcpy", "memset", "memmove", "memcmp", "strlen", "strchr", "strcmp", "strncmp"}

pytestmark = pytest.mark.skipif(not EI_DSP_TYPES.exists(), reason=f"{EI_DSP_TYPES} is absent")


def _macro_fields(header: Path, macro: str) -> list[tuple[str, str]]:
    text = header.read_text()
    match = re.search(rf"#define {macro}\(X\)((?:.*\\\n)*.*)", text)
    assert match, f"{header.name} defines no {macro}(X)"
    return [(kind.strip(), name) for kind, name in re.findall(r"X\(\s*([^,]+?)\s*,\s*(\w+)\s*\)", match.group(1))]


@pytest.mark.parametrize("block", BLOCKS)
def test_params_struct_lists_every_parameter_in_studio_order_and_type(block):
    parameters = load_parameters(block)
    prefix = parameters["info"]["cppType"].upper()
    fields = _macro_fields(build.LIB / BLOCKS[block], f"{prefix}_PARAMETERS")
    assert fields == parameter_fields(parameters)


def _objects() -> list[Path]:
    reason = build.cross_tools_reason()
    if reason:
        pytest.skip(reason)
    return build.cross_objects()[1]


def test_the_blocks_call_nothing_beyond_libm_so_no_heap_and_no_io():
    objects = _objects()
    defined, undefined = set(), set()
    for obj in objects:
        out = subprocess.run(["arm-none-eabi-nm", str(obj)], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "U":
                undefined.add(parts[1])
            elif len(parts) == 3:
                defined.add(parts[2])
    outside = {name for name in undefined - defined if not name.startswith("__aeabi_")}
    assert outside <= LIBM | MEMORY, f"the blocks call {sorted(outside - LIBM - MEMORY)}"


def _bodies():
    rng = np.random.default_rng(11)
    n = 150
    fuzzy = np.column_stack([rng.uniform(0, 300, n), rng.choice([-1.0, 0.0, 1.0], n), rng.integers(0, 2, n)])
    t = np.arange(n) / 50.0
    acc = np.column_stack([0.5 * np.sin(t), 0.4 * np.cos(0.7 * t), np.full(n, 9.7)]) + rng.normal(0, 0.05, (n, 3))
    gyr = np.column_stack([0.1 * np.cos(t), -0.2 * np.sin(0.7 * t), np.full(n, 0.05)])
    mag = np.column_stack([np.full(n, 20.0), np.full(n, 5.0), np.full(n, -40.0)])
    # Input columns in another order than the block declares, mapped by name as Studio does.
    imu = np.hstack([mag, gyr, acc])
    imu_axes = ["mx", "my", "mz", "gx", "gy", "gz", "ax", "ay", "az"]
    named = {"accX": "ax", "accY": "ay", "accZ": "az", "gyrX": "gx", "gyrY": "gy", "gyrZ": "gz",
             "magX": "mx", "magY": "my", "magZ": "mz"}
    return {
        "fuzzy": ("fuzzy-off-arm", {"features": [fuzzy[i:i + 50].reshape(-1).tolist() for i in (0, 50, 100)],
                                    "axes": ["light", "motion", "hr_locked"], "sampling_freq": 10.0,
                                    "params": {"inference": "bisector", "window-increase-ms": 2000}}),
        "ekf": ("kalman", {"features": [imu[i:i + 50].reshape(-1).tolist() for i in (0, 50, 100)], "axes": imu_axes,
                           "named_axes": named, "sampling_freq": 50.0, "params": {"filter": "ekf"}}),
        "vqf 6D": ("kalman", {"features": [imu[i:i + 50].reshape(-1).tolist() for i in (0, 50, 100)],
                              "axes": imu_axes, "named_axes": {**named, "magX": False, "magY": False, "magZ": False},
                              "sampling_freq": 50.0, "params": {"filter": "vqf"}}),
    }


@pytest.mark.parametrize("case", ["fuzzy", "ekf", "vqf 6D"])
def test_studio_entry_points_give_the_block_api_features(case):
    block, body = _bodies()[case]
    through_adapter = run_windows(block, body, engine="adapter", sdk_types=EI_DSP_TYPES).features
    assert through_adapter == run_batch(block, body)


def test_adapter_errors_are_eidsp_codes_with_the_blocks_message():
    block, body = _bodies()["ekf"]
    body = {**body, "features": [list(body["features"][0]), list(body["features"][1])]}
    body["features"][1][4] = float("nan")
    with pytest.raises(DeviceError) as caught:
        run_windows(block, body, engine="adapter", sdk_types=EI_DSP_TYPES)
    assert caught.value.code == -1006 and caught.value.window == 1  # EIDSP_INPUT_MATRIX_EMPTY
    assert "NaN" in caught.value.message or "finite" in caught.value.message
    with pytest.raises(DeviceError) as caught:
        run_windows(block, {**body, "params": {"filter": "ekf", "ekf-gyro-noise": -1}}, engine="adapter",
                    sdk_types=EI_DSP_TYPES)
    assert caught.value.code < 0 and caught.value.window is None


def test_adapters_compile_for_an_export_without_named_axes(tmp_path):
    cc, cxx = build.host_compilers()
    (tmp_path / "model-parameters").mkdir()
    header = model_metadata_header([load_parameters(b) for b in BLOCKS], named_axes=False)
    (tmp_path / "model-parameters" / "model_metadata.h").write_text(header)
    for source in build.adapter_sources():
        subprocess.run([cxx, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-DEI_FUSION_CONFIG_HAS_NAMED_AXES=0",
                        f"-I{build.LIB}", f"-I{build.EDGE_IMPULSE}", "-isystem", str(EI_DSP_TYPES), f"-I{tmp_path}",
                        "-c", str(source), "-o", str(tmp_path / (source.name + ".o"))], check=True)


def test_device_sdk_folder_builds_alone_with_vqf_and_its_licence(tmp_path):
    out = sdk.write_sdk(tmp_path / "ei-fusion-blocks")
    licence = (out / "vqf" / "LICENSE").read_text()
    assert "MIT License" in licence and "Copyright (c)" in licence and "Laidig" in licence
    assert (out / "vqf" / "vqf.cpp").read_bytes() == (build.vqf_sources() / "vqf" / "vqf.cpp").read_bytes()
    assert "ei_fusion_blocks_reset" in (out / "README.md").read_text()
    # As a user's build would: every top-level source, the folder and the export on the include path.
    export = tmp_path / "export"
    (export / "model-parameters").mkdir(parents=True)
    (export / "model-parameters" / "model_metadata.h").write_text(
        model_metadata_header([load_parameters(b) for b in BLOCKS]))
    cc, cxx = build.host_compilers()
    objects = []
    for source in sorted(out.glob("*.c")) + sorted(out.glob("*.cpp")):
        obj = tmp_path / (source.name + ".o")
        compiler = [cc, "-std=c11"] if source.suffix == ".c" else [cxx, "-std=c++11"]
        subprocess.run([*compiler, "-Wall", "-Wextra", "-Werror", f"-I{out}", f"-I{export}", "-isystem", str(EI_DSP_TYPES),
                        "-c", str(source), "-o", str(obj)], check=True)
        objects.append(str(obj))
    symbols = subprocess.run(["nm", "-C", *objects], capture_output=True, text=True, check=True).stdout
    for entry in ("extract_fuzzy_off_arm_features", "extract_kalman_features", "ei_fusion_blocks_reset"):
        assert re.search(rf" T {entry}\b", symbols), f"the folder does not define {entry}"


def test_device_sdk_never_replaces_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "main.c").write_text("int main(void) { return 0; }\n")
    with pytest.raises(build.BuildError, match="not a folder"):
        sdk.write_sdk(tmp_path)
    assert (tmp_path / "main.c").exists()
    out = sdk.write_sdk(tmp_path / "sdk")
    assert sdk.write_sdk(out) == out  # its own folder is rewritten


def test_command_line_prints_the_features_of_every_window():
    block, body = _bodies()["ekf"]
    proc = subprocess.run([sys.executable, "-m", "device.host", block], input=json.dumps(body), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["features"] == run_batch(block, body)
    proc = subprocess.run([sys.executable, "-m", "device.host", block], input=json.dumps({**body, "sampling_freq": -1}),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "error" in json.loads(proc.stdout)
