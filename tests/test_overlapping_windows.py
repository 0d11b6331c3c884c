"""Stateful blocks over overlapping windows (Studio's window increase shorter than the window).

With `window-increase-ms` set, each window must see exactly what one pass over the whole stream
gives for its samples: the shared samples are not filtered twice.
"""
from __future__ import annotations

import numpy as np
import pytest

from dsp.fusion import kalman, off_arm, orientation
from dsp.fusion.quaternion import euler_zyx
from dsp_server import create_app
from tests.imu_stream import make_imu_stream

FS = 100.0
WINDOW = 200  # 2 s
INCREASE = 50  # 500 ms


def windows_of(values: np.ndarray) -> list[list[float]]:
    starts = range(0, values.shape[0] - WINDOW + 1, INCREASE)
    return [values[start:start + WINDOW].reshape(-1).tolist() for start in starts]


def batch(block, axes: list[str], windows, params: dict) -> dict:
    client = create_app(blocks={block.name: block}, root_block=block.name).test_client()
    answer = client.post("/batch", json={"features": windows, "axes": axes, "sampling_freq": FS,
                                         "params": params, "state": ""}).get_json()
    assert answer["success"], answer
    return answer


@pytest.mark.parametrize("name", ["vqf", "ekf", "madgwick"])
def test_kalman_windows_match_one_pass_over_the_stream(name):
    stream = make_imu_stream(seconds=12.0, fs=FS, seed=3)
    imu = np.hstack([stream.acc, stream.gyr])
    answer = batch(kalman.BLOCK, ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ"], windows_of(imu),
                   {"filter": name, "window-increase-ms": 1000 * INCREASE / FS})
    track = orientation.run_filter(name, stream.acc, stream.gyr, None, FS,
                                   orientation.default_settings(name), None)
    pitch = np.degrees(euler_zyx(track.quat)[1])
    column = answer["labels"].index("pitch_mean")
    for index, features in enumerate(answer["features"]):
        expected = pitch[index * INCREASE:index * INCREASE + WINDOW].mean()
        assert features[column] == pytest.approx(expected, abs=1e-9), index


def test_without_the_setting_overlapping_windows_filter_shared_samples_twice():
    stream = make_imu_stream(seconds=12.0, fs=FS, seed=3)
    imu = np.hstack([stream.acc, stream.gyr])
    answer = batch(kalman.BLOCK, ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ"], windows_of(imu),
                   {"filter": "ekf"})
    track = orientation.run_filter("ekf", stream.acc, stream.gyr, None, FS,
                                   orientation.default_settings("ekf"), None)
    pitch = np.degrees(euler_zyx(track.quat)[1])
    column = answer["labels"].index("pitch_mean")
    errors = [features[column] - pitch[i * INCREASE:i * INCREASE + WINDOW].mean()
              for i, features in enumerate(answer["features"])]
    assert max(abs(e) for e in errors) > 0.1


def test_off_arm_windows_match_one_pass_over_the_stream():
    rng = np.random.default_rng(5)
    n = 3000
    light = np.clip(60 + np.cumsum(rng.normal(0, 3, n)), 0, None)
    motion = np.where(rng.random(n) < 0.1, 1.0, 0.0)
    motion[1500:1510] = 0
    motion[1505] = -1
    motion[1506:2200] = 0
    hr = (np.sin(np.arange(n) / 300) > 0).astype(float)
    streams = np.column_stack([light, motion, hr])
    params = {"window-increase-ms": 1000 * INCREASE / FS}
    answer = batch(off_arm.BLOCK, list(off_arm.AXES), windows_of(streams), params)

    one_pass = create_app(blocks={"fuzzy-off-arm": off_arm.BLOCK}, root_block="fuzzy-off-arm").test_client().post(
        "/run", json={"features": streams.reshape(-1).tolist(), "axes": list(off_arm.AXES), "sampling_freq": FS,
                      "params": params, "draw_graphs": True}).get_json()
    (graph,) = [g for g in one_pass["graphs"] if g["name"] == "Off-arm certainty"]
    certainty = np.array(graph["X"]["off_arm"])
    column = answer["labels"].index("off_arm_mean")
    for index, features in enumerate(answer["features"]):
        expected = certainty[index * INCREASE:index * INCREASE + WINDOW].mean()
        assert features[column] == pytest.approx(expected, abs=1e-9), index


@pytest.mark.parametrize("value", [-500, -0.5])
def test_a_negative_window_increase_is_refused(value):
    client = create_app(blocks={"fuzzy-off-arm": off_arm.BLOCK}, root_block="fuzzy-off-arm").test_client()
    answer = client.post("/run", json={"features": [10, 0, 0] * 20, "axes": list(off_arm.AXES),
                                       "sampling_freq": FS, "params": {"window-increase-ms": value}}).get_json()
    assert answer["success"] is False
    assert "window-increase-ms" in answer["error"]


def test_a_window_starting_in_free_fall_is_accepted_whatever_the_increase():
    # The first 300 ms fall freely: alone they fail the accelerometer-units check, the window does not.
    acc = np.tile([0.0, 0.0, 9.8], (100, 1))
    acc[:30] = [0.0, 0.0, 0.5]
    imu = np.hstack([acc, np.zeros((100, 3))])
    answer = batch(kalman.BLOCK, ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ"],
                   [imu.reshape(-1).tolist()] * 2, {"filter": "ekf", "window-increase-ms": 300})
    assert len(answer["features"]) == 2


def test_a_lead_that_cannot_be_computed_says_it_is_about_the_window_increase():
    readings = np.random.default_rng(0).normal(20.0, 0.1, (10, 3))
    client = create_app(blocks={"kalman": kalman.BLOCK}, root_block="kalman").test_client()
    answer = client.post("/run", json={"features": readings.reshape(-1).tolist(), "axes": ["accX", "accY", "accZ"],
                                       "sampling_freq": 10, "params": {"filter": "weighted", "window-increase-ms": 100}}).get_json()
    assert answer["success"] is False
    assert "window-increase-ms" in answer["error"] and "at least 2 samples" in answer["error"]
