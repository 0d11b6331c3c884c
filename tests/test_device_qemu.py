"""The firmware on a real Cortex-M4F instruction set (QEMU's mps2-an386, arm-none-eabi-gcc -Os
with the single-precision FPU) gives the host build's features, window by window with the state
carried, for every kalman filter and every fuzzy inference method and motion input. Skipped,
saying why, only where the cross compiler or QEMU cannot be installed."""
from __future__ import annotations

import numpy as np
import pytest

from device import build
from device.footprint import configurations
from device.host import run_windows

# Different C libraries (newlib's libm on the device, glibc's here) and fused multiply-adds on
# the FPU round differently in the last bits; the features agree far inside the server bar.
TOLERANCE = 1e-4


@pytest.fixture(scope="module", autouse=True)
def cross_tools():
    reason = build.cross_tools_reason()
    if reason:
        pytest.skip(reason)


CASES = [(block, name) for block, bodies in configurations().items() for name in bodies]


@pytest.mark.parametrize("block,name", CASES, ids=[f"{b}-{n}" for b, n in CASES])
def test_firmware_features_equal_the_host_build(block, name):
    body = configurations()[block][name]
    host = np.array(run_windows(block, body).features)
    emulated = run_windows(block, body, engine="qemu")
    device = np.array(emulated.features)
    assert device.shape == host.shape
    excess = np.abs(device - host) / (1.0 + np.abs(host))
    assert excess.max() <= TOLERANCE, f"worst relative difference {excess.max():.2e}"
    assert all(count > 0 for count in emulated.instructions)
    assert all(0 < stack < build.FIRMWARE_STACK_BYTES for stack in emulated.stack_bytes)


def test_a_refused_window_is_an_error_code_on_the_firmware_too():
    body = configurations()["kalman"]["ekf"]
    broken = [list(window) for window in body["features"]]
    broken[1][3] = float("nan")
    from device.host import DeviceError

    with pytest.raises(DeviceError) as caught:
        run_windows("kalman", {**body, "features": broken}, engine="qemu")
    assert caught.value.window == 1 and caught.value.code < 0


def test_recorded_flash_and_ram_are_what_this_tree_builds():
    """device/footprint.json (and the README's table) are this tree's: rebuilt, the probes have
    the recorded sizes (same compiler version; other versions are not comparable)."""
    import json
    import subprocess

    from device import footprint

    recorded = json.loads(footprint.OUTPUT.read_text())
    version = subprocess.run(["arm-none-eabi-gcc", "-dumpversion"], capture_output=True, text=True).stdout.strip()
    if version not in recorded["machine"]:
        pytest.skip(f"footprint.json was measured with another arm-none-eabi-gcc than {version}")
    for block, entry in recorded["blocks"].items():
        measured = footprint.flash_and_ram(block)
        assert measured == {"flash_bytes": entry["flash_bytes"], "static_ram_bytes": entry["static_ram_bytes"]}, (
            f"{block}: run `make device-footprint` and update the README's table")
