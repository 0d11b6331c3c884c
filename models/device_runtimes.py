"""Run a TFLite model in the runtimes a device uses, beside LiteRT, and say where they disagree.

Studio's C++ export runs models on TensorFlow Lite Micro, not on the desktop interpreter, and
two TFLM trees matter (`../shared/docs/on-device.md`): upstream TFLM, which the `tflite-micro`
package runs, and Edge Impulse's SDK fork, which the export compiles. The fork is built here from
`$SHARED_DIR/device/ei-sdk-tflm` (or `../shared/device/ei-sdk-tflm` beside the repository) into a
cache folder outside the repository, once per version of its sources, about 100 s on 2 cores.
Where that folder is absent, the fork is not checked and `ei_fork_runner` returns None.

Every failure is a `DeviceRuntimeError` whose one-line message names the runtime and the reason.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

SHARED_DIR = (Path(os.environ["SHARED_DIR"]) if os.environ.get("SHARED_DIR")
              else Path(__file__).resolve().parents[2] / "shared")
EI_SDK_TFLM = SHARED_DIR / "device" / "ei-sdk-tflm"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dsp-block-server"
RUNNER_NAME = "ei-sdk-tflm-run"
# Arena for the runs here: generous, since the figure wanted is what the model uses.
ARENA_BYTES = 8 * 1024 * 1024
BUILD_TIMEOUT_S = 900
RUN_TIMEOUT_S = 300

_build_lock = threading.Lock()


class DeviceRuntimeError(Exception):
    """A model that does not load, run or agree on a device runtime; one line: runtime and why."""


@dataclass(frozen=True)
class DeviceRun:
    outputs: np.ndarray  # (rows, ...) float32, one row per input row
    arena_used_bytes: Optional[int]  # measured on a 64-bit host; None where the runtime does not say


def run_litert(model: bytes, rows: np.ndarray) -> np.ndarray:
    """Outputs of `model` for each row, with ai-edge-litert as the server runs it."""
    from dsp.embeddings.model import make_interpreter

    interpreter = make_interpreter(model)
    source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for row in np.asarray(rows, dtype=np.float32):
        interpreter.set_tensor(source["index"], row.reshape(source["shape"]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(sink["index"]).reshape(-1).copy())
    return np.array(outputs)


def run_upstream_tflm(model: bytes, rows: np.ndarray) -> DeviceRun:
    """Outputs with upstream TFLM's interpreter (the `tflite-micro` package, reference kernels)."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise DeviceRuntimeError("upstream TFLM: the tflite-micro package is not installed "
                                 "(make install-train)") from None
    try:
        interpreter = runtime.Interpreter.from_bytes(bytes(model), arena_size=ARENA_BYTES)
        shape = interpreter.get_input_details(0)["shape"]
        outputs = []
        for row in np.asarray(rows, dtype=np.float32):
            interpreter.set_input(row.reshape(shape), 0)
            interpreter.invoke()
            outputs.append(np.array(interpreter.get_output(0), dtype=np.float32).reshape(-1))
            interpreter.reset()
    except (RuntimeError, ValueError) as exc:
        raise DeviceRuntimeError(f"upstream TFLM: {_first_line(exc)}") from None
    return DeviceRun(outputs=np.array(outputs), arena_used_bytes=None)


def ei_fork_runner(build: bool = True) -> Optional[Path]:
    """The EI SDK fork's runner, built into the cache if needed; None where its sources are absent."""
    if not (EI_SDK_TFLM / "Makefile").is_file():
        return None
    digest = hashlib.sha256()
    for name in ("SDK_FILES.txt", "runner.cc", "port.cc", "Makefile"):
        digest.update((EI_SDK_TFLM / name).read_bytes())
    folder = CACHE_DIR / f"ei-sdk-tflm-{digest.hexdigest()[:16]}"
    runner = folder / RUNNER_NAME
    with _build_lock:
        if runner.is_file() or not build:
            return runner if runner.is_file() else None
        # Built in a copy, so the shared folder is only read; moved in whole, so a build stopped
        # half way is never taken for a runner.
        try:
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix="ei-sdk-tflm-", dir=CACHE_DIR))
        except OSError as exc:
            raise DeviceRuntimeError(f"EI SDK fork: cannot build the runner in {CACHE_DIR} ({exc.strerror or exc}); "
                                     "set XDG_CACHE_HOME to a writable folder") from None
        try:
            shutil.copytree(EI_SDK_TFLM, staging, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("build", RUNNER_NAME))
            done = subprocess.run(["make", "-j2", RUNNER_NAME], cwd=staging, capture_output=True, text=True,
                                  timeout=BUILD_TIMEOUT_S)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                raise DeviceRuntimeError(f"EI SDK fork: building the runner failed: {tail[0]}")
            shutil.rmtree(staging / "build", ignore_errors=True)
            if folder.exists():
                shutil.rmtree(folder)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return runner


def run_ei_fork(model: bytes, rows: np.ndarray, runner: Path) -> DeviceRun:
    """Outputs with the EI SDK fork's TFLM (reference kernels, x86) and the arena it used."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="ei-fork-") as tmp:
        folder = Path(tmp)
        (folder / "model.tflite").write_bytes(model)
        rows.tofile(folder / "in.f32")
        try:
            done = subprocess.run([str(runner), str(folder / "model.tflite"), str(folder / "in.f32"),
                                   str(folder / "out.f32"), "--batch", "--arena-kb", str(ARENA_BYTES // 1024)],
                                  capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DeviceRuntimeError(f"EI SDK fork: no answer within {RUN_TIMEOUT_S} s") from None
        if done.returncode != 0:
            errors = [line[len("error: "):] for line in done.stdout.splitlines() if line.startswith("error: ")]
            reason = errors[0] if errors else f"exit status {done.returncode}"
            raise DeviceRuntimeError(f"EI SDK fork: {reason}")
        arena = next(int(line.split()[1]) for line in done.stdout.splitlines()
                     if line.startswith("arena_used_bytes"))
        outputs = np.fromfile(folder / "out.f32", dtype=np.float32).reshape(len(rows), -1)
    return DeviceRun(outputs=outputs, arena_used_bytes=arena)


def relative_l2(outputs: np.ndarray, reference: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Per row: |outputs - reference| / max(|reference|, floor) (an all-zero reference is not 0/0)."""
    difference = np.linalg.norm(np.asarray(outputs, np.float64) - reference, axis=1)
    return difference / np.maximum(np.linalg.norm(np.asarray(reference, np.float64), axis=1), floor)


def check_on_devices(model: bytes, rows: np.ndarray, max_relative_l2: float,
                     reference: Optional[np.ndarray] = None, skip_ei_fork: bool = False) -> dict:
    """Run `model` on upstream TFLM and, where present, the EI fork; compare with `reference`
    (default: LiteRT's outputs). Returns per runtime the worst relative L2 and the arena;
    raises DeviceRuntimeError naming the runtime when a model does not load, run or agree."""
    reference = run_litert(model, rows) if reference is None else np.asarray(reference)
    results = {}
    runs = [("upstream TFLM", lambda: run_upstream_tflm(model, rows))]
    runner = None if skip_ei_fork else ei_fork_runner()
    if runner is not None:
        runs.append(("EI SDK fork", lambda: run_ei_fork(model, rows, runner)))
    for name, run in runs:
        done = run()
        worst = float(relative_l2(done.outputs, reference).max())
        if not worst <= max_relative_l2:
            raise DeviceRuntimeError(f"{name}: outputs differ from LiteRT by relative L2 {worst:.3g} "
                                     f"(at most {max_relative_l2:g} expected)")
        results[name] = {"worst_relative_l2": worst, "arena_used_bytes": done.arena_used_bytes}
    if runner is None and not skip_ei_fork:
        results["EI SDK fork"] = {"skipped": f"no {EI_SDK_TFLM}"}
    return results


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
