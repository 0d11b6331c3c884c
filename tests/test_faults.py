"""Faults a user relies on surviving, on real gunicorn servers over loopback.

* A worker killed (SIGKILL) under load: the master replaces it, only the requests in flight on it
  fail (a dropped connection, never a wrong answer), and every request after recovery is right.
* SIGTERM to the master: a long request in flight is answered in full, then the master exits 0.
* A stateful stream whose windows alternate between two server processes, passing the state
  back each time, equals one `/batch` pass over the same windows, for every stateful block and
  every filter or stateful option.
"""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import load_test  # noqa: E402  (its in-process expectations and checks)

from dsp.registry import all_blocks  # noqa: E402
from tests.imu_stream import make_imu_stream  # noqa: E402
from tests.test_live_server import GUNICORN, free_port  # noqa: E402

BLOCKS = all_blocks()
STATEFUL = [name for name, block in BLOCKS.items() if block.info.get("usesState")]


# --- servers ----------------------------------------------------------------------------------

@dataclass
class Gunicorn:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def master(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def gunicorn(**env_overrides: str):
    """A real gunicorn on a free loopback port, stopped (killed if need be) whatever happens.

    Its log goes to a file, not a pipe: a pipe nobody reads fills up under load and blocks the
    server's writes, which would look like a server fault.
    """
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), **env_overrides}
    with tempfile.TemporaryDirectory(prefix="dsp-faults-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([str(GUNICORN), "-c", "gunicorn.conf.py", "dsp_server:create_app()"],
                                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        server = Gunicorn(proc, port, log)
        try:
            _wait_ready(server, int(env.get("WEB_CONCURRENCY", "2")))
            yield server
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait_ready(server: Gunicorn, workers: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited at start:\n{server.log_text()[-3000:]}")
        if len(load_test.children_of(server.master)) >= workers:
            try:
                if healthz_pid(server.port) is not None:
                    return
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready in {seconds} s:\n{server.log_text()[-3000:]}")


def connect(port: int, timeout: float = 30) -> http.client.HTTPConnection:
    return load_test.Connection("127.0.0.1", port, timeout=timeout)


def healthz_pid(port: int, connection: Optional[http.client.HTTPConnection] = None) -> Optional[int]:
    """The pid of the worker that answers /healthz (on `connection`, else on a fresh one)."""
    conn = connection or connect(port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        payload = orjson.loads(response.read())
        return payload["pid"] if response.status == 200 else None
    finally:
        if connection is None:
            conn.close()


def post(connection: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, dict]:
    status, data = load_test.post(connection, path, body)
    return status, orjson.loads(data)


# --- 1. a worker killed under load ------------------------------------------------------------

CLIENTS = 4
LOAD_BEFORE_KILL_S = 2.0
LOAD_AFTER_RECOVERY_S = 3.0
RECOVERY_BOUND_S = 10.0


@dataclass
class Outcome:
    client: int
    pid: int  # worker of the client's connection
    started: float
    kind: str
    error: Optional[str] = None  # a connection error
    wrong: Optional[str] = None  # an answer that is not the expected one


@dataclass
class KillBoard:
    """What every client is doing, under one lock, so the kill sees an exact in-flight picture."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: dict[int, int] = field(default_factory=dict)  # client -> worker pid of its request
    killed_at: Optional[float] = None
    outcomes: list[Outcome] = field(default_factory=list)


def _load_client(client: int, port: int, board: KillBoard, workload: load_test.Workload, stop: threading.Event):
    # The client's own kalman stream (state carried) and the fixed spectral-analysis windows.
    stream = workload.kalman[client]
    kinds = [load_test.SPECTRAL, load_test.KALMAN]
    connection, pid, n = None, 0, 0
    while not stop.is_set():
        if connection is None:
            try:
                connection = connect(port)
                pid = healthz_pid(port, connection)  # a kept-alive connection stays on this worker
            except (OSError, http.client.HTTPException):
                connection = None
                time.sleep(0.01)  # the kill's moment; the next attempt reaches a live worker
                continue
        kind = kinds[n % 2]
        n += 1
        if kind == load_test.KALMAN:
            body, chunk = stream.next_body()
            path, verify = stream.path, (lambda answer, chunk=chunk: stream.verify(answer, chunk))
        else:
            fixed = workload.spectral[n % len(workload.spectral)]
            path, body = fixed.path, fixed.body
            verify = lambda answer, fixed=fixed: load_test.mismatch(answer.get("features"), fixed.expected)  # noqa: E731
        with board.lock:
            board.in_flight[client] = pid
            outcome = Outcome(client, pid, time.monotonic(), kind)
        try:
            status, data = load_test.post(connection, path, body)
        except (OSError, http.client.HTTPException) as exc:
            outcome.error = repr(exc)
            connection.close()
            connection = None
            stream.position, stream.state = 0, ""  # its state was lost with the answer: a new stream
        else:
            outcome.wrong = load_test.check_good(status, data, verify)
        with board.lock:
            board.in_flight.pop(client, None)
            board.outcomes.append(outcome)
    if connection is not None:
        connection.close()


def test_a_killed_worker_is_replaced_and_only_its_in_flight_requests_fail():
    workload = load_test.build_workload(CLIENTS, BLOCKS)
    board, stop = KillBoard(), threading.Event()
    with gunicorn(WEB_CONCURRENCY="2", GUNICORN_THREADS="4") as server:
        before = load_test.children_of(server.master)
        assert len(before) == 2
        threads = [threading.Thread(target=_load_client, args=(c, server.port, board, workload, stop), daemon=True)
                   for c in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(LOAD_BEFORE_KILL_S)
            # Kill at a moment when the victim has a request in flight, holding the board's lock
            # so no client starts or finishes a request between the count and the kill.
            victim, in_flight_on_victim = None, 0
            deadline = time.monotonic() + 5
            while victim is None and time.monotonic() < deadline:
                with board.lock:
                    busy = [pid for pid in board.in_flight.values() if pid in before]
                    if busy:
                        victim = busy[0]
                        in_flight_on_victim = sum(pid == victim for pid in board.in_flight.values())
                        os.kill(victim, signal.SIGKILL)
                        board.killed_at = time.monotonic()
                if victim is None:
                    time.sleep(0.001)
            assert victim is not None, "no request was ever in flight on a worker"

            # The master forks a replacement; it answers /healthz within the bound.
            replacement, recovered_at = None, None
            while time.monotonic() < board.killed_at + RECOVERY_BOUND_S:
                new = set(load_test.children_of(server.master)) - set(before)
                try:
                    answered = healthz_pid(server.port)
                except (OSError, http.client.HTTPException):
                    answered = None
                if answered in new:
                    replacement, recovered_at = answered, time.monotonic()
                    break
                time.sleep(0.02)
            assert replacement is not None, f"no new worker answered /healthz within {RECOVERY_BOUND_S} s"
            time.sleep(LOAD_AFTER_RECOVERY_S)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        after = load_test.children_of(server.master)
        log = server.log_text()

    outcomes = board.outcomes
    failed = [o for o in outcomes if o.error]
    in_flight_failures = [o for o in failed if o.started < board.killed_at]
    # A connection idle on the victim at the kill breaks on its next use: that request never
    # reached a live worker. At most one per client, and only on the victim's connections.
    stale = [o for o in failed if o.started >= board.killed_at]
    print(f"\n{len(outcomes)} requests; victim {victim} had {in_flight_on_victim} in flight; "
          f"{len(in_flight_failures)} of them failed, {len(stale)} on idle kept-alive connections; "
          f"replacement {replacement} answered {recovered_at - board.killed_at:.2f} s after the kill")
    assert [o.wrong for o in outcomes if o.wrong] == []  # no wrong answer, ever
    assert all(o.pid == victim for o in failed), [(o.pid, o.error) for o in failed]
    assert len(in_flight_failures) <= in_flight_on_victim
    assert len({o.client for o in stale}) == len(stale) <= CLIENTS - in_flight_on_victim
    after_recovery = [o for o in outcomes if o.started >= recovered_at]
    assert len(after_recovery) >= 10 * CLIENTS
    assert all(o.error is None and o.wrong is None for o in after_recovery)
    assert {o.kind for o in after_recovery} == {load_test.SPECTRAL, load_test.KALMAN}
    assert len(after) == 2 and victim not in after and replacement in after
    assert "Traceback" not in log


# --- 2. SIGTERM drains ------------------------------------------------------------------------

GRACEFUL_TIMEOUT_S = 20
LONG_REQUEST_S = 2.0
OFF_ARM_SLOW = {"motion-input": "quantity", "universe-points": 10001}  # a fine universe: slow windows


def _off_arm_batch(windows: np.ndarray) -> bytes:
    return orjson.dumps({"features": [w.reshape(-1) for w in windows], "axes": load_test.OFF_ARM_AXES,
                         "sampling_freq": load_test.OFF_ARM_FS, "params": OFF_ARM_SLOW, "state": ""},
                        option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass
class Drain:
    windows: int
    expected: Optional[np.ndarray]
    result: dict  # status, answer, seconds, answered_at; or error
    term_at: float
    code: int
    exited_after_s: float
    log: str
    port: int


def _sigterm_during_long_request(graceful_timeout_s: int, long_request_s: float = LONG_REQUEST_S,
                                 check: bool = True) -> Drain:
    probe_windows = load_test._off_arm_windows(0, "quantity")
    with gunicorn(WEB_CONCURRENCY="1", GUNICORN_GRACEFUL_TIMEOUT=str(graceful_timeout_s)) as server:
        # Size the long request from this server's measured speed.
        conn = connect(server.port)
        started = time.perf_counter()
        status, answer = post(conn, "/blocks/fuzzy-off-arm/batch", _off_arm_batch(probe_windows))
        per_window = (time.perf_counter() - started) / len(probe_windows)
        conn.close()
        assert status == 200 and answer["success"] is True
        repeat = max(1, int(np.ceil(long_request_s / per_window / len(probe_windows))))
        windows = np.concatenate([probe_windows] * repeat)
        expected = load_test.in_process(BLOCKS["fuzzy-off-arm"], windows, load_test.OFF_ARM_AXES,
                                        load_test.OFF_ARM_FS, OFF_ARM_SLOW, batch=True)[0] if check else None
        result: dict = {}

        def long_request():
            c = connect(server.port, timeout=60)
            t0 = time.monotonic()
            try:
                result["status"], result["answer"] = post(c, "/blocks/fuzzy-off-arm/batch", _off_arm_batch(windows))
            except (OSError, http.client.HTTPException) as exc:
                result["error"] = repr(exc)
            result["seconds"], result["answered_at"] = time.monotonic() - t0, time.monotonic()
            c.close()

        thread = threading.Thread(target=long_request, daemon=True)
        thread.start()
        time.sleep(0.5)  # the request is being computed
        assert "answered_at" not in result
        server.proc.send_signal(signal.SIGTERM)
        term_at = time.monotonic()
        code = server.proc.wait(timeout=graceful_timeout_s + 10)
        exited_after = time.monotonic() - term_at
        thread.join(timeout=10)
        return Drain(len(windows), expected, result, term_at, code, exited_after, server.log_text(), server.port)


def test_sigterm_answers_the_request_in_flight_then_exits_cleanly():
    drain = _sigterm_during_long_request(GRACEFUL_TIMEOUT_S)
    result = drain.result
    print(f"\nlong request: {drain.windows} windows, {result['seconds']:.2f} s; "
          f"master exited {drain.exited_after_s:.2f} s after SIGTERM")
    assert result.get("status") == 200, (result.get("error"), drain.log[-2000:])
    answer = result["answer"]
    assert answer["success"] is True and len(answer["features"]) == drain.windows
    assert load_test.mismatch(answer["features"], drain.expected) is None
    assert result["answered_at"] > drain.term_at  # it really was in flight at the signal
    assert drain.code == 0, drain.log[-2000:]
    assert drain.exited_after_s < GRACEFUL_TIMEOUT_S
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", drain.port), timeout=2).close()


def test_a_graceful_timeout_shorter_than_the_request_cuts_it():
    """The other side of the drain: GUNICORN_GRACEFUL_TIMEOUT reaches gunicorn and bounds the wait."""
    # A request of about 4 s would end some 3.5 s after the signal, well past the 1 s allowed.
    drain = _sigterm_during_long_request(graceful_timeout_s=1, long_request_s=4, check=False)
    assert "error" in drain.result, drain.result.get("status")
    assert drain.code == 0
    assert drain.exited_after_s < 3


# --- 3. a stream continued on another server process ------------------------------------------

IMU_FS = 100.0
IMU_WINDOW = 100  # 1 s
STREAM_WINDOWS = 8
OFF_ARM_WINDOW = 50  # 5 s at 10 Hz, shorter than the 10 s heart-rate average: it spans windows
IMU_AXES = load_test.IMU_AXES
RTOL = 1e-9  # in-process against the server


@dataclass
class StreamCase:
    block: str
    axes: list[str]
    fs: float
    params: dict
    windows: np.ndarray  # (windows, samples, axes)

    @property
    def id(self) -> str:
        return f"{self.block}-" + "-".join(f"{v}" for v in self.params.values()) + f"-{len(self.axes)}ax"


def _param(block: str, name: str) -> dict:
    for group in BLOCKS[block].parameters["parameters"]:
        for item in group["items"]:
            if item["param"] == name:
                return item
    raise KeyError(name)


def _imu_windows(seed: int, axes: int, window: int = IMU_WINDOW, step: Optional[int] = None) -> np.ndarray:
    step = step or window
    imu = make_imu_stream(seconds=(STREAM_WINDOWS * step + window) / IMU_FS, fs=IMU_FS, seed=seed)
    columns = np.hstack([imu.acc, imu.gyr, imu.mag])[:, :axes]
    return np.stack([columns[i * step:i * step + window] for i in range(STREAM_WINDOWS)])


def _kalman_cases() -> list[StreamCase]:
    cases = []
    for filter_name in _param("kalman", "filter")["valid"]:
        if filter_name == "weighted":
            # Three redundant sensors of one quantity: the IMU's vertical specific force, each
            # with its own noise (their variances are estimated and carried in the state).
            imu = make_imu_stream(seconds=STREAM_WINDOWS * IMU_WINDOW / IMU_FS, fs=IMU_FS, seed=30)
            rng = np.random.default_rng(30)
            sensors = imu.acc[:, 2:3] + rng.normal(0, [0.05, 0.2, 0.5], (len(imu.acc), 3))
            cases.append(StreamCase("kalman", IMU_AXES[:3], IMU_FS, {"filter": filter_name},
                                    sensors.reshape(STREAM_WINDOWS, IMU_WINDOW, 3)))
            continue
        # With and without the magnetometer: the heading correction is part of the state.
        for axes in (6, 9) if filter_name != "kf" else (6,):
            cases.append(StreamCase("kalman", IMU_AXES[:axes], IMU_FS, {"filter": filter_name},
                                    _imu_windows(10 + axes, axes)))
    # Overlapping windows (1 s, 0.5 s apart): the state handed on is the one mid-window.
    cases.append(StreamCase("kalman", IMU_AXES[:9], IMU_FS, {"filter": "vqf", "window-increase-ms": 500},
                            _imu_windows(40, 9, step=IMU_WINDOW // 2)))
    return cases


def _off_arm_cases() -> list[StreamCase]:
    # What carries state: the motion input's integrator (events) or running average (quantity,
    # magnitude), and always the heart-rate lock's running average.
    cases = []
    for motion_input in _param("fuzzy-off-arm", "motion-input")["valid"]:
        data = load_test._off_arm_windows(5, motion_input).reshape(-1, 3)
        windows = data[:STREAM_WINDOWS * OFF_ARM_WINDOW].reshape(STREAM_WINDOWS, OFF_ARM_WINDOW, 3)
        cases.append(StreamCase("fuzzy-off-arm", load_test.OFF_ARM_AXES, load_test.OFF_ARM_FS,
                                {"motion-input": motion_input}, windows))
    data = load_test._off_arm_windows(6, "events").reshape(-1, 3)
    step = OFF_ARM_WINDOW // 2
    overlapping = np.stack([data[i * step:i * step + OFF_ARM_WINDOW] for i in range(STREAM_WINDOWS)])
    cases.append(StreamCase("fuzzy-off-arm", load_test.OFF_ARM_AXES, load_test.OFF_ARM_FS,
                            {"motion-input": "events", "window-increase-ms": 1000 * step / load_test.OFF_ARM_FS},
                            overlapping))
    return cases


# Each stateful block needs its own data; a new stateful block without cases here fails.
CASE_BUILDERS = {"kalman": _kalman_cases, "fuzzy-off-arm": _off_arm_cases}
CASES = [case for name in STATEFUL if name in CASE_BUILDERS for case in CASE_BUILDERS[name]()]


def test_every_stateful_block_has_stream_cases():
    assert STATEFUL and set(STATEFUL) == set(CASE_BUILDERS)


@pytest.fixture(scope="module")
def two_servers():
    """Two separate server processes (one worker each) hosting the stateful blocks."""
    env = {"WEB_CONCURRENCY": "1", "DSP_BLOCKS": ",".join(STATEFUL), "DSP_BLOCK": STATEFUL[0]}
    with gunicorn(**env) as a, gunicorn(**env) as b:
        yield a, b


def _body(case: StreamCase, features, **state) -> bytes:
    return orjson.dumps({"features": features, "axes": case.axes, "sampling_freq": case.fs,
                         "params": case.params, **state}, option=orjson.OPT_SERIALIZE_NUMPY)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_stream_alternating_between_two_servers_equals_one_pass(two_servers, case):
    path = f"/blocks/{case.block}/"
    connections = [connect(server.port) for server in two_servers]
    try:
        pids = {healthz_pid(0, c) for c in connections}
        assert len(pids) == 2  # two processes: nothing but the state string links the windows
        alternating, state = [], ""
        for i, window in enumerate(case.windows):
            status, answer = post(connections[i % 2], path + "run", _body(case, window.reshape(-1), state_string=state))
            assert status == 200 and answer["success"] is True, answer.get("error")
            alternating.append(answer["features"])
            state = answer["state_string"]
            assert state
        status, one_pass = post(connections[0], path + "batch",
                                _body(case, [w.reshape(-1) for w in case.windows], state=""))
        assert status == 200 and one_pass["success"] is True, one_pass.get("error")
    finally:
        for c in connections:
            c.close()
    got, expected = np.asarray(alternating), np.asarray(one_pass["features"])
    assert got.shape == expected.shape
    # Exact: the state is JSON whose floats round-trip, and both passes run the same code.
    np.testing.assert_array_equal(got, expected)
    # The state must matter here, or equality would prove nothing: windows computed from a fresh
    # state differ from the stream's after the first.
    fresh = np.stack([load_test.in_process(BLOCKS[case.block], w[None], case.axes, case.fs, case.params)[0][0]
                      for w in case.windows])
    np.testing.assert_allclose(fresh[0], expected[0], rtol=RTOL, atol=0)
    assert any(not np.allclose(fresh[i], expected[i], rtol=1e-6, atol=1e-9) for i in range(1, len(fresh)))
