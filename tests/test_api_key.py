"""The optional shared key (env `DSP_API_KEY`): as an `x-api-key` header or a `/k/<key>/` path
prefix; every route but `/healthz` refuses a request without it."""
from __future__ import annotations

import json
import logging

import pytest
import requests

from dsp_server import create_app
from tests.conftest import probe_block
from tests.test_health_metrics import value
from tests.test_live_server import _audio, _body, _start, _stop
from tests.test_protocol import BODY, post

KEY = "s3cret-Key_42"


@pytest.fixture
def keyed():
    return create_app(blocks={"probe": probe_block()}, root_block="probe", api_key=KEY).test_client()


@pytest.fixture
def access_lines(access_records):
    return lambda: [r.getMessage() for r in access_records]


def refused(response, why: str) -> None:
    assert response.status_code == 401
    payload = response.get_json()
    assert payload["success"] is False and why in payload["error"]
    assert KEY not in payload["error"]


def test_header_key_is_accepted(keyed):
    response = post(keyed, "/blocks/probe/run", BODY, headers={"x-api-key": KEY})
    assert response.status_code == 200 and response.get_json()["success"] is True


@pytest.mark.parametrize("path", ["/", "/parameters", "/run", "/blocks", "/blocks/probe/", "/blocks/probe/run",
                                  "/blocks/probe/batch", "/metrics", "/nope"])
def test_url_prefix_reaches_the_same_view(keyed, path):
    method = "POST" if path.endswith(("run", "batch")) else "GET"
    body = json.dumps({**BODY, "features": [[1, 2, 3, 4]]} if path.endswith("batch") else BODY)
    plain = keyed.open(path, method=method, data=body, content_type="application/json", headers={"x-api-key": KEY})
    prefixed = keyed.open(f"/k/{KEY}{path}", method=method, data=body, content_type="application/json")
    assert prefixed.status_code == plain.status_code
    if path != "/metrics":  # the counts differ by the request just made
        assert prefixed.get_data() == plain.get_data()


def test_missing_key_is_401(keyed):
    refused(post(keyed, "/run", BODY), "x-api-key")
    refused(keyed.get("/parameters"), "x-api-key")
    refused(keyed.get("/metrics"), "x-api-key")
    refused(keyed.get("/nope"), "x-api-key")  # no route list for a caller without the key


def test_wrong_key_is_401(keyed):
    refused(post(keyed, "/run", BODY, headers={"x-api-key": KEY + "x"}), "wrong")
    refused(post(keyed, f"/k/{KEY[:-1]}/run", BODY), "wrong")
    refused(post(keyed, "/k//run", BODY, headers={"x-api-key": KEY}), "x-api-key")  # an empty key in the URL is no key


def test_healthz_needs_no_key(keyed):
    response = keyed.get("/healthz")
    assert response.status_code == 200 and response.get_json()["success"] is True


def test_refusals_are_counted(keyed):
    post(keyed, "/run", BODY)
    post(keyed, "/run", BODY, headers={"x-api-key": "nope"})
    text = keyed.get("/metrics", headers={"x-api-key": KEY}).get_data(as_text=True)
    assert value(text, "dsp_requests_total", block="", route="run", status="401") == 2
    assert value(text, "dsp_errors_total", block="", route="run", kind="user") == 2
    assert value(text, "dsp_windows_total", block="", route="run") == 0


def test_key_never_in_the_access_log(keyed, access_lines):
    post(keyed, f"/k/{KEY}/blocks/probe/run", BODY)
    post(keyed, f"/k/{KEY}x/run", BODY)
    lines = access_lines()
    assert len(lines) == 2
    assert [json.loads(line)["path"] for line in lines] == ["/blocks/probe/run", "/run"]
    assert not any(KEY in line for line in lines)


def test_no_key_by_default(monkeypatch):
    monkeypatch.delenv("DSP_API_KEY", raising=False)
    client = create_app(blocks={"probe": probe_block()}, root_block="probe").test_client()
    assert post(client, "/run", BODY).get_json()["success"] is True
    assert client.get("/metrics").status_code == 200


def test_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("DSP_API_KEY", KEY)
    client = create_app(blocks={"probe": probe_block()}, root_block="probe").test_client()
    refused(post(client, "/run", BODY), "x-api-key")
    assert post(client, f"/k/{KEY}/run", BODY).get_json()["success"] is True


def test_real_server_with_a_key_logs_no_key():
    proc, url = _start({"DSP_API_KEY": KEY})
    try:
        body = _body(_audio(3))
        studio = requests.post(f"{url}/k/{KEY}/blocks/spectrogram/run", json=body, timeout=30)
        header = requests.post(f"{url}/blocks/spectrogram/run", json=body, headers={"x-api-key": KEY}, timeout=30)
        missing = requests.post(f"{url}/blocks/spectrogram/run", json=body, timeout=30)
        wrong = requests.get(f"{url}/k/{KEY}0/parameters", timeout=30)
        health = requests.get(f"{url}/healthz", timeout=30)
    finally:
        err = _stop(proc)
    assert studio.json()["success"] is True and studio.json() == header.json()
    assert missing.status_code == 401 and wrong.status_code == 401 and health.status_code == 200
    assert "/blocks/spectrogram/run" in err
    assert KEY not in err


def test_request_lines_logged_by_others_are_redacted(keyed):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("werkzeug")  # the development server's request lines
    logger.addHandler(handler)
    try:
        logger.warning('"%s" %s %s', f"POST /k/{KEY}/blocks/kalman/run HTTP/1.1", "200", "-")
    finally:
        logger.removeHandler(handler)
    assert records[0].getMessage() == '"POST /k/***/blocks/kalman/run HTTP/1.1" 200 -'
