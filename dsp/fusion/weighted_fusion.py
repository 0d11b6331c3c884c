"""Inverse-variance fusion of redundant sensors that measure the same quantity.

Given k sensors z_i with noise variances v_i, the minimum-variance unbiased combination is

    fused = sum(z_i / v_i) / sum(1 / v_i),    fused variance = 1 / sum(1 / v_i),

which is below every single v_i. (Three thermometers in one room, two barometers, ...)

The variances are either given (one per sensor, in the sensor's units squared) or estimated.
The estimate is each sensor's own high-pass noise: half the variance of its first differences.
For white noise on a signal that changes slowly between samples, Var(z_k - z_{k-1}) = 2 v; the
mean difference is removed first, so a steady trend does not count as noise. This needs no other
sensor (a residual against the fused signal cannot tell which of two sensors is the noisy one,
and is biased because the fused signal contains the sensor itself). Its limits: a fast-changing
true signal counts as noise, and a constant offset between sensors is not seen at all (fusion
assumes the sensors agree on average).

Across windows the estimate is a running one: the state keeps each sensor's variance, how many
differences it rests on (capped at `memory_samples`, so old windows fade out) and the last
sample, so the first difference of a window spans the boundary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from dsp.core.errors import ConfigurationError

__all__ = ["FusionResult", "fuse", "difference_noise_variance", "VARIANCE_FLOOR"]

# A sensor whose readings do not change at all (a quantised, steady signal) would get an infinite
# weight; its variance is floored here, in the sensor's units squared.
VARIANCE_FLOOR = 1e-12


@dataclass
class FusionResult:
    """value, variance: per sample (samples,); weights, sensor_variances: per sensor (sensors,),
    weights summing to 1; state: JSON-able, to pass to the next window (None with given variances)."""

    value: np.ndarray
    variance: np.ndarray
    weights: np.ndarray
    sensor_variances: np.ndarray
    state: Optional[dict]


def difference_noise_variance(z: np.ndarray) -> np.ndarray:
    """Per sensor, half the variance of the first differences of `z` (sensors, samples >= 2)."""
    differences = np.diff(z, axis=1)
    return differences.var(axis=1) / 2.0


def fuse(z: np.ndarray, variances: Optional[Sequence[float]] = None, state: Optional[dict] = None,
         memory_samples: float = math.inf) -> FusionResult:
    """Fuse the rows of `z` (sensors, samples) into one signal.

    variances: one per sensor (units^2), or None to estimate them (see the module docstring).
    state: the running estimate from the previous window (estimated variances only).
    memory_samples: how many differences the running estimate may rest on at most (>= 1).
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] == 0:
        raise ConfigurationError(
            f"Weighted fusion needs at least 2 sensors measuring the same quantity, with at least one "
            f"sample each; got {z.shape[0] if z.ndim == 2 else 0} sensor(s).")
    if not np.isfinite(z).all():
        raise ConfigurationError("Weighted fusion got NaN or infinite readings; send finite numbers.")
    n_sensors = z.shape[0]
    new_state = None
    if variances is not None:
        sensor_variances = _given_variances(variances, n_sensors)
    else:
        sensor_variances, new_state = _estimated_variances(z, state, memory_samples)
    inverse = 1.0 / np.maximum(sensor_variances, VARIANCE_FLOOR)
    total = inverse.sum()
    weights = inverse / total
    value = weights @ z
    variance = np.full(z.shape[1], 1.0 / total)
    return FusionResult(value=value, variance=variance, weights=weights,
                        sensor_variances=sensor_variances, state=new_state)


def _given_variances(variances: Sequence[float], n_sensors: int) -> np.ndarray:
    given = np.asarray(variances, dtype=np.float64).reshape(-1)
    if given.size != n_sensors:
        raise ConfigurationError(
            f"Weighted fusion got {given.size} sensor variances for {n_sensors} sensors; give one per "
            "sensor, in the order of the axes.")
    if not (np.isfinite(given).all() and (given > 0).all()):
        raise ConfigurationError(
            f"Sensor variances must be positive numbers (units squared); got {given.tolist()}.")
    return given


def _estimated_variances(z: np.ndarray, state: Optional[dict], memory_samples: float):
    if not memory_samples >= 1:
        raise ConfigurationError(f"The variance memory must be at least 1 sample; got {memory_samples}.")
    n_sensors = z.shape[0]
    previous = _previous_estimate(state, n_sensors)
    # The previous window's last sample makes the first difference of this window.
    series = z if previous is None else np.concatenate([previous["last"][:, None], z], axis=1)
    count = series.shape[1] - 1
    if count == 0 and previous is None:
        raise ConfigurationError(
            "Weighted fusion estimates each sensor's noise from differences of consecutive samples: "
            "send at least 2 samples, or give the sensor variances.")
    if count:
        window_variance = difference_noise_variance(series)
    else:
        window_variance = np.zeros(n_sensors)
    if previous is None:
        variance, support = window_variance, float(min(count, memory_samples))
    else:
        old_support = previous["support"]
        variance = (old_support * previous["variance"] + count * window_variance) / (old_support + count)
        support = float(min(old_support + count, memory_samples))
    state = {"variance": variance.tolist(), "support": support, "last": z[:, -1].tolist()}
    return variance, state


def _previous_estimate(state: Optional[dict], n_sensors: int) -> Optional[dict]:
    if not state:
        return None
    try:
        variance = np.asarray(state["variance"], dtype=np.float64)
        last = np.asarray(state["last"], dtype=np.float64)
        support = float(state["support"])
    except (KeyError, TypeError, ValueError):
        raise ConfigurationError(
            "The weighted-fusion state must hold 'variance', 'support' and 'last'; send \"\" to start "
            "a new stream.") from None
    if variance.shape != (n_sensors,) or last.shape != (n_sensors,) or not support > 0:
        raise ConfigurationError(
            f"The weighted-fusion state is for another number of sensors than this window's "
            f"{n_sensors}; send \"\" to start a new stream.")
    return {"variance": variance, "last": last, "support": support}
