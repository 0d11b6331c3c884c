"""Speed of the kalman block's filters beside the libraries they replace, measured in one process.

* Constant-velocity Kalman filter (`dsp.linear_kalman`) on 3 axes x 10,000 samples, filter alone
  and with RTS smoothing (bars: under 3 ms and 6 ms), three ways: a stream's first window with a
  new configuration (the gain recursion computed from scratch: "cold"), the same configuration
  again (the data-independent gain sequence comes from the per-configuration cache: "warm"), and
  a window continuing a stream (state already converged). Baseline: filterpy's KalmanFilter
  (predict/update per sample) and rts_smoother, same model, same data.
* Every orientation filter of `dsp.orientation` on 10,000 samples of the synthetic IMU stream
  (`tests/imu_stream.py`, 100 Hz, magnetometer unused; bar: under 15 ms), beside ahrs' Madgwick
  and Mahony on the same data.

Figures are medians of repeated runs (the filterpy and ahrs baselines are repeated fewer times:
they take hundreds of milliseconds). `run()` returns the rows for `bench/run_bench.py`;
`__main__` prints them as a markdown table.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from dsp import linear_kalman, orientation  # noqa: E402
from tests.imu_stream import make_imu_stream  # noqa: E402

SAMPLES = 10_000
AXES = 3
FS = 100.0
PROCESS_NOISE = 1.0
MEASUREMENT_NOISE = 0.01


def median_ms(function, repeats: int, setup=None) -> float:
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def cv_signals() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLES) / FS
    return np.sin(2 * np.pi * 0.5 * t) + 0.1 * rng.standard_normal((AXES, SAMPLES))


def filterpy_cv(z: np.ndarray, smooth: bool) -> None:
    from filterpy.kalman import KalmanFilter

    F, Q = linear_kalman.cv_model(FS, PROCESS_NOISE)
    start = linear_kalman.initial_state(z[:, 0], FS, MEASUREMENT_NOISE)
    for axis in range(z.shape[0]):
        kf = KalmanFilter(dim_x=2, dim_z=1)
        kf.F, kf.Q, kf.H, kf.R = F, Q, np.array([[1.0, 0.0]]), np.array([[MEASUREMENT_NOISE]])
        kf.x, kf.P = start.x[axis].reshape(2, 1).copy(), start.P[axis].copy()
        means, covariances, _, _ = kf.batch_filter(z[axis])
        if smooth:
            kf.rts_smoother(means, covariances)


def cv_rows() -> list[dict]:
    z = cv_signals()
    rows = []
    converged = linear_kalman.run_cv_filter(z, FS, PROCESS_NOISE, MEASUREMENT_NOISE).state
    for smooth, label in ((False, "filter"), (True, "filter + RTS")):
        def ours(state=None):
            linear_kalman.run_cv_filter(z, FS, PROCESS_NOISE, MEASUREMENT_NOISE, state=state, smooth=smooth)

        cold = median_ms(ours, 30, setup=linear_kalman._riccati_cached.cache_clear)
        warm = median_ms(ours, 100)
        continued = median_ms(lambda: ours(converged), 100)
        baseline = median_ms(lambda: filterpy_cv(z, smooth), 3)
        rows += [
            {"name": f"CV Kalman {label}, 3 x 10,000, first window, new configuration (ours)",
             "figure": round(cold, 3), "unit": "ms"},
            {"name": f"CV Kalman {label}, 3 x 10,000, first window, cached gains (ours)",
             "figure": round(warm, 3), "unit": "ms"},
            {"name": f"CV Kalman {label}, 3 x 10,000, continuing a stream (ours)",
             "figure": round(continued, 3), "unit": "ms"},
            {"name": f"CV Kalman {label}, 3 x 10,000, filterpy 2.0.0", "figure": round(baseline, 1),
             "unit": "ms"},
        ]
    return rows


def ahrs_rows() -> list[dict]:
    stream = make_imu_stream(seconds=SAMPLES / FS, fs=FS, seed=0)
    acc, gyr = stream.acc, stream.gyr
    orientation.warm_up()
    rows = []
    for name in orientation.FILTERS:
        settings = orientation.default_settings(name)
        orientation.run_filter(name, acc, gyr, None, FS, settings, None)
        figure = median_ms(lambda: orientation.run_filter(name, acc, gyr, None, FS, settings, None), 20)
        rows.append({"name": f"AHRS {name}, 10,000 samples (ours)", "figure": round(figure, 3), "unit": "ms"})
    from ahrs.filters import Madgwick, Mahony

    rows.append({"name": "AHRS Madgwick, 10,000 samples, ahrs 0.4.0",
                 "figure": round(median_ms(lambda: Madgwick(gyr=gyr, acc=acc, frequency=FS), 3), 1),
                 "unit": "ms"})
    rows.append({"name": "AHRS Mahony, 10,000 samples, ahrs 0.4.0",
                 "figure": round(median_ms(lambda: Mahony(gyr=gyr, acc=acc, frequency=FS), 3), 1),
                 "unit": "ms"})
    return rows


def run() -> list[dict]:
    return cv_rows() + ahrs_rows()


if __name__ == "__main__":
    print("| measurement | figure | unit |")
    print("|---|---|---|")
    for row in run():
        print(f"| {row['name']} | {row['figure']} | {row['unit']} |", flush=True)
