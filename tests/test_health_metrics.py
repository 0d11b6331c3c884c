"""`/healthz` and the Prometheus metrics at `/metrics`: in process, and summed over two real
gunicorn workers (multiprocess mode)."""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from dsp_server import create_app
from tests.conftest import probe_block
from tests.test_live_server import _audio, _body, _start, _stop
from tests.test_protocol import BATCH, BODY, post


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted label items) -> value, from exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(text: str, name: str, **labels) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return response.get_data(as_text=True)


# --- /healthz -----------------------------------------------------------------------------------


def test_healthz_ok_with_every_real_block_loaded(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    payload = response.get_json()
    assert payload["success"] is True and payload["status"] == "ok"
    assert {"embeddings", "kalman", "spectrogram"} <= set(payload["blocks"])


def test_healthz_503_names_the_block_that_cannot_load():
    def broken():
        raise OSError("model file vanished")

    app = create_app(blocks={"probe": probe_block(), "broken": replace(probe_block(), name="broken", ready=broken)},
                     root_block="probe")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    payload = response.get_json()
    assert payload["success"] is False
    assert payload["missing"] == {"broken": "OSError: model file vanished"}
    assert "broken" in payload["error"]


def test_healthz_503_when_the_embeddings_interpreter_cannot_be_built(monkeypatch):
    from dsp.audio import mfcc, mfe, spectrogram
    from dsp.embeddings import model as model_module
    from dsp.embeddings.block import make_block

    frontends = {b.name: b for b in (spectrogram.BLOCK, mfe.BLOCK, mfcc.BLOCK)}
    # A fresh model: no interpreter cached in this thread yet.
    embeddings = make_block(model_module.load_model(model_module.DEFAULT_MODEL), frontends)

    def fail(model):
        raise RuntimeError("LiteRT cannot allocate tensors")

    monkeypatch.setattr(model_module, "make_interpreter", fail)
    app = create_app(blocks={"embeddings": embeddings, **frontends}, root_block="embeddings")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert "LiteRT cannot allocate tensors" in response.get_json()["missing"]["embeddings"]


def test_healthz_and_metrics_are_not_logged_as_traffic(probe_client, access_records):
    probe_client.get("/healthz")
    probe_client.get("/metrics")
    assert access_records == []
    post(probe_client, "/run", BODY)
    assert [json.loads(r.getMessage())["route"] for r in access_records] == ["run"]


# --- /metrics in process ------------------------------------------------------------------------


def test_metrics_count_requests_errors_and_windows_per_block_and_route(probe_client):
    post(probe_client, "/run", BODY)
    post(probe_client, "/blocks/probe/run", BODY)
    post(probe_client, "/batch", BATCH)  # 3 windows
    post(probe_client, "/run", {**BODY, "params": {"fail": "config"}})  # 200, success false: user
    post(probe_client, "/run", {**BODY, "params": {"fail": "crash"}})  # 200, a block's bug: server
    probe_client.get("/nope")  # 404
    probe_client.get("/parameters")
    text = scrape(probe_client)

    assert value(text, "dsp_requests_total", block="probe", route="run", status="200") == 4
    assert value(text, "dsp_requests_total", block="probe", route="batch", status="200") == 1
    assert value(text, "dsp_requests_total", block="probe", route="parameters", status="200") == 1
    assert value(text, "dsp_requests_total", block="", route="unmatched", status="404") == 1
    assert value(text, "dsp_windows_total", block="probe", route="run") == 2
    assert value(text, "dsp_windows_total", block="probe", route="batch") == 3
    assert value(text, "dsp_errors_total", block="probe", route="run", kind="user") == 1
    assert value(text, "dsp_errors_total", block="probe", route="run", kind="server") == 1
    assert value(text, "dsp_errors_total", block="", route="unmatched", kind="user") == 1
    assert value(text, "dsp_request_duration_seconds_count", block="probe", route="run") == 4
    assert value(text, "dsp_request_duration_seconds_bucket", block="probe", route="batch", le="+Inf") == 1


def test_each_app_counts_on_its_own_without_gunicorn(probe_client):
    post(probe_client, "/run", BODY)
    other = create_app(blocks={"probe": probe_block()}, root_block="probe").test_client()
    assert value(scrape(other), "dsp_requests_total", block="probe", route="run", status="200") == 0
    assert value(scrape(probe_client), "dsp_requests_total", block="probe", route="run", status="200") == 1


# --- two real gunicorn workers --------------------------------------------------------------------


def test_metrics_sum_every_gunicorn_worker(tmp_path):
    # A given directory is emptied at start: a stale file must not be counted.
    (tmp_path / "counter_1.db").write_bytes(b"stale")
    proc, url = _start({"WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "4", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    try:
        body = json.dumps(_body(_audio(1))).encode()

        def call(_):
            # A new connection per request, so that both workers accept some.
            response = requests.post(url + "/blocks/spectrogram/run", data=body, timeout=30,
                                     headers={"Content-Type": "application/json", "Connection": "close"})
            return response.json()["success"]

        n = 160
        with ThreadPoolExecutor(16) as pool:
            assert all(pool.map(call, range(n)))
        scrapes = [requests.get(url + "/metrics", headers={"Connection": "close"}, timeout=10).text
                   for _ in range(6)]
    finally:
        err = _stop(proc)
    pids = {line["pid"] for line in map(json.loads, (l for l in err.splitlines() if l.startswith("{")))
            if line.get("route") == "run"}
    assert len(pids) == 2, f"one worker served every request ({pids}); cannot check the sum"
    for text in scrapes:  # whichever worker answered the scrape, it counts both
        assert value(text, "dsp_requests_total", block="spectrogram", route="run", status="200") == n
        assert value(text, "dsp_windows_total", block="spectrogram", route="run") == n
        assert value(text, "dsp_request_duration_seconds_count", block="spectrogram", route="run") == n


def test_a_dead_workers_counts_stay_in_the_sum():
    proc, url = _start({"WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "2"})
    try:
        body = _body(_audio(2))
        n = 20
        # One keep-alive connection: every request, and the /healthz naming its pid, on one worker.
        with requests.Session() as session:
            for _ in range(n):
                assert session.post(url + "/blocks/spectrogram/run", json=body, timeout=30).json()["success"]
            victim = session.get(url + "/healthz", timeout=10).json()["pid"]
        os.kill(victim, signal.SIGKILL)
        # gunicorn reaps it (child_exit: mark_process_dead) and forks a new worker: wait until the
        # survivor and the new one have both answered.
        others = set()
        for _ in range(300):
            try:
                others.add(requests.get(url + "/healthz", headers={"Connection": "close"}, timeout=10).json()["pid"])
            except requests.ConnectionError:
                pass
            if len(others - {victim}) == 2:
                break
            time.sleep(0.05)
        assert len(others - {victim}) == 2, others
        text = requests.get(url + "/metrics", timeout=10).text
    finally:
        err = _stop(proc)
    # Every one of those requests was served by the dead worker.
    assert value(text, "dsp_requests_total", block="spectrogram", route="run", status="200") == n
    assert "Traceback" not in err


def test_a_server_started_from_another_servers_environment_keeps_off_its_metrics(tmp_path):
    # Another master's own directory, inherited through the environment (a server or test runner
    # that read gunicorn.conf.py): this server must make its own, and leave that one's files alone.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "counter_1.db").write_bytes(b"")
    proc, url = _start({"WEB_CONCURRENCY": "1", "PROMETHEUS_MULTIPROC_DIR": str(theirs),
                        "DSP_OWN_METRICS_DIR": f"1:{theirs}"})
    try:
        assert requests.get(url + "/healthz", timeout=10).status_code == 200
        assert requests.get(url + "/metrics", timeout=10).status_code == 200
    finally:
        _stop(proc)
    assert [p.name for p in theirs.iterdir()] == ["counter_1.db"]
