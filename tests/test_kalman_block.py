"""The kalman block through the protocol: state carried by /run and /batch, axes, units, errors."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from dsp.core.block import Request
from dsp.core.errors import ConfigurationError
from dsp.core.params import parameter_specs, resolve_params
from dsp.fusion import kalman, orientation
from dsp.fusion.quaternion import euler_zyx
from tests.imu_stream import make_imu_stream
from tests.shared_data import XIO_LOG

SPECS = parameter_specs(kalman.BLOCK.parameters)
IMU_AXES = ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ", "magX", "magY", "magZ"]
FS = 100.0
WINDOW = 200


@pytest.fixture(scope="module")
def stream():
    return make_imu_stream(seconds=20.0, fs=FS, seed=1)


@pytest.fixture(scope="module")
def app():
    from dsp_server import create_app

    return create_app(blocks={"kalman": kalman.BLOCK}, root_block="kalman")


@pytest.fixture
def client(app):
    return app.test_client()


def imu_columns(stream, with_mag=True):
    columns = [stream.acc, stream.gyr] + ([stream.mag] if with_mag else [])
    return np.hstack(columns)


def windows_of(raw, size=WINDOW):
    return [raw[i:i + size] for i in range(0, raw.shape[0] - size + 1, size)]


def in_process(windows, axes, **params):
    """Features of each window from `kalman.compute`, state threaded by hand."""
    state, rows = "", []
    for window in windows:
        out = kalman.compute(Request(raw=window, axes=axes, sampling_freq=FS, implementation_version=1,
                                     params=resolve_params(SPECS, params), state=state))
        rows.append(out.features)
        state = out.state
    return np.array(rows), out.labels, state


def post(client, route, windows, axes, params, **extra):
    flat = [np.asarray(w).reshape(-1).tolist() for w in windows]
    body = {"features": flat if route == "batch" else flat[0], "axes": axes, "sampling_freq": FS,
            "params": params, **extra}
    return client.post(f"/blocks/kalman/{route}", json=body).get_json()


# ---------------------------------------------------------------------------------------------
# parameters.json
# ---------------------------------------------------------------------------------------------

def test_parameters_declare_axes_state_and_filter_choices():
    info = kalman.BLOCK.info
    assert info["usesState"] is True
    assert [a["name"] for a in info["axes"]] == IMU_AXES
    assert [a["name"] for a in info["axes"] if not a.get("optional")] == ["accX", "accY", "accZ"]
    assert set(SPECS["filter"].options) == set(orientation.FILTERS) | {"kf", "weighted"}
    help_text = next(item["help"] for group in kalman.BLOCK.parameters["parameters"]
                     for item in group["items"] if item["param"] == "filter")
    assert "atan2(ay, az)" in help_text and "atan2(-ax, hypot(ay, az))" in help_text
    assert "other way round" in help_text


def test_per_filter_parameters_show_only_for_their_filter_and_default_to_the_filters_defaults():
    items = {item["param"]: item for group in kalman.BLOCK.parameters["parameters"] for item in group["items"]}
    for name, mapping in kalman.ORIENTATION_PARAMETERS.items():
        defaults = orientation.default_settings(name)
        for param, setting in mapping.items():
            item = items[param.replace("_", "-")]
            assert item["showIf"] == {"parameter": "filter", "operator": "eq", "value": name}
            # A deprecated per-sample setting is declared empty: not used unless the user sets it.
            assert item["value"] == ("" if param in kalman.DEPRECATED_PARAMETERS else defaults[setting])
    for param in ("kf-process-noise", "kf-measurement-noise", "kf-rts"):
        assert items[param]["showIf"]["value"] == "kf"
    for param in ("weighted-variances", "weighted-memory"):
        assert items[param]["showIf"]["value"] == "weighted"


# ---------------------------------------------------------------------------------------------
# Protocol: /run and /batch with state give the in-process features
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [
    {"filter": "ekf"}, {"filter": "mahony", "mahony-kp": 0.8}, {"filter": "madgwick"},
    {"filter": "complementary"}, {"filter": "vqf"},
    {"filter": "kf", "kf-rts": True}, {"filter": "kf", "kf-rts": False},
    {"filter": "weighted"},
])
def test_run_and_batch_with_state_match_in_process(client, stream, params):
    windows = windows_of(imu_columns(stream))[:6]
    expected, labels, final_state = in_process(windows, IMU_AXES, **params)

    state, rows = "", []
    for window in windows:
        answer = post(client, "run", [window], IMU_AXES, params, state=state)
        assert answer["success"], answer
        assert answer["state_string"] == answer["state"]
        rows.append(answer["features"])
        state = answer["state_string"]
    np.testing.assert_allclose(rows, expected, rtol=0, atol=1e-9)
    assert answer["labels"] == labels

    # /batch in two requests of 3 windows, state carried from the first into the second.
    first = post(client, "batch", windows[:3], IMU_AXES, params, state="")
    second = post(client, "batch", windows[3:], IMU_AXES, params, state=first["state"])
    assert first["success"] and second["success"], (first, second)
    np.testing.assert_allclose(first["features"] + second["features"], expected, rtol=0, atol=1e-9)
    assert second["labels"] == labels
    assert second["state"] == final_state
    assert second["output_config"] == {"type": "flat", "shape": {"width": len(labels)}}


def test_named_axes_map_input_columns_onto_the_declared_axes(client, stream):
    window = windows_of(imu_columns(stream, with_mag=False))[0]
    expected, labels, _ = in_process([window], IMU_AXES[:6], filter="ekf")
    # The same data as columns in another order under other names.
    order = [3, 4, 5, 0, 1, 2]
    names = ["gx", "gy", "gz", "ax", "ay", "az"]
    named = {"accX": "ax", "accY": "ay", "accZ": "az", "gyrX": "gx", "gyrY": "gy", "gyrZ": "gz",
             "magX": False, "magY": False, "magZ": False}
    answer = post(client, "run", [window[:, order]], names, {"filter": "ekf"}, named_axes=named)
    assert answer["success"], answer
    np.testing.assert_allclose(answer["features"], expected[0], rtol=0, atol=1e-12)
    assert answer["labels"] == labels
    assert not any(label.startswith("yaw") for label in labels)


def test_labels_per_filter(stream):
    window = windows_of(imu_columns(stream))[:1]
    stats = ["mean", "std", "min", "max"]
    angle_labels = [f"{a}_{s}" for a in ("roll", "pitch", "yaw") for s in stats]
    bias = ["gyro_bias_x", "gyro_bias_y", "gyro_bias_z"]
    assert in_process(window, IMU_AXES, filter="ekf")[1] == angle_labels + bias + ["innovation_rms"]
    assert in_process(window, IMU_AXES, filter="madgwick")[1] == angle_labels + ["innovation_rms"]
    no_mag = in_process([window[0][:, :6]], IMU_AXES[:6], filter="ekf")[1]
    assert no_mag == angle_labels[:8] + bias + ["innovation_rms"]
    kf_labels = in_process([window[0][:, :3]], IMU_AXES[:3], filter="kf")[1]
    assert kf_labels[:6] == ["accX_smoothed_mean", "accX_smoothed_std", "accX_smoothed_min",
                             "accX_smoothed_max", "accX_rate_std", "accX_innovation_rms"]
    assert len(kf_labels) == 18
    weighted = in_process([window[0][:, :3]], IMU_AXES[:3], filter="weighted")[1]
    assert weighted == ["fused_mean", "fused_std", "fused_min", "fused_max", "fused_variance",
                        "weight_accX", "weight_accY", "weight_accZ",
                        "variance_accX", "variance_accY", "variance_accZ"]


# ---------------------------------------------------------------------------------------------
# What the features mean
# ---------------------------------------------------------------------------------------------

def test_window_means_follow_the_true_orientation(stream):
    raw = imu_columns(stream)
    windows = windows_of(raw)
    features, labels, _ = in_process(windows, IMU_AXES, filter="ekf")
    roll, pitch, _ = (np.degrees(a) for a in euler_zyx(stream.quat))
    true_roll = np.array([roll[i * WINDOW:(i + 1) * WINDOW].mean() for i in range(len(windows))])
    true_pitch = np.array([pitch[i * WINDOW:(i + 1) * WINDOW].mean() for i in range(len(windows))])
    got_roll = features[:, labels.index("roll_mean")]
    got_pitch = features[:, labels.index("pitch_mean")]
    # The first window holds the start-up; after it the window means are within a degree.
    assert np.sqrt(np.mean((got_roll[1:] - true_roll[1:]) ** 2)) < 1.0
    assert np.sqrt(np.mean((got_pitch[1:] - true_pitch[1:]) ** 2)) < 1.0
    bias = features[-1, [labels.index(f"gyro_bias_{a}") for a in "xyz"]]
    np.testing.assert_allclose(bias, stream.gyro_bias, atol=0.2 * np.abs(stream.gyro_bias).max())


def test_level_device_at_rest_reads_zero_roll_and_pitch_and_tilted_reads_the_formula():
    n = 300
    for roll_deg, pitch_deg in [(0.0, 0.0), (30.0, -20.0), (170.0, 10.0)]:
        r, p = math.radians(roll_deg), math.radians(pitch_deg)
        gravity = 9.80665 * np.array([-math.sin(p), math.cos(p) * math.sin(r), math.cos(p) * math.cos(r)])
        raw = np.hstack([np.tile(gravity, (n, 1)), np.zeros((n, 3))])
        features, labels, _ = in_process([raw], IMU_AXES[:6], filter="ekf")
        got = dict(zip(labels, features[0]))
        assert got["roll_mean"] == pytest.approx(roll_deg, abs=0.01)
        assert got["pitch_mean"] == pytest.approx(pitch_deg, abs=0.01)
        assert math.degrees(math.atan2(gravity[1], gravity[2])) == pytest.approx(roll_deg)


def test_roll_statistics_near_180_degrees_do_not_average_to_zero():
    values = np.array([178.0, -178.0, 179.0, -179.0])
    mean, std, low, high = kalman._angle_statistics(values, circular=True)
    assert abs(abs(mean) - 180.0) < 1e-9
    assert std == pytest.approx(math.sqrt((4 + 4 + 1 + 1) / 4))
    assert high - low == pytest.approx(4.0)


@pytest.mark.parametrize("acc_scale, acc_units, gyro_scale, gyro_units", [
    (1 / 9.80665, "g", 1.0, "rad/s"),
    (1.0, "m/s^2", 180 / math.pi, "deg/s"),
    (1 / 9.80665, "g", 180 / math.pi, "deg/s"),
])
def test_unit_options_give_the_same_features(stream, acc_scale, acc_units, gyro_scale, gyro_units):
    raw = imu_columns(stream, with_mag=False)
    windows = windows_of(raw)[:3]
    expected, _, _ = in_process(windows, IMU_AXES[:6], filter="mahony")
    scaled = [np.hstack([w[:, :3] * acc_scale, w[:, 3:] * gyro_scale]) for w in windows]
    got, _, _ = in_process(scaled, IMU_AXES[:6], filter="mahony", acc_units=acc_units, gyro_units=gyro_units)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_weighted_fuses_three_thermometers_mapped_to_the_required_axes(client):
    rng = np.random.default_rng(0)
    t = np.arange(2000) / 10.0
    truth = 21.0 + 0.5 * np.sin(2 * np.pi * t / 100.0)
    noise = np.array([0.1, 0.2, 0.3])
    raw = truth[:, None] + noise * rng.standard_normal((2000, 3))
    answer = post(client, "batch", [raw[i:i + 500] for i in range(0, 2000, 500)],
                  ["t_kitchen", "t_hall", "t_door"], {"filter": "weighted"}, state="")
    assert answer["success"], answer
    got = dict(zip(answer["labels"], answer["features"][-1]))
    theory = 1.0 / np.sum(1.0 / noise ** 2)
    assert got["fused_variance"] == pytest.approx(theory, rel=0.1)
    assert got["fused_variance"] < min(got["variance_accX"], got["variance_accY"], got["variance_accZ"])
    assert got["weight_accX"] > got["weight_accY"] > got["weight_accZ"]
    assert got["fused_mean"] == pytest.approx(truth[1500:].mean(), abs=0.02)


def test_weighted_with_given_variances(stream):
    raw = np.hstack([stream.acc[:, :1]] * 3) + np.array([0.0, 0.1, -0.1])
    features, labels, _ = in_process([raw[:100]], IMU_AXES[:3], filter="weighted",
                                     weighted_variances="1, 1, 2")
    got = dict(zip(labels, features[0]))
    assert got["weight_accX"] == pytest.approx(0.4) and got["weight_accZ"] == pytest.approx(0.2)
    assert got["fused_variance"] == pytest.approx(0.4)


def test_kf_smooths_each_axis(stream):
    raw = stream.acc[:1000]
    features, labels, _ = in_process([raw], IMU_AXES[:3], filter="kf", kf_process_noise=1.0,
                                     kf_measurement_noise=0.05 ** 2)
    got = dict(zip(labels, features[0]))
    for i, axis in enumerate(IMU_AXES[:3]):
        assert got[f"{axis}_smoothed_mean"] == pytest.approx(raw[:, i].mean(), abs=0.01)
        assert got[f"{axis}_smoothed_std"] < raw[:, i].std()
        # Innovations hold the sensor noise (0.05) plus what the model cannot predict.
        assert 0.05 < got[f"{axis}_innovation_rms"] < 0.2


# ---------------------------------------------------------------------------------------------
# Graphs
# ---------------------------------------------------------------------------------------------

def test_graphs_when_asked(client, stream):
    window = windows_of(imu_columns(stream))[0]
    answer = post(client, "run", [window], IMU_AXES, {"filter": "ekf"}, draw_graphs=True)
    assert answer["success"], answer
    names = [g["name"] for g in answer["graphs"]]
    assert names == ["Orientation (degrees, ZYX)", "Gyroscope bias (rad/s)"]
    orientation_graph = answer["graphs"][0]
    assert set(orientation_graph["X"]) == {"roll", "pitch", "yaw"}
    assert len(orientation_graph["X"]["roll"]) == WINDOW == len(orientation_graph["y"])
    assert orientation_graph["y"][1] == pytest.approx(10.0)  # ms at 100 Hz
    roll_mean = dict(zip(answer["labels"], answer["features"]))["roll_mean"]
    assert np.mean(orientation_graph["X"]["roll"]) == pytest.approx(roll_mean, abs=1e-6)
    quiet = post(client, "run", [window], IMU_AXES, {"filter": "ekf"}, draw_graphs=False)
    assert quiet["graphs"] == []
    for params in ({"filter": "kf"}, {"filter": "weighted"}):
        answer = post(client, "run", [window[:, :3]], IMU_AXES[:3], params, draw_graphs=True)
        assert answer["success"] and answer["graphs"] and answer["graphs"][0]["type"] == "linear"


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

def test_missing_gyroscope_names_the_axes(client, stream):
    window = windows_of(imu_columns(stream))[0][:, :3]
    answer = post(client, "run", [window], ["accX", "accY", "accZ"], {"filter": "vqf"})
    assert not answer["success"]
    assert "gyrX, gyrY, gyrZ" in answer["error"] and "'vqf'" in answer["error"]
    assert "'kf'" in answer["error"]


def test_partial_magnetometer_is_refused(stream):
    window = windows_of(imu_columns(stream))[0][:, :7]
    with pytest.raises(ConfigurationError, match="magnetometer needs all three axes"):
        in_process([window], IMU_AXES[:7], filter="ekf")


@pytest.mark.parametrize("scale, units, expected", [
    (1 / 9.80665, "m/s^2", "looks like g"),
    (1.0, "g", "looks like m/s^2"),
    (1000 / 9.80665, "m/s^2", "far from gravity"),
])
def test_accelerometer_in_wrong_units(stream, scale, units, expected):
    window = windows_of(imu_columns(stream, with_mag=False))[0].copy()
    window[:, :3] *= scale
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        in_process([window], IMU_AXES[:6], filter="madgwick", acc_units=units)


def test_gyroscope_in_deg_s_declared_as_rad_s(stream):
    window = windows_of(imu_columns(stream, with_mag=False))[0].copy()
    window[:, 3:] = np.radians(np.array([3000.0, 0.0, 0.0])) * 180 / math.pi
    with pytest.raises(ConfigurationError, match="looks like deg/s"):
        in_process([window], IMU_AXES[:6], filter="ekf")


def test_nan_is_refused_in_process_and_through_the_server(client, stream):
    window = windows_of(imu_columns(stream))[0].copy()
    window[5, 4] = np.nan
    with pytest.raises(ConfigurationError, match="gyrY has a NaN"):
        in_process([window], IMU_AXES, filter="ekf")
    body = {"features": [0.0, 0.0, 9.8, float("nan")], "axes": ["accX", "accY", "accZ", "gyrX"],
            "sampling_freq": FS, "params": {"filter": "kf"}}
    answer = client.post("/blocks/kalman/run", data=str(body).replace("'", '"').replace("nan", "NaN"),
                         content_type="application/json").get_json()
    assert answer["success"] is False


def test_state_from_another_filter_axes_or_rate_is_refused(client, stream):
    windows = windows_of(imu_columns(stream))[:2]
    first = post(client, "run", [windows[0]], IMU_AXES, {"filter": "ekf"})
    answer = post(client, "run", [windows[1]], IMU_AXES, {"filter": "mahony"}, state=first["state"])
    assert not answer["success"]
    assert "made by filter 'ekf'" in answer["error"] and "'mahony'" in answer["error"]
    answer = post(client, "run", [windows[1][:, :6]], IMU_AXES[:6], {"filter": "ekf"}, state=first["state"])
    assert not answer["success"] and "axes" in answer["error"]
    body = {"features": windows[1].reshape(-1).tolist(), "axes": IMU_AXES, "sampling_freq": 50,
            "params": {"filter": "ekf"}, "state": first["state"]}
    answer = client.post("/blocks/kalman/run", json=body).get_json()
    assert not answer["success"] and "50 Hz" in answer["error"]
    foreign = '{"block": "fuzzy-off-arm", "format": 1}'
    answer = post(client, "run", [windows[1]], IMU_AXES, {"filter": "ekf"}, state=foreign)
    assert not answer["success"] and "fuzzy-off-arm" in answer["error"]


@pytest.mark.parametrize("params, expected", [
    ({"filter": "weighted", "weighted-variances": "1, x, 2"}, "could not read 'x'"),
    ({"filter": "weighted", "weighted-variances": "1, 2"}, "2 sensor variances for 3 sensors"),
    ({"filter": "kf", "kf-measurement-noise": 0}, "measurement noise R"),
    ({"filter": "madgwick", "madgwick-beta": -1}, "beta"),
])
def test_bad_settings_are_clear_errors(client, stream, params, expected):
    window = windows_of(imu_columns(stream))[0][:, :3]
    if params["filter"] == "madgwick":
        window = windows_of(imu_columns(stream))[0][:, :6]
    axes = IMU_AXES[:window.shape[1]]
    answer = post(client, "run", [window], axes, params)
    assert answer["success"] is False
    assert expected in answer["error"]


# ---------------------------------------------------------------------------------------------
# Real fast motion without ground truth (x-io Fusion example log, MIT)
# ---------------------------------------------------------------------------------------------

XIO = XIO_LOG


@pytest.mark.skipif(not XIO.exists(), reason=f"x-io Fusion log not found at {XIO}")
@pytest.mark.parametrize("filter_name", orientation.FILTERS)
@pytest.mark.parametrize("with_mag", [False, True], ids=["6-axis", "9-axis"])
def test_real_fast_motion_never_diverges(client, filter_name, with_mag):
    with np.load(XIO) as data:
        fs = float(data["fs"])
        raw = np.hstack([data["acc"], data["gyr"]] + ([data["mag"]] if with_mag else []))
    axes = IMU_AXES[:raw.shape[1]]
    window = int(round(2 * fs))
    windows = [raw[i:i + window] for i in range(0, raw.shape[0] - window + 1, window)]
    state, rows = "", []
    for start in range(0, len(windows), 10):
        body = {"features": [w.reshape(-1).tolist() for w in windows[start:start + 10]], "axes": axes,
                "sampling_freq": fs, "params": {"filter": filter_name}, "state": state}
        answer = client.post("/blocks/kalman/batch", json=body).get_json()
        assert answer["success"], answer
        rows += answer["features"]
        state = answer["state"]
    features = np.array(rows)
    labels = answer["labels"]
    assert np.isfinite(features).all()
    # A diverged filter stops tracking gravity: its accelerometer innovation grows without bound.
    innovation = features[:, labels.index("innovation_rms")]
    assert np.median(innovation) < 5.0, innovation
    assert np.abs(features[:, labels.index("pitch_mean")]).max() <= 90.0


def test_declared_defaults_are_the_orientation_filters_tuned_defaults():
    specs = parameter_specs(kalman.BLOCK.parameters)
    for name, mapping in kalman.ORIENTATION_PARAMETERS.items():
        for param, setting in mapping.items():
            expected = orientation.default_settings(name)[setting]
            assert specs[param].default == ("" if expected is None else expected), param


def test_an_out_of_range_setting_is_named_as_studio_shows_it():
    acc = np.tile([0.0, 0.0, 9.81], (50, 1))
    raw = np.hstack([acc, np.zeros((50, 3))])
    params = resolve_params(parameter_specs(kalman.BLOCK.parameters), {"filter": "madgwick", "madgwick-beta": 1e9})
    req = Request(raw=raw, axes=["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ"], sampling_freq=100,
                  implementation_version=1, params=params)
    with pytest.raises(ConfigurationError, match="Parameter 'madgwick-beta' must be between"):
        kalman.compute(req)


def test_a_magnetometer_reading_zero_all_window_is_refused_not_turned_into_yaw():
    imu = np.hstack([np.tile([0.0, 0.0, 9.81], (50, 1)), np.zeros((50, 3)), np.zeros((50, 3))])
    params = resolve_params(parameter_specs(kalman.BLOCK.parameters), {"filter": "ekf"})
    req = Request(raw=imu, axes=[*kalman.ACC_AXES, *kalman.GYRO_AXES, *kalman.MAG_AXES], sampling_freq=100,
                  implementation_version=1, params=params)
    with pytest.raises(ConfigurationError, match="magnetometer .* reads 0"):
        kalman.compute(req)


# ---------------------------------------------------------------------------------------------
# Settings in seconds: the same at any sampling rate; the per-sample names still accepted
# ---------------------------------------------------------------------------------------------

def _tilt_step_time(name: str, fs: float, params: dict) -> float:
    """Seconds for the estimate to cover 63 % of a 20 degree tilt step, the gyro reading zero
    (the filter started level, then the device shown tilted)."""
    level = np.hstack([np.tile([0.0, 0.0, 9.80665], (int(fs), 1)), np.zeros((int(fs), 3))])
    tilt = math.radians(20.0)
    tilted = np.hstack([np.tile([0.0, 9.80665 * math.sin(tilt), 9.80665 * math.cos(tilt)], (int(20 * fs), 1)),
                        np.zeros((int(20 * fs), 3))])
    resolved = resolve_params(SPECS, {"filter": name, **params})
    axes = IMU_AXES[:6]
    head = kalman.compute(Request(raw=level, axes=axes, sampling_freq=fs, implementation_version=1,
                                  params=resolved, state=""))
    track = orientation.run_filter(name, tilted[:, :3], tilted[:, 3:], None, fs,
                                   {key: kalman._setting(resolved, param)
                                    for param, key in kalman.ORIENTATION_PARAMETERS[name].items()},
                                   kalman.decode_state(head.state, "kalman")["filter_state"])
    roll = np.degrees(euler_zyx(track.quat)[0])
    return (np.argmax(roll >= 0.632 * 20.0) + 1) / fs


@pytest.mark.parametrize("name, params, seconds", [
    ("complementary", {}, 1.5),
    ("complementary", {"complementary-time-constant": 0.4}, 0.4),
    ("mahony", {"mahony-integral-time": 0}, 3.0),
])
def test_a_time_constant_means_the_same_at_any_rate(name, params, seconds):
    for fs in (50.0, 100.0, 285.714):
        # Within one sample (the step is seen at sample times) and 2 % (Mahony's small-angle gain).
        assert _tilt_step_time(name, fs, params) == pytest.approx(seconds, rel=0.02, abs=1 / fs), fs


def test_mahony_defaults_respond_alike_at_any_rate():
    times = [_tilt_step_time("mahony", fs, {}) for fs in (50.0, 100.0, 285.714)]
    assert max(times) - min(times) <= 0.05, times


def test_the_deprecated_per_sample_alpha_still_works_as_before(stream):
    windows = windows_of(imu_columns(stream, with_mag=False))[:4]
    given, _, _ = in_process(windows, IMU_AXES[:6], filter="complementary", complementary_alpha="0.98")
    as_number, _, _ = in_process(windows, IMU_AXES[:6], filter="complementary", complementary_alpha=0.98)
    # alpha 0.98 at 100 Hz is the time constant -dt / ln(0.98) = 0.495 s.
    same_in_seconds, _, _ = in_process(windows, IMU_AXES[:6], filter="complementary",
                                       complementary_time_constant=-0.01 / math.log(0.98))
    default, _, _ = in_process(windows, IMU_AXES[:6], filter="complementary")
    np.testing.assert_allclose(given, as_number)
    np.testing.assert_allclose(given, same_in_seconds, atol=1e-9)
    assert not np.allclose(given, default)


def test_the_deprecated_mahony_gains_replace_the_time_constants(stream):
    windows = windows_of(imu_columns(stream, with_mag=False))[:4]
    gains, _, _ = in_process(windows, IMU_AXES[:6], filter="mahony", mahony_kp="0.5", mahony_ki="0.05")
    seconds, _, _ = in_process(windows, IMU_AXES[:6], filter="mahony", mahony_time_constant=2.0,
                               mahony_integral_time=10.0)
    np.testing.assert_allclose(gains, seconds, atol=1e-9)


def test_studio_sending_every_declared_default_equals_sending_none(stream):
    # Studio sends every parameter with its declared value: the empty deprecated ones must not count.
    windows = windows_of(imu_columns(stream, with_mag=False))[:3]
    declared = {item["param"].replace("-", "_"): item["value"]
                for group in kalman.BLOCK.parameters["parameters"] for item in group["items"]}
    for name in ("complementary", "mahony"):
        studio, _, _ = in_process(windows, IMU_AXES[:6], **{**declared, "filter": name})
        curl, _, _ = in_process(windows, IMU_AXES[:6], filter=name)
        np.testing.assert_array_equal(studio, curl)


def test_deprecated_parameters_say_so_and_name_their_replacement(client, stream):
    items = {item["param"]: item for group in kalman.BLOCK.parameters["parameters"] for item in group["items"]}
    for old, new in kalman.DEPRECATED_PARAMETERS.items():
        assert items[old.replace("_", "-")]["help"].startswith("Deprecated: use the")
        assert items[new]["help"] and "seconds" in items[new]["help"]
    windows = windows_of(imu_columns(stream, with_mag=False))[:1]
    answer = post(client, "run", windows, IMU_AXES[:6], {"filter": "complementary", "complementary-alpha": "fast"})
    assert not answer["success"]
    assert "'complementary-alpha' must be a number or empty" in answer["error"]
    assert "complementary-time-constant" in answer["error"]


def test_mahony_learns_no_bias_while_turning_fast():
    fs, n = 100.0, 300
    t = np.arange(n) / fs
    rate = 3.0  # rad/s about x, above the 1 rad/s gate; the accelerometer disagrees all along
    acc = np.column_stack([np.full(n, 1.0), np.full(n, 2.0), np.full(n, 9.5)])
    gyr = np.column_stack([np.full(n, rate), np.zeros(n), np.zeros(n)])
    fast = orientation.run_filter("mahony", acc, gyr, None, fs, None, None)
    slow = orientation.run_filter("mahony", acc, gyr * 0.1, None, fs, None, None)
    assert np.abs(fast.gyro_bias[-1]).max() == 0.0
    assert np.abs(slow.gyro_bias[-1]).max() > 1e-4
    assert t[-1] > 2.0
