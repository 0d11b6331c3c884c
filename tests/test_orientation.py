"""The orientation (AHRS) filters of `dsp.fusion.orientation`: accuracy, bias, oracles, streams, conventions.

Figures on the 60 s synthetic stream of `tests/imu_stream.py` (seed 0), per filter, with its
defaults and with `STREAM_SETTINGS`: `bench/broad_orientation.py` prints them.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from dsp.core.errors import ConfigurationError
from dsp.fusion.orientation import FILTERS, OrientationTrack, default_settings, run_filter
from dsp.fusion.quaternion import (
    euler_zyx,
    orientation_errors,
    quat_conjugate,
    quat_from_euler_zyx,
    quat_multiply,
    quat_rotate,
)
from tests.imu_stream import EARTH_FIELD, GRAVITY, STREAM_SETTINGS, make_imu_stream
from tests.shared_data import XIO_LOG

ahrs_filters = pytest.importorskip("ahrs.filters")


@pytest.fixture(scope="module")
def stream():
    return make_imu_stream(60.0, seed=0)


def tilt_rms_deg(track: OrientationTrack, stream, skip_seconds: float = 2.0) -> float:
    _, _, inclination = orientation_errors(track.quat, stream.quat)
    start = int(skip_seconds * stream.fs)
    return float(np.degrees(np.sqrt(np.mean(inclination[start:] ** 2))))


def heading_rms_deg(track: OrientationTrack, stream, skip_seconds: float = 10.0) -> float:
    _, heading, _ = orientation_errors(track.quat, stream.quat)
    start = int(skip_seconds * stream.fs)
    return float(np.degrees(np.sqrt(np.mean(heading[start:] ** 2))))


# --- accuracy on the synthetic stream -------------------------------------------------------------


def test_synthetic_stream_gyro_matches_its_quaternion_path(stream):
    """The stream's own consistency: integrating the ideal gyro reproduces the true path."""
    q = stream.quat[0]
    dt = 1.0 / stream.fs
    for rate in stream.true_rate[1:]:
        angle = np.linalg.norm(rate) * dt
        axis = rate / np.linalg.norm(rate)
        q = quat_multiply(q, np.r_[np.cos(angle / 2), np.sin(angle / 2) * axis])
    assert np.allclose(np.abs(np.dot(q, stream.quat[-1])), 1.0, atol=1e-9)


def test_best_filter_tilt_under_half_a_degree_and_every_filter_sensible(stream):
    figures = {}
    for name in FILTERS:
        for mag in (None, stream.mag):
            track = run_filter(name, stream.acc, stream.gyr, mag, stream.fs, STREAM_SETTINGS.get(name), None)
            figures[(name, mag is not None)] = tilt_rms_deg(track, stream)
    assert min(figures.values()) < 0.5, figures
    assert figures[("ekf", False)] < 0.5 and figures[("ekf", True)] < 0.5, figures
    # Every filter tracks the tilt (the stream swings tens of degrees; a broken filter is far off).
    assert max(figures.values()) < 2.5, figures


def test_magnetometer_gives_the_heading(stream):
    for name in FILTERS:
        track = run_filter(name, stream.acc, stream.gyr, stream.mag, stream.fs, STREAM_SETTINGS.get(name), None)
        assert heading_rms_deg(track, stream) < 8.0, name


@pytest.mark.parametrize("name, settings, with_mag, axes", [
    ("ekf", None, False, [0, 1]),
    ("ekf", None, True, [0, 1, 2]),
    ("mahony", {"kp": 1.0, "ki": 0.05}, False, [0, 1]),
    ("mahony", {"kp": 1.0, "ki": 0.05}, True, [0, 1, 2]),
    ("vqf", None, False, [0, 1]),
])
def test_gyro_bias_recovered_within_20_percent_on_observable_axes(name, settings, with_mag, axes):
    stream = make_imu_stream(100.0, seed=3)
    track = run_filter(name, stream.acc, stream.gyr, stream.mag if with_mag else None, stream.fs, settings, None)
    estimate = track.gyro_bias[-int(10 * stream.fs):].mean(axis=0)
    relative = np.abs(estimate - stream.gyro_bias) / np.abs(stream.gyro_bias)
    assert (relative[axes] < 0.2).all(), (estimate, stream.gyro_bias)


def test_filters_without_bias_report_none_and_innovation_is_an_angle(stream):
    for name in FILTERS:
        track = run_filter(name, stream.acc, stream.gyr, None, stream.fs, STREAM_SETTINGS.get(name), None)
        assert (track.gyro_bias is None) == (name in ("complementary", "madgwick"))
        assert track.innovation.shape == (len(stream.acc),)
        # Linear acceleration of 0.3 m/s^2 against g tilts the measured direction by ~2 degrees.
        assert 0.0 <= np.median(track.innovation) < np.radians(5.0), name


# --- oracles: the ahrs package on the same equations --------------------------------------------------
# Our Madgwick and Mahony (without magnetometer) and ahrs' implement the same published update
# (same gains, same Euler step, same normalisation), so they agree to rounding: 1e-9 leaves room for
# differently ordered float operations over 6,000 steps and nothing else. Both start from our
# orientation after the first sample, since ahrs does not process its first sample.


def first_sample_state(name, stream, mag, settings):
    head = run_filter(name, stream.acc[:1], stream.gyr[:1], None if mag is None else mag[:1], stream.fs,
                      settings, None)
    return head.state


def aligned(q_a, q_b):
    """q_b with each row's sign chosen to match q_a (q and -q are the same rotation)."""
    return q_b * np.sign(np.sum(q_a * q_b, axis=1, keepdims=True))


def test_madgwick_matches_ahrs(stream):
    settings = {"beta": 0.033}
    state = first_sample_state("madgwick", stream, None, settings)
    ours = run_filter("madgwick", stream.acc[1:], stream.gyr[1:], None, stream.fs, settings, state).quat
    oracle = ahrs_filters.Madgwick(gyr=stream.gyr, acc=stream.acc, frequency=stream.fs, gain=0.033,
                                   q0=np.array(state["quat"])).Q[1:]
    np.testing.assert_allclose(ours, aligned(ours, oracle), atol=1e-9)


def test_madgwick_with_magnetometer_matches_ahrs_in_its_north_west_up_frame(stream):
    """ahrs' Madgwick puts magnetic north on x (north-west-up); ours on y (east-north-up).

    The update is equivariant under a rotation of the earth frame about the vertical, so our
    quaternions are exactly ahrs' turned by +90 degrees about z.
    """
    settings = {"beta": 0.041}
    state = first_sample_state("madgwick", stream, stream.mag, settings)
    ours = run_filter("madgwick", stream.acc[1:], stream.gyr[1:], stream.mag[1:], stream.fs, settings, state).quat
    to_enu = np.array([np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4)])
    q0_nwu = quat_multiply(quat_conjugate(to_enu), np.array(state["quat"]))
    # Stepped by hand: ahrs' batch MARG mode ignores q0 and starts from its own NED e-compass.
    madgwick = ahrs_filters.Madgwick(frequency=stream.fs, gain=0.041)
    oracle = np.empty((len(stream.acc) - 1, 4))
    q = q0_nwu
    for i in range(1, len(stream.acc)):
        q = oracle[i - 1] = madgwick.updateMARG(q, gyr=stream.gyr[i], acc=stream.acc[i], mag=stream.mag[i])
    oracle_enu = quat_multiply(to_enu, oracle)
    np.testing.assert_allclose(ours, aligned(ours, oracle_enu), atol=1e-9)


def test_mahony_matches_ahrs_including_its_bias(stream):
    # As published: the bias learned at every rate (ahrs has no rate gate).
    settings = {"kp": 1.0, "ki": 0.3, "bias_max_rate": 1e3}
    state = first_sample_state("mahony", stream, None, settings)
    track = run_filter("mahony", stream.acc[1:], stream.gyr[1:], None, stream.fs, settings, state)
    oracle = ahrs_filters.Mahony(gyr=stream.gyr, acc=stream.acc, frequency=stream.fs, k_P=1.0, k_I=0.3,
                                 q0=np.array(state["quat"]), b0=np.array(state["bias"]))
    np.testing.assert_allclose(track.quat, aligned(track.quat, oracle.Q[1:]), atol=1e-9)
    np.testing.assert_allclose(track.gyro_bias[-1], oracle.b, atol=1e-9)


def test_complementary_matches_ahrs_for_rotation_about_one_axis():
    """ahrs blends Euler angles, we blend rotations: identical when the motion stays about x.

    (For general motion ahrs adds body rates to Euler angles, an approximation we do not share.)
    """
    fs, n = 100.0, 3000
    t = np.arange(n) / fs
    rng = np.random.default_rng(5)
    roll = np.radians(40.0) * np.sin(2 * np.pi * 0.2 * t)
    rate = np.radians(40.0) * 2 * np.pi * 0.2 * np.cos(2 * np.pi * 0.2 * t)
    acc = GRAVITY * np.column_stack([np.zeros(n), np.sin(roll), np.cos(roll)])
    acc[:, 1:] += rng.normal(0, 0.2, (n, 2))
    gyr = np.column_stack([rate + 0.01 + rng.normal(0, 0.01, n), np.zeros(n), np.zeros(n)])
    settings = {"alpha": 0.98}
    head = run_filter("complementary", acc[:1], gyr[:1], None, fs, settings, None)
    ours = run_filter("complementary", acc[1:], gyr[1:], None, fs, settings, head.state)
    ours_roll, ours_pitch, _ = euler_zyx(ours.quat)
    start = np.array(euler_zyx(np.array(head.state["quat"]))).ravel()
    oracle = ahrs_filters.Complementary(gyr=gyr, acc=acc, frequency=fs, gain=0.98, w0=start)
    np.testing.assert_allclose(ours_roll, oracle.W[1:, 0], atol=1e-9)
    np.testing.assert_allclose(ours_pitch, 0.0, atol=1e-12)


# --- streams: state continuation --------------------------------------------------------------------


@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("with_mag", [False, True])
def test_chunks_with_state_equal_one_call(name, with_mag):
    stream = make_imu_stream(20.0, seed=2)
    mag = stream.mag if with_mag else None
    whole = run_filter(name, stream.acc, stream.gyr, mag, stream.fs, None, None)
    state = None
    parts = []
    for start, stop in [(0, 137), (137, 138), (138, 1200), (1200, len(stream.acc))]:
        part = run_filter(name, stream.acc[start:stop], stream.gyr[start:stop],
                          None if mag is None else mag[start:stop], stream.fs, None, state)
        # The state must survive strict JSON (no NaN) unchanged, as it travels through clients.
        state = json.loads(json.dumps(part.state, allow_nan=False))
        parts.append(part)
    np.testing.assert_allclose(np.concatenate([p.quat for p in parts]), whole.quat, atol=1e-9, rtol=0)
    np.testing.assert_allclose(np.concatenate([p.innovation for p in parts]), whole.innovation, atol=1e-9, rtol=0)
    if whole.gyro_bias is not None:
        np.testing.assert_allclose(np.concatenate([p.gyro_bias for p in parts]), whole.gyro_bias, atol=1e-9, rtol=0)


def test_state_of_another_filter_is_refused(stream):
    state = run_filter("mahony", stream.acc[:50], stream.gyr[:50], None, stream.fs, None, None).state
    with pytest.raises(ConfigurationError, match="mahony"):
        run_filter("ekf", stream.acc[50:100], stream.gyr[50:100], None, stream.fs, None, state)
    broken = dict(state, quat=[0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ConfigurationError, match="quat"):
        run_filter("mahony", stream.acc[50:100], stream.gyr[50:100], None, stream.fs, None, broken)
    vqf_state = run_filter("vqf", stream.acc[:50], stream.gyr[:50], None, stream.fs, None, None).state
    for bad in ([1.0, 2.0], "x"):
        broken = dict(vqf_state, vqf=dict(vqf_state["vqf"], bias=bad))
        with pytest.raises(ConfigurationError, match="vqf"):
            run_filter("vqf", stream.acc[50:100], stream.gyr[50:100], None, stream.fs, None, broken)


# --- conventions ------------------------------------------------------------------------------------


def static_readings(roll_deg, pitch_deg, yaw_deg, n=1000):
    q = quat_from_euler_zyx(np.radians(roll_deg), np.radians(pitch_deg), np.radians(yaw_deg))
    to_sensor = quat_conjugate(q)
    acc = np.tile(quat_rotate(to_sensor, [0.0, 0.0, GRAVITY]), (n, 1))
    mag = np.tile(quat_rotate(to_sensor, EARTH_FIELD), (n, 1))
    return acc, np.zeros((n, 3)), mag


@pytest.mark.parametrize("name", FILTERS)
def test_static_level_device_reads_zero_roll_and_pitch(name):
    acc, gyr, _ = static_readings(0.0, 0.0, 0.0)
    roll, pitch, yaw = euler_zyx(run_filter(name, acc, gyr, None, 100.0, None, None).quat[-1])
    assert abs(np.degrees(roll)) < 0.01 and abs(np.degrees(pitch)) < 0.01


@pytest.mark.parametrize("name", FILTERS)
def test_static_tilted_device_reads_its_angles_and_heading(name):
    acc, gyr, mag = static_readings(20.0, -35.0, 30.0)
    # The rest-state convention, stated where a reader would trip (see dsp.fusion.quaternion).
    assert np.isclose(np.degrees(np.arctan2(acc[0, 1], acc[0, 2])), 20.0)
    assert np.isclose(np.degrees(np.arctan2(-acc[0, 0], np.hypot(acc[0, 1], acc[0, 2]))), -35.0)
    tolerance = 0.05 if name == "madgwick" else 0.01  # Madgwick's fixed-size step dithers at rest
    roll, pitch, _ = np.degrees(euler_zyx(run_filter(name, acc, gyr, None, 100.0, None, None).quat[-1]))
    assert abs(roll - 20.0) < tolerance and abs(pitch + 35.0) < tolerance
    roll, pitch, yaw = np.degrees(euler_zyx(run_filter(name, acc, gyr, mag, 100.0, None, None).quat[-1]))
    assert abs(roll - 20.0) < tolerance and abs(pitch + 35.0) < tolerance and abs(yaw - 30.0) < 0.05


def test_euler_zyx_on_known_quaternions():
    half = np.radians(30.0) / 2
    cases = {
        (1.0, 0.0, 0.0, 0.0): (0.0, 0.0, 0.0),
        (np.cos(half), np.sin(half), 0.0, 0.0): (30.0, 0.0, 0.0),
        (np.cos(half), 0.0, np.sin(half), 0.0): (0.0, 30.0, 0.0),
        (np.cos(half), 0.0, 0.0, np.sin(half)): (0.0, 0.0, 30.0),
        (-np.cos(half), 0.0, 0.0, -np.sin(half)): (0.0, 0.0, 30.0),  # -q is the same rotation
    }
    for quat, expected in cases.items():
        np.testing.assert_allclose(np.degrees(euler_zyx(np.array(quat))), expected, atol=1e-12)
    # ZYX order: yaw 90 then roll 90 (about the new x, which points north) is not roll then yaw.
    q = quat_from_euler_zyx(np.radians(90.0), 0.0, np.radians(90.0))
    np.testing.assert_allclose(quat_rotate(q, [0.0, 1.0, 0.0]), [0.0, 0.0, 1.0], atol=1e-12)
    angles = np.radians(np.random.default_rng(0).uniform([-180, -89, -180], [180, 89, 180], (200, 3)))
    np.testing.assert_allclose(np.column_stack(euler_zyx(quat_from_euler_zyx(*angles.T))), angles, atol=1e-9)


def test_default_settings_are_complete_and_accepted():
    for name in FILTERS:
        settings = default_settings(name)
        assert settings and json.loads(json.dumps(settings)) == settings
        acc, gyr, _ = static_readings(0.0, 0.0, 0.0, n=20)
        run_filter(name, acc, gyr, None, 50.0, settings, None)


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    (lambda a: dict(a, name="kalman"), "Unknown orientation filter"),
    (lambda a: dict(a, acc=np.full((10, 3), np.nan)), "NaN"),
    (lambda a: dict(a, gyr=a["gyr"][:5]), "samples"),
    (lambda a: dict(a, mag=np.ones((10, 2))), "shape"),
    (lambda a: dict(a, acc=np.zeros((0, 3)), gyr=np.zeros((0, 3))), "at least one sample"),
    (lambda a: dict(a, acc=np.zeros((10, 3))), "zero"),
    (lambda a: dict(a, gyr=a["gyr"] + 1e300), "beyond any real sensor"),
    (lambda a: dict(a, fs=0.0), "Sampling rate"),
    (lambda a: dict(a, fs="fast"), "Sampling rate"),
    (lambda a: dict(a, settings={"gain": 1.0}), "no setting 'gain'"),
    (lambda a: dict(a, settings={"beta": -1.0}), "between"),
    (lambda a: dict(a, settings={"beta": "x"}), "number"),
])
def test_bad_input_raises_configuration_error(change, message):
    acc, gyr, _ = static_readings(5.0, 5.0, 0.0, n=10)
    args = change({"name": "madgwick", "acc": acc, "gyr": gyr, "mag": None, "fs": 100.0, "settings": {}})
    with pytest.raises(ConfigurationError, match=message):
        run_filter(args["name"], args["acc"], args["gyr"], args["mag"], args["fs"], args["settings"], None)


# --- real data: the x-io fast-motion log ------------------------------------------------------------


@pytest.mark.parametrize("name", FILTERS)
def test_no_filter_diverges_on_the_xio_log(name):
    path = XIO_LOG
    if not path.exists():
        pytest.skip(f"x-io Fusion log not found at {path}")
    with np.load(path) as data:
        t, acc, gyr, mag = data["t"], data["acc"], data["gyr"], data["mag"]
    fs = 1.0 / float(np.median(np.diff(t)))
    for m in (None, mag):
        track = run_filter(name, acc, gyr, m, fs, None, None)
        assert np.isfinite(track.quat).all() and np.isfinite(track.innovation).all()
        np.testing.assert_allclose(np.linalg.norm(track.quat, axis=1), 1.0, atol=1e-9)
        # Diverged filters disagree with gravity for good; a working one mostly agrees with it.
        assert np.median(track.innovation) < np.radians(5.0), name
        if track.gyro_bias is not None:
            assert np.abs(track.gyro_bias).max() < 0.1, name


@pytest.mark.parametrize("pitch", [np.pi / 2, -np.pi / 2])
def test_gimbal_lock_reads_roll_zero_and_puts_the_rest_in_yaw(pitch):
    roll, locked_pitch, yaw = euler_zyx(quat_from_euler_zyx(0.3, pitch, 1.0))
    assert roll == 0.0 and locked_pitch == pytest.approx(pitch)
    # Only yaw - roll (at +90) or yaw + roll (at -90) is defined there.
    assert yaw == pytest.approx(1.0 - 0.3 if pitch > 0 else 1.0 + 0.3)


# --- the C library --------------------------------------------------------------------------------


@pytest.fixture
def no_library(monkeypatch, tmp_path):
    from dsp.fusion import orientation_library

    monkeypatch.setenv(orientation_library.ENV, str(tmp_path / "missing.so"))
    orientation_library.library.cache_clear()
    yield orientation_library
    monkeypatch.undo()
    orientation_library.library.cache_clear()


def test_a_missing_library_says_how_to_build_it(no_library, stream):
    with pytest.raises(no_library.LibraryError, match=r"missing at .*missing\.so: build it with `make install`"):
        run_filter("ekf", stream.acc[:10], stream.gyr[:10], None, stream.fs, None, None)


def test_the_server_stops_at_start_with_one_line_without_the_library(no_library):
    from dsp.registry import all_blocks

    with pytest.raises(SystemExit) as stopped:
        all_blocks()
    message = str(stopped.value.code)
    assert "make install" in message and no_library.ENV in message and "\n" not in message


def test_ekf_state_carries_a_symmetric_covariance(stream):
    state = run_filter("ekf", stream.acc[:500], stream.gyr[:500], stream.mag[:500], stream.fs, None, None).state
    covariance = np.array(state["covariance"]).reshape(6, 6)
    np.testing.assert_array_equal(covariance, covariance.T)
    assert (np.linalg.eigvalsh(covariance) > 0).all()
    assert state["mag_reference"][0] > 0


def test_read_only_inputs_give_the_same_track(stream):
    # Bodies decoded from JSON buffers arrive as read-only arrays; the C call must take them too.
    acc, gyr, mag = (np.array(a[:300]) for a in (stream.acc, stream.gyr, stream.mag))
    for array in (acc, gyr, mag):
        array.flags.writeable = False
    for name in FILTERS:
        frozen = run_filter(name, acc, gyr, mag, stream.fs, None, None)
        plain = run_filter(name, stream.acc[:300], stream.gyr[:300], stream.mag[:300], stream.fs, None, None)
        np.testing.assert_array_equal(frozen.quat, plain.quat)
        np.testing.assert_array_equal(frozen.innovation, plain.innovation)
