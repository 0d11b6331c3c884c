"""`make device-footprint`: what each block costs on the Cortex-M4F, written to device/footprint.json.

Per block:
- flash and static RAM: a bare probe firmware with the block linked (device/firmware/
  footprint_probe.c, parameters.json defaults, every filter or method reachable) minus the same
  probe without it, from `arm-none-eabi-size` (flash = text + data, RAM = data + bss);
- worst stack: the deepest path through the call graphs GCC writes with -fcallgraph-info=su (each
  function's own frame from -fstack-usage), from the block's init and process; calls into the C
  library (libm) are not in those graphs and are listed, and the painted-stack measurement in QEMU
  covers them;
- per configuration, on a few seconds of the synthetic streams the parity tests use: instructions
  per sample counted by QEMU (`-icount shift=0`, one instruction per virtual ns, read from a
  25 MHz timer: 40-instruction resolution) and the stack the process calls used, painted. At 64
  MHz, microseconds per sample = instructions / 64 assumes one cycle per instruction: a lower
  bound on a real Cortex-M4F (loads take 2 cycles, a float division 14).
"""
from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from device import build
from device.host import run_windows
from dsp.core.block import load_parameters

OUTPUT = build.DEVICE / "footprint.json"
PROBE = build.FIRMWARE / "footprint_probe.c"
PROBE_IDS = {"fuzzy-off-arm": 0, "kalman": 1}
ENTRY_POINTS = {"fuzzy-off-arm": ("fuzzy_off_arm_init", "fuzzy_off_arm_process"),
                "kalman": ("kalman_init", "kalman_process")}
FS_IMU = 100.0
FS_FUZZY = 50.0
SECONDS = 4.0
WINDOW_SECONDS = 2.0


def _c_literal(value, kind: str) -> str:
    if kind in ("select", "string"):
        return json.dumps(str(value))
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "float":
        return f"{float(value)!r}f"
    return str(int(value))


def probe_params_header(block: str) -> str:
    """PROBE_DEFAULT_PARAMS: a designated initializer of the block's params_t at its defaults."""
    fields = []
    for entry in load_parameters(block)["parameters"]:
        for parameter in entry["items"] if "items" in entry else [entry]:
            name = parameter["param"].replace("-", "_")
            fields.append(f".{name} = {_c_literal(parameter['value'], parameter['type'])}")
    return "#include <stdbool.h>\n#define PROBE_DEFAULT_PARAMS { " + ", ".join(fields) + " }\n"


def _size(elf: Path) -> dict[str, int]:
    out = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sections = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    text = sum(sections.get(name, 0) for name in (".text", ".ARM.exidx", ".copy.table", ".zero.table"))
    data = sections.get(".data", 0)
    bss = sections.get(".bss", 0)
    return {"flash": text + data, "ram": data + bss}


def flash_and_ram(block: str, library_flags: list[str] | None = None) -> dict[str, int]:
    baseline = _size(build.firmware("probe-none", main=PROBE, semihosting=False))
    probe = _size(build.firmware(f"probe-{block}", main=PROBE, semihosting=False,
                                 extra_flags=[f"-DPROBE_BLOCK={PROBE_IDS[block]}"],
                                 generated={"probe_params.h": probe_params_header(block)},
                                 library_flags=library_flags))
    return {"flash_bytes": probe["flash"] - baseline["flash"], "static_ram_bytes": probe["ram"] - baseline["ram"]}


def _call_graph(folder: Path) -> tuple[dict[str, int], dict[str, set[str]]]:
    frames: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    node = re.compile(r'node: \{ title: "([^"]+)" label: "[^"]*\\n(\d+) bytes')
    edge = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
    for path in folder.glob("*.ci"):
        text = path.read_text()
        for name, size in node.findall(text):
            frames[name] = max(frames.get(name, 0), int(size))
        for source, target in edge.findall(text):
            calls.setdefault(source, set()).add(target)
    return frames, calls


def worst_stack(block: str) -> dict:
    folder, _ = build.cross_objects()
    frames, calls = _call_graph(folder)
    outside: set[str] = set()

    def deepest(name: str, path: tuple[str, ...]) -> int:
        if name in path:
            raise RuntimeError(f"recursion through {name}: the worst stack is unbounded")
        if name not in frames:
            # C++ names a constructor twice (complete C1, base C2); GCC's graph has one of them.
            alias = re.sub(r"([CD])1(E|Ev)", r"\g<1>2\2", name)
            if alias in frames:
                return deepest(alias, path)
            outside.add(name)
            return 0
        return frames[name] + max((deepest(callee, path + (name,)) for callee in calls.get(name, ())), default=0)

    worst = max(deepest(entry, ()) for entry in ENTRY_POINTS[block])
    library_calls = sorted(name for name in outside if not name.startswith("__aeabi"))
    return {"worst_stack_bytes_call_graph": worst, "call_graph_excludes": library_calls}


def _imu_stream(seconds: float, fs: float) -> np.ndarray:
    """(samples, 9): a device swinging tens of degrees in roll, pitch and heading, read by a noisy
    accelerometer (m/s^2), gyroscope (rad/s, biased) and magnetometer (uT)."""
    from dsp.fusion.quaternion import quat_conjugate, quat_from_euler_zyx, quat_rotate

    rng = np.random.default_rng(3)
    t = np.arange(int(seconds * fs)) / fs
    angles = [np.radians(a) * np.sin(2 * np.pi * f * t + p) for a, f, p in ((25, 0.3, 0.1), (20, 0.2, 1.0), (90, 0.1, 2.0))]
    quat = quat_from_euler_zyx(*angles)
    to_sensor = quat_conjugate(quat)
    acc = quat_rotate(to_sensor, np.array([0.0, 0.0, 9.80665])) + rng.normal(0, 0.05, (t.size, 3))
    mag = quat_rotate(to_sensor, np.array([0.0, 25.0, -43.3])) + rng.normal(0, 0.5, (t.size, 3))
    rates = np.gradient(np.column_stack(angles), 1 / fs, axis=0)  # near enough body rates for a load test
    gyr = rates + np.array([0.02, -0.03, 0.015]) + rng.normal(0, 0.005, (t.size, 3))
    return np.hstack([acc, gyr, mag])


def _imu_body(params: dict, with_mag: bool = True) -> dict:
    raw = _imu_stream(SECONDS, FS_IMU)[:, :9 if with_mag else 6]
    axes = ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ"] + (["magX", "magY", "magZ"] if with_mag else [])
    size = int(WINDOW_SECONDS * FS_IMU)
    windows = [raw[i:i + size].reshape(-1).tolist() for i in range(0, raw.shape[0] - size + 1, size)]
    return {"features": windows, "axes": axes, "sampling_freq": FS_IMU, "params": params}


def _fuzzy_body(params: dict) -> dict:
    rng = np.random.default_rng(5)
    n = int(SECONDS * FS_FUZZY)
    light = rng.uniform(0, 300, n)
    if params.get("motion-input") == "quantity":
        motion = rng.uniform(0, 1, n)
    else:
        motion = rng.choice([-1.0, 0.0, 1.0], n, p=[0.05, 0.85, 0.10])
    hr = (rng.uniform(size=n) < 0.7).astype(float)
    raw = np.column_stack([light, motion, hr])
    size = int(WINDOW_SECONDS * FS_FUZZY)
    windows = [raw[i:i + size].reshape(-1).tolist() for i in range(0, n - size + 1, size)]
    return {"features": windows, "axes": ["light", "motion", "hr_locked"], "sampling_freq": FS_FUZZY, "params": params}


def configurations() -> dict[str, dict[str, dict]]:
    kalman = {name: _imu_body({"filter": name}) for name in ("vqf", "ekf", "madgwick", "mahony", "complementary")}
    kalman.update({f"{name} (no magnetometer)": _imu_body({"filter": name}, with_mag=False)
                   for name in ("vqf", "ekf", "madgwick", "mahony", "complementary")})
    kalman["kf (RTS, 9 axes)"] = _imu_body({"filter": "kf"})
    kalman["weighted (9 axes)"] = _imu_body({"filter": "weighted"})
    fuzzy = {method: _fuzzy_body({"inference": method}) for method in ("centroid", "bisector", "mom", "sugeno")}
    fuzzy["centroid, motion quantity"] = _fuzzy_body({"inference": "centroid", "motion-input": "quantity"})
    return {"fuzzy-off-arm": fuzzy, "kalman": kalman}


def per_sample(block: str, body: dict) -> dict:
    run = run_windows(block, body, engine="qemu")
    samples = sum(len(window) for window in body["features"]) // len(body["axes"])
    instructions = sum(run.instructions) / samples
    return {"instructions_per_sample": round(instructions), "us_per_sample_at_64mhz": round(instructions / 64.0, 2),
            "stack_bytes_measured": max(run.stack_bytes)}


def measure() -> dict:
    report = {"command": "make device-footprint",
              "machine": f"{platform.machine()} {platform.system()}, arm-none-eabi-gcc {_gcc_version()}, "
                         "qemu-system-arm -M mps2-an386 -icount shift=0",
              "flags": " ".join(build.DEVICE_FLAGS), "blocks": {}}
    for block, bodies in configurations().items():
        entry = {**flash_and_ram(block), **worst_stack(block)}
        # The build option that leaves out the biggest optional part, measured the same way.
        name, flag = {"kalman": ("without_vqf", "-DKALMAN_WITH_VQF=0"),
                      "fuzzy-off-arm": ("without_custom_rules", "-DFUZZY_RULES_JSON=0")}[block]
        entry[name] = {**flash_and_ram(block, [flag]), "build_flag": flag}
        entry["configurations"] = {name: per_sample(block, body) for name, body in bodies.items()}
        report["blocks"][block] = entry
    return report


def _gcc_version() -> str:
    out = subprocess.run(["arm-none-eabi-gcc", "-dumpversion"], capture_output=True, text=True).stdout
    return out.strip()


def main() -> int:
    try:
        report = measure()
    except build.BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    OUTPUT.write_text(json.dumps(report, indent=2) + "\n")
    print(OUTPUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
