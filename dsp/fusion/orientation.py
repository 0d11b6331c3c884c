"""Orientation (AHRS) filters: sample-by-sample fusion of gyroscope, accelerometer and magnetometer.

``run_filter(name, acc, gyr, mag, fs, settings, state)`` runs one of `FILTERS` over a chunk of a
stream and returns an `OrientationTrack`; passing its ``state`` back with the next chunk continues
the stream exactly as if both chunks had been one call.

Units and conventions (see `dsp.fusion.quaternion` for the frame conventions):

* ``acc`` in m/s^2, specific force (a level device at rest reads +9.81 on z); ``gyr`` in rad/s;
  ``mag`` in any unit (only its direction is used); fixed sampling rate ``fs`` in Hz.
* Output quaternions are scalar first and rotate sensor-frame vectors into an east-north-up earth
  frame. Without a magnetometer the heading is relative (0 at the start of the stream).
* ``innovation`` is, for every filter, the angle in radians between the measured accelerometer
  direction and the gravity direction predicted by the previous orientation propagated with this
  sample's bias-corrected gyro, i.e. what the accelerometer correction of that sample sees. It
  grows with linear acceleration and with orientation error.
* A stream starts (``state=None``) at the orientation of the mean accelerometer (and
  magnetometer) reading of its first 0.1 s (or of the whole chunk if shorter), gyro bias 0.

* ``state`` always holds ``filter`` (a state is refused by another filter), ``quat`` (the last
  orientation) and ``samples`` (count so far); ``bias`` for ekf, mahony and vqf; ``covariance``
  (6x6, row-major) and ``mag_reference`` (field strength, dip in rad) for ekf; ``vqf`` (the
  package's own state, NaN as null) for vqf. Settings are not stored: pass the same ones each call.

The loops are numba-compiled (`warm_up` compiles them ahead of time). Arrays reach numba always as
contiguous float64 and a missing magnetometer as a (0, 3) array, so each kernel compiles once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numba
import numpy as np

from dsp.core.errors import ConfigurationError
from dsp.fusion.quaternion import (
    _gravity_in_sensor,
    _qexp,
    _qmul,
    _qnormalize,
    _rotate,
    _rotate_inverse,
    _tilt_heading,
    euler_zyx,
)

__all__ = [
    "FILTERS",
    "OrientationTrack",
    "run_filter",
    "default_settings",
    "euler_zyx",
    "warm_up",
]

FILTERS = ("complementary", "ekf", "madgwick", "mahony", "vqf")

GRAVITY = 9.80665
INIT_SECONDS = 0.1  # the start-of-stream orientation averages this much of the first chunk

# error_model="numpy": a division by zero gives inf/NaN (caught after the loop) instead of raising.
_JIT = dict(cache=True, nogil=True, error_model="numpy")


@dataclass
class OrientationTrack:
    quat: np.ndarray  # (n, 4) float64 [w, x, y, z], sensor frame -> earth frame (ENU)
    gyro_bias: Optional[np.ndarray]  # (n, 3) rad/s, or None when the filter estimates none
    innovation: Optional[np.ndarray]  # (n,) rad, see the module docstring
    state: dict  # JSON-able; pass back to continue the stream


# --- settings ---------------------------------------------------------------------------------------

# name -> (default, minimum, maximum, help). Tuned on the BROAD benchmark (one set for all trials).
_SETTINGS: dict[str, dict[str, tuple]] = {
    # Time constants in seconds, so a setting means the same at any sampling rate. The per-sample
    # names (alpha, kp, ki) still work for a while: given, they replace the time constant.
    "complementary": {
        # 1.5 s: a gyro bias of b rad/s tilts the estimate by about b x tau rad, and shorter lets
        # linear acceleration through (measured on BROAD and the cheap-gyro stream, README).
        "tau": (1.5, 1e-3, 1e4, "time constant of the accelerometer tilt correction, s"),
        "tau_mag": (3.5, 1e-3, 1e4, "time constant of the magnetometer heading correction, s"),
        "alpha": (None, 0.0, 1.0, "deprecated, use tau: gyro weight per sample (0..1)"),
        "alpha_mag": (None, 0.0, 1.0, "deprecated, use tau_mag: gyro weight per sample against the heading"),
    },
    "madgwick": {
        "beta": (0.05, 0.0, 10.0, "gradient-descent gain, rad/s"),
    },
    "mahony": {
        # kp = 1 / tau and ki = kp / integral_time: the PI controller's gain and integral time.
        "tau": (3.0, 1e-3, 1e4, "time constant of the tilt (and heading) correction, s"),
        "integral_time": (6.0, 0.0, 1e6, "integral time of the gyro bias estimate, s; 0 disables it"),
        # Fast rotation makes the accelerometer's error signal mostly centripetal acceleration and
        # integration error: learning the bias from it winds the estimate up (BROAD trial 29).
        "bias_max_rate": (1.0, 0.0, 1e3, "the bias is learned only while the rotation rate is below this, rad/s"),
        "kp": (None, 0.0, 100.0, "deprecated, use tau: proportional gain, 1/s"),
        "ki": (None, 0.0, 100.0, "deprecated, use integral_time: integral gain, 1/s^2"),
    },
    "ekf": {
        # Noise densities: the accelerometer's tilt correction has a time constant of about
        # acc_noise / gyro_noise seconds at any sampling rate.
        "gyro_noise": (0.01, 1e-9, 10.0, "gyro noise density plus model error, rad/s/sqrt(Hz)"),
        "bias_walk": (1e-5, 0.0, 1.0, "gyro bias random walk, rad/s^2/sqrt(Hz)"),
        "bias_init": (0.05, 0.0, 10.0, "initial gyro bias standard deviation, rad/s"),
        "acc_noise": (0.003, 1e-9, 100.0, "accelerometer direction noise density (unit vector), 1/sqrt(Hz)"),
        "acc_inflation": (0.3, 0.0, 1e6, "added to acc_noise per unit of | |acc|/g - 1 |, 1/sqrt(Hz)"),
        "rate_inflation": (0.0, 0.0, 1e6, "added to acc_noise per rad/s of rotation rate (centripetal "
                           "acceleration), s/sqrt(Hz)"),
        "innovation_inflation": (0.1, 0.0, 1e6, "added to acc_noise per radian of the accelerometer "
                                 "innovation (bounds the correction rate, like Madgwick's beta), 1/sqrt(Hz)"),
        "acc_gate": (0.5, 0.0, 10.0, "skip the accelerometer update when | |acc|/g - 1 | exceeds this"),
        "mag_noise": (0.05, 1e-9, 100.0, "magnetometer heading noise density, rad/sqrt(Hz)"),
        "mag_norm_tol": (0.1, 0.0, 100.0, "reject the magnetometer when its strength departs from the "
                         "reference by more than this fraction"),
        "mag_dip_tol": (10.0, 0.0, 180.0, "reject the magnetometer when its dip departs from the reference "
                        "by more than this, degrees"),
        "mag_ref_tau": (30.0, 1e-3, 1e6, "time constant of the magnetic reference (strength, dip), s"),
    },
    "vqf": {
        "tau_acc": (3.0, 0.0, 1e4, "accelerometer low-pass time constant, s"),
        "tau_mag": (9.0, 0.0, 1e4, "magnetometer heading time constant, s"),
        "motion_bias_est": (True, None, None, "estimate gyro bias during motion"),
        "rest_bias_est": (True, None, None, "estimate gyro bias at rest"),
        "mag_dist_rejection": (True, None, None, "detect and reject magnetic disturbances"),
        "bias_sigma_init": (0.5, 0.0, 100.0, "initial bias uncertainty, deg/s"),
        "bias_forgetting_time": (100.0, 0.0, 1e6, "bias forgetting time, s"),
        "bias_clip": (2.0, 0.0, 100.0, "largest bias estimate, deg/s"),
        "bias_sigma_motion": (0.1, 0.0, 100.0, "bias measurement noise during motion, deg/s"),
        "bias_sigma_rest": (0.03, 0.0, 100.0, "bias measurement noise at rest, deg/s"),
        "rest_min_t": (1.5, 0.0, 1e4, "time before rest is detected, s"),
        "rest_th_gyr": (2.0, 0.0, 1e3, "rest threshold on the gyro deviation, deg/s"),
        "rest_th_acc": (0.5, 0.0, 1e3, "rest threshold on the accelerometer deviation, m/s^2"),
    },
}

_VQF_PARAM_NAMES = {
    "tau_acc": "tauAcc", "tau_mag": "tauMag", "motion_bias_est": "motionBiasEstEnabled",
    "rest_bias_est": "restBiasEstEnabled", "mag_dist_rejection": "magDistRejectionEnabled",
    "bias_sigma_init": "biasSigmaInit", "bias_forgetting_time": "biasForgettingTime",
    "bias_clip": "biasClip", "bias_sigma_motion": "biasSigmaMotion", "bias_sigma_rest": "biasSigmaRest",
    "rest_min_t": "restMinT", "rest_th_gyr": "restThGyr", "rest_th_acc": "restThAcc",
}


def default_settings(name: str) -> dict:
    """The tuned defaults of filter `name` (units in `settings_help`)."""
    return {key: spec[0] for key, spec in _SETTINGS[_check_name(name)].items()}


def settings_help(name: str) -> dict:
    """One line per setting of filter `name`: meaning and unit."""
    return {key: spec[3] for key, spec in _SETTINGS[_check_name(name)].items()}


def _check_name(name: str) -> str:
    if name not in FILTERS:
        raise ConfigurationError(f"Unknown orientation filter '{name}'; expected one of {', '.join(FILTERS)}.")
    return name


def _resolve_settings(name: str, settings: Optional[dict]) -> dict:
    specs = _SETTINGS[name]
    resolved = default_settings(name)
    for key, value in (settings or {}).items():
        if key not in specs:
            raise ConfigurationError(
                f"Filter '{name}' has no setting '{key}'; expected some of {', '.join(specs)}.")
        default, low, high, _ = specs[key]
        if value is None and default is None:
            continue
        if isinstance(default, bool):
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigurationError(f"Setting '{key}' of filter '{name}' must be true or false, got {value!r}.")
            resolved[key] = bool(value)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"Setting '{key}' of filter '{name}' must be a number, got {value!r}.") from None
        if not (math.isfinite(number) and low <= number <= high):
            raise ConfigurationError(
                f"Setting '{key}' of filter '{name}' must be between {low} and {high}, got {value!r}.")
        resolved[key] = number
    return resolved


# --- input checks -----------------------------------------------------------------------------------


def _as_samples(array, what: str, n: Optional[int], limit: float, unit: str) -> np.ndarray:
    try:
        out = np.ascontiguousarray(array, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{what} must be a numeric (samples, 3) array.") from None
    if out.ndim != 2 or out.shape[1] != 3:
        raise ConfigurationError(f"{what} must have shape (samples, 3), got {out.shape}.")
    if n is not None and out.shape[0] != n:
        raise ConfigurationError(f"{what} has {out.shape[0]} samples, the accelerometer {n}; they must match.")
    if not np.isfinite(out).all():
        raise ConfigurationError(f"{what} contains NaN or infinite values; remove or interpolate them first.")
    if out.size and np.abs(out).max() > limit:
        raise ConfigurationError(
            f"{what} reads up to {np.abs(out).max():.3g}, beyond any real sensor ({limit:g} {unit}); "
            "check its units.")
    return out


def _vector(state: dict, key: str, size: int) -> np.ndarray:
    try:
        out = np.array(state[key], dtype=np.float64).reshape(-1)
    except (KeyError, TypeError, ValueError):
        raise ConfigurationError(f"Orientation state is missing a valid '{key}'; start a new stream.") from None
    if out.size != size or not np.isfinite(out).all():
        raise ConfigurationError(f"Orientation state has an invalid '{key}'; start a new stream.")
    return out


# --- public entry point -----------------------------------------------------------------------------


def run_filter(name: str, acc, gyr, mag, fs: float, settings: Optional[dict],
               state: Optional[dict]) -> OrientationTrack:
    """Run orientation filter `name` over one chunk; see the module docstring for conventions."""
    _check_name(name)
    opts = _resolve_settings(name, settings)
    acc = _as_samples(acc, "Accelerometer", None, 1e6, "m/s^2")
    n = acc.shape[0]
    if n == 0:
        raise ConfigurationError("The orientation filters need at least one sample.")
    gyr = _as_samples(gyr, "Gyroscope", n, 1e5, "rad/s")
    has_mag = mag is not None
    mag = _as_samples(mag, "Magnetometer", n, 1e100, "in any unit") if has_mag else np.zeros((0, 3))
    try:
        fs = float(fs)
    except (TypeError, ValueError):
        raise ConfigurationError(f"Sampling rate must be a number in Hz, got {fs!r}.") from None
    if not (math.isfinite(fs) and fs > 0):
        raise ConfigurationError(f"Sampling rate must be a positive number of Hz, got {fs!r}.")
    dt = 1.0 / fs

    if state is not None:
        if not isinstance(state, dict) or state.get("filter") != name:
            found = state.get("filter") if isinstance(state, dict) else None
            raise ConfigurationError(
                f"Orientation state was made by filter '{found}', not '{name}'; start a new stream.")
        quat0 = _vector(state, "quat", 4)
        if not 0.5 < np.linalg.norm(quat0) < 2.0:
            raise ConfigurationError("Orientation state has an invalid 'quat'; start a new stream.")
        quat0 = quat0 / np.linalg.norm(quat0)
        bias0 = _vector(state, "bias", 3) if "bias" in state else np.zeros(3)
        samples = state.get("samples", 0)
        if not isinstance(samples, int) or samples < 0:
            raise ConfigurationError("Orientation state has an invalid 'samples'; start a new stream.")
    else:
        quat0 = _initial_quaternion(acc, mag if has_mag else None, fs)
        bias0 = np.zeros(3)
        samples = 0

    if name == "vqf":
        quat, bias, new_state = _run_vqf(acc, gyr, mag if has_mag else None, dt, opts, state)
    else:
        quat = np.empty((n, 4))
        bias = None
        new_state = {}
        if name == "complementary":
            alpha = _per_sample_weight(opts["alpha"], opts["tau"], dt)
            alpha_mag = _per_sample_weight(opts["alpha_mag"], opts["tau_mag"], dt)
            _complementary_kernel(acc, gyr, mag, dt, alpha, alpha_mag, quat0, quat)
        elif name == "madgwick":
            _madgwick_kernel(acc, gyr, mag, dt, opts["beta"], quat0, quat)
        elif name == "mahony":
            bias = np.empty((n, 3))
            kp, ki = _mahony_gains(opts)
            _mahony_kernel(acc, gyr, mag, dt, kp, ki, opts["bias_max_rate"], quat0, bias0, quat, bias)
        else:
            bias = np.empty((n, 3))
            if state is not None:
                cov = _vector(state, "covariance", 36).reshape(6, 6)
            else:
                cov = np.diag([0.05**2] * 3 + [opts["bias_init"] ** 2] * 3)
            cov = np.ascontiguousarray(cov)
            # Magnetic reference (strength, dip in rad); strength 0 = not seen a field yet.
            mag_ref = _vector(state, "mag_reference", 2) if state is not None else np.zeros(2)
            _ekf_kernel(acc, gyr, mag, dt, opts["gyro_noise"], opts["bias_walk"], opts["acc_noise"],
                        opts["acc_inflation"], opts["rate_inflation"],
                        opts["innovation_inflation"], opts["acc_gate"], opts["mag_noise"], opts["mag_norm_tol"],
                        math.radians(opts["mag_dip_tol"]), opts["mag_ref_tau"], GRAVITY,
                        quat0, bias0, cov, mag_ref, quat, bias)
            new_state["covariance"] = cov.reshape(-1).tolist()
            new_state["mag_reference"] = mag_ref.tolist()

    if not (np.isfinite(quat).all() and (bias is None or np.isfinite(bias).all())):
        raise ConfigurationError(
            f"The {name} filter left the valid range on this input; check the units (acc in m/s^2, "
            "gyr in rad/s) and the sampling rate.")
    innovation = np.empty(n)
    _innovation_kernel(acc, gyr, quat, bias if bias is not None else np.zeros((0, 3)), quat0, bias0, dt,
                       innovation)
    new_state.update({"filter": name, "quat": quat[-1].tolist(), "samples": samples + n})
    if bias is not None:
        new_state["bias"] = bias[-1].tolist()
    return OrientationTrack(quat=quat, gyro_bias=bias, innovation=innovation, state=new_state)


def _per_sample_weight(alpha: Optional[float], tau: float, dt: float) -> float:
    """The gyro's weight per sample: the deprecated per-sample alpha if given, else exp(-dt / tau),
    which makes the correction decay with time constant tau exactly, whatever the sample period."""
    return alpha if alpha is not None else math.exp(-dt / tau)


def _mahony_gains(opts: dict) -> tuple[float, float]:
    """(kp, ki) in 1/s and 1/s^2: the deprecated gains where given, else from the time constants."""
    kp = opts["kp"] if opts["kp"] is not None else 1.0 / opts["tau"]
    if opts["ki"] is not None:
        return kp, opts["ki"]
    return kp, (kp / opts["integral_time"] if opts["integral_time"] > 0 else 0.0)


def _initial_quaternion(acc: np.ndarray, mag: Optional[np.ndarray], fs: float) -> np.ndarray:
    count = max(1, min(acc.shape[0], int(round(INIT_SECONDS * fs))))
    a = acc[:count].mean(axis=0)
    if not np.linalg.norm(a) > 0:
        raise ConfigurationError(
            "The accelerometer reads zero at the start of the stream; the tilt cannot be initialised.")
    m = mag[:count].mean(axis=0) if mag is not None else np.zeros(3)
    return np.array(_tilt_heading(a[0], a[1], a[2], m[0], m[1], m[2], mag is not None))


def warm_up() -> None:
    """Compile (or load from cache) every kernel on a tiny input, with and without magnetometer."""
    t = np.arange(8) / 100.0
    acc = np.column_stack([0.1 * np.sin(t), 0.2 * np.cos(t), np.full_like(t, GRAVITY)])
    gyr = np.column_stack([0.01 * np.cos(t), 0.02 * np.sin(t), np.full_like(t, 0.01)])
    mag = np.column_stack([np.full_like(t, 5.0), np.full_like(t, 20.0), np.full_like(t, -40.0)])
    for name in FILTERS:
        for m in (None, mag):
            run_filter(name, acc, gyr, m, 100.0, None, None)


# --- kernels ----------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def _innovation_kernel(acc, gyr, quat, bias, quat0, bias0, dt, out):
    q = (quat0[0], quat0[1], quat0[2], quat0[3])
    bx, by, bz = bias0[0], bias0[1], bias0[2]
    has_bias = bias.shape[0] > 0
    for i in range(acc.shape[0]):
        prior = _qmul(q, _qexp((gyr[i, 0] - bx) * dt, (gyr[i, 1] - by) * dt, (gyr[i, 2] - bz) * dt))
        gx, gy, gz = _gravity_in_sensor(prior)
        ax, ay, az = acc[i, 0], acc[i, 1], acc[i, 2]
        # Angle between the two directions, via atan2 for accuracy near 0.
        cx, cy, cz = ay * gz - az * gy, az * gx - ax * gz, ax * gy - ay * gx
        out[i] = math.atan2(math.sqrt(cx * cx + cy * cy + cz * cz), ax * gx + ay * gy + az * gz)
        q = (quat[i, 0], quat[i, 1], quat[i, 2], quat[i, 3])
        if has_bias:
            bx, by, bz = bias[i, 0], bias[i, 1], bias[i, 2]


@numba.njit(**_JIT)
def _complementary_kernel(acc, gyr, mag, dt, alpha, alpha_mag, quat0, out):
    """Gyro integration blended with accelerometer tilt (and magnetometer heading).

    Each sample rotates the gyro-propagated orientation a fraction 1 - alpha of the way to the
    accelerometer's tilt, by the smallest rotation (so the heading is untouched); the magnetometer
    then turns the heading a fraction 1 - alpha_mag of the way to magnetic north, about the earth's
    vertical (so it cannot disturb the tilt). For a rotation about one axis this is exactly
    angle = alpha * (angle + rate * dt) + (1 - alpha) * accelerometer angle.
    """
    has_mag = mag.shape[0] > 0
    q = (quat0[0], quat0[1], quat0[2], quat0[3])
    for i in range(acc.shape[0]):
        q = _qmul(q, _qexp(gyr[i, 0] * dt, gyr[i, 1] * dt, gyr[i, 2] * dt))
        vx, vy, vz = _rotate(q, acc[i, 0], acc[i, 1], acc[i, 2])
        horizontal = math.sqrt(vx * vx + vy * vy)
        if horizontal > 0.0:
            # Rotation about (vy, -vx, 0) (= v x up) turns the measured "up" toward the earth's up.
            angle = (1.0 - alpha) * math.atan2(horizontal, vz)
            s = math.sin(0.5 * angle) / horizontal
            q = _qmul((math.cos(0.5 * angle), vy * s, -vx * s, 0.0), q)
        if has_mag:
            ex, ey, _ = _rotate(q, mag[i, 0], mag[i, 1], mag[i, 2])
            if ex * ex + ey * ey > 0.0:
                psi = (1.0 - alpha_mag) * math.atan2(ex, ey)
                q = _qmul((math.cos(0.5 * psi), 0.0, 0.0, math.sin(0.5 * psi)), q)
        q = _qnormalize(q)
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = q


@numba.njit(**_JIT)
def _madgwick_kernel(acc, gyr, mag, dt, beta, quat0, out):
    """Madgwick's gradient-descent filter (IMU and MARG forms, Madgwick 2010).

    q_dot = 0.5 q * omega - beta * grad / |grad|, integrated with one Euler step and normalised.
    Madgwick's MARG form puts magnetic north on x (a north-west-up earth frame); a sample with a
    magnetometer is therefore updated in that frame, with the report's own objective and Jacobian,
    and turned back to east-north-up (a rotation of the earth frame by 90 degrees about z).
    """
    has_mag = mag.shape[0] > 0
    h = math.sqrt(0.5)
    enu_from_nwu = (h, 0.0, 0.0, h)
    nwu_from_enu = (h, 0.0, 0.0, -h)
    q = (quat0[0], quat0[1], quat0[2], quat0[3])
    for i in range(acc.shape[0]):
        m_norm = math.sqrt(mag[i, 0] ** 2 + mag[i, 1] ** 2 + mag[i, 2] ** 2) if has_mag else 0.0
        use_mag = m_norm > 0.0
        if use_mag:
            q = _qmul(nwu_from_enu, q)
        w, x, y, z = q
        gx, gy, gz = gyr[i, 0], gyr[i, 1], gyr[i, 2]
        dw = 0.5 * (-x * gx - y * gy - z * gz)
        dx = 0.5 * (w * gx + y * gz - z * gy)
        dy = 0.5 * (w * gy - x * gz + z * gx)
        dz = 0.5 * (w * gz + x * gy - y * gx)
        a_norm = math.sqrt(acc[i, 0] ** 2 + acc[i, 1] ** 2 + acc[i, 2] ** 2)
        if a_norm > 0.0:
            ax, ay, az = acc[i, 0] / a_norm, acc[i, 1] / a_norm, acc[i, 2] / a_norm
            # f = R^T (0,0,1) - a, and J^T f
            f0 = 2.0 * (x * z - w * y) - ax
            f1 = 2.0 * (w * x + y * z) - ay
            f2 = 2.0 * (0.5 - x * x - y * y) - az
            s0 = -2.0 * y * f0 + 2.0 * x * f1
            s1 = 2.0 * z * f0 + 2.0 * w * f1 - 4.0 * x * f2
            s2 = -2.0 * w * f0 + 2.0 * z * f1 - 4.0 * y * f2
            s3 = 2.0 * x * f0 + 2.0 * y * f1
            if use_mag:
                mx, my, mz = mag[i, 0] / m_norm, mag[i, 1] / m_norm, mag[i, 2] / m_norm
                hx, hy, hz = _rotate(q, mx, my, mz)
                bx = math.sqrt(hx * hx + hy * hy)  # horizontal field, on x (north) in this frame
                bz = hz
                # f_m = R^T (bx, 0, bz) - m, and J_m^T f_m
                m0 = 2.0 * bx * (0.5 - y * y - z * z) + 2.0 * bz * (x * z - w * y) - mx
                m1 = 2.0 * bx * (x * y - w * z) + 2.0 * bz * (w * x + y * z) - my
                m2 = 2.0 * bx * (w * y + x * z) + 2.0 * bz * (0.5 - x * x - y * y) - mz
                s0 += -2.0 * bz * y * m0 + (-2.0 * bx * z + 2.0 * bz * x) * m1 + 2.0 * bx * y * m2
                s1 += 2.0 * bz * z * m0 + (2.0 * bx * y + 2.0 * bz * w) * m1 + (2.0 * bx * z - 4.0 * bz * x) * m2
                s2 += (-4.0 * bx * y - 2.0 * bz * w) * m0 + (2.0 * bx * x + 2.0 * bz * z) * m1 \
                    + (2.0 * bx * w - 4.0 * bz * y) * m2
                s3 += (-4.0 * bx * z + 2.0 * bz * x) * m0 + (-2.0 * bx * w + 2.0 * bz * y) * m1 + 2.0 * bx * x * m2
            s_norm = math.sqrt(s0 * s0 + s1 * s1 + s2 * s2 + s3 * s3)
            if s_norm > 0.0:
                dw -= beta * s0 / s_norm
                dx -= beta * s1 / s_norm
                dy -= beta * s2 / s_norm
                dz -= beta * s3 / s_norm
        q = _qnormalize((w + dw * dt, x + dx * dt, y + dy * dt, z + dz * dt))
        if use_mag:
            q = _qmul(enu_from_nwu, q)
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = q


@numba.njit(**_JIT)
def _mahony_kernel(acc, gyr, mag, dt, kp, ki, bias_max_rate, quat0, bias0, out, bias_out):
    """Mahony's explicit complementary filter with integral bias estimation (Mahony 2008).

    e = a x R^T up (+ the vertical component of m x R^T b, b the earth field with its horizontal part
    on north, +y: unlike Mahony's original, the magnetometer cannot tilt the estimate);
    bias <- bias - ki e dt (only while |gyro| < bias_max_rate); omega = gyro - bias + kp e;
    q <- normalise(q + 0.5 q omega dt). kp and ki are per second, so they hold at any rate.
    """
    has_mag = mag.shape[0] > 0
    q = (quat0[0], quat0[1], quat0[2], quat0[3])
    bx, by, bz = bias0[0], bias0[1], bias0[2]
    for i in range(acc.shape[0]):
        wx, wy, wz = gyr[i, 0], gyr[i, 1], gyr[i, 2]
        a_norm = math.sqrt(acc[i, 0] ** 2 + acc[i, 1] ** 2 + acc[i, 2] ** 2)
        if a_norm > 0.0:
            ax, ay, az = acc[i, 0] / a_norm, acc[i, 1] / a_norm, acc[i, 2] / a_norm
            vx, vy, vz = _gravity_in_sensor(q)
            ex, ey, ez = ay * vz - az * vy, az * vx - ax * vz, ax * vy - ay * vx
            m_norm = math.sqrt(mag[i, 0] ** 2 + mag[i, 1] ** 2 + mag[i, 2] ** 2) if has_mag else 0.0
            if m_norm > 0.0:
                mx, my, mz = mag[i, 0] / m_norm, mag[i, 1] / m_norm, mag[i, 2] / m_norm
                hx, hy, hz = _rotate(q, mx, my, mz)
                ux, uy, uz = _rotate_inverse(q, 0.0, math.sqrt(hx * hx + hy * hy), hz)
                u_norm = math.sqrt(ux * ux + uy * uy + uz * uz)
                ux, uy, uz = ux / u_norm, uy / u_norm, uz / u_norm
                # Only the part about the vertical: the field turns the heading, never the tilt.
                along = (my * uz - mz * uy) * vx + (mz * ux - mx * uz) * vy + (mx * uy - my * ux) * vz
                ex += along * vx
                ey += along * vy
                ez += along * vz
            if wx * wx + wy * wy + wz * wz < bias_max_rate * bias_max_rate:
                bx -= ki * ex * dt
                by -= ki * ey * dt
                bz -= ki * ez * dt
            wx += kp * ex - bx
            wy += kp * ey - by
            wz += kp * ez - bz
        else:
            wx -= bx
            wy -= by
            wz -= bz
        w, x, y, z = q
        q = _qnormalize((
            w + 0.5 * dt * (-x * wx - y * wy - z * wz),
            x + 0.5 * dt * (w * wx + y * wz - z * wy),
            y + 0.5 * dt * (w * wy - x * wz + z * wx),
            z + 0.5 * dt * (w * wz + x * wy - y * wx),
        ))
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = q
        bias_out[i, 0], bias_out[i, 1], bias_out[i, 2] = bx, by, bz


@numba.njit(**_JIT)
def _ekf_kernel(acc, gyr, mag, dt, gyro_noise, bias_walk, acc_noise, acc_inflation, rate_inflation,
                innovation_inflation, acc_gate, mag_noise, mag_norm_tol, mag_dip_tol, mag_ref_tau, gravity,
                quat0, bias0, cov, mag_ref, out, bias_out):
    """Error-state (multiplicative) EKF: quaternion, plus 6 error states (attitude, gyro bias).

    The attitude error is a rotation vector in the sensor frame: q_true = q * exp(dtheta).
    Prediction integrates the bias-corrected gyro; the accelerometer update compares the measured
    direction with the predicted gravity direction (noise inflated, or the update skipped, as |acc|
    departs from g, so linear acceleration does not pull the tilt); the magnetometer update only
    measures the heading (the angle of the field's horizontal part from north) so a disturbed
    field can turn the heading but not the tilt. `cov` (6x6) is updated in place.
    """
    has_mag = mag.shape[0] > 0
    q = (quat0[0], quat0[1], quat0[2], quat0[3])
    b0, b1, b2 = bias0[0], bias0[1], bias0[2]
    P = cov
    F = np.zeros((6, 6))
    FP = np.zeros((6, 6))
    H = np.zeros((3, 6))
    PHt = np.zeros((6, 3))
    K = np.zeros((6, 3))
    S = np.zeros((3, 3))
    Si = np.zeros((3, 3))
    dx = np.zeros(6)
    q_gyro = gyro_noise * gyro_noise * dt
    q_bias = bias_walk * bias_walk * dt
    ref_gain = 1.0 - math.exp(-dt / mag_ref_tau)
    for i in range(acc.shape[0]):
        # --- predict
        rx, ry, rz = (gyr[i, 0] - b0) * dt, (gyr[i, 1] - b1) * dt, (gyr[i, 2] - b2) * dt
        dq = _qexp(rx, ry, rz)
        q = _qnormalize(_qmul(q, dq))
        # F = [[R(dq)^T, -dt I], [0, I]]
        w, x, y, z = dq
        F[0, 0] = 1.0 - 2.0 * (y * y + z * z)
        F[0, 1] = 2.0 * (x * y + w * z)
        F[0, 2] = 2.0 * (x * z - w * y)
        F[1, 0] = 2.0 * (x * y - w * z)
        F[1, 1] = 1.0 - 2.0 * (x * x + z * z)
        F[1, 2] = 2.0 * (y * z + w * x)
        F[2, 0] = 2.0 * (x * z + w * y)
        F[2, 1] = 2.0 * (y * z - w * x)
        F[2, 2] = 1.0 - 2.0 * (x * x + y * y)
        for r in range(3):
            F[r, 3 + r] = -dt
            F[3 + r, 3 + r] = 1.0
        for r in range(6):
            for c in range(6):
                s = 0.0
                for k in range(6):
                    s += F[r, k] * P[k, c]
                FP[r, c] = s
        for r in range(6):
            for c in range(r, 6):
                s = 0.0
                for k in range(6):
                    s += FP[r, k] * F[c, k]
                P[r, c] = s
                P[c, r] = s
        for r in range(3):
            P[r, r] += q_gyro
            P[3 + r, 3 + r] += q_bias

        # --- accelerometer update
        a_norm = math.sqrt(acc[i, 0] ** 2 + acc[i, 1] ** 2 + acc[i, 2] ** 2)
        deviation = abs(a_norm / gravity - 1.0)
        if a_norm > 0.0 and deviation <= acc_gate:
            vx, vy, vz = _gravity_in_sensor(q)
            rate = math.sqrt(rx * rx + ry * ry + rz * rz) / dt
            # Densities to per-sample standard deviations: sigma^2 = density^2 / dt.
            y0 = acc[i, 0] / a_norm - vx
            y1 = acc[i, 1] / a_norm - vy
            y2 = acc[i, 2] / a_norm - vz
            innovation = math.sqrt(y0 * y0 + y1 * y1 + y2 * y2)
            sigma = (acc_noise + acc_inflation * deviation + rate_inflation * rate
                     + innovation_inflation * innovation) / math.sqrt(dt)
            # H = [[v]x, 0]: measured direction ~ v + v x dtheta
            H[0, 0], H[0, 1], H[0, 2] = 0.0, -vz, vy
            H[1, 0], H[1, 1], H[1, 2] = vz, 0.0, -vx
            H[2, 0], H[2, 1], H[2, 2] = -vy, vx, 0.0
            for r in range(6):
                for c in range(3):
                    s = 0.0
                    for k in range(3):
                        s += P[r, k] * H[c, k]
                    PHt[r, c] = s
            for r in range(3):
                for c in range(3):
                    s = 0.0
                    for k in range(3):
                        s += H[r, k] * PHt[k, c]
                    S[r, c] = s
                S[r, r] += sigma * sigma
            _inverse3(S, Si)
            for r in range(6):
                for c in range(3):
                    K[r, c] = PHt[r, 0] * Si[0, c] + PHt[r, 1] * Si[1, c] + PHt[r, 2] * Si[2, c]
            for r in range(6):
                dx[r] = K[r, 0] * y0 + K[r, 1] * y1 + K[r, 2] * y2
            # P <- P - K (P H^T)^T, kept symmetric
            for r in range(6):
                for c in range(r, 6):
                    s = P[r, c] - (K[r, 0] * PHt[c, 0] + K[r, 1] * PHt[c, 1] + K[r, 2] * PHt[c, 2])
                    P[r, c] = s
                    P[c, r] = s
            q = _qnormalize(_qmul(q, _qexp(dx[0], dx[1], dx[2])))
            b0 += dx[3]
            b1 += dx[4]
            b2 += dx[5]

        # --- magnetometer heading update
        if has_mag:
            mx, my, mz = mag[i, 0], mag[i, 1], mag[i, 2]
            m_norm = math.sqrt(mx * mx + my * my + mz * mz)
            if m_norm > 0.0:
                vx, vy, vz = _gravity_in_sensor(q)
                dip = math.asin(max(-1.0, min(1.0, -(mx * vx + my * vy + mz * vz) / m_norm)))
                if mag_ref[0] <= 0.0:
                    mag_ref[0], mag_ref[1] = m_norm, dip
                # A field whose strength or dip departs from the slowly learnt reference is disturbed
                # (iron, magnets): skip it. The reference follows a lasting change within mag_ref_tau.
                undisturbed = (abs(m_norm / mag_ref[0] - 1.0) <= mag_norm_tol
                               and abs(dip - mag_ref[1]) <= mag_dip_tol)
                mag_ref[0] += ref_gain * (m_norm - mag_ref[0])
                mag_ref[1] += ref_gain * (dip - mag_ref[1])
                ex, ey, _ = _rotate(q, mx, my, mz)
                if undisturbed and ex * ex + ey * ey > (0.05 * m_norm) ** 2:
                    heading_error = math.atan2(ex, ey)  # equals up . dtheta (sensor frame) to first order
                    for r in range(6):
                        PHt[r, 0] = P[r, 0] * vx + P[r, 1] * vy + P[r, 2] * vz
                    s_scalar = PHt[0, 0] * vx + PHt[1, 0] * vy + PHt[2, 0] * vz + mag_noise * mag_noise / dt
                    for r in range(6):
                        K[r, 0] = PHt[r, 0] / s_scalar
                        dx[r] = K[r, 0] * heading_error
                    for r in range(6):
                        for c in range(r, 6):
                            s = P[r, c] - K[r, 0] * PHt[c, 0]
                            P[r, c] = s
                            P[c, r] = s
                    # Keep only the rotation about the vertical: the field never tilts the estimate.
                    along = dx[0] * vx + dx[1] * vy + dx[2] * vz
                    q = _qnormalize(_qmul(q, _qexp(along * vx, along * vy, along * vz)))
                    b0 += dx[3]
                    b1 += dx[4]
                    b2 += dx[5]

        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = q
        bias_out[i, 0], bias_out[i, 1], bias_out[i, 2] = b0, b1, b2


@numba.njit(**_JIT)
def _inverse3(m, out):
    c00 = m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1]
    c01 = m[1, 2] * m[2, 0] - m[1, 0] * m[2, 2]
    c02 = m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]
    det = m[0, 0] * c00 + m[0, 1] * c01 + m[0, 2] * c02
    inv = 1.0 / det
    out[0, 0] = c00 * inv
    out[1, 0] = c01 * inv
    out[2, 0] = c02 * inv
    out[0, 1] = (m[0, 2] * m[2, 1] - m[0, 1] * m[2, 2]) * inv
    out[1, 1] = (m[0, 0] * m[2, 2] - m[0, 2] * m[2, 0]) * inv
    out[2, 1] = (m[0, 1] * m[2, 0] - m[0, 0] * m[2, 1]) * inv
    out[0, 2] = (m[0, 1] * m[1, 2] - m[0, 2] * m[1, 1]) * inv
    out[1, 2] = (m[0, 2] * m[1, 0] - m[0, 0] * m[1, 2]) * inv
    out[2, 2] = (m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]) * inv


# --- vqf ----------------------------------------------------------------------------------------------


def _run_vqf(acc, gyr, mag, dt, opts, state):
    """The vqf package (Laidig and Seel 2023), whose quaternions already match ours.

    vqf's quaternions are scalar first and map sensor to earth coordinates; its 9D earth frame is
    east-north-up like ours, and its 6D heading is relative, like our filters without magnetometer.
    Its internal state (lists and floats, NaN for filters not yet initialised) travels in our state
    with NaN written as null, so JSON can carry it.
    """
    import vqf  # imported here: only this filter needs the C++ extension

    params = {_VQF_PARAM_NAMES[key]: value for key, value in opts.items()}
    estimator = vqf.VQF(dt, **params)
    if state is not None:
        saved = state.get("vqf")
        if not isinstance(saved, dict):
            raise ConfigurationError("Orientation state is missing the vqf filter state; start a new stream.")
        try:
            estimator.state = {key: _from_json(value) for key, value in saved.items()}
        except Exception:  # the extension raises Index-, Assertion-, Type- and KeyErrors on bad states
            raise ConfigurationError(
                "Orientation state holds an invalid vqf filter state; start a new stream.") from None
    result = estimator.updateBatch(gyr, acc, mag)
    quat = np.ascontiguousarray(result["quat9D"] if mag is not None else result["quat6D"])
    bias = np.ascontiguousarray(result["bias"])
    return quat, bias, {"vqf": {key: _to_json(value) for key, value in estimator.state.items()}}


def _to_json(value):
    if isinstance(value, list):
        return [None if isinstance(v, float) and math.isnan(v) else v for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _from_json(value):
    if isinstance(value, list):
        return [math.nan if v is None else v for v in value]
    return math.nan if value is None else value
