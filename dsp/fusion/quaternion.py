"""Quaternion and Euler-angle helpers shared by the orientation filters.

Conventions (the whole project uses these):

* quaternions are scalar first ``[w, x, y, z]``, Hamilton product;
* an orientation quaternion ``q`` rotates sensor-frame vectors into the earth frame:
  ``v_earth = q * v_sensor * conj(q)``; the earth frame is east-north-up (z up; x east and
  y north once a magnetometer fixes the heading);
* body rates integrate on the right: ``q(t + dt) = q(t) * exp(omega * dt / 2)``;
* Euler angles are aerospace ZYX: ``R = Rz(yaw) Ry(pitch) Rx(roll)``, roll about x, pitch about y,
  yaw about z. The accelerometer measures specific force (+9.81 on z for a level device at rest), so
  at rest roll = atan2(ay, az) and pitch = atan2(-ax, hypot(ay, az)).

  Careful: the multi-sensor-fusion lesson calls atan2(ax, ...) "roll" and atan2(ay, ...) "pitch",
  i.e. the other way round. Here roll is always the rotation about the sensor x axis.

The filters themselves are C (`dsp.fusion.orientation`); these are numpy helpers for callers and
tests, and the start-of-stream orientation.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "euler_zyx",
    "quat_from_euler_zyx",
    "quat_multiply",
    "quat_conjugate",
    "quat_rotate",
    "tilt_heading_quaternion",
    "orientation_errors",
]


def _tilt_heading(ax, ay, az, mx, my, mz, use_mag):
    """Orientation (w, x, y, z) from one accelerometer (and magnetometer) reading: tilt, then heading.

    Without a magnetometer the yaw is 0. With one, the yaw turns the horizontal part of the field
    to point north (+y, east-north-up).
    """
    roll = math.atan2(ay, az)
    pitch = math.atan2(-ax, math.sqrt(ay * ay + az * az))
    cr, sr = math.cos(0.5 * roll), math.sin(0.5 * roll)
    cp, sp = math.cos(0.5 * pitch), math.sin(0.5 * pitch)
    w, x, y, z = cp * cr, cp * sr, sp * cr, -sp * sr  # Ry(pitch) * Rx(roll)
    if use_mag:
        # The field in the earth frame, east and north components: R(q) m.
        ex = (1.0 - 2.0 * (y * y + z * z)) * mx + 2.0 * (x * y - w * z) * my + 2.0 * (x * z + w * y) * mz
        ey = 2.0 * (x * y + w * z) * mx + (1.0 - 2.0 * (x * x + z * z)) * my + 2.0 * (y * z - w * x) * mz
        if ex * ex + ey * ey > 0.0:
            # Rotating by +atan2(ex, ey) about z takes the field's horizontal direction to +y.
            psi = math.atan2(ex, ey)
            c, s = math.cos(0.5 * psi), math.sin(0.5 * psi)
            w, x, y, z = c * w - s * z, c * x - s * y, c * y + s * x, c * z + s * w
    return (w, x, y, z)


# --- vectorised helpers ---------------------------------------------------------------------------


# |sin(pitch)| this close to 1 is gimbal lock: the roll/yaw split is rounding noise there.
GIMBAL_LOCK_TOLERANCE = 1e-12


def euler_zyx(quat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aerospace ZYX Euler angles (roll about x, pitch about y, yaw about z) in radians.

    ``quat``: (4,) or (n, 4) scalar-first quaternions (normalised here). Pitch is in [-pi/2, pi/2].
    At pitch = +-90 degrees roll and yaw are not separable (gimbal lock): there roll is 0 and yaw
    takes the whole rotation about the vertical, so every filter reports the same angles (near it,
    Euler angles stay ill-conditioned, as they are by nature).
    """
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    sin_pitch = 2.0 * (w * y - z * x)
    roll = np.arctan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = np.arcsin(np.clip(sin_pitch, -1.0, 1.0))
    yaw = np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    locked = np.abs(sin_pitch) > 1.0 - GIMBAL_LOCK_TOLERANCE
    if np.any(locked):
        # At +-90 degrees pitch only yaw -+ roll is defined, and 2 atan2(z, w) is it.
        roll = np.where(locked, 0.0, roll)
        yaw = np.where(locked, np.angle(np.exp(2j * np.arctan2(z, w))), yaw)
    return roll, pitch, yaw


def quat_from_euler_zyx(roll, pitch, yaw) -> np.ndarray:
    """Quaternion(s) of R = Rz(yaw) Ry(pitch) Rx(roll); angles in radians, broadcast together."""
    roll, pitch, yaw = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (roll, pitch, yaw)))
    cr, sr = np.cos(roll / 2), np.sin(roll / 2)
    cp, sp = np.cos(pitch / 2), np.sin(pitch / 2)
    cy, sy = np.cos(yaw / 2), np.sin(yaw / 2)
    return np.stack([
        cy * cp * cr + sy * sp * sr,
        cy * cp * sr - sy * sp * cr,
        cy * sp * cr + sy * cp * sr,
        sy * cp * cr - cy * sp * sr,
    ], axis=-1)


def quat_multiply(a, b) -> np.ndarray:
    """Hamilton product of quaternion arrays (..., 4), broadcast."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def quat_conjugate(q) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_rotate(q, v) -> np.ndarray:
    """Rotate vectors (..., 3) by quaternions (..., 4): sensor frame to earth frame."""
    v = np.asarray(v, dtype=np.float64)
    vq = np.concatenate([np.zeros(v.shape[:-1] + (1,)), v], axis=-1)
    return quat_multiply(quat_multiply(q, vq), quat_conjugate(q))[..., 1:]


def tilt_heading_quaternion(acc, mag=None) -> np.ndarray:
    """Orientation of one reading: tilt from the accelerometer, heading from the magnetometer if any."""
    a = np.asarray(acc, dtype=np.float64)
    m = np.zeros(3) if mag is None else np.asarray(mag, dtype=np.float64)
    return np.array(_tilt_heading(a[0], a[1], a[2], m[0], m[1], m[2], mag is not None))


def orientation_errors(q_est, q_ref) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BROAD's per-sample errors in radians: (total, heading, inclination).

    With q_err = q_est * conj(q_ref) (an earth-frame rotation): total = 2 acos(|w|),
    heading = 2 atan(|z / w|), inclination = 2 acos(sqrt(w^2 + z^2)). The inclination ignores any
    rotation about the vertical, so it compares filters with and without magnetometer alike.
    """
    err = quat_multiply(q_est, quat_conjugate(q_ref))
    err = err / np.linalg.norm(err, axis=-1, keepdims=True)
    w, z = err[..., 0], err[..., 3]
    total = 2.0 * np.arccos(np.clip(np.abs(w), 0.0, 1.0))
    heading = 2.0 * np.arctan(np.abs(z / np.where(w == 0, np.finfo(float).tiny, w)))
    inclination = 2.0 * np.arccos(np.clip(np.sqrt(w * w + z * z), 0.0, 1.0))
    return total, heading, inclination
