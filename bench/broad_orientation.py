"""BROAD in-process evaluation of the orientation filters (issue 4, bar b), plus their speed.

For each filter of `dsp.fusion.orientation` and each BROAD trial in the shared data folder, runs the
filter sample by sample over the whole trial (with and without magnetometer) with its default
settings (one parameter set for all trials, as the benchmark does), and prints the benchmark's
RMS errors over the `movement` samples, in degrees, beside the dataset's Madgwick baseline:

* inclination = 2 acos(sqrt(w^2 + z^2)) of q_err = q_est * conj(q_ref) (the bar: the best filter
  at or below the baseline on every trial);
* total = 2 acos(|w|), after removing one constant heading offset per trial (the circular mean of
  the heading error): the 6D filters have an arbitrary heading, and the optical reference's earth
  frame is not exactly magnetic north. Samples where the reference is NaN (hidden markers) are
  left out.

Then, on the 60 s synthetic stream of `tests/imu_stream.py` (seed 0, exact ground truth), the
inclination RMS after 2 s and the heading RMS after 10 s (9D) per filter, with its defaults and
with `STREAM_SETTINGS` (gains suited to that stream's large gyro bias).

Then times every filter on the 10,000-sample synthetic stream of `tests/imu_stream.py` (median of
repeated runs) and reports how long a fresh process takes to import the filters and load their C
library (the numba kernels this replaced needed 6.9 s to compile, 0.7 s to load from their cache).

Usage: `.venv/bin/python bench/broad_orientation.py [--filters ekf,vqf] [--settings JSON]
[--no-speed]`; `--settings '{"ekf": {"acc_noise": 0.1}}'` overrides defaults (for tuning).
Data: `$SHARED_DIR/data/broad` or `../shared/data/broad` next to the repository.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from dsp.fusion.quaternion import orientation_errors  # noqa: E402
from tests.shared_data import BROAD_DIR  # noqa: E402

# The dataset's Madgwick baseline (beta 0.12, one set for all trials), inclination and total RMSE, deg.
BASELINE_INCLINATION = {"01": 0.78, "06": 1.48, "24": 1.26, "29": 3.65}
BASELINE_TOTAL = {"01": 2.31, "06": 2.31, "24": 1.77, "29": 9.16}


def load_trials() -> dict[str, dict]:
    trials = {}
    for path in sorted(BROAD_DIR.glob("*.npz")):
        with np.load(path) as data:
            trials[path.name[:2]] = {
                "acc": np.ascontiguousarray(data["acc"], dtype=np.float64),
                "gyr": np.ascontiguousarray(data["gyr"], dtype=np.float64),
                "mag": np.ascontiguousarray(data["mag"], dtype=np.float64),
                "quat": np.asarray(data["quat"], dtype=np.float64),
                "movement": np.asarray(data["movement"], dtype=bool),
                "fs": float(data["fs"]),
                "name": path.stem,
            }
    return trials


def trial_errors(quat_est: np.ndarray, trial: dict) -> dict[str, float]:
    """RMS inclination and heading-aligned total error over the scored samples, degrees."""
    scored = trial["movement"] & np.isfinite(trial["quat"]).all(axis=1)
    q_est, q_ref = quat_est[scored], trial["quat"][scored]
    _, _, inclination = orientation_errors(q_est, q_ref)
    err = _quat_mul(q_est, q_ref * np.array([1, -1, -1, -1]))
    heading = 2 * np.arctan2(err[:, 3], err[:, 0])
    offset = np.arctan2(np.sin(heading).mean(), np.cos(heading).mean())
    align = np.array([np.cos(offset / 2), 0, 0, -np.sin(offset / 2)])
    total, _, _ = orientation_errors(_quat_mul(align, q_est), q_ref)
    rms = lambda e: float(np.degrees(np.sqrt(np.mean(e ** 2))))  # noqa: E731
    return {"inclination": rms(inclination), "total": rms(total)}


def _quat_mul(a, b):
    from dsp.fusion.quaternion import quat_multiply

    return quat_multiply(a, b)


def evaluate(filters, overrides: dict) -> list[dict]:
    from dsp.fusion.orientation import run_filter

    rows = []
    for key, trial in load_trials().items():
        for name in filters:
            for with_mag in (False, True):
                track = run_filter(name, trial["acc"], trial["gyr"], trial["mag"] if with_mag else None,
                                   trial["fs"], overrides.get(name, {}), None)
                rows.append({"trial": key, "filter": name, "mag": with_mag, **trial_errors(track.quat, trial)})
    return rows


def print_accuracy(rows: list[dict]) -> None:
    trials = sorted({r["trial"] for r in rows})
    print("Inclination RMSE over `movement` samples, degrees (total, heading-aligned, in brackets)\n")
    print("| filter | " + " | ".join(trials) + " |")
    print("|---|" + "---|" * len(trials))
    for name in dict.fromkeys(r["filter"] for r in rows):
        for with_mag in (False, True):
            cells = []
            for trial in trials:
                r = next(x for x in rows if x["trial"] == trial and x["filter"] == name and x["mag"] == with_mag)
                cells.append(f"{r['inclination']:.2f} ({r['total']:.2f})")
            print(f"| {name} {'9D' if with_mag else '6D'} | " + " | ".join(cells) + " |")
    print("| dataset Madgwick baseline | " + " | ".join(
        f"{BASELINE_INCLINATION[t]:.2f} ({BASELINE_TOTAL[t]:.2f})" for t in trials) + " |")
    best = {t: min(r["inclination"] for r in rows if r["trial"] == t) for t in trials}
    verdict = all(best[t] <= BASELINE_INCLINATION[t] for t in trials)
    print("\nBest inclination per trial: " + ", ".join(f"{t}: {best[t]:.2f}" for t in trials)
          + f" -> bar {'met' if verdict else 'NOT met'}")


def print_synthetic_accuracy(filters) -> None:
    from dsp.fusion import orientation
    from tests.imu_stream import STREAM_SETTINGS, make_imu_stream

    stream = make_imu_stream(60.0, seed=0)
    start_tilt, start_heading = int(2 * stream.fs), int(10 * stream.fs)

    def errors(name, settings, mag):
        track = orientation.run_filter(name, stream.acc, stream.gyr, mag, stream.fs, settings, None)
        _, heading, inclination = orientation_errors(track.quat, stream.quat)
        rms = lambda values: float(np.degrees(np.sqrt(np.mean(values ** 2))))  # noqa: E731
        return rms(inclination[start_tilt:]), rms(heading[start_heading:])

    print("\nSynthetic stream (60 s, 100 Hz, gyro bias (0.02, -0.03, 0.015) rad/s, 0.3 m/s^2 linear "
          "acceleration): inclination RMS after 2 s, 6D / 9D, and heading RMS after 10 s, 9D, degrees\n")
    print("| filter | defaults | STREAM_SETTINGS |\n|---|---|---|")
    for name in filters:
        cells = []
        for settings in (None, STREAM_SETTINGS.get(name)):
            if settings is None and cells:
                cells.append("(same)")
                continue
            tilt_6d, _ = errors(name, settings, None)
            tilt_9d, heading = errors(name, settings, stream.mag)
            cells.append(f"{tilt_6d:.2f} / {tilt_9d:.2f}, {heading:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def print_speed(filters, repeats: int = 20) -> None:
    from dsp.fusion import orientation
    from tests.imu_stream import make_imu_stream

    stream = make_imu_stream(100.0, seed=1)
    print(f"\nImporting the filters and loading their C library in a fresh process: {_start_seconds():.3f} s")
    orientation.load_library()
    print("\n| filter | 6D, 10,000 samples | 9D, 10,000 samples |\n|---|---|---|")
    for name in filters:
        cells = []
        for mag in (None, stream.mag):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                orientation.run_filter(name, stream.acc, stream.gyr, mag, stream.fs, None, None)
                times.append(time.perf_counter() - t0)
            cells.append(f"{np.median(times) * 1e3:.2f} ms")
        print(f"| {name} | " + " | ".join(cells) + " |")


def _start_seconds() -> float:
    """Seconds a new interpreter takes to import dsp.fusion.orientation and load its C library."""
    import subprocess

    code = ("import time; t = time.perf_counter(); from dsp.fusion import orientation; orientation.load_library(); "
            "print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, capture_output=True,
                                text=True).stdout)


def main() -> int:
    from dsp.fusion.orientation import FILTERS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--filters", default=",".join(FILTERS))
    parser.add_argument("--settings", default="{}", help="JSON: {filter: {setting: value}}")
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()
    filters = [f for f in args.filters.split(",") if f]
    if not BROAD_DIR.is_dir():
        print(f"BROAD data not found in {BROAD_DIR}", file=sys.stderr)
    else:
        print_accuracy(evaluate(filters, json.loads(args.settings)))
    print_synthetic_accuracy(filters)
    if not args.no_speed:
        print_speed(filters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
