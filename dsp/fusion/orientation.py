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

The complementary, Madgwick, Mahony and EKF loops are the device's C code (`device/lib`) compiled
in float64, called through ctypes (`dsp.fusion.orientation_library` loads it), so the server and
the device run one implementation of each recursion; VQF is the vqf package's C++.
"""
from __future__ import annotations

import ctypes
import functools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from dsp.core.errors import ConfigurationError
from dsp.fusion import orientation_library
from dsp.fusion.quaternion import _tilt_heading, euler_zyx

__all__ = [
    "FILTERS",
    "OrientationTrack",
    "run_filter",
    "default_settings",
    "euler_zyx",
    "load_library",
]

FILTERS = ("complementary", "ekf", "madgwick", "mahony", "vqf")

GRAVITY = 9.80665
INIT_SECONDS = 0.1  # the start-of-stream orientation averages this much of the first chunk


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
    mag = _as_samples(mag, "Magnetometer", n, 1e100, "in any unit") if has_mag else None
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
        quat0 = _initial_quaternion(acc, mag, fs)
        bias0 = np.zeros(3)
        samples = 0

    if name == "vqf":
        quat, bias, new_state = _run_vqf(acc, gyr, mag, dt, opts, state)
    else:
        cov = mag_ref = None
        if name == "ekf":
            if state is not None:
                cov = _vector(state, "covariance", 36)
            else:
                cov = np.diag([0.05**2] * 3 + [opts["bias_init"] ** 2] * 3).reshape(-1)
            # Magnetic reference (strength, dip in rad); strength 0 = not seen a field yet.
            mag_ref = _vector(state, "mag_reference", 2) if state is not None else np.zeros(2)
        quat, bias, innovation = _run_c(name, opts, fs, quat0, bias0, cov, mag_ref, acc, gyr, mag)
        new_state = {}
        if name == "ekf":
            new_state["covariance"] = cov.tolist()
            new_state["mag_reference"] = mag_ref.tolist()

    if not (np.isfinite(quat).all() and (bias is None or np.isfinite(bias).all())):
        raise ConfigurationError(
            f"The {name} filter left the valid range on this input; check the units (acc in m/s^2, "
            "gyr in rad/s) and the sampling rate.")
    if name == "vqf":
        innovation = _innovation(acc, gyr, quat, bias, quat0, bias0, dt)
    new_state.update({"filter": name, "quat": quat[-1].tolist(), "samples": samples + n})
    if bias is not None:
        new_state["bias"] = bias[-1].tolist()
    return OrientationTrack(quat=quat, gyro_bias=bias, innovation=innovation, state=new_state)


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


def load_library() -> None:
    """Load the C library now (the server does, at start): LibraryError, with how to build it, if
    it cannot be."""
    orientation_library.library()


# --- the C filters ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _c_settings(name: str, values: tuple) -> tuple[np.ndarray, int]:
    """The settings array of orientation_server_run (and its address) for filter `name` and its
    resolved settings' values (in _SETTINGS order), the other filters' entries at their defaults
    (the C code configures every filter's constants). Cached: a stream sends the same settings
    every window."""
    opts = dict(zip(_SETTINGS[name], values))
    merged = dict(_C_DEFAULTS)
    if name == "complementary":
        # A deprecated per-sample weight, where given, replaces the time constant (C: alpha >= 0).
        merged.update(tau=opts["tau"], tau_mag=opts["tau_mag"],
                      alpha=-1.0 if opts["alpha"] is None else opts["alpha"],
                      alpha_mag=-1.0 if opts["alpha_mag"] is None else opts["alpha_mag"])
    elif name == "mahony":
        merged["kp"], merged["ki"] = _mahony_gains(opts)
        merged["bias_max_rate"] = opts["bias_max_rate"]
    else:
        merged.update(opts)
    array = np.array([merged[key] for key in orientation_library.SETTINGS], dtype=np.float64)
    return array, _address(array)


# Every filter's defaults, with the complementary's time constants and Mahony's resolved gains.
_C_DEFAULTS = {**default_settings("ekf"), **default_settings("madgwick"), "tau": 1.5, "tau_mag": 3.5,
               "alpha": -1.0, "alpha_mag": -1.0, "kp": 1.0 / 3.0, "ki": 1.0 / 18.0, "bias_max_rate": 1.0}
_C_NAMES = {name: name.encode() for name in FILTERS}
_BIASED = ("ekf", "mahony")  # the filters that estimate a gyro bias


def _address(array: np.ndarray) -> int:
    """The address of a contiguous float64 array's data, for a c_void_p argument. A ctypes view of
    the buffer gives it in a third of the time of `array.ctypes.data` (which a read-only array
    still needs); for a short chunk that time is more than the C code's."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, BufferError):
        return array.ctypes.data


def _run_c(name, opts, fs, quat0, bias0, cov, mag_ref, acc, gyr, mag):
    """(quat, bias or None, innovation) of one chunk through the C filter. quat0, bias0, cov and
    mag_ref (ekf) are this call's own contiguous float64 arrays: the C code updates them in place.

    The outputs share one buffer, addressed by offsets: fetching an array's address costs about a
    third of a microsecond, as much as the C code takes for dozens of samples.
    """
    lib = orientation_library.library()
    address = _address
    n = acc.shape[0]
    biased = name in _BIASED
    out = np.empty(n * (8 if biased else 5))
    base = address(out)
    status = lib.orientation_server_run(
        _C_NAMES[name], _c_settings(name, tuple(opts.values()))[1], fs, address(quat0), address(bias0),
        None if cov is None else address(cov), None if mag_ref is None else address(mag_ref), n,
        address(acc), address(gyr), None if mag is None else address(mag),
        base, base + 40 * n if biased else None, base + 32 * n)
    if status != 0:
        raise orientation_library.LibraryError(f"The orientation filters' C library does not run '{name}'.")
    quat = out[:4 * n].reshape(n, 4)
    bias = out[5 * n:].reshape(n, 3) if biased else None
    return quat, bias, out[4 * n:5 * n]


def _innovation(acc, gyr, quat, bias, quat0, bias0, dt) -> np.ndarray:
    """The innovation of a track computed elsewhere (vqf), by the C code's definition."""
    address = _address
    out = np.empty(acc.shape[0])
    orientation_library.library().orientation_server_innovation(
        dt, address(quat0), address(bias0), acc.shape[0], address(acc), address(gyr), address(quat), address(bias),
        address(out))
    return out


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
