"""The wire protocol, on a probe block whose output is easy to predict."""
from __future__ import annotations

import json
import logging

import pytest

BODY = {
    "features": [1, 2, 3, 4, 5, 6],
    "axes": ["accX", "accY"],
    "sampling_freq": 100,
    "draw_graphs": False,
    "implementation_version": 2,
    "params": {},
}


def post(client, path, body, **kwargs):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **kwargs)


def run_ok(client, path="/run", **changes):
    response = post(client, path, {**BODY, **changes})
    assert response.status_code == 200
    payload = response.get_json()
    assert payload["success"] is True, payload
    return payload


def run_error(client, path="/run", body=None, **changes):
    response = post(client, path, body if body is not None else {**BODY, **changes})
    assert response.status_code == 200
    payload = response.get_json()
    assert payload["success"] is False
    assert payload["error"]
    return payload["error"]


# --- GET routes -------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/blocks/probe"])
def test_describe_is_plain_text(probe_client, prefix):
    response = probe_client.get(prefix + "/")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "Probe by Tests" in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/parameters", "/blocks/probe/parameters", "/blocks/probe/parameters/"])
def test_parameters_carry_version_and_type(probe_client, path):
    spec = probe_client.get(path).get_json()
    assert spec["version"] == 1 and spec["type"] == "dsp"
    assert spec["info"]["title"] == "Probe"


def test_blocks_listing(probe_client):
    listing = probe_client.get("/blocks").get_json()
    assert listing == [{"name": "probe", "title": "Probe", "prefix": "/blocks/probe/", "root": True,
                        "description": "Scales the window; counts windows in its state."}]


def test_unknown_path_is_404_json(probe_client):
    response = probe_client.get("/nope")
    assert response.status_code == 404
    assert response.get_json()["success"] is False


def test_unknown_block_names_the_blocks(probe_client):
    response = post(probe_client, "/blocks/nope/run", BODY)
    assert response.status_code == 404
    assert "probe" in response.get_json()["error"]


def test_wrong_method_is_405(probe_client):
    response = probe_client.get("/run")
    assert response.status_code == 405
    assert "POST" in response.get_json()["error"]
    assert probe_client.post("/parameters").status_code == 405


def test_tflite_impl_absent_is_404(probe_client):
    assert post(probe_client, "/tflite-impl", BODY).status_code == 404


def test_tflite_impl_returns_the_flatbuffer_or_a_400_json_error():
    import dataclasses

    from dsp.core.errors import ConfigurationError
    from dsp_server import create_app
    from tests.conftest import probe_block

    def implementation(req):
        if req.sampling_freq != 100:
            raise ConfigurationError("probe: wants 100 Hz")
        return b"TFL3-probe"

    block = dataclasses.replace(probe_block(), tflite_implementation=implementation)
    client = create_app(blocks={"probe": block}, root_block="probe").test_client()
    body = {"axes": ["accX", "accY"], "sampling_freq": 100, "params": {}, "implementation_version": 2,
            "input_shape": [6]}
    response = post(client, "/blocks/probe/tflite-impl", body)
    assert response.status_code == 200 and response.data == b"TFL3-probe"
    assert response.mimetype == "application/octet-stream"
    assert response.headers["Content-Disposition"] == 'attachment; filename="dsp.tflite"'
    response = post(client, "/tflite-impl", {**body, "sampling_freq": 50})
    assert response.status_code == 400 and response.get_json()["error"] == "probe: wants 100 Hz"
    assert post(client, "/tflite-impl", b"{oops").status_code == 400


# --- /run ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/run", "/blocks/probe/run", "/blocks/probe/run/"])
def test_run_returns_flat_features_and_metadata(probe_client, path):
    payload = run_ok(probe_client, path)
    assert payload["features"] == [1, 2, 3, 4, 5, 6]
    assert payload["graphs"] == []
    assert payload["labels"][0] == "v0"
    assert payload["output_config"] == {"type": "flat", "shape": {"width": 6}}
    assert payload["fft_used"] == [1]


def test_run_accepts_dash_and_underscore_params(probe_client):
    assert run_ok(probe_client, params={"scale-axes": 2})["features"][0] == 2
    assert run_ok(probe_client, params={"scale_axes": 3})["features"][0] == 3


def test_missing_params_and_version_take_defaults(probe_client):
    body = {k: v for k, v in BODY.items() if k not in ("params", "implementation_version", "draw_graphs")}
    assert post(probe_client, "/run", body).get_json()["features"] == BODY["features"]


def test_types_are_coerced(probe_client):
    payload = run_ok(probe_client, params={"repeat": 2.0, "ratio": 10, "mode": "NEGATE", "do_log": "true",
                                           "scale_axes": "0.5", "cutoff": None})
    assert payload["features"][:2] == [-0.5, -1.0] and len(payload["features"]) == 12
    assert payload["fft_used"] == [10]


@pytest.mark.parametrize("params, words", [
    ({"repeat": 2.5}, ["repeat", "whole number"]),
    ({"repeat": True}, ["repeat"]),
    ({"scale_axes": "big"}, ["scale-axes", "number"]),
    ({"scale_axes": [1]}, ["scale-axes", "number"]),
    ({"mode": "reverse"}, ["mode", "'keep', 'negate'"]),
    ({"ratio": 7}, ["ratio", "'1', '3', '10'"]),
    ({"do_log": "maybe"}, ["do_log", "true or false"]),
    ({"scale_axis": 1}, ["Unknown parameter 'scale_axis'", "Did you mean 'scale-axes'"]),
    ({"bogus": 1}, ["Unknown parameter 'bogus'", "scale-axes, repeat"]),
])
def test_bad_params_name_the_parameter(probe_client, params, words):
    error = run_error(probe_client, params=params)
    for word in words:
        assert word in error


def test_params_must_be_an_object(probe_client):
    assert "'params' must be an object" in run_error(probe_client, params=[1, 2])


@pytest.mark.parametrize("version, words", [
    (3, ["implementation_version 3", "supported: 1, 2"]),
    (0, ["supported: 1, 2"]),
    ("2", ["must be one of 1, 2"]),
    (1.5, ["must be one of 1, 2"]),
])
def test_unsupported_version_lists_supported(probe_client, version, words):
    error = run_error(probe_client, implementation_version=version)
    for word in words:
        assert word in error


def test_integral_float_version_is_accepted(probe_client):
    run_ok(probe_client, implementation_version=1.0)


@pytest.mark.parametrize("body, words", [
    (b"", ["empty"]),
    (b"{not json", ["not valid JSON"]),
    (b"[1, 2]", ["JSON object"]),
    (b'{"features": [1, NaN], "axes": ["a"], "sampling_freq": 1}', ["NaN"]),
    (b'{"features": [1, Infinity], "axes": ["a"], "sampling_freq": 1}', ["Infinity"]),
    (b'{"features": [1, 1e999], "axes": ["a"], "sampling_freq": 1}', ["number"]),
])
def test_bad_bodies(probe_client, body, words):
    error = run_error(probe_client, body=body)
    for word in words:
        assert word in error


@pytest.mark.parametrize("changes, words", [
    ({"features": None}, ["no 'features'", "flat list of numbers"]),
    ({"axes": None}, ["no 'axes'"]),
    ({"sampling_freq": None}, ["no 'sampling_freq'"]),
    ({"features": "1,2,3"}, ["'features' must be a list of numbers", "string"]),
    ({"features": [1, "2", 3, 4]}, ["item 1", "string"]),
    ({"features": [1, None, 3, 4]}, ["item 1", "null"]),
    ({"features": [1, True, 3, 4]}, ["item 1", "boolean"]),
    ({"features": [[1, 2], [3, 4]]}, ["flat list"]),
    ({"features": []}, ["empty"]),
    ({"features": [1, 2, 3]}, ["3 values", "2 axes"]),
    ({"axes": "accX"}, ["'axes' must be a non-empty list"]),
    ({"axes": []}, ["'axes' must be a non-empty list"]),
    ({"sampling_freq": 0}, ["positive"]),
    ({"sampling_freq": "100"}, ["positive"]),
    ({"draw_graphs": "yes"}, ["draw_graphs", "true or false"]),
])
def test_bad_fields_say_what_was_expected(probe_client, changes, words):
    error = run_error(probe_client, **changes)
    for word in words:
        assert word in error, error


def test_block_configuration_error_is_shown(probe_client):
    assert run_error(probe_client, params={"fail": "config"}) == "probe: asked to fail"


def test_block_bug_is_200_error_and_does_not_affect_the_next_request(probe_client):
    assert "simulated bug" in run_error(probe_client, params={"fail": "crash"})
    run_ok(probe_client)


def test_non_finite_output_never_reaches_json(probe_client):
    response = post(probe_client, "/run", {**BODY, "params": {"fail": "nan"}})
    assert b"NaN" not in response.data
    assert "non-finite" in response.get_json()["error"]


def test_body_over_limit_is_413_json(probe_client):
    body = {**BODY, "features": [1.0] * 300_000}
    response = post(probe_client, "/run", body)
    assert response.status_code == 413
    assert "DSP_MAX_BODY_MB" in response.get_json()["error"]


def test_access_log_carries_ei_headers(probe_client):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("dsp_server.access")
    logger.addHandler(handler)
    try:
        post(probe_client, "/run", BODY, headers={"x-ei-project-id": "42", "x-ei-sample-id": "7"})
    finally:
        logger.removeHandler(handler)
    line = json.loads(records[-1].getMessage())
    assert line["project_id"] == "42" and line["sample_id"] == "7"
    assert line["block"] == "probe" and line["route"] == "run" and line["window_values"] == 6
    assert line["duration_ms"] >= 0


# --- /batch -------------------------------------------------------------------------------------

BATCH = {**{k: v for k, v in BODY.items() if k != "draw_graphs"},
         "features": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], "state": ""}


def test_batch_keeps_order_and_threads_state(probe_client):
    payload = post(probe_client, "/batch", BATCH).get_json()
    assert payload["success"] is True
    assert payload["features"] == BATCH["features"]
    assert payload["state"] == "3" and payload["state_string"] == "3 windows seen"
    assert payload["fft_used"] == [1]
    assert payload["output_config"] == {"type": "flat", "shape": {"width": 4}}


def test_batch_continues_from_given_state(probe_client):
    assert post(probe_client, "/batch", {**BATCH, "state": "10"}).get_json()["state"] == "13"


def test_batch_error_names_the_window(probe_client):
    body = {**BATCH, "features": [[1, 2], [3, 4, 5], [6, 7]]}
    error = post(probe_client, "/batch", body).get_json()["error"]
    assert error.startswith("Window 1:")


@pytest.mark.parametrize("features, words", [
    ([], ["empty list"]),
    ([1, 2], ["window 0 is the number 1"]),
    ([[1, 2], [3, "x"]], ["features[1]", "item 1"]),
    ([[1, 2], []], ["Window 1", "empty"]),
    ([[[1, 2]], [[3, 4]]], ["features[0]", "nested"]),
    ([[1, None], [3, 4]], ["features[0]", "item 1", "null"]),
])
def test_batch_bad_windows(probe_client, features, words):
    error = post(probe_client, "/batch", {**BATCH, "features": features}).get_json()["error"]
    for word in words:
        assert word in error, error


def test_vectorised_batch_path_matches_per_window_path():
    from dsp_server import create_app
    from tests.conftest import probe_block

    looped = create_app(blocks={"probe": probe_block()}, root_block="probe").test_client()
    vectorised = create_app(blocks={"probe": probe_block(batch=True)}, root_block="probe").test_client()
    body = {**BATCH, "params": {"scale-axes": 2}}
    assert post(looped, "/batch", body).get_json()["features"] == post(vectorised, "/batch", body).get_json()["features"]


def test_real_block_batch_equals_run_per_window(client):
    import numpy as np

    rng = np.random.default_rng(5)
    windows = np.round(rng.normal(0, 3000, (3, 8000))).tolist()
    common = {"axes": ["audio"], "sampling_freq": 16000, "implementation_version": 4,
              "params": {"frame_length": 0.032, "frame_stride": 0.024, "fft_length": 128, "noise_floor_db": -85}}
    batch = post(client, "/blocks/spectrogram/batch", {**common, "features": windows}).get_json()
    assert batch["success"] is True and batch["fft_used"] == [128]
    for window, features in zip(windows, batch["features"]):
        single = post(client, "/blocks/spectrogram/run", {**common, "features": window}).get_json()
        assert single["features"] == features
        assert single["output_config"] == batch["output_config"]
