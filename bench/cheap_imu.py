"""The orientation filters on a cheap IMU at 100 Hz, through the kalman block, beside ahrs.

Why: the per-sample settings the complementary and Mahony filters used to have were tuned on
BROAD's 286 Hz and a well-calibrated gyroscope. This stream is the other end: 100 Hz, a gyro
bias of (0.6, -0.9, 0.75) deg/s as an uncalibrated MEMS gyroscope has, 0.3 m/s^2 of linear
acceleration (`tests/imu_stream.py`, 120 s, seeds 0 and 1). It is cut into 5 s windows sent to
`/blocks/kalman/batch` through Flask's test client with the state carried (as Studio does along
a sample), and each window's `roll_mean` / `pitch_mean` is compared with the true orientation's
window means (the first window, start-up, left out): tilt RMS = RMS over windows of
hypot(roll error, pitch error), in degrees, mean of the two seeds. Beside it, ahrs 0.4's filters
of the same family with their own defaults, on the same samples, scored the same way.

Bars (issue 8): mahony at most 1.0 degree, complementary at most 2.0.

Usage: `.venv/bin/python bench/cheap_imu.py [--filters mahony,complementary] [--params JSON]`
prints a markdown table; `--params '{"mahony-time-constant": 2}'` overrides block parameters.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from broad_block import block_window_means, make_client, wrap_aware_mean, wrap_degrees  # noqa: E402

from dsp.fusion.orientation import FILTERS as ORIENTATION_FILTERS  # noqa: E402
from dsp.fusion.quaternion import euler_zyx  # noqa: E402
from tests.imu_stream import make_imu_stream  # noqa: E402

FS = 100.0
SECONDS = 120.0
WINDOW_SECONDS = 5.0
SEEDS = (0, 1)
CHEAP_GYRO_BIAS = np.radians([0.6, -0.9, 0.75])  # rad/s
BARS = {"mahony": 1.0, "complementary": 2.0}


def cheap_stream(seed: int, seconds: float = SECONDS):
    return make_imu_stream(seconds=seconds, fs=FS, seed=seed, gyro_bias=CHEAP_GYRO_BIAS, linear_acceleration=0.3)


def _true_window_means(quat: np.ndarray, window: int, n_windows: int):
    roll, pitch, _ = (np.degrees(a) for a in euler_zyx(quat))
    roll_means = np.array([wrap_aware_mean(roll[w * window:(w + 1) * window]) for w in range(n_windows)])
    pitch_means = np.array([pitch[w * window:(w + 1) * window].mean() for w in range(n_windows)])
    return roll_means, pitch_means


def tilt_rms(roll_means, pitch_means, quat_true, window: int) -> float:
    """RMS over windows (the first left out) of hypot(roll, pitch) window-mean errors, degrees."""
    true_roll, true_pitch = _true_window_means(quat_true, window, len(roll_means))
    errors = np.hypot(wrap_degrees(roll_means - true_roll), pitch_means - true_pitch)[1:]
    return float(np.sqrt(np.mean(errors ** 2)))


def block_tilt_rms(client, filter_name: str, seed: int, params: dict | None = None,
                   seconds: float = SECONDS) -> float:
    """The block's tilt RMS on the cheap stream of `seed`, 5 s windows, state carried."""
    stream = cheap_stream(seed, seconds)
    trial = {"name": f"cheap-{seed}", "fs": FS, "acc": stream.acc, "gyr": stream.gyr, "mag": stream.mag}
    window = int(WINDOW_SECONDS * FS)
    roll, pitch = block_window_means(client, trial, filter_name, window, use_mag=False, params=params)
    return tilt_rms(roll, pitch, stream.quat, window)


def ahrs_tilt_rms(filter_name: str, seed: int) -> float | None:
    """ahrs 0.4's filter of the same family, its defaults, scored like the block."""
    from ahrs.filters import Complementary, Madgwick, Mahony

    library = {"complementary": Complementary, "madgwick": Madgwick, "mahony": Mahony}.get(filter_name)
    if library is None:
        return None
    stream = cheap_stream(seed)
    window = int(WINDOW_SECONDS * FS)
    n_windows = len(stream.acc) // window
    # 6D: ahrs' earth frame has z up like ours, so roll and pitch compare directly (heading aside).
    roll, pitch, _ = (np.degrees(a) for a in euler_zyx(library(gyr=stream.gyr, acc=stream.acc, frequency=FS).Q))
    roll_means = np.array([wrap_aware_mean(roll[w * window:(w + 1) * window]) for w in range(n_windows)])
    pitch_means = np.array([pitch[w * window:(w + 1) * window].mean() for w in range(n_windows)])
    return tilt_rms(roll_means, pitch_means, stream.quat, window)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--filters", default=",".join(ORIENTATION_FILTERS))
    parser.add_argument("--params", default="{}", help="block parameters as JSON, for every filter")
    args = parser.parse_args(argv)
    client = make_client()
    logging.getLogger("dsp_server.access").setLevel(logging.WARNING)
    print("| filter | this project, defaults | bar | ahrs 0.4, its defaults |")
    print("|---|---|---|---|")
    for name in args.filters.split(","):
        ours = np.mean([block_tilt_rms(client, name, seed, json.loads(args.params)) for seed in SEEDS])
        theirs = [ahrs_tilt_rms(name, seed) for seed in SEEDS]
        theirs_text = f"{np.mean(theirs):.2f}" if theirs[0] is not None else "-"
        bar = f"{BARS[name]:.1f}" if name in BARS else "-"
        print(f"| {name} | {ours:.2f} | {bar} | {theirs_text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
