"""BROAD benchmark, bar b of issue 4: sample by sample, in process, the best orientation filter's
inclination RMSE is at or below the dataset's Madgwick baseline on every trial.

One parameter set (the filters' defaults) for all trials, as the benchmark does. Figures per filter
and trial: `bench/broad_orientation.py`. Data: BROAD (Laidig et al. 2021, CC BY 4.0), read from the
shared data folder, never copied into the repository.
"""
from __future__ import annotations

import numpy as np
import pytest

from dsp.fusion.orientation import FILTERS, run_filter
from dsp.fusion.quaternion import orientation_errors
from tests.shared_data import BROAD_DIR

# The dataset's Madgwick figures (beta 0.12), inclination RMSE in degrees.
BASELINE_INCLINATION = {"01": 0.78, "06": 1.48, "24": 1.26, "29": 3.65}


@pytest.fixture(scope="module")
def inclination_rmse() -> dict:
    """{(trial, filter, with_mag): inclination RMSE in degrees over the scored samples}."""
    paths = {p.name[:2]: p for p in sorted(BROAD_DIR.glob("*.npz"))}
    missing = sorted(set(BASELINE_INCLINATION) - set(paths))
    if missing:
        pytest.skip(f"BROAD trials {missing} not found in {BROAD_DIR}")
    figures = {}
    for trial, path in paths.items():
        if trial not in BASELINE_INCLINATION:
            continue
        with np.load(path) as data:
            acc, gyr, mag = (np.ascontiguousarray(data[k], dtype=np.float64) for k in ("acc", "gyr", "mag"))
            reference = np.asarray(data["quat"], dtype=np.float64)
            scored = np.asarray(data["movement"], dtype=bool) & np.isfinite(reference).all(axis=1)
            fs = float(data["fs"])
        for name in FILTERS:
            for with_mag in (False, True):
                track = run_filter(name, acc, gyr, mag if with_mag else None, fs, None, None)
                _, _, inclination = orientation_errors(track.quat[scored], reference[scored])
                figures[(trial, name, with_mag)] = float(np.degrees(np.sqrt(np.mean(inclination ** 2))))
    return figures


@pytest.mark.parametrize("trial", sorted(BASELINE_INCLINATION))
def test_best_filter_at_or_below_the_madgwick_baseline(inclination_rmse, trial):
    best = min(v for (t, _, _), v in inclination_rmse.items() if t == trial)
    assert best <= BASELINE_INCLINATION[trial], {k: round(v, 2) for k, v in inclination_rmse.items() if k[0] == trial}


@pytest.mark.parametrize("trial", sorted(BASELINE_INCLINATION))
def test_our_own_ekf_also_meets_the_baseline_without_magnetometer(inclination_rmse, trial):
    """Not only the vqf library: the project's EKF (6D) clears the bar too."""
    assert inclination_rmse[(trial, "ekf", False)] <= BASELINE_INCLINATION[trial]


def test_every_filter_stays_near_the_baseline(inclination_rmse):
    """No filter is broken on real data: within 1.6x the baseline on every trial. The complementary
    filter has no bias estimate, so its default time constant is short enough for an uncalibrated
    gyro (bench/cheap_imu.py), which lets more of trial 29's fast-motion acceleration through:
    within 2x there (measured 1.9x)."""
    for (trial, name, with_mag), value in inclination_rmse.items():
        factor = 2.0 if name == "complementary" else 1.6
        assert value <= factor * BASELINE_INCLINATION[trial], (trial, name, with_mag, value)
