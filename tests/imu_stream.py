"""A synthetic IMU stream with exact ground truth, for the orientation and Kalman tests.

The true orientation is a smooth path of ZYX Euler angles (sums of sinusoids: tens of degrees of
roll and pitch, a wider heading swing, varied axes and rates). The gyro reads, for each sample
interval, the constant body rate that turns the previous true quaternion exactly into the next one
(q_i = q_{i-1} * exp(omega_i dt)), so a perfect integrator reproduces the path to rounding; then the
gyro bias and white noise are added. The accelerometer reads the specific force R^T (a_lin + g up)
with a smooth 0.3 m/s^2 linear acceleration and white noise; the magnetometer reads R^T of a fixed
east-north-up earth field (50 uT, inclination 60 degrees down) plus white noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsp.fusion.quaternion import quat_conjugate, quat_from_euler_zyx, quat_multiply, quat_rotate

GRAVITY = 9.80665
TRUE_GYRO_BIAS = np.array([0.02, -0.03, 0.015])  # rad/s
EARTH_FIELD = 50.0 * np.array([0.0, np.cos(np.radians(60.0)), -np.sin(np.radians(60.0))])  # uT, ENU


@dataclass
class ImuStream:
    fs: float
    t: np.ndarray  # (n,) s
    acc: np.ndarray  # (n, 3) m/s^2
    gyr: np.ndarray  # (n, 3) rad/s, with bias and noise
    mag: np.ndarray  # (n, 3) uT
    quat: np.ndarray  # (n, 4) true orientation, sensor -> ENU earth
    gyro_bias: np.ndarray  # (3,) rad/s
    true_rate: np.ndarray  # (n, 3) rad/s, what an ideal gyro reads


def _euler_path(t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def wave(amplitudes_deg, freqs):
        phases = rng.uniform(0, 2 * np.pi, len(freqs))
        return sum(np.radians(a) * np.sin(2 * np.pi * f * t + p) for a, f, p in zip(amplitudes_deg, freqs, phases))

    roll = wave([25.0, 8.0, 3.0], [0.07, 0.31, 1.3])
    pitch = wave([20.0, 6.0, 2.0], [0.05, 0.23, 1.1])
    yaw = wave([90.0, 15.0, 4.0], [0.03, 0.17, 0.9])
    return roll, pitch, yaw


def _rotation_vector(q: np.ndarray) -> np.ndarray:
    """Log map of unit quaternions (..., 4) -> rotation vectors (..., 3), shortest rotation."""
    q = np.where(q[..., :1] < 0, -q, q)
    vec = q[..., 1:]
    sin_half = np.linalg.norm(vec, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., :1])
    scale = np.where(sin_half > 1e-15, angle / np.maximum(sin_half, 1e-300), 2.0)
    return vec * scale


def make_imu_stream(seconds: float = 60.0, fs: float = 100.0, seed: int = 0, *,
                    gyro_bias=TRUE_GYRO_BIAS, gyro_noise: float = 0.005, acc_noise: float = 0.05,
                    linear_acceleration: float = 0.3, mag_noise: float = 0.5) -> ImuStream:
    """The stream described in the module docstring; every random choice comes from `seed`.

    Noise levels are per-sample standard deviations: gyro rad/s, accelerometer m/s^2, magnetometer uT.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fs))
    dt = 1.0 / fs
    t_ext = (np.arange(n + 1) - 1) * dt  # one extra sample before t = 0 gives the first rate
    quat_ext = quat_from_euler_zyx(*_euler_path(t_ext, rng))
    step = quat_multiply(quat_conjugate(quat_ext[:-1]), quat_ext[1:])
    true_rate = _rotation_vector(step) / dt
    quat = quat_ext[1:]
    t = t_ext[1:]

    phases = rng.uniform(0, 2 * np.pi, 3)
    freqs = np.array([0.7, 1.1, 0.9])
    lin_acc = linear_acceleration * np.sin(2 * np.pi * freqs * t[:, None] + phases)
    specific_force = lin_acc + np.array([0.0, 0.0, GRAVITY])
    to_sensor = quat_conjugate(quat)
    acc = quat_rotate(to_sensor, specific_force) + rng.normal(0, acc_noise, (n, 3))
    gyr = true_rate + np.asarray(gyro_bias, dtype=float) + rng.normal(0, gyro_noise, (n, 3))
    mag = quat_rotate(to_sensor, np.broadcast_to(EARTH_FIELD, (n, 3))) + rng.normal(0, mag_noise, (n, 3))
    return ImuStream(fs=fs, t=t, acc=acc, gyr=gyr, mag=mag, quat=quat,
                     gyro_bias=np.asarray(gyro_bias, dtype=float), true_rate=true_rate)


# Settings suited to this stream (100 Hz, a large gyro bias of up to 0.03 rad/s) for the filters
# without bias estimation or with a slow one; their defaults are tuned on BROAD (286 Hz, tiny bias).
STREAM_SETTINGS = {
    "complementary": {"tau": 0.5, "tau_mag": 1.0},
    "mahony": {"tau": 1.0, "integral_time": 20.0},
}
