"""Speed of the kalman block's filters beside the libraries they replace, measured in one process.

* Constant-velocity Kalman filter (`dsp.fusion.linear_kalman`) on 3 axes x 10,000 samples, filter alone
  and with RTS smoothing (bars: under 3 ms and 6 ms), three ways: a stream's first window with a
  new configuration (the gain recursion computed from scratch: "cold"), the same configuration
  again (the data-independent gain sequence comes from the per-configuration cache: "warm"), and
  a window continuing a stream (state already converged). Baseline: filterpy's KalmanFilter
  (predict/update per sample) and rts_smoother, same model, same data.
* Every orientation filter of `dsp.fusion.orientation` on 10,000 samples of the synthetic IMU stream
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

from dsp.fusion import linear_kalman, orientation  # noqa: E402
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


def row(name: str, figure: float, bar=None, baseline=None, baseline_name: str = "") -> dict:
    """One line of the report: our figure in ms, its bar, and the library's in the same process."""
    return {"name": name, "figure": figure, "unit": "ms", "bar": bar, "baseline": baseline,
            "baseline_name": baseline_name}


def cv_rows() -> list[dict]:
    z = cv_signals()
    rows = []
    converged = linear_kalman.run_cv_filter(z, FS, PROCESS_NOISE, MEASUREMENT_NOISE).state
    for smooth, label, bar in ((False, "filter", 3.0), (True, "filter + RTS", 6.0)):
        def ours(state=None):
            linear_kalman.run_cv_filter(z, FS, PROCESS_NOISE, MEASUREMENT_NOISE, state=state, smooth=smooth)

        cold = median_ms(ours, 30, setup=linear_kalman._riccati_cached.cache_clear)
        warm = median_ms(ours, 100)
        continued = median_ms(lambda: ours(converged), 100)
        baseline = median_ms(lambda: filterpy_cv(z, smooth), 3)
        rows += [
            row(f"CV Kalman {label}, 3 x 10,000, first window, new configuration", cold, bar,
                baseline, "filterpy 2.0.0"),
            row(f"CV Kalman {label}, 3 x 10,000, first window, gains cached", warm),
            row(f"CV Kalman {label}, 3 x 10,000, continuing a stream", continued),
        ]
    return rows


def ahrs_rows() -> list[dict]:
    from ahrs.filters import EKF, Complementary, Madgwick, Mahony

    stream = make_imu_stream(seconds=SAMPLES / FS, fs=FS, seed=0)
    acc, gyr = stream.acc, stream.gyr
    orientation.load_library()  # the C library's first load is not a filter's time
    # The ahrs package's filter of the same family, on the same data (vqf has no counterpart there).
    counterparts = {"complementary": Complementary, "ekf": EKF, "madgwick": Madgwick, "mahony": Mahony}
    rows = []
    for name in orientation.FILTERS:
        settings = orientation.default_settings(name)
        figure = median_ms(lambda: orientation.run_filter(name, acc, gyr, None, FS, settings, None), 20)
        library = counterparts.get(name)
        baseline = median_ms(lambda: library(gyr=gyr, acc=acc, frequency=FS), 3) if library else None
        rows.append(row(f"AHRS {name}, 10,000 samples", figure, 15.0, baseline,
                        f"ahrs 0.4.0 {library.__name__}" if library else ""))
    return rows


def run() -> list[dict]:
    return cv_rows() + ahrs_rows()


def markdown(rows: list[dict]) -> str:
    lines = ["| measure | ours | bar | library, same process |", "|---|---|---|---|"]
    for r in rows:
        bar = f"< {r['bar']:g} {r['unit']}" if r["bar"] else ""
        library = f"{r['baseline_name']}: {r['baseline']:.1f} {r['unit']}" if r["baseline"] else ""
        lines.append(f"| {r['name']} | {r['figure']:.2f} {r['unit']} | {bar} | {library} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run()))
