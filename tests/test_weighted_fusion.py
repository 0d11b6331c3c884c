"""Inverse-variance fusion of redundant sensors: fused variance below each sensor's, as theory says."""
import numpy as np
import pytest

from dsp.core.errors import ConfigurationError
from dsp.fusion.weighted_fusion import difference_noise_variance, fuse

NOISE_STD = np.array([0.1, 0.2, 0.3])


def thermometers(n=20000, fs=10.0, seed=0):
    """Three thermometers in one room: a slow temperature swing plus white noise of known std."""
    t = np.arange(n) / fs
    truth = 21.0 + 1.5 * np.sin(2 * np.pi * t / 3600.0) + 0.3 * np.sin(2 * np.pi * t / 600.0)
    rng = np.random.default_rng(seed)
    readings = truth + NOISE_STD[:, None] * rng.standard_normal((3, n))
    return truth, readings


def test_lesson_problem_1_given_variances():
    out = fuse(np.array([[22.1], [22.8], [22.4]]), variances=[0.5, 0.2, 0.3])
    inverse = np.array([1 / 0.5, 1 / 0.2, 1 / 0.3])
    assert out.value[0] == pytest.approx((22.1 * 2 + 22.8 * 5 + 22.4 / 0.3) / inverse.sum())
    assert out.variance[0] == pytest.approx(1 / inverse.sum())
    assert out.weights.sum() == pytest.approx(1.0)
    assert out.state is None


def test_given_variances_match_theory_and_the_empirical_error():
    truth, readings = thermometers()
    out = fuse(readings, variances=NOISE_STD ** 2)
    theory = 1.0 / np.sum(1.0 / NOISE_STD ** 2)
    np.testing.assert_allclose(out.variance, theory)
    assert out.variance[0] < (NOISE_STD ** 2).min()
    empirical = np.mean((out.value - truth) ** 2)
    assert empirical == pytest.approx(theory, rel=0.05)
    # The most precise sensor gets the largest weight.
    assert np.argmax(out.weights) == 0


def test_estimated_variances_recover_each_sensor_and_the_theoretical_fused_variance():
    truth, readings = thermometers()
    out = fuse(readings)
    np.testing.assert_allclose(out.sensor_variances, NOISE_STD ** 2, rtol=0.05)
    theory = 1.0 / np.sum(1.0 / NOISE_STD ** 2)
    assert out.variance[0] == pytest.approx(theory, rel=0.05)
    assert out.variance[0] < out.sensor_variances.min()
    assert np.mean((out.value - truth) ** 2) == pytest.approx(theory, rel=0.07)


def test_running_estimate_across_windows_equals_one_window_when_memory_is_unlimited():
    _, readings = thermometers(n=3000)
    whole = difference_noise_variance(readings)
    state = None
    for window in np.split(readings, 10, axis=1):
        out = fuse(window, state=state)
        state = out.state
    # Window-wise variances pooled by count equal the whole-series estimate up to the per-window
    # mean removal, which is tiny for white noise.
    np.testing.assert_allclose(out.sensor_variances, whole, rtol=0.02)
    assert state["support"] == readings.shape[1] - 1


def test_memory_lets_the_estimate_follow_a_sensor_that_gets_noisier():
    rng = np.random.default_rng(4)
    quiet = 0.1 * rng.standard_normal((2, 5000))
    noisy = np.stack([0.1 * rng.standard_normal(5000), 0.5 * rng.standard_normal(5000)])
    state = None
    for window in np.split(np.concatenate([quiet, noisy], axis=1), 20, axis=1):
        out = fuse(window, state=state, memory_samples=1000)
        state = out.state
    assert out.sensor_variances[1] == pytest.approx(0.25, rel=0.15)
    assert out.weights[0] > 0.9


def test_a_constant_sensor_does_not_divide_by_zero():
    out = fuse(np.array([[1.0, 1.0, 1.0, 1.0], [0.9, 1.2, 1.0, 1.1]]))
    assert np.isfinite(out.value).all() and np.isfinite(out.variance).all()
    np.testing.assert_allclose(out.value, 1.0, atol=1e-6)


@pytest.mark.parametrize("z, variances, message", [
    (np.ones((1, 10)), None, "at least 2 sensors"),
    (np.ones((3, 1)), None, "at least 2 samples"),
    (np.ones((3, 10)), [1.0, 2.0], "2 sensor variances for 3 sensors"),
    (np.ones((2, 10)), [1.0, 0.0], "positive"),
    (np.array([[1.0, np.nan], [1.0, 1.0]]), None, "NaN"),
])
def test_bad_input_is_a_configuration_error(z, variances, message):
    with pytest.raises(ConfigurationError, match=message):
        fuse(z, variances=variances)


def test_state_for_other_sensors_is_rejected():
    state = fuse(np.random.default_rng(0).standard_normal((3, 10))).state
    with pytest.raises(ConfigurationError, match="another number of sensors"):
        fuse(np.zeros((2, 10)), state=state)
