"""Constant-velocity Kalman filter and RTS smoother against filterpy (a test-only oracle)."""
import numpy as np
import pytest
from filterpy.kalman import KalmanFilter

from dsp.core.errors import ConfigurationError
from dsp.fusion.linear_kalman import KalmanState, cv_model, initial_state, riccati_gains, run_cv_filter


def filterpy_run(z, fs, q, r, x0, P0):
    """filterpy's KalmanFilter on one axis: filtered states, innovations, RTS states, final x, P."""
    F, Q = cv_model(fs, q)
    kf = KalmanFilter(dim_x=2, dim_z=1)
    kf.F, kf.Q, kf.H, kf.R = F, Q, np.array([[1.0, 0.0]]), np.array([[r]])
    kf.x, kf.P = np.array(x0, dtype=float).reshape(2, 1), np.array(P0, dtype=float)
    states, covariances, innovations = [], [], []
    for measurement in z:
        kf.predict()
        kf.update(measurement)
        states.append(kf.x[:, 0].copy())
        covariances.append(kf.P.copy())
        innovations.append(kf.y[0, 0])
    states, covariances = np.array(states), np.array(covariances)
    smoothed, _, _, _ = kf.rts_smoother(states[:, :, None], covariances)
    return states, np.array(innovations), smoothed[:, :, 0], kf.x[:, 0], kf.P


def signals(n, fs, seed=0):
    t = np.arange(n) / fs
    rng = np.random.default_rng(seed)
    return np.stack([
        np.sin(2 * np.pi * 0.7 * t) + 0.1 * rng.standard_normal(n),
        9.81 + 2.0 * t + 0.05 * rng.standard_normal(n),
        -3.0 + 0.3 * rng.standard_normal(n),
    ])


def assert_matches_filterpy(z, fs, q, r, state, out, smooth):
    scale = 1.0 + np.abs(z).max()
    for axis in range(z.shape[0]):
        states, innovations, smoothed, final_x, final_P = filterpy_run(
            z[axis], fs, q, r, state.x[axis], state.P[axis])
        rate_scale = scale * fs
        np.testing.assert_allclose(out.value[axis], states[:, 0], rtol=0, atol=1e-10 * scale)
        np.testing.assert_allclose(out.rate[axis], states[:, 1], rtol=0, atol=1e-10 * rate_scale)
        np.testing.assert_allclose(out.innovation[axis], innovations, rtol=0, atol=1e-10 * scale)
        np.testing.assert_allclose(out.state.x[axis], final_x, rtol=0, atol=1e-10 * rate_scale)
        np.testing.assert_allclose(out.state.P[axis], final_P, rtol=1e-10, atol=0)
        if smooth:
            np.testing.assert_allclose(out.smoothed_value[axis], smoothed[:, 0], rtol=0, atol=1e-10 * scale)
            np.testing.assert_allclose(out.smoothed_rate[axis], smoothed[:, 1], rtol=0, atol=1e-10 * rate_scale)


@pytest.mark.parametrize("q, r", [(1.0, 0.01), (1e-3, 1.0), (100.0, 1e-4), (0.05, 0.05)])
def test_filter_and_smoother_match_filterpy_from_the_first_sample(q, r):
    fs = 100.0
    z = signals(1500, fs)
    out = run_cv_filter(z, fs, q, r, smooth=True)
    assert_matches_filterpy(z, fs, q, r, initial_state(z[:, 0], fs, r), out, smooth=True)


def test_slow_gain_convergence_runs_exact_gains_over_the_whole_window():
    # q tiny against R: the gain has not converged within 400 samples, so no steady part exists.
    fs, q, r = 100.0, 1e-9, 1.0
    F, Q = cv_model(fs, q)
    assert not riccati_gains(initial_state(np.zeros(1), fs, r).P[0], F, Q, r, 400).converged
    z = signals(400, fs, seed=3)
    out = run_cv_filter(z, fs, q, r, smooth=True)
    assert_matches_filterpy(z, fs, q, r, initial_state(z[:, 0], fs, r), out, smooth=True)


def test_continuing_from_a_state_matches_one_long_run_and_filterpy():
    fs, q, r = 50.0, 0.5, 0.02
    z = signals(900, fs, seed=1)
    whole = run_cv_filter(z, fs, q, r)
    state = None
    values = []
    for chunk in np.split(z, [7, 300, 301, 650], axis=1):
        out = run_cv_filter(chunk, fs, q, r, state=state, smooth=True)
        if state is not None:
            assert_matches_filterpy(chunk, fs, q, r, state, out, smooth=True)
        # The state travels as JSON.
        state = KalmanState.from_json(out.state.to_json(), n_axes=3)
        values.append(out.value)
    np.testing.assert_allclose(np.concatenate(values, axis=1), whole.value, rtol=0, atol=1e-10)


def test_state_with_different_covariance_per_axis_runs_each_axis_with_its_own_gains():
    fs, q, r = 100.0, 1.0, 0.01
    z = signals(500, fs, seed=2)
    state = initial_state(z[:, 0], fs, r)
    state.P[1] *= 50.0
    state.x[2, 1] = 4.0
    out = run_cv_filter(z, fs, q, r, state=state, smooth=True)
    assert_matches_filterpy(z, fs, q, r, state, out, smooth=True)


def test_smoothing_reduces_the_error_of_a_noisy_ramp():
    fs, q, r = 100.0, 0.01, 0.04
    t = np.arange(2000) / fs
    truth = 1.5 * t + np.sin(0.5 * t)
    z = truth + 0.2 * np.random.default_rng(5).standard_normal(t.size)
    out = run_cv_filter(z[None], fs, q, r, smooth=True)
    raw_error = np.sqrt(np.mean((z - truth) ** 2))
    filtered_error = np.sqrt(np.mean((out.value[0] - truth) ** 2))
    smoothed_error = np.sqrt(np.mean((out.smoothed_value[0] - truth) ** 2))
    assert smoothed_error < filtered_error < raw_error / 2
    # The rate follows the ramp's slope (1.5 + 0.5 cos(0.5 t)).
    slope = 1.5 + 0.5 * np.cos(0.5 * t)
    assert np.sqrt(np.mean((out.smoothed_rate[0, 200:] - slope[200:]) ** 2)) < 0.1


def test_single_sample_windows_work():
    fs, q, r = 100.0, 1.0, 0.01
    z = signals(5, fs)
    state = None
    for k in range(5):
        out = run_cv_filter(z[:, k:k + 1], fs, q, r, state=state, smooth=True)
        state = out.state
    np.testing.assert_allclose(state.x, run_cv_filter(z, fs, q, r).state.x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fs, q, r", [(0.0, 1.0, 1.0), (100.0, 0.0, 1.0), (100.0, 1.0, -1.0),
                                      (100.0, float("nan"), 1.0)])
def test_invalid_noise_settings_are_configuration_errors(fs, q, r):
    with pytest.raises(ConfigurationError):
        run_cv_filter(np.zeros((1, 10)), fs, q, r)


def test_state_of_another_shape_is_rejected():
    state = run_cv_filter(np.zeros((3, 10)), 100.0, 1.0, 1.0).state.to_json()
    with pytest.raises(ConfigurationError, match="3 axes but this window has 2"):
        KalmanState.from_json(state, n_axes=2)
    with pytest.raises(ConfigurationError, match="'x'"):
        KalmanState.from_json({"x": [1.0]}, n_axes=1)
