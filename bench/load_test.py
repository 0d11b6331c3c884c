"""`make load-test`: the real server under concurrent clients: zero errors, flat memory.

Starts the server as `make run` does (gunicorn, `gunicorn.conf.py`) on a free loopback port, then
N client threads (default 16), each with its own kept-alive `http.client` connection, send
requests back to back for `--seconds`. Each client works through a shuffled deck of 20 requests:

* 5 x embeddings `/run` (1 s of 16 kHz audio), 2 x spectrogram `/batch` (10 windows),
  5 x spectral-analysis `/run` (2 s of 3-axis accelerometer),
* 3 x kalman `/batch` (5 windows of 6 or 9 IMU axes) and 4 x fuzzy-off-arm `/run`: each client
  has its own stream of each (its own data and filter settings) and passes back the state the
  server gave it (`state` in `/batch`, `state_string` in `/run`), restarting the stream with ""
  at its end,
* 1 x a bad request (5 %): invalid JSON, NaN, an unknown parameter, a window that does not divide
  by its axes, a state made by another block, a missing required axis, or a body declared larger
  than the server's limit (HTTP 413; the client sends the headers and 1 kB only, so no 64 MiB go over
  the wire, then reconnects).

Every answer is checked: good ones must be HTTP 200, `success: true`, finite, and equal (to 1e-9)
the features computed in this process by the same block for the same window, with the state
threaded by hand for the streams, so an answer computed with another client's state or data
counts as an error; bad ones must be HTTP 200 (413) with `success: false` and an error message.
Any other outcome, a dropped connection, a 5xx or traceback in the server log, or a restarted
worker is an unexpected error.

Memory: every second, each gunicorn worker's VmRSS (the master's children, from /proc). After the
warm-up (first `--warmup` seconds, also left out of the latency figures), the run fails when a
worker's RSS at the end exceeds its RSS at the end of the warm-up by more than
`--max-growth-percent` (10 %) or `--max-growth-mb` (30 MB), whichever is smaller. The slope of a
linear fit after the warm-up is reported (MB per minute), not judged.

Exits 1 on any unexpected error or memory growth past the limit.

Usage: `.venv/bin/python bench/load_test.py [--seconds 60] [--clients 16] [--warmup 5] [--output F]`
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import orjson

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bodies import audio_window  # noqa: E402
from run_bench import BIN_DIR, Connection, Server, gunicorn_settings, machine_info, running  # noqa: E402

from dsp.core.block import Block, Request  # noqa: E402
from dsp.core.params import parameter_specs, resolve_params  # noqa: E402
from dsp.registry import all_blocks  # noqa: E402
from dsp_server import DEFAULT_MAX_BODY_MB  # noqa: E402
from tests.imu_stream import make_imu_stream  # noqa: E402

SERVER_COMMAND = [str(BIN_DIR / "gunicorn"), "-c", "gunicorn.conf.py", "dsp_server:create_app()"]
REQUEST_TIMEOUT_S = 60
SAMPLE_EVERY_S = 1.0
# Same block, same window, same state: the server computes what this process computes; 1e-9 only
# absorbs a vectorised batch path summing in another order. A mix-up is off by far more.
RTOL = ATOL = 1e-9

EMBEDDINGS = "embeddings /run"
SPECTROGRAM = "spectrogram /batch"
SPECTRAL = "spectral-analysis /run"
KALMAN = "kalman /batch"
OFF_ARM = "fuzzy-off-arm /run"
BAD = "bad requests"
# Requests of each kind in one client's deck of 20 (shuffled per pass): 5 % bad requests.
DECK = {EMBEDDINGS: 5, SPECTROGRAM: 2, SPECTRAL: 5, KALMAN: 3, OFF_ARM: 4, BAD: 1}
KINDS = list(DECK)

AUDIO_FS = 16000
AUDIO_VARIANTS = 4
SPECTROGRAM_WINDOWS = 10
SPECTROGRAM_VARIANTS = 3
SPECTROGRAM_PARAMS = {"frame_length": 0.032, "frame_stride": 0.024, "fft_length": 128, "noise_floor_db": -85}
ACC_AXES = ["accX", "accY", "accZ"]
ACC_FS = 62.5
ACC_SAMPLES = 128
SPECTRAL_PARAMS = [
    {},
    {"fft-length": 64, "filter-type": "low", "filter-cutoff": 8},
    {"analysis-type": "Wavelet", "wavelet": "db4", "wavelet-level": 2},
    {"input-decimation-ratio": "3", "filter-type": "high", "filter-cutoff": 1},
]
IMU_FS = 100.0
IMU_WINDOW = 100  # samples: 1 s
IMU_WINDOWS_PER_REQUEST = 5
IMU_STREAM_WINDOWS = 40
IMU_AXES = ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ", "magX", "magY", "magZ"]
KALMAN_FILTERS = ["vqf", "ekf", "madgwick", "mahony", "complementary", "kf"]
OFF_ARM_FS = 10.0
OFF_ARM_WINDOW = 100  # samples: 10 s
OFF_ARM_STREAM_WINDOWS = 30
OFF_ARM_AXES = ["light", "motion", "hr_locked"]
MOTION_INPUTS = ["events", "quantity", "magnitude"]
INFERENCES = ["centroid", "bisector", "mom", "sugeno"]


# --- in-process expectations ------------------------------------------------------------------

def in_process(block: Block, windows: np.ndarray, axes: list[str], fs: float, params: dict,
               batch: bool = False) -> tuple[np.ndarray, list[str]]:
    """Features (windows, n) and the state after each window, as the server computes them.

    Mirrors the server: `/batch` uses the block's `compute_batch` when it has one, otherwise
    `compute` per window with the state threaded from each window into the next.
    """
    request = Request(raw=windows, axes=axes, sampling_freq=fs, implementation_version=block.latest_version,
                      params=resolve_params(parameter_specs(block.parameters), params))
    if batch and block.compute_batch is not None:
        return np.asarray(block.compute_batch(request).features, dtype=np.float64), []
    rows, states, state = [], [], ""
    for window in windows:
        request.raw, request.state = window, state
        result = block.compute(request)
        rows.append(np.asarray(result.features, dtype=np.float64).reshape(-1))
        state = result.state
        states.append(state)
    return np.stack(rows), states


def mismatch(features, expected: np.ndarray) -> Optional[str]:
    """Why `features` (the answer's list) is not the expected (windows, n) array, or None."""
    got = np.asarray(features, dtype=np.float64)
    if got.size != expected.size:
        return f"{got.size} features, expected {expected.size}"
    if not np.all(np.isfinite(got)):
        return "non-finite features"
    got = got.reshape(expected.shape)
    if not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
        row = int(np.argmax(np.any(~np.isclose(got, expected, rtol=RTOL, atol=ATOL), axis=-1))) if got.ndim > 1 else 0
        worst = float(np.max(np.abs(got - expected)))
        return f"features differ from the in-process computation (window {row}, max |diff| {worst:.3g})"
    return None


@dataclass
class Fixed:
    """A stateless request: encoded once, answer known in advance."""

    path: str
    body: bytes
    expected: np.ndarray


@dataclass
class BadRequest:
    name: str
    path: str
    body: bytes
    status: int = 200
    declared_length: Optional[int] = None  # headers only, claiming this Content-Length


class Stream:
    """One client's stateful stream: its windows, their in-process features, and the client's place.

    The client sends `per_request` windows at a time and keeps the state the server returns;
    `verify` compares the answer with the in-process features of exactly those windows, which
    the server can only produce with this stream's own state.
    """

    def __init__(self, block: Block, route: str, axes: list[str], fs: float, params: dict,
                 windows: np.ndarray, per_request: int):
        self.block, self.route, self.axes, self.fs, self.params = block, route, axes, fs, params
        self.windows, self.per_request = windows, per_request
        self.expected, self.states = in_process(block, windows, axes, fs, params)
        self.position, self.state = 0, ""
        self.continued = 0  # requests sent with a non-empty state: the streams were carried on

    @property
    def path(self) -> str:
        return f"/blocks/{self.block.name}/{self.route}"

    def next_body(self) -> tuple[bytes, slice]:
        if self.position + self.per_request > len(self.windows):
            self.position, self.state = 0, ""  # a new stream, as for the next sample in Studio
        chunk = slice(self.position, self.position + self.per_request)
        flat = [window.reshape(-1) for window in self.windows[chunk]]
        body = {"axes": self.axes, "sampling_freq": self.fs, "params": self.params}
        if self.route == "batch":
            body.update(features=flat, state=self.state)
        else:
            body.update(features=flat[0], state_string=self.state)
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), chunk

    def verify(self, answer: dict, chunk: slice) -> Optional[str]:
        """Check the answer for `chunk`; on success move on with the returned state."""
        problem = mismatch(answer.get("features"), self.expected[chunk])
        state = answer.get("state" if self.route == "batch" else "state_string")
        if problem is None and not (isinstance(state, str) and state):
            problem = "no state in the answer"
        if problem is not None:
            self.position, self.state = 0, ""  # start over so one error does not cascade
            return f"{problem} (stream window {chunk.start})"
        self.continued += bool(self.state)
        self.position, self.state = chunk.stop, state
        return None


@dataclass
class Workload:
    """Everything the clients send, with the answers computed in this process."""

    embeddings: list[Fixed]
    spectrograms: list[Fixed]
    spectral: list[Fixed]
    kalman: list[Stream]
    off_arm: list[Stream]
    bad: list[list[BadRequest]]  # per client


def _fixed(block: Block, route: str, windows: np.ndarray, axes: list[str], fs: float, params: dict) -> Fixed:
    expected, _ = in_process(block, windows, axes, fs, params, batch=route == "batch")
    flat = [window.reshape(-1) for window in windows]
    body = {"features": flat if route == "batch" else flat[0], "axes": axes, "sampling_freq": fs, "params": params}
    return Fixed(f"/blocks/{block.name}/{route}", orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                 expected if route == "batch" else expected[0])


def _off_arm_windows(client: int, motion_input: str) -> np.ndarray:
    """Light with steps, heart-rate lock toggling, motion of the client's input kind."""
    rng = np.random.default_rng(1000 + client)
    n = OFF_ARM_WINDOW * OFF_ARM_STREAM_WINDOWS
    light = np.repeat(rng.uniform(0, 300, n // 50 + 1), 50)[:n]
    hr_locked = np.repeat(rng.integers(0, 2, n // 80 + 1), 80)[:n].astype(float)
    if motion_input == "events":
        motion = rng.choice([0.0, 1.0, -1.0], size=n, p=[0.85, 0.12, 0.03])
    elif motion_input == "quantity":
        motion = rng.uniform(0, 1, n)
    else:
        motion = np.abs(9.80665 + rng.normal(0, 1.5, n))
    return np.stack([light, motion, hr_locked], axis=1).reshape(OFF_ARM_STREAM_WINDOWS, OFF_ARM_WINDOW, 3)


def build_workload(clients: int, blocks: Optional[dict[str, Block]] = None) -> Workload:
    blocks = blocks or all_blocks()
    audio = np.stack([audio_window(seed) for seed in range(AUDIO_VARIANTS + SPECTROGRAM_WINDOWS
                                                           * SPECTROGRAM_VARIANTS)]).astype(np.float64)
    embeddings = [_fixed(blocks["embeddings"], "run", audio[i:i + 1, :, None], ["audio"], AUDIO_FS, {})
                  for i in range(AUDIO_VARIANTS)]
    spectrograms = [
        _fixed(blocks["spectrogram"], "batch",
               audio[AUDIO_VARIANTS + v * SPECTROGRAM_WINDOWS:][:SPECTROGRAM_WINDOWS, :, None],
               ["audio"], AUDIO_FS, dict(SPECTROGRAM_PARAMS))
        for v in range(SPECTROGRAM_VARIANTS)]
    rng = np.random.default_rng(7)
    t = np.arange(ACC_SAMPLES) / ACC_FS
    spectral = []
    for v, params in enumerate(SPECTRAL_PARAMS):
        motion = np.stack([np.sin(2 * np.pi * (1.5 + v) * t), 0.5 * np.cos(2 * np.pi * 3.0 * t),
                           9.81 + 0.2 * np.sin(2 * np.pi * 0.7 * t)], axis=1)
        window = motion + rng.normal(0, 0.05, motion.shape)
        spectral.append(_fixed(blocks["spectral-analysis"], "run", window[None], ACC_AXES, ACC_FS, params))

    kalman, off_arm, bad = [], [], []
    for client in range(clients):
        imu = make_imu_stream(seconds=IMU_STREAM_WINDOWS * IMU_WINDOW / IMU_FS, fs=IMU_FS, seed=100 + client)
        axes = IMU_AXES if client % 2 else IMU_AXES[:6]
        columns = np.hstack([imu.acc, imu.gyr, imu.mag])[:, :len(axes)]
        windows = columns[:IMU_STREAM_WINDOWS * IMU_WINDOW].reshape(IMU_STREAM_WINDOWS, IMU_WINDOW, len(axes))
        kalman.append(Stream(blocks["kalman"], "batch", axes, IMU_FS,
                             {"filter": KALMAN_FILTERS[client % len(KALMAN_FILTERS)]},
                             windows, IMU_WINDOWS_PER_REQUEST))
        motion_input = MOTION_INPUTS[client % len(MOTION_INPUTS)]
        off_arm.append(Stream(blocks["fuzzy-off-arm"], "run", OFF_ARM_AXES, OFF_ARM_FS,
                              {"motion-input": motion_input, "inference": INFERENCES[client % len(INFERENCES)]},
                              _off_arm_windows(client, motion_input), 1))
        bad.append(bad_requests(spectral[0], kalman[-1], off_arm[-1].states[0], client))
    return Workload(embeddings, spectrograms, spectral, kalman, off_arm, bad)


def bad_requests(spectral: Fixed, kalman: Stream, foreign_state: str, client: int) -> list[BadRequest]:
    """The bad requests one client cycles through, starting at a different one per client."""
    good = orjson.loads(spectral.body)
    limit = int(float(os.environ.get("DSP_MAX_BODY_MB", DEFAULT_MAX_BODY_MB)) * 1024 * 1024)
    imu_body = orjson.loads(kalman.next_body()[0])
    kalman.position = 0
    kalman_path = kalman.path

    def body(**changes) -> bytes:
        return orjson.dumps({**good, **changes})

    nan_text = body(features=[1.0] + good["features"][1:]).replace(b"[1.0,", b"[NaN,", 1)
    cases = [
        BadRequest("invalid JSON", spectral.path, spectral.body[:200]),
        BadRequest("NaN", spectral.path, nan_text),
        BadRequest("unknown parameter", spectral.path, body(params={"fft-lenght": 16})),
        BadRequest("wrong axis count", spectral.path, body(features=good["features"][:-1])),
        BadRequest("state from another block", kalman_path, orjson.dumps({**imu_body, "state": foreign_state})),
        BadRequest("missing required axis", kalman_path, orjson.dumps(
            {**imu_body, "axes": ["accX", "accY"],
             "features": [window[:len(window) // len(kalman.axes) * 2] for window in imu_body["features"]]})),
        BadRequest("oversized body", spectral.path, spectral.body[:1000], status=413, declared_length=limit + 1),
    ]
    shift = client % len(cases)
    return cases[shift:] + cases[:shift]


# --- clients ----------------------------------------------------------------------------------

@dataclass
class KindTally:
    requests: int = 0
    measured_latencies_s: list[float] = field(default_factory=list)  # after the warm-up
    unexpected: int = 0


@dataclass
class Tally:
    kinds: dict[str, KindTally] = field(default_factory=lambda: {kind: KindTally() for kind in KINDS})
    bad_by_name: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, elapsed_s: float, measured: bool, problem: Optional[str], bad_name: str = ""):
        with self.lock:
            tally = self.kinds[kind]
            tally.requests += 1
            if measured:
                tally.measured_latencies_s.append(elapsed_s)
            if bad_name:
                self.bad_by_name[bad_name] = self.bad_by_name.get(bad_name, 0) + 1
            if problem is not None:
                tally.unexpected += 1
                self.problems.append(f"{kind}{' (' + bad_name + ')' if bad_name else ''}: {problem}")


def post(connection: Connection, path: str, body: bytes, declared_length: Optional[int] = None) -> tuple[int, bytes]:
    if declared_length is None:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
    else:
        # Only the start of the body: the server must refuse on the declared length alone.
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(declared_length))
        connection.endheaders(body)
    response = connection.getresponse()
    return response.status, response.read()


def check_good(status: int, data: bytes, verify: Callable[[dict], Optional[str]]) -> Optional[str]:
    if status != 200:
        return f"HTTP {status}: {data[:200]!r}"
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        return f"answer is not JSON: {data[:200]!r}"
    if answer.get("success") is not True:
        return f"success {answer.get('success')!r}: {answer.get('error')}"
    return verify(answer)


def check_bad(status: int, data: bytes, expected_status: int) -> Optional[str]:
    if status != expected_status:
        return f"HTTP {status}, expected {expected_status}: {data[:200]!r}"
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        return f"answer is not JSON: {data[:200]!r}"
    if answer.get("success") is not False or not isinstance(answer.get("error"), str) or not answer["error"]:
        return f"expected success false with an error message, got {data[:200]!r}"
    return None


def client_loop(client: int, port: int, workload: Workload, tally: Tally, warm_until: float, stop_at: float):
    rng = random.Random(client)
    deck = [kind for kind, count in DECK.items() for _ in range(count)]
    bad_cycle = workload.bad[client]
    kalman, off_arm = workload.kalman[client], workload.off_arm[client]
    connection = Connection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    sent_bad = 0
    try:
        while time.monotonic() < stop_at:
            rng.shuffle(deck)
            for kind in deck:
                if time.monotonic() >= stop_at:
                    break
                declared_length, bad_name, expected_status = None, "", 200
                if kind == BAD:
                    case = bad_cycle[sent_bad % len(bad_cycle)]
                    sent_bad += 1
                    path, body, bad_name = case.path, case.body, case.name
                    declared_length, expected_status = case.declared_length, case.status
                    verify = None
                elif kind in (KALMAN, OFF_ARM):
                    stream = kalman if kind == KALMAN else off_arm
                    body, chunk = stream.next_body()
                    path = stream.path
                    verify = lambda answer, stream=stream, chunk=chunk: stream.verify(answer, chunk)  # noqa: E731
                else:
                    fixed = rng.choice({EMBEDDINGS: workload.embeddings, SPECTROGRAM: workload.spectrograms,
                                        SPECTRAL: workload.spectral}[kind])
                    path, body = fixed.path, fixed.body
                    verify = lambda answer, fixed=fixed: mismatch(answer.get("features"), fixed.expected)  # noqa: E731
                started = time.monotonic()
                start = time.perf_counter()
                try:
                    status, data = post(connection, path, body, declared_length)
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()
                    if kind in (KALMAN, OFF_ARM):
                        stream.position, stream.state = 0, ""
                    tally.record(kind, 0.0, False, f"connection error: {exc!r}", bad_name)
                    continue
                elapsed = time.perf_counter() - start
                if declared_length is not None:
                    connection.close()  # the declared body was never sent: this connection is spent
                problem = check_bad(status, data, expected_status) if kind == BAD else check_good(status, data, verify)
                tally.record(kind, elapsed, started >= warm_until, problem, bad_name)
    finally:
        connection.close()


# --- memory -----------------------------------------------------------------------------------

def children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid` (gunicorn's workers are the master's children)."""
    children = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name before it may contain spaces, so split after ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


def rss_mb(pid: int) -> Optional[float]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class MemorySampler(threading.Thread):
    """Every second, each worker's RSS (MB) and the worker set (a change means a restart)."""

    def __init__(self, master_pid: int, t0: float):
        super().__init__(daemon=True)
        self.master_pid, self.t0 = master_pid, t0
        self.samples: list[tuple[float, dict[int, float]]] = []
        self.worker_sets: set[tuple[int, ...]] = set()
        self.done = threading.Event()

    def sample(self):
        workers = children_of(self.master_pid)
        self.worker_sets.add(tuple(workers))
        rss = {pid: value for pid in workers if (value := rss_mb(pid)) is not None}
        self.samples.append((time.monotonic() - self.t0, rss))

    def run(self):
        while not self.done.wait(SAMPLE_EVERY_S - (time.monotonic() - self.t0) % SAMPLE_EVERY_S):
            self.sample()


@dataclass
class WorkerMemory:
    pid: int
    idle_mb: float
    start_mb: float  # first sample after the warm-up
    end_mb: float
    max_mb: float
    slope_mb_per_min: float

    @property
    def growth_mb(self) -> float:
        return self.end_mb - self.start_mb


def worker_memory(idle: dict[int, float], samples: list[tuple[float, dict[int, float]]],
                  warmup_s: float) -> list[WorkerMemory]:
    rows = []
    for pid, idle_mb in idle.items():
        series = [(t, rss[pid]) for t, rss in samples if pid in rss]
        after = [(t, mb) for t, mb in series if t >= warmup_s]
        if len(after) < 2:
            continue
        times, values = np.array(after).T
        slope = float(np.polyfit(times / 60.0, values, 1)[0])
        rows.append(WorkerMemory(pid, idle_mb, after[0][1], after[-1][1], max(mb for _, mb in series), slope))
    return rows


# --- the run ----------------------------------------------------------------------------------

SERVER_LOG_PROBLEMS = ("Traceback", "unhandled error", "WORKER TIMEOUT", '"status":5')


@dataclass
class LoadResult:
    seconds: float
    warmup_s: float
    clients: int
    settings: str
    load_before: str
    load_after: str
    tally: Tally
    memory: list[WorkerMemory]
    workers: int
    problems: list[str]  # every unexpected error: clients', server log's, worker restarts
    streams_continued: int  # stateful requests sent with a state the server had returned
    memory_samples: list[tuple[float, dict[int, float]]]  # (seconds since the load started, pid -> MB)

    def memory_failures(self, max_growth_mb: float, max_growth_percent: float) -> list[str]:
        failures = []
        for row in self.memory:
            limit = min(max_growth_mb, row.start_mb * max_growth_percent / 100)
            if row.growth_mb > limit:
                failures.append(f"worker {row.pid} grew {row.growth_mb:.1f} MB after the warm-up "
                                f"({row.start_mb:.1f} -> {row.end_mb:.1f} MB), limit {limit:.1f} MB")
        return failures


def run_load(seconds: float = 60, clients: int = 16, warmup_s: float = 5) -> LoadResult:
    print(f"computing the expected answers for {clients} clients in process...", flush=True)
    workload = build_workload(clients)
    server = Server("load", SERVER_COMMAND, "", "")
    settings = gunicorn_settings()
    load_before = _load_average()
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="dsp-load-") as log_dir:
        with running(server, Path(log_dir)) as server:
            master = server.process.pid
            expected_workers = configured_workers()
            deadline = time.monotonic() + 30
            while len(children_of(master)) < expected_workers and time.monotonic() < deadline:
                time.sleep(0.1)
            workers = children_of(master)
            idle = {pid: rss_mb(pid) for pid in workers}
            print(f"server ready on :{server.port} ({settings}, workers {workers}); "
                  f"{clients} clients for {seconds:g} s...", flush=True)
            t0 = time.monotonic()
            sampler = MemorySampler(master, t0)
            sampler.sample()
            sampler.start()
            threads = [threading.Thread(target=client_loop, args=(c, server.port, workload, tally, t0 + warmup_s,
                                                                  t0 + seconds), daemon=True)
                       for c in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            sampler.done.set()
            sampler.join()
            sampler.sample()
        log_text = server.log_path.read_text(errors="replace")

    problems = list(tally.problems)
    problems += [f"server log: {line[:300]}" for line in log_text.splitlines()
                 if any(marker in line for marker in SERVER_LOG_PROBLEMS)]
    if len(workers) != expected_workers:
        problems.append(f"{len(workers)} workers running, expected {expected_workers}")
    for worker_set in sorted(sampler.worker_sets):
        # The final sample may catch the shutdown; before that, the set must never change.
        if worker_set != tuple(workers):
            problems.append(f"worker set changed from {workers} to {list(worker_set)} (a worker restarted)")
    return LoadResult(seconds, warmup_s, clients, settings, load_before, _load_average(), tally,
                      worker_memory(idle, sampler.samples, warmup_s), len(workers), problems,
                      sum(s.continued for s in workload.kalman + workload.off_arm), sampler.samples)


def configured_workers() -> int:
    # In a child process: reading the file sets up a metrics directory in the reader's environment.
    code = "import runpy, sys; print(runpy.run_path(sys.argv[1]).get('workers', 1))"
    found = subprocess.run([sys.executable, "-c", code, str(REPO_ROOT / "gunicorn.conf.py")],
                           capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    return int(found.stdout.strip())


def _load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


# --- report -----------------------------------------------------------------------------------

def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def report(result: LoadResult, command: str, max_growth_mb: float, max_growth_percent: float) -> str:
    machine = machine_info()
    measured_s = result.seconds - result.warmup_s
    memory_failures = result.memory_failures(max_growth_mb, max_growth_percent)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mix = ", ".join(f"{count} {kind}" for kind, count in DECK.items())
    lines = [
        "# Load test",
        "",
        f"Written by `{command}` on {now}.",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores; Python {machine['python']}; {machine['versions']}",
        f"- Load average (1/5/15 min): {result.load_before} before the run, {result.load_after} after it"
        " (the clients run on the same machine as the server)",
        f"- Server: `gunicorn -c gunicorn.conf.py \"dsp_server:create_app()\"` ({result.settings}), loopback",
        f"- Clients: {result.clients} threads, one kept-alive `http.client` connection each, requests back to"
        f" back (no think time) for {result.seconds:g} s; figures exclude the first {result.warmup_s:g} s"
        " (warm-up), checks cover every request",
        f"- Mix, per 20 requests of each client (shuffled): {mix}. Embeddings: 1 s of 16 kHz audio; spectrogram:"
        f" {SPECTROGRAM_WINDOWS} such windows; spectral analysis: {ACC_SAMPLES} samples x 3 axes at {ACC_FS:g} Hz;"
        f" kalman: {IMU_WINDOWS_PER_REQUEST} windows of {IMU_WINDOW} samples x 6 or 9 axes at {IMU_FS:g} Hz;"
        f" fuzzy-off-arm: {OFF_ARM_WINDOW} samples x 3 axes at {OFF_ARM_FS:g} Hz",
        "- Checks: every good answer equals (to 1e-9) the same block's features computed in the load"
        " tester's process; each client's kalman and fuzzy-off-arm streams carry the state the server"
        f" returned ({result.streams_continued} requests continued a stream), so cross-talk between"
        " clients would show as a mismatch; bad requests must get `success: false` (HTTP 413 for the"
        " oversized body)",
        "",
        "| route | requests | requests/s | p50 | p99 | unexpected errors |",
        "|---|---|---|---|---|---|",
    ]
    total_measured = 0
    for kind in KINDS:
        tally = result.tally.kinds[kind]
        latencies = tally.measured_latencies_s
        total_measured += len(latencies)
        p50, p99 = (np.percentile(latencies, q) if latencies else float("nan") for q in (50, 99))
        lines.append(f"| {kind} | {tally.requests} | {len(latencies) / measured_s:.1f} | {ms(p50)} | {ms(p99)} |"
                     f" {tally.unexpected} |")
    total = sum(tally.requests for tally in result.tally.kinds.values())
    lines += [
        f"| **all** | {total} | {total_measured / measured_s:.1f} | | | {len(result.problems)} |",
        "",
        "Bad requests sent: " + ", ".join(f"{name} {count}" for name, count in sorted(result.tally.bad_by_name.items()))
        + ".",
        "",
        f"Memory per worker (VmRSS, MB; sampled every {SAMPLE_EVERY_S:g} s):",
        "",
        "| worker | idle, before the load | after the warm-up | end | max | growth after the warm-up | slope after the warm-up |",
        "|---|---|---|---|---|---|---|",
        *[f"| {row.pid} | {row.idle_mb:.1f} | {row.start_mb:.1f} | {row.end_mb:.1f} | {row.max_mb:.1f} |"
          f" {row.growth_mb:+.1f} | {row.slope_mb_per_min:+.2f} MB/min |" for row in result.memory],
        "",
        f"Rule: fail on any unexpected error (a good request not answered exactly, a bad one not refused"
        f" cleanly, a connection error, a 5xx or traceback in the server log, a worker restart), or when a"
        f" worker's RSS at the end exceeds its RSS after the warm-up by more than {max_growth_percent:g} % or"
        f" {max_growth_mb:g} MB, whichever is smaller.",
        "",
        f"Result: **{'PASS' if not result.problems and not memory_failures else 'FAIL'}**"
        f" ({len(result.problems)} unexpected errors"
        + (f"; {'; '.join(memory_failures)}" if memory_failures else "; memory within the limit") + ").",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="length of the load, warm-up included")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--warmup", type=float, default=5, help="seconds left out of the figures and the memory rule")
    parser.add_argument("--max-growth-mb", type=float, default=30)
    parser.add_argument("--max-growth-percent", type=float, default=10)
    parser.add_argument("--output", type=Path, help="also write the markdown section to this file")
    args = parser.parse_args()
    if args.seconds <= args.warmup + 2:
        parser.error("--seconds must exceed --warmup by more than 2 s")
    # `kill` of the runner must stop the server too: turn SIGTERM into a normal exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    result = run_load(args.seconds, args.clients, args.warmup)
    command = "python bench/load_test.py " + " ".join(sys.argv[1:])
    text = report(result, command.strip(), args.max_growth_mb, args.max_growth_percent)
    print(text)
    for problem in result.problems[:20]:
        print(f"unexpected: {problem}", file=sys.stderr)
    if len(result.problems) > 20:
        print(f"... and {len(result.problems) - 20} more", file=sys.stderr)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    failed = result.problems or result.memory_failures(args.max_growth_mb, args.max_growth_percent)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
