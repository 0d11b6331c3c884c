"""The `kalman` block: IMU orientation, linear Kalman filtering and inverse-variance fusion.

Conventions (as in `dsp.fusion.quaternion`): aerospace ZYX Euler angles, R = Rz(yaw) Ry(pitch) Rx(roll):
roll about the sensor x axis, pitch about y, yaw about z; the earth frame is east-north-up (z up).
The accelerometer measures specific force, so a level device at rest reads +9.81 m/s^2 on z and
at rest roll = atan2(ay, az), pitch = atan2(-ax, hypot(ay, az)). The multi-sensor-fusion lesson's
complementary filter calls atan2(ay, ...) "pitch" and atan2(-ax, az) "roll": the other way round.

Axes (`info.axes`): accX, accY, accZ required; gyrX, gyrY, gyrZ and magX, magY, magZ optional, so
one declaration serves every filter; each filter then checks the axes it needs:

* orientation filters (complementary, ekf, madgwick, mahony, vqf) need the three accelerometer and
  the three gyroscope axes, and use the magnetometer when all three of its axes are mapped (then
  yaw features appear; without it the heading is relative and not reported);
* `kf` runs one constant-velocity Kalman filter per mapped axis, in the axis' own units;
* `weighted` takes every mapped axis as a redundant measurement of one quantity. Studio maps axes
  by name, so three thermometers go to accX, accY, accZ (the three required names).

Features are labelled and their number depends only on the configuration (filter, mapped axes),
never on the data, as Studio needs a fixed width. The state (filter name, axes, sampling rate and
the filter's own state) continues the stream in the next window; a state made by another filter,
for other axes or at another rate is refused with a message saying so.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from dsp.core.block import Block, Features, Request, load_parameters
from dsp.core.errors import ConfigurationError
from dsp.core.state import continuing_overlapping_windows, decode_state, encode_state
from dsp.fusion import orientation
from dsp.fusion.linear_kalman import KalmanState, run_cv_filter
from dsp.fusion.weighted_fusion import fuse
from dsp.graphs import line_graph

__all__ = ["BLOCK", "compute", "ORIENTATION_FILTERS"]

BLOCK_NAME = "kalman"
ORIENTATION_FILTERS = orientation.FILTERS
ACC_AXES = ("accX", "accY", "accZ")
GYRO_AXES = ("gyrX", "gyrY", "gyrZ")
MAG_AXES = ("magX", "magY", "magZ")
GRAVITY = 9.80665
# A whole window whose median accelerometer magnitude is outside this range (in g) cannot be a
# body moving on earth in the stated units.
ACC_MAGNITUDE_RANGE_G = (0.4, 2.5)
# MEMS gyroscopes top out at 2000 deg/s (35 rad/s): a median rate above that is in deg/s.
MAX_PLAUSIBLE_GYRO_RAD_S = 35.0

# parameters.json names -> `orientation` setting names, per filter.
ORIENTATION_PARAMETERS = {
    "complementary": {"complementary_time_constant": "tau", "complementary_heading_time_constant": "tau_mag",
                      "complementary_alpha": "alpha", "complementary_alpha_mag": "alpha_mag"},
    "madgwick": {"madgwick_beta": "beta"},
    "mahony": {"mahony_time_constant": "tau", "mahony_integral_time": "integral_time",
               "mahony_kp": "kp", "mahony_ki": "ki"},
    "ekf": {"ekf_gyro_noise": "gyro_noise", "ekf_bias_walk": "bias_walk", "ekf_acc_noise": "acc_noise",
            "ekf_mag_noise": "mag_noise"},
    "vqf": {"vqf_tau_acc": "tau_acc", "vqf_tau_mag": "tau_mag"},
}
# Per-sample settings kept for a while beside their time constants: declared as text, empty when
# not used (Studio sends every declared parameter, so a numeric default would always replace the
# time constant).
DEPRECATED_PARAMETERS = {"complementary_alpha": "complementary-time-constant",
                         "complementary_alpha_mag": "complementary-heading-time-constant",
                         "mahony_kp": "mahony-time-constant", "mahony_ki": "mahony-integral-time"}


def compute(req: Request) -> Features:
    raw = np.asarray(req.raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[0] == 0 or raw.shape[1] != len(req.axes):
        raise ConfigurationError("The window must hold at least one sample of every mapped axis.")
    if not np.isfinite(raw).all():
        row, column = np.argwhere(~np.isfinite(raw))[0]
        raise ConfigurationError(
            f"Axis {req.axes[column]} has a NaN or infinite value at sample {row}; send finite numbers "
            "(interpolate gaps before this block).")
    fs = float(req.sampling_freq)
    if not (math.isfinite(fs) and fs > 0):
        raise ConfigurationError(f"The sampling frequency must be a positive number of Hz; got {fs}.")
    name = req.params["filter"]
    previous = _previous_state(req, name, fs)
    if name in ORIENTATION_FILTERS:
        features, labels, graphs, payload = _orientation(req, raw, name, fs, previous)
    elif name == "kf":
        features, labels, graphs, payload = _linear_kalman(req, raw, fs, previous)
    else:
        features, labels, graphs, payload = _weighted(req, raw, fs, previous)
    state = encode_state(BLOCK_NAME, {"filter": name, "axes": list(req.axes), "sampling_freq": fs,
                                      "filter_state": payload})
    features = np.asarray(features, dtype=np.float64)
    return Features(features=features, labels=labels,
                    output_config={"type": "flat", "shape": {"width": int(features.size)}},
                    graphs=graphs if req.draw_graphs else [], state=state, state_string=state)


def _previous_state(req: Request, name: str, fs: float) -> Optional[dict]:
    stored = decode_state(req.state, BLOCK_NAME)
    if stored is None:
        return None
    if stored.get("filter") != name:
        raise ConfigurationError(
            f"The state was made by filter '{stored.get('filter')}', but this window asks for '{name}'; "
            "send \"\" as the state to start a new stream with the new filter.")
    if stored.get("axes") != list(req.axes):
        raise ConfigurationError(
            f"The state was made for axes {', '.join(map(str, stored.get('axes') or []))}, but this window "
            f"maps {', '.join(req.axes)}; send \"\" as the state to start a new stream.")
    if stored.get("sampling_freq") != fs:
        raise ConfigurationError(
            f"The state was made at {stored.get('sampling_freq')} Hz, but this window is at {fs:g} Hz; send "
            "\"\" as the state to start a new stream.")
    payload = stored.get("filter_state")
    if not isinstance(payload, dict):
        raise ConfigurationError("The state has no filter state; send \"\" to start a new stream.")
    return payload


# ---------------------------------------------------------------------------------------------
# Orientation filters
# ---------------------------------------------------------------------------------------------

def _columns(req: Request, raw: np.ndarray, names) -> np.ndarray:
    return raw[:, [req.axes.index(name) for name in names]]


def _required_axes(req: Request, name: str) -> None:
    missing = [axis for axis in ACC_AXES + GYRO_AXES if axis not in req.axes]
    if missing:
        raise ConfigurationError(
            f"Filter '{name}' needs the accelerometer (accX, accY, accZ) and the gyroscope (gyrX, gyrY, "
            f"gyrZ); missing: {', '.join(missing)}. Map them (named_axes), or choose filter 'kf' or "
            "'weighted', which work on any axes.")
    mapped_mag = [axis for axis in MAG_AXES if axis in req.axes]
    if mapped_mag and len(mapped_mag) != 3:
        missing = [axis for axis in MAG_AXES if axis not in req.axes]
        raise ConfigurationError(
            f"The magnetometer needs all three axes; {', '.join(mapped_mag)} mapped but "
            f"{', '.join(missing)} missing. Map all three, or none.")


def _check_units(acc: np.ndarray, gyr: np.ndarray, acc_units: str, gyro_units: str) -> None:
    median_g = float(np.median(np.linalg.norm(acc, axis=1))) / GRAVITY
    low, high = ACC_MAGNITUDE_RANGE_G
    if not low <= median_g <= high:
        stated = "g" if acc_units == "g" else "m/s^2"
        median_stated = median_g if acc_units == "g" else median_g * GRAVITY
        hint = ""
        if acc_units == "m/s^2" and 0.5 <= median_g * GRAVITY <= 2.0:
            hint = " It looks like g: set 'Accelerometer units' to g."
        elif acc_units == "g" and 0.5 <= median_g / GRAVITY <= 2.0:
            hint = " It looks like m/s^2: set 'Accelerometer units' to m/s^2."
        raise ConfigurationError(
            f"The accelerometer's median magnitude over this window is {median_stated:.3g} {stated}, far "
            f"from gravity (1 g = 9.81 m/s^2) for the whole window.{hint} Otherwise check the axis "
            "mapping and scaling.")
    median_rate = float(np.median(np.linalg.norm(gyr, axis=1)))
    if median_rate > MAX_PLAUSIBLE_GYRO_RAD_S:
        hint = (" It looks like deg/s: set 'Gyroscope units' to deg/s." if gyro_units == "rad/s"
                else " Check the gyroscope's scaling.")
        raise ConfigurationError(
            f"The gyroscope's median rate over this window is {median_rate:.3g} rad/s, faster than any "
            f"MEMS gyroscope measures (2000 deg/s = 35 rad/s).{hint}")


def _orientation(req: Request, raw: np.ndarray, name: str, fs: float, previous: Optional[dict]):
    _required_axes(req, name)
    params = req.params
    acc = _columns(req, raw, ACC_AXES) * (GRAVITY if params["acc_units"] == "g" else 1.0)
    gyr = _columns(req, raw, GYRO_AXES) * (math.pi / 180.0 if params["gyro_units"] == "deg/s" else 1.0)
    mag = _columns(req, raw, MAG_AXES) if "magX" in req.axes else None
    if not req.lead_only:
        _check_units(acc, gyr, params["acc_units"], params["gyro_units"])
        if mag is not None and not np.any(mag):
            raise ConfigurationError(
                "The magnetometer (magX, magY, magZ) reads 0 on every axis for the whole window, so it "
                "gives no heading; check the sensor, or leave the magnetometer axes unmapped.")
    settings = {key: _setting(params, param) for param, key in ORIENTATION_PARAMETERS[name].items()}
    try:
        track = orientation.run_filter(name, acc, gyr, mag, fs, settings, previous)
    except ConfigurationError as exc:
        raise ConfigurationError(_in_parameter_names(str(exc), name)) from None
    roll, pitch, yaw = (np.degrees(angle) for angle in orientation.euler_zyx(track.quat))

    values, labels = [], []
    angles = [("roll", roll, True), ("pitch", pitch, False)]
    if mag is not None:
        angles.append(("yaw", yaw, True))
    for label, angle, circular in angles:
        values += list(_angle_statistics(angle, circular))
        labels += [f"{label}_{stat}" for stat in ("mean", "std", "min", "max")]
    if track.gyro_bias is not None:
        values += track.gyro_bias[-1].tolist()
        labels += ["gyro_bias_x", "gyro_bias_y", "gyro_bias_z"]
    if track.innovation is not None:
        values.append(math.degrees(math.sqrt(float(np.mean(track.innovation ** 2)))))
        labels.append("innovation_rms")

    graphs = []
    if req.draw_graphs:
        time_ms = np.arange(raw.shape[0]) * (1000.0 / fs)
        series = {"roll": roll, "pitch": pitch}
        if mag is not None:
            series["yaw"] = yaw
        graphs.append(line_graph("Orientation (degrees, ZYX)", series, time_ms,
                                 axis_labels={"X": "degrees", "y": "time (ms)"}))
        if track.gyro_bias is not None:
            graphs.append(line_graph(
                "Gyroscope bias (rad/s)",
                {f"bias {axis}": track.gyro_bias[:, i] for i, axis in enumerate("xyz")}, time_ms,
                axis_labels={"X": "rad/s", "y": "time (ms)"}))
    return values, labels, graphs, track.state


def _setting(params: dict, param: str):
    """A filter setting from its parameter; a deprecated one is None when left empty."""
    value = params[param]
    if param not in DEPRECATED_PARAMETERS:
        return value
    if value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigurationError(
            f"Parameter '{param.replace('_', '-')}' must be a number or empty, got {value!r} (it is deprecated: "
            f"use '{DEPRECATED_PARAMETERS[param]}', in seconds).") from None


def _in_parameter_names(message: str, name: str) -> str:
    """`orientation`'s message, naming the Studio parameter instead of the internal setting."""
    for param, key in ORIENTATION_PARAMETERS[name].items():
        message = message.replace(f"Setting '{key}' of filter '{name}'", f"Parameter '{param.replace('_', '-')}'")
    return message


def _angle_statistics(angle_deg: np.ndarray, circular: bool) -> tuple[float, float, float, float]:
    """Mean, std, min, max in degrees.

    Roll and yaw wrap at +-180: their mean is the circular mean, and std, min and max are of the
    wrap-aware deviations from it (so a roll swinging across 180 gives e.g. min 170, max 190,
    not min -180, max 180). Pitch stays within +-90 and gets plain statistics.
    """
    if not circular:
        return (float(angle_deg.mean()), float(angle_deg.std()), float(angle_deg.min()),
                float(angle_deg.max()))
    radians = np.radians(angle_deg)
    mean = math.degrees(math.atan2(float(np.mean(np.sin(radians))), float(np.mean(np.cos(radians)))))
    deviation = (angle_deg - mean + 180.0) % 360.0 - 180.0
    return (mean + float(deviation.mean()), float(deviation.std()), mean + float(deviation.min()),
            mean + float(deviation.max()))


# ---------------------------------------------------------------------------------------------
# Linear Kalman filter per axis
# ---------------------------------------------------------------------------------------------

def _linear_kalman(req: Request, raw: np.ndarray, fs: float, previous: Optional[dict]):
    params = req.params
    smooth = bool(params["kf_rts"])
    state = KalmanState.from_json(previous, len(req.axes)) if previous is not None else None
    out = run_cv_filter(raw.T, fs, params["kf_process_noise"], params["kf_measurement_noise"],
                        state=state, smooth=smooth)
    signal = out.smoothed_value if smooth else out.value
    rate = out.smoothed_rate if smooth else out.rate
    kind = "smoothed" if smooth else "filtered"
    values, labels = [], []
    for i, axis in enumerate(req.axes):
        values += [signal[i].mean(), signal[i].std(), signal[i].min(), signal[i].max(), rate[i].std(),
                   math.sqrt(float(np.mean(out.innovation[i] ** 2)))]
        labels += [f"{axis}_{kind}_{stat}" for stat in ("mean", "std", "min", "max")]
        labels += [f"{axis}_rate_std", f"{axis}_innovation_rms"]
    graphs = []
    if req.draw_graphs:
        time_ms = np.arange(raw.shape[0]) * (1000.0 / fs)
        series = {}
        for i, axis in enumerate(req.axes):
            series[f"{axis} measured"] = raw[:, i]
            series[f"{axis} {kind}"] = signal[i]
        graphs.append(line_graph(f"Kalman filter ({kind})", series, time_ms,
                                 axis_labels={"X": "axis units", "y": "time (ms)"}))
    return values, labels, graphs, out.state.to_json()


# ---------------------------------------------------------------------------------------------
# Inverse-variance fusion
# ---------------------------------------------------------------------------------------------

def _parse_variances(text: str, axes: list[str]) -> Optional[list[float]]:
    text = text.strip()
    if not text:
        return None
    values = []
    for part in text.replace(";", ",").split(","):
        try:
            values.append(float(part))
        except ValueError:
            raise ConfigurationError(
                f"'weighted-variances' must be numbers separated by commas, one per axis "
                f"({', '.join(axes)}); could not read {part.strip()!r}.") from None
    return values


def _weighted(req: Request, raw: np.ndarray, fs: float, previous: Optional[dict]):
    params = req.params
    variances = _parse_variances(params["weighted_variances"], req.axes)
    memory = params["weighted_memory"]
    if not (math.isfinite(memory) and memory > 0):
        raise ConfigurationError(f"'weighted-memory' must be a positive number of seconds; got {memory}.")
    result = fuse(raw.T, variances=variances, state=previous if variances is None else None,
                  memory_samples=max(1.0, memory * fs))
    fused = result.value
    values = [fused.mean(), fused.std(), fused.min(), fused.max(), float(result.variance.mean())]
    labels = ["fused_mean", "fused_std", "fused_min", "fused_max", "fused_variance"]
    values += result.weights.tolist() + result.sensor_variances.tolist()
    labels += [f"weight_{axis}" for axis in req.axes] + [f"variance_{axis}" for axis in req.axes]
    graphs = []
    if req.draw_graphs:
        time_ms = np.arange(raw.shape[0]) * (1000.0 / fs)
        series = {axis: raw[:, i] for i, axis in enumerate(req.axes)}
        series["fused"] = fused
        graphs.append(line_graph("Inverse-variance fusion", series, time_ms,
                                 axis_labels={"X": "axis units", "y": "time (ms)"}))
        graphs.append(line_graph("Fused variance", {"fused variance": result.variance}, time_ms,
                                 axis_labels={"X": "units^2", "y": "time (ms)"}))
    return values, labels, graphs, result.state or {}


BLOCK = Block(name=BLOCK_NAME, parameters=load_parameters(BLOCK_NAME),
              compute=continuing_overlapping_windows(compute), ready=orientation.load_library)
