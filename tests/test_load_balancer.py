"""Two real servers behind a real nginx, configured by deploy/nginx/dsp-blocks.conf (the file users
copy, only its ports replaced): a stateful stream spread over both servers gives the numbers one
server gives, and mixed concurrent traffic through the balancer meets no error.

Everything listens on loopback only; nginx's pid, logs and temp files stay in tmp_path.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from dsp_server import DEFAULT_MAX_BODY_MB
from tests.imu_stream import make_imu_stream
from tests.nginx_tool import nginx_path, nginx_reason
from tests.test_live_server import GUNICORN, free_port

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONF = ROOT / "deploy" / "nginx" / "dsp-blocks.conf"
IMU_AXES = ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ"]
WINDOW = 100


def _wait(url: str, proc: subprocess.Popen, what: str, logs=lambda: "") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}:\n{logs()}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer 200 at {url} within 30 s:\n{logs()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # gunicorn and nginx both shut down gracefully on TERM
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def render_conf(text: str, listen: int, upstreams: list[int]) -> str:
    """The shipped file with its listen port and upstream servers replaced; nothing else changes."""
    servers = re.findall(r"^\s*server 127\.0\.0\.1:\d+;\s*$", text, flags=re.M)
    assert len(servers) == 2, f"expected two upstream server lines in {SHIPPED_CONF.name}, found {servers}"
    text = re.sub(r"^(\s*)server 127\.0\.0\.1:\d+;\s*\n", "", text, count=1, flags=re.M)
    text = re.sub(r"^(\s*)server 127\.0\.0\.1:\d+;", lambda m: "".join(
        f"{m.group(1)}server 127.0.0.1:{port};" for port in upstreams), text, count=1, flags=re.M)
    text, listens = re.subn(r"listen 127\.0\.0\.1:\d+;", f"listen 127.0.0.1:{listen};", text)
    assert listens == 1
    return text


@pytest.fixture(scope="module")
def balanced(tmp_path_factory):
    """Two gunicorn servers (one worker each, so /healthz's pid names the server) and nginx in front."""
    reason = nginx_reason()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("nginx")
    procs, servers = [], []
    try:
        for i in range(2):
            port = free_port()
            env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "4"}
            err = open(tmp / f"server{i}.err", "w+")
            proc = subprocess.Popen([str(GUNICORN), "-c", "gunicorn.conf.py", "dsp_server:create_app()"],
                                    cwd=ROOT, env=env, stdout=err, stderr=subprocess.STDOUT)
            procs.append(proc)
            servers.append({"port": port, "url": f"http://127.0.0.1:{port}", "log": tmp / f"server{i}.err"})
        for server, proc in zip(servers, procs):
            _wait(server["url"] + "/healthz", proc, "gunicorn", server["log"].read_text)
            server["pid"] = requests.get(server["url"] + "/healthz", timeout=5).json()["pid"]
        listen = free_port()
        site = tmp / "dsp-blocks.conf"
        site.write_text(render_conf(SHIPPED_CONF.read_text(), listen, [s["port"] for s in servers]))
        # The frame a distribution's nginx.conf gives: here every path is inside tmp, and the
        # access log names the upstream that answered each request. One worker process: each
        # keeps its own round-robin turn, so one makes the spread over the servers predictable.
        (tmp / "logs").mkdir()
        (tmp / "nginx.conf").write_text(f"""
pid {tmp}/nginx.pid;
error_log {tmp}/logs/error.log warn;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    log_format upstream '$request_method $uri $status $upstream_addr';
    access_log {tmp}/logs/access.log upstream;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {site};
}}
""")
        nginx = subprocess.Popen([nginx_path(), "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(nginx)
        _wait(f"http://127.0.0.1:{listen}/healthz", nginx, "nginx",
              lambda: nginx.stdout.read1().decode() if nginx.poll() is not None else (tmp / "logs" / "error.log").read_text())
        yield {"url": f"http://127.0.0.1:{listen}", "servers": servers, "tmp": tmp, "site": site}
    finally:
        # nginx first (it is last in procs), so no request reaches a stopping server.
        for proc in reversed(procs):
            _stop(proc)


def test_body_over_the_limit_gets_json_413_from_nginx(balanced):
    # Declared one byte over the limit: nginx refuses on the header, before reading the body.
    host, port = balanced["url"].removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/blocks/spectrogram/batch")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(DEFAULT_MAX_BODY_MB * 1024 * 1024 + 1))
    conn.endheaders()
    conn.send(b'{"features": [')
    response = conn.getresponse()
    payload = json.loads(response.read())
    assert response.status == 413 and response.getheader("Content-Type") == "application/json"
    assert payload["success"] is False and "DSP_MAX_BODY_MB" in payload["error"]
    conn.close()


def _access_lines(tmp: Path) -> list[list[str]]:
    return [line.split() for line in (tmp / "logs" / "access.log").read_text().splitlines()]


def test_rendered_conf_keeps_the_shipped_settings(balanced):
    text = balanced["site"].read_text()
    assert f"client_max_body_size {DEFAULT_MAX_BODY_MB}m;" in text
    assert "proxy_http_version 1.1;" in text and 'proxy_set_header Connection "";' in text
    assert re.search(r"^\s*keepalive \d+;", text, flags=re.M)
    # Round robin: no ip_hash, hash or least_conn line changes the method.
    assert not re.search(r"^\s*(ip_hash|hash|least_conn|sticky)\b", text, flags=re.M)
    assert "listen 127.0.0.1:" in text


def test_round_robin_reaches_both_servers(balanced):
    pids = Counter(requests.get(balanced["url"] + "/healthz", timeout=5).json()["pid"] for _ in range(6))
    assert set(pids) == {server["pid"] for server in balanced["servers"]}, pids


def test_kalman_stream_over_both_servers_equals_one_batch(balanced):
    imu = make_imu_stream(seconds=12, fs=100, seed=11)
    columns = np.hstack([imu.acc, imu.gyr])
    windows = columns[:12 * WINDOW].reshape(12, WINDOW, 6)
    base = {"axes": IMU_AXES, "sampling_freq": 100, "params": {"filter": "ekf"}}
    before = len(_access_lines(balanced["tmp"]))
    state, streamed = "", []
    with requests.Session() as session:
        for window in windows:
            payload = session.post(balanced["url"] + "/blocks/kalman/run",
                                   json={**base, "features": window.reshape(-1).tolist(), "state_string": state},
                                   timeout=30).json()
            assert payload["success"] is True, payload
            streamed.append(payload["features"])
            state = payload["state_string"]
    # The access log says which server answered each window: both must have, or this proves nothing.
    runs = [line[3] for line in _access_lines(balanced["tmp"])[before:] if line[1].endswith("/kalman/run")]
    assert len(runs) == len(windows)
    served = Counter(runs)
    assert set(served) == {f"127.0.0.1:{server['port']}" for server in balanced["servers"]}, served
    assert min(served.values()) >= 3, served
    # One pass over the same windows, straight to one server, state threaded inside the batch.
    direct = balanced["servers"][0]["url"]
    batch = requests.post(direct + "/blocks/kalman/batch", json={**base, "features": windows.reshape(12, -1).tolist(),
                                                                  "state": ""}, timeout=30).json()
    assert batch["success"] is True, batch
    np.testing.assert_allclose(np.array(streamed), np.array(batch["features"]), rtol=1e-9, atol=1e-9)
    # A stream without its state would differ: the comparison can fail.
    restart = requests.post(balanced["url"] + "/blocks/kalman/run",
                            json={**base, "features": windows[-1].reshape(-1).tolist(), "state_string": ""}, timeout=30).json()
    assert not np.allclose(restart["features"], streamed[-1], rtol=1e-9, atol=1e-9)


def _requests() -> list[tuple[str, dict | bytes, bool]]:
    """(path, body, good) of several blocks, some bad on purpose."""
    rng = np.random.default_rng(5)
    audio = np.round(rng.normal(0, 2000, 16000)).clip(-32768, 32767).tolist()
    t = np.arange(128) / 62.5
    acc = np.stack([np.sin(2 * np.pi * 1.5 * t), 0.5 * np.cos(2 * np.pi * 3 * t), 9.81 + 0.2 * np.sin(2 * np.pi * 0.7 * t)], 1)
    light = np.stack([rng.uniform(0, 300, 100), np.abs(9.8 + rng.normal(0, 1.5, 100)), np.repeat([0.0, 1.0], 50)], 1)
    imu = np.hstack([[0.0, 4.9, 8.49] + rng.normal(0, 0.05, (300, 3)), rng.normal(0, 0.01, (300, 3))])
    spectral = {"features": acc.reshape(-1).tolist(), "axes": ["accX", "accY", "accZ"], "sampling_freq": 62.5, "params": {}}
    good = [
        ("/blocks/spectrogram/run", {"features": audio, "axes": ["audio"], "sampling_freq": 16000, "params": {}}),
        ("/blocks/embeddings/run", {"features": audio, "axes": ["audio"], "sampling_freq": 16000, "params": {}}),
        ("/blocks/spectral-analysis/run", spectral),
        ("/blocks/fuzzy-off-arm/run", {"features": light.reshape(-1).tolist(), "axes": ["light", "motion", "hr_locked"],
                                       "sampling_freq": 10, "params": {"motion-input": "magnitude"}, "state_string": ""}),
        ("/blocks/kalman/batch", {"features": imu.reshape(3, -1).tolist(), "axes": IMU_AXES, "sampling_freq": 100,
                                  "params": {"filter": "vqf"}, "state": ""}),
    ]
    bad = [
        ("/blocks/spectral-analysis/run", b"{oops"),
        ("/blocks/spectral-analysis/run", {**spectral, "params": {"fft-lenght": 16}}),
        ("/blocks/spectral-analysis/run", {**spectral, "features": spectral["features"][:-1]}),
        ("/blocks/fuzzy-off-arm/run", {**good[3][1], "params": {}}),  # an acceleration magnitude where events are expected
        ("/blocks/kalman/batch", {**good[4][1], "axes": IMU_AXES[:2]}),
    ]
    return [(path, body, True) for path, body in good] + [(path, body, False) for path, body in bad]


def test_mixed_concurrent_traffic_through_nginx_has_no_errors(balanced, client):
    cases = _requests()
    # What each good request must answer: the same code, in this process.
    expected = [client.post(path, json=body).get_json()["features"] if ok else None for path, body, ok in cases]
    before = len(_access_lines(balanced["tmp"]))

    def call(i: int):
        path, body, ok = cases[i % len(cases)]
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = requests.post(balanced["url"] + path, data=data, headers={"Content-Type": "application/json"}, timeout=60)
        payload = r.json()
        if ok:
            same = payload.get("success") is True and np.allclose(payload["features"], expected[i % len(cases)],
                                                                  rtol=1e-9, atol=1e-9)
        else:
            same = payload.get("success") is False and bool(payload.get("error"))
        return i, r.status_code, same

    rounds = 8
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(call, range(rounds * len(cases))))
    wrong = [(cases[i % len(cases)][0], status) for i, status, same in results if not same or status >= 500]
    assert not wrong, wrong
    lines = [line for line in _access_lines(balanced["tmp"])[before:] if line[0] == "POST"]
    assert len(lines) == len(results) and not [line for line in lines if line[2].startswith("5")]
    assert len({line[3] for line in lines}) == 2
    for server in balanced["servers"]:
        log = server["log"].read_text()
        assert "Traceback" not in log and "[ERROR]" not in log, log[-3000:]
