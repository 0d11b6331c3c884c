"""The real server under gunicorn, over loopback: what only a real HTTP stack shows."""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"


def free_port() -> int:
    """A loopback port nothing listens on now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(env_overrides: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), **env_overrides}
    proc = subprocess.Popen([str(GUNICORN), "-c", "gunicorn.conf.py", "dsp_server:create_app()"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        try:
            requests.get(url + "/", timeout=1)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode()


@pytest.fixture(scope="module")
def server():
    proc, url = _start({"DSP_MAX_BODY_MB": "2"})
    yield url
    _stop(proc)


def _audio(seed: int, n: int = 16000) -> list[float]:
    rng = np.random.default_rng(seed)
    return np.round(rng.normal(0, 2000, n)).clip(-32768, 32767).tolist()


def _body(features, **changes) -> dict:
    return {"features": features, "axes": ["audio"], "sampling_freq": 16000, "draw_graphs": False,
            "implementation_version": 4,
            "params": {"frame_length": 0.032, "frame_stride": 0.024, "fft_length": 128, "noise_floor_db": -85},
            **changes}


def test_chunked_request_body(server):
    data = json.dumps(_body(_audio(1))).encode()
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/blocks/spectrogram/run")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for start in range(0, len(data), 4096):
        chunk = data[start:start + 4096]
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    payload = json.loads(response.read())
    assert response.status == 200 and payload["success"] is True
    assert len(payload["features"]) == 41 * 65


def test_body_over_limit_is_413_json(server):
    response = requests.post(server + "/blocks/spectrogram/batch",
                             json=_body([_audio(i) for i in range(30)]), timeout=30)
    assert response.status_code == 413
    assert "DSP_MAX_BODY_MB" in response.json()["error"]


def test_concurrent_good_and_bad_requests_do_not_interfere(server):
    """Bad requests interleaved with good ones: every good one gets exactly its own features."""
    expected = {}
    for seed in range(4):
        expected[seed] = requests.post(server + "/blocks/spectrogram/run", json=_body(_audio(seed)),
                                       timeout=10).json()["features"]
    bad_bodies = [b"{oops", json.dumps(_body([1, None, 3])).encode(),
                  json.dumps(_body(_audio(0), params={"fft_length": 100})).encode(), b""]

    def call(i: int):
        if i % 3 == 0:
            r = requests.post(server + "/run", data=bad_bodies[i % 4], timeout=10)
            return r.status_code, r.json()["success"], None
        seed = i % 4
        r = requests.post(server + "/blocks/spectrogram/run", json=_body(_audio(seed)), timeout=10)
        return r.status_code, r.json()["success"], r.json()["features"] == expected[seed]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(96)))
    assert all(status == 200 for status, _, _ in results)
    assert all(ok is False for i, (_, ok, _) in enumerate(results) if i % 3 == 0)
    assert all(ok and same for i, (_, ok, same) in enumerate(results) if i % 3)


def test_unknown_root_block_stops_the_server_with_a_clear_message():
    port = free_port()
    proc = subprocess.run([str(GUNICORN), "-c", "gunicorn.conf.py", "dsp_server:create_app()"], cwd=ROOT,
                          env={**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "DSP_BLOCK": "nope"},
                          capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert "DSP_BLOCK='nope' is not a block of this server" in proc.stderr.decode()


def _readme_curl_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```")[0] for b in text.split("```sh\n")[1:]]
    return [b for b in blocks if "curl -s localhost:4446" in b]


def _route(example: str) -> str:
    return re.search(r"localhost:4446(\S*)", example).group(1)


@pytest.mark.parametrize("example", _readme_curl_examples(), ids=_route)
def test_readme_curl_examples_work_as_pasted(server, example):
    port = server.rsplit(":", 1)[1]
    command = example.replace("localhost:4446", f"localhost:{port}")
    result = subprocess.run(["bash", "-c", command], capture_output=True, timeout=30, check=True)
    assert json.loads(result.stdout)["success"] is True, result.stdout[:300]


def test_readme_has_curl_examples_for_run_and_batch():
    routes = {_route(example).rsplit("/", 1)[1] for example in _readme_curl_examples()}
    assert {"run", "batch"} <= routes
