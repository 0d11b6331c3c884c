"""Constant-velocity linear Kalman filter, one independent filter per axis, with RTS smoothing.

Model, per axis, at a fixed sampling rate fs (dt = 1 / fs):

* state x = [value, rate]; transition F = [[1, dt], [0, 1]];
* process noise: white acceleration of spectral density q (units^2 / s^3), so
  Q = q * [[dt^3 / 3, dt^2 / 2], [dt^2 / 2, dt]];
* measurement z = value + v, v ~ N(0, R), R in units^2.

Each sample is a predict step followed by an update step (filterpy's `batch_filter` order), so a
state (x, P) is the posterior after the previous sample. A stream's first window starts from
x = [z_0, 0] and P = diag(R, 2 R / dt^2) (the first measurement, and a rate as uncertain as a
difference of two measurements), unless a state is given.

Why it is fast: the covariance and gain recursion (Riccati) does not depend on the data. It is run
once, exactly, until the gain stops changing at machine precision (typically tens to a few hundred
steps); from there the filter is a fixed linear recursion, x_k = (I - K H) F x_{k-1} + K z_k,
which `scipy.signal.lfilter` evaluates for every axis at once as a second-order IIR filter with
initial conditions set from the state. The steps before convergence run as a short loop with the
exact time-varying gains. The RTS smoother does the same backwards: constant smoother gain after
convergence (an IIR filter on the reversed filtered states), exact gains for the first steps. The
result equals the textbook recursion (filterpy's KalmanFilter and rts_smoother) to rounding.

Smoothing uses the samples of the window it is given; the filtered state continues into the next
window, the smoothed one does not (RTS needs the future, which the next window does not change).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import scipy.signal

from dsp.core.errors import ConfigurationError

__all__ = ["GainSequence", "KalmanOutput", "KalmanState", "cv_model", "initial_state", "run_cv_filter",
           "riccati_gains"]

# Relative change of the gain below which the Riccati recursion counts as converged: a few ulps,
# so the constant-gain part is the exact recursion to rounding.
GAIN_TOLERANCE = 4 * np.finfo(np.float64).eps
# Upper bound on transient steps when the gain converges slowly (q tiny against R): beyond the
# window's length the whole window simply runs with exact time-varying gains.
MAX_RICCATI_STEPS = 1_000_000


@dataclass
class KalmanState:
    """Posterior after the last sample, per axis: x (axes, 2) and P (axes, 2, 2)."""

    x: np.ndarray
    P: np.ndarray

    def to_json(self) -> dict:
        return {"x": self.x.tolist(), "P": self.P.tolist()}

    @classmethod
    def from_json(cls, payload: dict, n_axes: int) -> "KalmanState":
        """The state stored by `to_json`; raises ConfigurationError when it does not fit."""
        try:
            x = np.asarray(payload["x"], dtype=np.float64)
            P = np.asarray(payload["P"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ConfigurationError(
                "The Kalman state must hold 'x' (value and rate per axis) and 'P' (a 2x2 covariance "
                "per axis); send \"\" to start a new stream.") from None
        if x.shape != (n_axes, 2) or P.shape != (n_axes, 2, 2):
            raise ConfigurationError(
                f"The Kalman state is for {x.shape[0] if x.ndim == 2 else '?'} axes but this window has "
                f"{n_axes}; send \"\" to start a new stream.")
        if not (np.isfinite(x).all() and np.isfinite(P).all()):
            raise ConfigurationError("The Kalman state holds non-finite numbers; send \"\" to start a "
                                     "new stream.")
        return cls(x=x, P=P)


@dataclass
class KalmanOutput:
    """Per-sample results, each (axes, samples): filtered value and rate, innovation z - H x_prior,
    smoothed value and rate (None without RTS), and the state after the last sample."""

    value: np.ndarray
    rate: np.ndarray
    innovation: np.ndarray
    smoothed_value: Optional[np.ndarray]
    smoothed_rate: Optional[np.ndarray]
    state: KalmanState


def cv_model(fs: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """F and Q of the constant-velocity model at sampling rate `fs` (Hz), spectral density `q`."""
    dt = 1.0 / fs
    F = np.array([[1.0, dt], [0.0, 1.0]])
    Q = q * np.array([[dt ** 3 / 3.0, dt ** 2 / 2.0], [dt ** 2 / 2.0, dt]])
    return F, Q


def initial_state(first_values: np.ndarray, fs: float, r: float) -> KalmanState:
    """Start of a stream: value = first measurement, rate 0 with the variance of a two-sample slope."""
    first_values = np.asarray(first_values, dtype=np.float64)
    n_axes = first_values.shape[0]
    x = np.zeros((n_axes, 2))
    x[:, 0] = first_values
    P = np.zeros((n_axes, 2, 2))
    P[:, 0, 0] = r
    P[:, 1, 1] = 2.0 * r * fs * fs
    return KalmanState(x=x, P=P)


def _check_noise(fs: float, q: float, r: float) -> None:
    if not (math.isfinite(fs) and fs > 0):
        raise ConfigurationError(f"The sampling frequency must be a positive number of Hz; got {fs}.")
    if not (math.isfinite(q) and q > 0):
        raise ConfigurationError(f"The Kalman process noise Q must be a positive number; got {q}.")
    if not (math.isfinite(r) and r > 0):
        raise ConfigurationError(f"The Kalman measurement noise R must be a positive number; got {r}.")


@dataclass(frozen=True)
class GainSequence:
    """The data-independent part of a filter run from one starting covariance.

    gains (m+1, 2), posts / priors (m+1, 2, 2): K_k, P_k posterior and prior for k = 0 .. m.
    converged: every step after m uses K_m, P_m, P_m^- (else m = samples - 1: all exact).
    smoother_gains (m, 2, 2): G_k = P_k F' (P_{k+1}^-)^-1 for k < m; steady_smoother_gain: G for
    k >= m (None when not converged).
    """

    gains: np.ndarray
    posts: np.ndarray
    priors: np.ndarray
    converged: bool
    smoother_gains: np.ndarray
    steady_smoother_gain: Optional[np.ndarray]


def riccati_gains(P0: np.ndarray, F: np.ndarray, Q: np.ndarray, r: float, n: int) -> GainSequence:
    """The exact gain sequence from posterior covariance P0, until it converges or n steps."""
    P0 = np.asarray(P0, dtype=np.float64)
    return _riccati_cached(float(F[0, 1]), float(Q[0, 0]), float(Q[0, 1]), float(Q[1, 1]), float(r),
                           float(P0[0, 0]), float(P0[0, 1]), float(P0[1, 1]), int(n))


# The same configuration repeats window after window (and every stream starts from the same
# covariance), so the recursion is computed once per configuration.
@lru_cache(maxsize=64)
def _riccati_cached(dt, q00, q01, q11, r, p00, p01, p11, n) -> GainSequence:
    k0s, k1s, post_rows, prior_rows = [], [], [], []
    previous0 = previous1 = math.nan
    converged = False
    for _ in range(min(n, MAX_RICCATI_STEPS)):
        # Predict: F P F' + Q with F = [[1, dt], [0, 1]], written out (the loop is the cost).
        a00 = p00 + 2.0 * dt * p01 + dt * dt * p11 + q00
        a01 = p01 + dt * p11 + q01
        a11 = p11 + q11
        s = a00 + r
        k0, k1 = a00 / s, a01 / s
        # Joseph form, as filterpy: (I - K H) P^- (I - K H)' + K R K'.
        c = 1.0 - k0
        p00 = c * c * a00 + k0 * k0 * r
        p01 = c * (a01 - k1 * a00) + k0 * k1 * r
        p11 = a11 - 2.0 * k1 * a01 + k1 * k1 * a00 + k1 * k1 * r
        k0s.append(k0)
        k1s.append(k1)
        post_rows.append((p00, p01, p01, p11))
        prior_rows.append((a00, a01, a01, a11))
        if abs(k0 - previous0) <= GAIN_TOLERANCE * abs(k0) and abs(k1 - previous1) <= GAIN_TOLERANCE * abs(k1):
            converged = True
            break
        previous0, previous1 = k0, k1
    gains = np.column_stack([k0s, k1s])
    posts = np.array(post_rows).reshape(-1, 2, 2)
    priors = np.array(prior_rows).reshape(-1, 2, 2)
    F = np.array([[1.0, dt], [0.0, 1.0]])
    # G_k pairs P_k with P_{k+1}^-; past the last computed step the prior is the converged one.
    next_priors = priors[1:]
    smoother_gains = posts[:-1] @ F.T @ np.linalg.inv(next_priors)
    steady = posts[-1] @ F.T @ np.linalg.inv(priors[-1]) if converged else None
    for array in (gains, posts, priors, smoother_gains):
        array.setflags(write=False)
    return GainSequence(gains=gains, posts=posts, priors=priors, converged=converged,
                        smoother_gains=smoother_gains, steady_smoother_gain=steady)


def run_cv_filter(z: np.ndarray, fs: float, q: float, r: float,
                  state: Optional[KalmanState] = None, smooth: bool = False) -> KalmanOutput:
    """Filter (and optionally RTS-smooth) every axis of `z` (axes, samples).

    q: white-acceleration spectral density (units^2 / s^3); r: measurement variance (units^2).
    state: the posterior after the previous window (None starts a stream from z[:, 0]).
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] == 0:
        raise ConfigurationError("The Kalman filter needs at least one sample per axis.")
    _check_noise(fs, q, r)
    if state is None:
        state = initial_state(z[:, 0], fs, r)
    n_axes, n = z.shape
    F, Q = cv_model(fs, q)
    value = np.empty((n_axes, n))
    rate = np.empty((n_axes, n))
    innovation = np.empty((n_axes, n))
    smoothed = (np.empty((n_axes, n)), np.empty((n_axes, n))) if smooth else (None, None)
    final_x = np.empty((n_axes, 2))
    final_P = np.empty((n_axes, 2, 2))
    # Axes whose covariance is the same share one gain sequence (every axis, in practice).
    for P0, axes in _group_by_covariance(state.P):
        sequence = riccati_gains(P0, F, Q, r, n)
        xs = _forward(z[axes], state.x[axes], F, sequence)
        value[axes], rate[axes] = xs[:, 0], xs[:, 1]
        previous_value = np.concatenate([state.x[axes, :1], xs[:, 0, :-1]], axis=1)
        previous_rate = np.concatenate([state.x[axes, 1:], xs[:, 1, :-1]], axis=1)
        innovation[axes] = z[axes] - (previous_value + F[0, 1] * previous_rate)
        final_x[axes] = xs[:, :, -1]
        final_P[axes] = sequence.posts[-1]
        if smooth:
            ss = _rts(xs, F, sequence)
            smoothed[0][axes], smoothed[1][axes] = ss[:, 0], ss[:, 1]
    return KalmanOutput(value=value, rate=rate, innovation=innovation, smoothed_value=smoothed[0],
                        smoothed_rate=smoothed[1], state=KalmanState(x=final_x, P=final_P))


def _group_by_covariance(P: np.ndarray):
    groups: list[tuple[np.ndarray, list[int]]] = []
    for axis in range(P.shape[0]):
        for P0, members in groups:
            if np.array_equal(P0, P[axis]):
                members.append(axis)
                break
        else:
            groups.append((P[axis], [axis]))
    return groups


def _transient_steps(sequence: GainSequence) -> int:
    """Steps that need their own gain: all before convergence (the last gain is the steady one)."""
    return len(sequence.gains) - 1 if sequence.converged else len(sequence.gains)


def _forward(z: np.ndarray, x0: np.ndarray, F: np.ndarray, sequence: GainSequence) -> np.ndarray:
    """Filtered states (axes, 2, samples): exact time-varying steps, then one IIR filter per state."""
    n_axes, n = z.shape
    out = np.empty((n_axes, 2, n))
    dt = F[0, 1]
    transient = _transient_steps(sequence)
    x = x0.copy()
    if transient:
        k0s, k1s = sequence.gains[:transient, 0].tolist(), sequence.gains[:transient, 1].tolist()
        for axis in range(n_axes):
            v, w = float(x[axis, 0]), float(x[axis, 1])
            values, rates = [], []
            for zk, k0, k1 in zip(z[axis, :transient].tolist(), k0s, k1s):
                predicted = v + dt * w
                error = zk - predicted
                v, w = predicted + k0 * error, w + k1 * error
                values.append(v)
                rates.append(w)
            out[axis, 0, :transient], out[axis, 1, :transient] = values, rates
            x[axis] = (v, w)
    if transient == n:
        return out
    K = sequence.gains[-1]
    # Constant gain: x_k = A x_{k-1} + K z_k with A = (I - K H) F, a 2nd-order IIR per state.
    A = (np.eye(2) - np.outer(K, [1.0, 0.0])) @ F
    a1, a2 = -np.trace(A), np.linalg.det(A)
    denominator = np.array([1.0, a1, a2])
    segment = z[:, transient:]
    A2 = A @ A
    for component in range(2):
        C = np.eye(2)[component]
        b0 = C @ K
        b1 = C @ A @ K + a1 * b0
        # Initial conditions so the IIR output continues from state x (its zero-input response).
        ca_x = x @ (C @ A)
        zi = np.stack([ca_x, x @ (C @ A2) + a1 * ca_x], axis=1)
        out[:, component, transient:], _ = scipy.signal.lfilter(
            np.array([b0, b1, 0.0]), denominator, segment, axis=1, zi=zi)
    return out


def _rts(xs: np.ndarray, F: np.ndarray, sequence: GainSequence) -> np.ndarray:
    """RTS-smoothed states (axes, 2, samples) from the filtered ones.

    x_s[k] = x_f[k] + G_k (x_s[k+1] - F x_f[k]) = (I - G_k F) x_f[k] + G_k x_s[k+1].
    """
    n_axes, _, n = xs.shape
    out = np.empty_like(xs)
    out[:, :, -1] = xs[:, :, -1]
    if n == 1:
        return out
    # Steps k < m have their own gain; k = m .. n-2 share the steady one.
    m = min(len(sequence.smoother_gains), n - 1)
    if m < n - 1:
        G = sequence.steady_smoother_gain
        a1, a2 = -np.trace(G), np.linalg.det(G)
        denominator = np.array([1.0, a1, a2])
        # Input u_k = (I - G F) x_f[k], in reversed time: index 0 is k = n-2.
        U = np.einsum("ij,ajk->aik", np.eye(2) - G @ F, xs[:, :, m:n - 1])[:, :, ::-1]
        s0 = xs[:, :, -1]
        G2 = G @ G
        for component in range(2):
            C = np.eye(2)[component]
            # Numerator C + (C G + a1 C) z^-1 applied to the 2-vector input, then the shared poles.
            w = U[:, 0] * C[0] + U[:, 1] * C[1]
            N1 = C @ G + a1 * C
            w[:, 1:] += U[:, 0, :-1] * N1[0] + U[:, 1, :-1] * N1[1]
            cg_s = s0 @ (C @ G)
            zi = np.stack([cg_s, s0 @ (C @ G2) + a1 * cg_s], axis=1)
            y, _ = scipy.signal.lfilter([1.0, 0.0, 0.0], denominator, w, axis=1, zi=zi)
            out[:, component, m:n - 1] = y[:, ::-1]
    if m:
        # Exact gains for the first steps, newest first, in plain floats per axis.
        gains = sequence.smoother_gains[:m]
        g00, g01 = gains[:, 0, 0].tolist(), gains[:, 0, 1].tolist()
        g10, g11 = gains[:, 1, 0].tolist(), gains[:, 1, 1].tolist()
        dt = F[0, 1]
        for axis in range(n_axes):
            sv, sw = float(out[axis, 0, m]), float(out[axis, 1, m])
            fv, fw = xs[axis, 0, :m].tolist(), xs[axis, 1, :m].tolist()
            values, rates = [0.0] * m, [0.0] * m
            for k in range(m - 1, -1, -1):
                dv = sv - (fv[k] + dt * fw[k])
                dw = sw - fw[k]
                sv = fv[k] + g00[k] * dv + g01[k] * dw
                sw = fw[k] + g10[k] * dv + g11[k] * dw
                values[k], rates[k] = sv, sw
            out[axis, 0, :m], out[axis, 1, :m] = values, rates
    return out
