"""The kalman block's device build (device/lib: C11, float32, no heap) gives the server's features.

Every request body goes both to the server's `/batch` (Flask's test client) and through the C code
(`device.host.run_batch`: the same parameters and axis mapping, one block instance, state carried
window by window), for every filter, with and without magnetometer, both unit options, named axes,
overlapping windows and non-default settings, on the synthetic IMU stream, BROAD recordings and the
x-io log. Features agree within 1e-3 (1 + |server|), angle features within 0.05 degrees.

Where float32 cannot agree with float64 by the nature of the feature, roll and yaw features are
left out, and counted:

* windows whose roll (or yaw) covers nearly the whole circle (deviations spanning more than 350
  degrees): the circular mean is then ill-conditioned and the cut at mean +- 180 degrees passes
  between samples; a sample landing on the other side of it moves roll_mean by 360 / samples and
  min and max to the neighbouring samples (BROAD trial 29, window 72 of its 2 s windows: roll_mean
  0.62 degrees apart, one sample of 571 across the cut, while the float64 build of the same C code
  agrees within 1e-4 degrees);
* windows whose pitch reaches 88 degrees: roll and yaw turn a quaternion difference into
  1 / cos(pitch) times as much angle there (29 times at 88 degrees).

Not tested here, for the same reason: the EKF's heading error is an atan2, discontinuous at 180
degrees; when a disturbed field points nearly south, float32 and float64 can take opposite sides
and the heading then differs by a correction step (BROAD trial 29 from 100 s: 0.06 degrees of yaw
after 9 windows, decaying).

Run with -s to see the worst differences per case.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from device import build
from device.host import DeviceError, run_batch
from dsp.fusion import kalman
from tests.imu_stream import make_imu_stream
from tests.shared_data import BROAD_DIR, XIO_LOG

IMU_AXES = ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ", "magX", "magY", "magZ"]
ORIENTATION = ["complementary", "ekf", "madgwick", "mahony", "vqf"]
FS = 100.0
WINDOW = 200
ANGLE_TOLERANCE_DEG = 0.05
RELATIVE_TOLERANCE = 1e-3
FULL_CIRCLE_DEG = 350.0
STEEP_PITCH_DEG = 88.0
# (trial, first second, last second): fast rotation; a magnet disturbing the field.
BROAD_SEGMENTS = (("06_", 0.0, 60.0), ("29_", 0.0, 60.0))

FUSION_ERR_PARAMETER, FUSION_ERR_AXES, FUSION_ERR_INPUT, FUSION_ERR_STATE = -1, -2, -3, -7

WORST: dict[str, tuple] = {}


@pytest.fixture(scope="module", autouse=True)
def host_library():
    try:
        return build.host_library()
    except build.BuildError as exc:
        pytest.skip(f"the device build cannot be compiled here: {exc}")


@pytest.fixture(scope="module")
def client():
    import logging

    from dsp_server import create_app

    app = create_app(blocks={"kalman": kalman.BLOCK}, root_block="kalman")
    # Quiet for this module only: a later test in the same worker reads the access log.
    access_log = logging.getLogger("dsp_server.access")
    level = access_log.level
    access_log.setLevel(logging.WARNING)
    yield app.test_client()
    access_log.setLevel(level)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if WORST:
        print("\nworst |device - server| per case (relative: / (1 + |server|); angles in degrees):")
        for name, (relative, angle, excluded, windows) in sorted(WORST.items()):
            print(f"  {name:55s} relative {relative:.1e}  angle {angle:.1e}  "
                  f"roll/yaw left out {excluded}/{windows} windows")


@pytest.fixture(scope="module")
def stream():
    return make_imu_stream(seconds=20.0, fs=FS, seed=3)


def imu(stream, with_mag=True):
    return np.hstack([stream.acc, stream.gyr] + ([stream.mag] if with_mag else []))


def windows_of(raw, size=WINDOW, step=None):
    step = step or size
    return [raw[i:i + size] for i in range(0, raw.shape[0] - size + 1, step)]


def body_of(windows, axes, params, fs=FS, **extra):
    return {"features": [np.asarray(w, dtype=np.float64).reshape(-1).tolist() for w in windows], "axes": axes,
            "sampling_freq": fs, "params": params, **extra}


def server_batch(client, body):
    answer = client.post("/blocks/kalman/batch", json=body).get_json()
    assert answer["success"], answer
    return np.array(answer["features"], dtype=np.float64), answer["labels"]


def assert_parity(client, body, name):
    """Device features equal the server's within the tolerances; returns the worst differences."""
    expected, labels = server_batch(client, body)
    got = np.array(run_batch("kalman", body), dtype=np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert np.isfinite(got).all()
    index = {label: i for i, label in enumerate(labels)}
    diff = np.abs(got - expected)
    is_angle = np.array([label.split("_")[0] in ("roll", "pitch", "yaw") for label in labels])
    checked = np.ones_like(diff, dtype=bool)
    excluded = np.zeros(len(expected), dtype=bool)
    steep = np.zeros(len(expected), dtype=bool)
    if "pitch_min" in index:
        steep = np.maximum(-expected[:, index["pitch_min"]], expected[:, index["pitch_max"]]) >= STEEP_PITCH_DEG
    for angle in ("roll", "yaw"):
        if f"{angle}_min" in index:
            span = expected[:, index[f"{angle}_max"]] - expected[:, index[f"{angle}_min"]]
            leave_out = steep | (span > FULL_CIRCLE_DEG)
            excluded |= leave_out
            for stat in ("mean", "std", "min", "max"):
                checked[leave_out, index[f"{angle}_{stat}"]] = False
    relative = diff / (1.0 + np.abs(expected))
    angle_ok = diff <= ANGLE_TOLERANCE_DEG
    other_ok = relative <= RELATIVE_TOLERANCE
    ok = np.where(is_angle, angle_ok, other_ok) | ~checked
    worst_relative = float(relative[:, ~is_angle].max()) if (~is_angle).any() else 0.0
    worst_angle = float(np.where(checked, diff, 0.0)[:, is_angle].max()) if is_angle.any() else 0.0
    WORST[name] = (worst_relative, worst_angle, int(excluded.sum()), len(expected))
    if not ok.all():
        rows, cols = np.nonzero(~ok)
        details = [f"window {r} {labels[c]}: server {expected[r, c]:.7g} device {got[r, c]:.7g}"
                   for r, c in list(zip(rows, cols))[:8]]
        pytest.fail(f"{name}: {len(rows)} features off:\n" + "\n".join(details))
    # The left-out windows are the exception, not the rule.
    assert excluded.sum() <= max(2, 0.3 * len(expected)), (name, int(excluded.sum()), len(expected))
    return labels


# ---------------------------------------------------------------------------------------------
# Synthetic stream: every filter and option
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_mag", [False, True], ids=["6-axis", "9-axis"])
@pytest.mark.parametrize("filter_name", ORIENTATION)
def test_orientation_filters_match_the_server(client, stream, filter_name, with_mag):
    raw = imu(stream, with_mag)
    body = body_of(windows_of(raw), IMU_AXES[:raw.shape[1]], {"filter": filter_name})
    labels = assert_parity(client, body, f"synthetic {filter_name} {'9' if with_mag else '6'}-axis")
    assert ("yaw_mean" in labels) == with_mag


@pytest.mark.parametrize("params", [
    {"filter": "kf"},
    {"filter": "kf", "kf-rts": False},
    {"filter": "kf", "kf-process-noise": 25.0, "kf-measurement-noise": 0.05},
    {"filter": "kf", "kf-rts": False, "kf-process-noise": 0.01, "kf-measurement-noise": 2.0},
], ids=["rts", "filtered", "rts-noisy-settings", "filtered-slow"])
def test_linear_kalman_matches_the_server(client, stream, params):
    body = body_of(windows_of(imu(stream)), IMU_AXES, params)
    assert_parity(client, body, f"synthetic kf {params}")


def thermometers(seconds=200.0, fs=10.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    truth = 21.0 + 0.5 * np.sin(2 * np.pi * t / 100.0)
    return truth[:, None] + np.array([0.1, 0.2, 0.3]) * rng.standard_normal((t.size, 3))


@pytest.mark.parametrize("params", [
    {"filter": "weighted"},
    {"filter": "weighted", "weighted-memory": 7.5},
    {"filter": "weighted", "weighted-variances": "0.01, 0.04; 0.09"},
], ids=["estimated", "short-memory", "given"])
def test_weighted_fusion_matches_the_server(client, params):
    raw = thermometers()
    body = body_of(windows_of(raw, 100), ["t_kitchen", "t_hall", "t_door"], params, fs=10.0)
    assert_parity(client, body, f"thermometers {params}")


def test_weighted_fusion_of_imu_axes_matches_the_server(client, stream):
    body = body_of(windows_of(imu(stream)), IMU_AXES, {"filter": "weighted"})
    assert_parity(client, body, "synthetic weighted 9 axes")


@pytest.mark.parametrize("params", [
    {"filter": "complementary", "complementary-time-constant": 0.4, "complementary-heading-time-constant": 1.0},
    {"filter": "complementary", "complementary-alpha": "0.98", "complementary-alpha-mag": " 0.995 "},
    {"filter": "madgwick", "madgwick-beta": 0.3},
    {"filter": "mahony", "mahony-time-constant": 1.0, "mahony-integral-time": 0.0},
    {"filter": "mahony", "mahony-kp": 0.8, "mahony-ki": "0.05"},
    {"filter": "mahony", "mahony-kp": "2"},
    {"filter": "ekf", "ekf-gyro-noise": 0.02, "ekf-bias-walk": 1e-4, "ekf-acc-noise": 0.01, "ekf-mag-noise": 0.1},
    {"filter": "vqf", "vqf-tau-acc": 1.0, "vqf-tau-mag": 4.0},
], ids=["complementary-tau", "complementary-alpha", "madgwick-beta", "mahony-tau", "mahony-kp-ki",
        "mahony-kp-only", "ekf-noises", "vqf-taus"])
def test_non_default_and_deprecated_settings_match_the_server(client, stream, params):
    body = body_of(windows_of(imu(stream)), IMU_AXES, params)
    assert_parity(client, body, f"synthetic {params}")


@pytest.mark.parametrize("filter_name, acc_units, gyro_units", [
    ("mahony", "g", "deg/s"), ("ekf", "g", "rad/s"), ("vqf", "m/s^2", "deg/s"), ("complementary", "g", "deg/s"),
])
def test_unit_options_match_the_server(client, stream, filter_name, acc_units, gyro_units):
    raw = imu(stream).copy()
    if acc_units == "g":
        raw[:, :3] /= 9.80665
    if gyro_units == "deg/s":
        raw[:, 3:6] = np.degrees(raw[:, 3:6])
    params = {"filter": filter_name, "acc-units": acc_units, "gyro-units": gyro_units}
    assert_parity(client, body_of(windows_of(raw), IMU_AXES, params), f"synthetic units {params}")


@pytest.mark.parametrize("params", [{"filter": "ekf"}, {"filter": "kf"}, {"filter": "weighted"}])
def test_named_axes_match_the_server(client, stream, params):
    # Gyro first, then an unmapped column, then the accelerometer, all under other names.
    raw = imu(stream, with_mag=False)
    extra = np.linspace(0.0, 1.0, raw.shape[0])[:, None]
    shuffled = np.hstack([raw[:, 3:6], extra, raw[:, :3]])
    names = ["gx", "gy", "gz", "temperature", "ax", "ay", "az"]
    named = {"accX": "ax", "accY": "ay", "accZ": "az", "gyrX": "gx", "gyrY": "gy", "gyrZ": "gz",
             "magX": False, "magY": False, "magZ": False}
    body = body_of(windows_of(shuffled), names, params, named_axes=named)
    assert_parity(client, body, f"synthetic named axes {params}")


@pytest.mark.parametrize("params", [
    {"filter": "ekf"}, {"filter": "vqf"}, {"filter": "complementary"}, {"filter": "mahony"},
    {"filter": "kf"}, {"filter": "weighted"},
])
def test_overlapping_windows_match_the_server(client, stream, params):
    # 2 s windows every 0.5 s: each window continues from the state where it starts.
    body = body_of(windows_of(imu(stream), WINDOW, 50), IMU_AXES, {**params, "window-increase-ms": 500})
    assert_parity(client, body, f"synthetic overlap {params}")


def test_overlap_whose_increase_rounds_to_whole_samples(client, stream):
    # 333.3 ms at 100 Hz is 33 samples; a window of 33 samples or fewer hands on its end state.
    windows = windows_of(imu(stream), 120, 33) + [imu(stream)[:30]]
    body = body_of(windows, IMU_AXES, {"filter": "madgwick", "window-increase-ms": 333.3})
    assert_parity(client, body, "synthetic overlap 333.3 ms")


def test_a_stream_started_by_a_short_window(client, stream):
    # The start-of-stream orientation averages min(samples, 0.1 s) of the first window.
    raw = imu(stream)
    windows = [raw[:4], raw[4:204], raw[204:205], raw[205:405]]
    for name in ORIENTATION:
        assert_parity(client, body_of(windows, IMU_AXES, {"filter": name}), f"synthetic short windows {name}")


# ---------------------------------------------------------------------------------------------
# Recordings: BROAD and the x-io log
# ---------------------------------------------------------------------------------------------

def broad_trial(segment):
    prefix, first, last = segment
    paths = sorted(BROAD_DIR.glob(f"{prefix}*.npz"))
    if not paths:
        pytest.skip(f"BROAD trial {prefix}* not found in {BROAD_DIR}")
    with np.load(paths[0]) as data:
        fs = float(data["fs"])
        rows = slice(int(first * fs), int(last * fs))
        name = f"{paths[0].stem[:12]} {first:.0f}-{last:.0f} s"
        return name, fs, np.hstack([data["acc"], data["gyr"], data["mag"]])[rows]


@pytest.mark.parametrize("with_mag", [False, True], ids=["6-axis", "9-axis"])
@pytest.mark.parametrize("filter_name", ORIENTATION)
@pytest.mark.parametrize("segment", BROAD_SEGMENTS, ids=[f"{s[0][:2]}-{s[1]:.0f}s" for s in BROAD_SEGMENTS])
def test_broad_recordings_match_the_server(client, segment, filter_name, with_mag):
    name, fs, raw = broad_trial(segment)
    raw = raw if with_mag else raw[:, :6]
    window = int(round(2 * fs))
    body = body_of(windows_of(raw, window), IMU_AXES[:raw.shape[1]], {"filter": filter_name}, fs=fs)
    assert_parity(client, body, f"BROAD {name} {filter_name} {'9' if with_mag else '6'}-axis")


@pytest.mark.parametrize("params", [{"filter": "kf"}, {"filter": "kf", "kf-rts": False},
                                    {"filter": "weighted"}])
def test_broad_recordings_through_kf_and_weighted_match_the_server(client, params):
    name, fs, raw = broad_trial(BROAD_SEGMENTS[0])
    window = int(round(2 * fs))
    body = body_of(windows_of(raw, window), IMU_AXES, params, fs=fs)
    assert_parity(client, body, f"BROAD {name} {params}")


@pytest.mark.skipif(not XIO_LOG.exists(), reason=f"x-io Fusion log not found at {XIO_LOG}")
@pytest.mark.parametrize("with_mag", [False, True], ids=["6-axis", "9-axis"])
@pytest.mark.parametrize("filter_name", ORIENTATION)
def test_xio_log_matches_the_server(client, filter_name, with_mag):
    with np.load(XIO_LOG) as data:
        fs = float(data["fs"])
        raw = np.hstack([data["acc"], data["gyr"]] + ([data["mag"]] if with_mag else []))
    window = int(round(2 * fs))
    body = body_of(windows_of(raw, window), IMU_AXES[:raw.shape[1]], {"filter": filter_name}, fs=fs)
    assert_parity(client, body, f"x-io {filter_name} {'9' if with_mag else '6'}-axis")


# ---------------------------------------------------------------------------------------------
# Errors: the device refuses what the server refuses
# ---------------------------------------------------------------------------------------------

def assert_both_refuse(client, body, code, *phrases):
    answer = client.post("/blocks/kalman/batch", json=body).get_json()
    assert answer["success"] is False, answer
    with pytest.raises(DeviceError) as caught:
        run_batch("kalman", body)
    assert caught.value.code == code, caught.value
    for phrase in phrases:
        assert phrase in caught.value.message, (phrase, caught.value.message)
    assert len(caught.value.message) < 160
    return caught.value


@pytest.mark.parametrize("params, column, expected_axis", [
    ({"filter": "ekf"}, 4, "gyrY"), ({"filter": "vqf"}, 7, "magY"), ({"filter": "kf"}, 0, "accX"),
    ({"filter": "weighted"}, 8, "magZ"),
])
def test_nan_is_refused(client, stream, params, column, expected_axis):
    windows = windows_of(imu(stream))[:3]
    windows[1] = windows[1].copy()
    windows[1][5, column] = np.nan
    error = assert_both_refuse(client, body_of(windows, IMU_AXES, params), FUSION_ERR_INPUT, expected_axis,
                               "NaN", "sample 5")
    assert error.window == 1


@pytest.mark.parametrize("scale, units, gyro_scale, gyro_units, phrase", [
    (1 / 9.80665, "m/s^2", 1.0, "rad/s", "looks like g"),
    (1.0, "g", 1.0, "rad/s", "looks like m/s^2"),
    (1000 / 9.80665, "m/s^2", 1.0, "rad/s", "far from gravity"),
    (1.0, "m/s^2", 3000.0, "rad/s", "looks like deg/s"),
])
def test_wrong_units_are_refused(client, stream, scale, units, gyro_scale, gyro_units, phrase):
    raw = imu(stream, with_mag=False).copy()
    raw[:, :3] *= scale
    raw[:, 3:] = raw[:, 3:] * gyro_scale + (40.0 if gyro_scale > 1 else 0.0)
    body = body_of(windows_of(raw)[:2], IMU_AXES[:6], {"filter": "madgwick", "acc-units": units,
                                                      "gyro-units": gyro_units})
    assert_both_refuse(client, body, FUSION_ERR_INPUT, phrase)


def test_missing_gyroscope_and_partial_magnetometer_are_refused(client, stream):
    raw = imu(stream)
    error = assert_both_refuse(client, body_of(windows_of(raw[:, :3])[:1], IMU_AXES[:3], {"filter": "vqf"}),
                               FUSION_ERR_AXES, "gyrX, gyrY, gyrZ", "'vqf'", "'kf'")
    assert error.window is None
    assert_both_refuse(client, body_of(windows_of(raw[:, :7])[:1], IMU_AXES[:7], {"filter": "ekf"}),
                       FUSION_ERR_AXES, "magnetometer needs all three axes", "magY, magZ")


@pytest.mark.parametrize("params, phrase", [
    ({"filter": "madgwick", "madgwick-beta": -1}, "'madgwick-beta' must be between 0.0 and 10.0"),
    ({"filter": "madgwick", "madgwick-beta": 1e9}, "'madgwick-beta' must be between"),
    ({"filter": "complementary", "complementary-time-constant": 0}, "'complementary-time-constant'"),
    ({"filter": "complementary", "complementary-alpha": "abc"}, "'complementary-alpha' must be a number or empty"),
    ({"filter": "complementary", "complementary-alpha-mag": "1.5"}, "'complementary-alpha-mag' must be between"),
    ({"filter": "mahony", "mahony-kp": "200"}, "'mahony-kp' must be between 0.0 and 100.0"),
    ({"filter": "mahony", "mahony-ki": "0.1, 0.2"}, "'mahony-ki' must be a number or empty"),
    ({"filter": "mahony", "mahony-integral-time": -1}, "'mahony-integral-time'"),
    ({"filter": "ekf", "ekf-gyro-noise": 0}, "'ekf-gyro-noise' must be between 1e-09 and 10.0"),
    ({"filter": "ekf", "ekf-acc-noise": 1000}, "'ekf-acc-noise'"),
    ({"filter": "vqf", "vqf-tau-acc": -1}, "'vqf-tau-acc'"),
    ({"filter": "kf", "kf-measurement-noise": 0}, "measurement noise R"),
    ({"filter": "kf", "kf-process-noise": -2}, "process noise Q"),
    ({"filter": "weighted", "weighted-variances": "1, x, 2"}, "'weighted-variances' must be numbers"),
    ({"filter": "weighted", "weighted-variances": "1, 2"}, "2 sensor variances for 3 sensors"),
    ({"filter": "weighted", "weighted-variances": "1, 0, 2"}, "positive"),
    ({"filter": "weighted", "weighted-memory": 0}, "'weighted-memory'"),
    ({"filter": "ekf", "window-increase-ms": -5}, "'window-increase-ms'"),
])
def test_bad_settings_are_refused_at_init(client, stream, params, phrase):
    columns = 3 if params["filter"] in ("kf", "weighted") else 6
    body = body_of(windows_of(imu(stream)[:, :columns])[:1], IMU_AXES[:columns], params)
    error = assert_both_refuse(client, body, FUSION_ERR_PARAMETER, phrase)
    assert error.window is None


def test_data_errors_are_refused(client):
    level = np.tile([0.0, 0.0, 9.81], (50, 1))
    # A magnetometer reading 0 all window.
    raw = np.hstack([level, np.zeros((50, 3)), np.zeros((50, 3))])
    assert_both_refuse(client, body_of([raw], IMU_AXES, {"filter": "ekf"}), FUSION_ERR_INPUT, "magnetometer",
                       "reads 0")
    # An accelerometer reading zero at the start of the stream (the window's median is fine).
    raw = np.hstack([level, np.zeros((50, 3))])
    raw[:10, :3] = 0.0
    assert_both_refuse(client, body_of([raw], IMU_AXES[:6], {"filter": "mahony"}), FUSION_ERR_INPUT,
                       "zero at the start")
    # An accelerometer beyond any real sensor for a few samples.
    raw = np.hstack([level, np.zeros((50, 3))])
    raw[7, 1] = 5e6
    assert_both_refuse(client, body_of([raw], IMU_AXES[:6], {"filter": "madgwick"}), FUSION_ERR_INPUT,
                       "beyond any real sensor")
    # Weighted fusion estimating variances from a single sample.
    assert_both_refuse(client, body_of([level[:1]], IMU_AXES[:3], {"filter": "weighted"}), FUSION_ERR_INPUT,
                       "at least 2 samples")


# ---------------------------------------------------------------------------------------------
# The C API itself: counts, maxima, and a failed window leaves the stream as it was
# ---------------------------------------------------------------------------------------------

class _Window(ctypes.Structure):
    _fields_ = [("read", ctypes.c_void_p), ("context", ctypes.c_void_p), ("samples", ctypes.c_size_t),
                ("input_axes", ctypes.c_size_t)]


def _c_block(params: dict, columns: list[int], input_axes: int, fs: float = FS):
    """A kalman instance through ctypes, with parameters resolved as the server resolves them."""
    from dsp.core.params import parameter_specs, resolve_params

    lib = ctypes.CDLL(str(build.host_library()))
    items = [item for group in kalman.BLOCK.parameters["parameters"] for item in group["items"]]
    types = {"select": ctypes.c_char_p, "string": ctypes.c_char_p, "float": ctypes.c_float,
             "boolean": ctypes.c_bool, "int": ctypes.c_int}
    fields = [(item["param"].replace("-", "_"), types[item["type"]]) for item in items]
    Params = type("kalman_params_t", (ctypes.Structure,), {"_fields_": fields})
    resolved = resolve_params(parameter_specs(kalman.BLOCK.parameters), params)
    values = {name: (str(resolved[name]).encode() if kind is ctypes.c_char_p else resolved[name])
              for name, kind in fields}
    lib.kalman_instance_size.restype = ctypes.c_size_t
    block = ctypes.create_string_buffer(lib.kalman_instance_size())
    lib.kalman_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float, ctypes.POINTER(ctypes.c_int),
                                ctypes.c_size_t]
    lib.kalman_process.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Window), ctypes.POINTER(ctypes.c_float),
                                   ctypes.c_size_t]
    lib.kalman_message.restype = ctypes.c_char_p
    lib.kalman_message.argtypes = [ctypes.c_void_p]
    lib.kalman_feature_count.restype = ctypes.c_size_t
    lib.kalman_feature_count.argtypes = [ctypes.c_void_p]
    lib.kalman_reset.argtypes = [ctypes.c_void_p]
    c_params = Params(**values)
    code = lib.kalman_init(block, ctypes.byref(c_params), fs, (ctypes.c_int * 9)(*columns), input_axes)
    assert code == 0, lib.kalman_message(block)

    def process(window: np.ndarray):
        values = np.ascontiguousarray(window, dtype=np.float32)
        count = lib.kalman_feature_count(block)
        out = (ctypes.c_float * max(count, 1))()
        w = _Window(ctypes.cast(lib.fusion_read_memory, ctypes.c_void_p).value, values.ctypes.data,
                    values.shape[0], values.shape[1])
        code = lib.kalman_process(block, ctypes.byref(w), out, count)
        return code, lib.kalman_message(block).decode(), np.array(out[:count], dtype=np.float64)

    return lib, block, process


@pytest.mark.parametrize("params", [{"filter": "ekf"}, {"filter": "vqf", "window-increase-ms": 1000},
                                    {"filter": "kf"}, {"filter": "weighted"}])
def test_a_failed_window_leaves_the_stream_as_it_was(client, stream, params):
    windows = windows_of(imu(stream))[:5]
    expected, labels = server_batch(client, body_of(windows, IMU_AXES, params))
    lib, block, process = _c_block(params, list(range(9)), 9)
    assert lib.kalman_feature_count(block) == len(labels)
    rows = []
    for i, window in enumerate(windows):
        if i == 2:
            broken = window.copy()
            broken[17, 3] = np.inf
            code, message, _ = process(broken)
            assert code == FUSION_ERR_INPUT and "gyrX" in message
            code, message, _ = process(window[:0])
            assert code == FUSION_ERR_INPUT
        code, message, features = process(window)
        assert code == 0, message
        assert message == ""
        rows.append(features)
    np.testing.assert_allclose(np.array(rows), expected, rtol=1e-3, atol=2e-3)
    # kalman_reset starts a new stream: the first window's features again.
    lib.kalman_reset(block)
    np.testing.assert_array_equal(process(windows[0])[2], rows[0])


def test_feature_counts_and_maxima():
    lib, block, _ = _c_block({"filter": "kf"}, list(range(9)), 9)
    assert lib.kalman_feature_count(block) == 54
    _, block, process = _c_block({"filter": "ekf"}, list(range(6)) + [-1, -1, -1], 12)
    assert lib.kalman_feature_count(block) == 8 + 3 + 1
    # Longer windows than the build's maximum are refused, not truncated.
    code, message, _ = process(np.zeros((1025, 12)))
    assert code == -4 and "KALMAN_MAX_WINDOW_SAMPLES" in message
    # A window of another width than init's is refused too.
    assert process(np.zeros((10, 9)))[0] == FUSION_ERR_AXES
