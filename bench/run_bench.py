"""`make bench`: the project server against an official-style baseline, side by side.

Starts both servers on free loopback ports, measures `/run` latency and `/batch` throughput on
the spectrogram block (bodies from `bench/bodies.py`, encoded once), measures the JSON floor of
the batch body in this process, times the fusion blocks' numerics beside the libraries they
replace (`bench/bench_fuzzy.py`, `bench/bench_kalman.py`), checks the product's bars and writes
`BENCHMARKS.md`.
Exits 1 when a bar fails (the file is written either way).

Usage: `.venv/bin/python bench/run_bench.py [--run-requests N] [--batch-repeats N] [--output F]`
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import runpy
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import bench_fuzzy
import bench_kalman
import numpy as np
import orjson
import simdjson
from bodies import FEATURES_PER_WINDOW, IMPLEMENTATION_VERSION, SAMPLING_FREQ, SPECTROGRAM_PARAMS, batch_body, run_body

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
BATCH_WINDOWS = 100
RUN_WARMUP = 200
# A server's first few 10 MB batches run 2-4x slower than its steady state (each gthread thread
# and its allocator arena warming up): time the steady state.
BATCH_WARMUP = 10
# Requests go to the two servers in alternating chunks, so drift in the machine's load (other
# work on a shared 2-core box) hits both alike instead of biasing whichever ran second. Chunks,
# not single requests, so each server is timed warm, as under a steady stream of requests.
RUN_CHUNK = 100
BATCH_CHUNK = 5
FLOOR_REPEATS = 15
READY_TIMEOUT_S = 60


class Connection(http.client.HTTPConnection):
    """Kept-alive HTTP connection without Nagle's algorithm, so no request waits on a delayed ACK."""

    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class Server:
    """A server under test: how to start it, where its routes are, what it measured."""

    name: str
    command: list[str]
    run_path: str
    batch_path: str
    port: int = 0
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    connection: Connection | None = None
    run_latencies_s: list[float] = field(default_factory=list)
    batch_times_s: list[float] = field(default_factory=list)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running(server: Server, log_dir: Path):
    """Start the server, wait until GET / answers, and always stop it (its whole process group)."""
    server.port = free_port()
    server.log_path = log_dir / f"{server.name}.log"
    env = dict(os.environ, HOST="127.0.0.1", PORT=str(server.port))
    with open(server.log_path, "wb") as log:
        # Own session: Ctrl-C reaches only this runner, which then stops the server cleanly, and
        # the process group lets us stop gunicorn's workers with their master.
        server.process = subprocess.Popen(server.command, cwd=REPO_ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(server)
        server.connection = Connection("127.0.0.1", server.port, timeout=300)
        yield server
    finally:
        if server.connection is not None:
            server.connection.close()
        stop(server.process)


def stop(process: subprocess.Popen) -> None:
    for sig, grace_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue


def wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} server exited with {server.process.returncode}:\n"
                               f"{server.log_tail()}")
        probe = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
        try:
            probe.request("GET", "/")
            if probe.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            probe.close()
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} server not ready after {READY_TIMEOUT_S} s:\n{server.log_tail()}")


def post(server: Server, path: str, body: bytes) -> tuple[float, bytes]:
    """POST a pre-encoded body on the kept-alive connection; (seconds, response bytes)."""
    connection = server.connection
    start = time.perf_counter()
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - start
    if response.status != 200:
        raise RuntimeError(f"{server.name} {path}: HTTP {response.status}: {data[:300]!r}")
    return elapsed, data


def checked_features(server: Server, path: str, body: bytes, windows: int) -> tuple[np.ndarray, int]:
    """One request whose answer is parsed and checked, so a fast error never counts as a result.

    Returns the features as (windows, FEATURES_PER_WINDOW) and the response length; timed
    responses must have that exact length (same input, same float formatting).
    """
    _, data = post(server, path, body)
    answer = json.loads(data)
    if answer.get("success") is False:
        raise RuntimeError(f"{server.name} {path} failed: {answer.get('error')}")
    features = np.asarray(answer["features"], dtype=np.float64).reshape(windows, -1)
    if features.shape[1] != FEATURES_PER_WINDOW:
        raise RuntimeError(f"{server.name} {path}: {features.shape[1]} features per window, "
                           f"expected {FEATURES_PER_WINDOW}")
    return features, len(data)


def timed(server: Server, path: str, body: bytes, expected_length: int) -> float:
    elapsed, data = post(server, path, body)
    if len(data) != expected_length:
        raise RuntimeError(f"{server.name} {path}: answer changed ({len(data)} bytes, expected "
                           f"{expected_length}): {data[:300]!r}")
    return elapsed


def in_alternating_chunks(servers: list[Server], total: int, chunk: int, measure_once) -> None:
    for start in range(0, total, chunk):
        for server in servers:
            for _ in range(min(chunk, total - start)):
                measure_once(server)


def measure_servers(servers: list[Server], run_requests: int, batch_repeats: int,
                    run_bytes: bytes, batch_bytes: bytes) -> dict[str, np.ndarray]:
    """Check, warm up, then time both servers in alternation. Returns each server's batch features."""
    expected, batch_features = {}, {}
    for server in servers:
        _, run_length = checked_features(server, server.run_path, run_bytes, 1)
        batch_features[server.name], batch_length = checked_features(
            server, server.batch_path, batch_bytes, BATCH_WINDOWS)
        expected[server.name] = run_length, batch_length
        for _ in range(RUN_WARMUP):
            timed(server, server.run_path, run_bytes, run_length)
        for _ in range(BATCH_WARMUP):
            timed(server, server.batch_path, batch_bytes, batch_length)

    in_alternating_chunks(servers, run_requests, RUN_CHUNK, lambda server: server.run_latencies_s.append(
        timed(server, server.run_path, run_bytes, expected[server.name][0])))
    in_alternating_chunks(servers, batch_repeats, BATCH_CHUNK, lambda server: server.batch_times_s.append(
        timed(server, server.batch_path, batch_bytes, expected[server.name][1])))
    return batch_features


def median_seconds(action, repeats: int = FLOOR_REPEATS) -> float:
    action()  # warm-up: first-touch allocations are not part of the steady state
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return float(np.median(timings))


def measure_json_floor(batch_bytes: bytes, result: np.ndarray) -> dict[str, float]:
    """Fastest known JSON decode of the batch body and encode of its result, in this process.

    The floor decodes with a parser that is reused, as the server reuses one per thread: a fresh
    parser first allocates buffers for the 10 MB document, which costs more than the parsing
    (that figure is recorded too).
    """
    reused_parser = simdjson.Parser()

    def windows_of(document):
        return [np.frombuffer(window.as_buffer(of_type="d"), dtype=np.float64)
                for window in document["features"]]

    def decode_simdjson():
        return windows_of(reused_parser.parse(batch_bytes))

    def decode_simdjson_fresh_parser():
        return windows_of(simdjson.Parser().parse(batch_bytes))

    def decode_orjson():
        return np.asarray(orjson.loads(batch_bytes)["features"], dtype=np.float64)

    def encode_orjson():
        return orjson.dumps({"success": True, "features": result}, option=orjson.OPT_SERIALIZE_NUMPY)

    decoded = decode_simdjson()
    if len(decoded) != BATCH_WINDOWS or not all(w.size == decoded[0].size for w in decoded):
        raise RuntimeError("pysimdjson decode of the batch body gave the wrong windows")
    floor = {
        "decode_simdjson": median_seconds(decode_simdjson),
        "decode_simdjson_fresh_parser": median_seconds(decode_simdjson_fresh_parser),
        "encode_orjson": median_seconds(encode_orjson),
        "decode_orjson": median_seconds(decode_orjson),
    }
    floor["floor"] = floor["decode_simdjson"] + floor["encode_orjson"]
    return floor


def measure_in_process(batch_bytes: bytes) -> dict[str, float]:
    """The spectrogram block and its graph alone, in this process (no HTTP, no JSON)."""
    sys.path.insert(0, str(REPO_ROOT))
    from dsp.core.block import Request
    from dsp.core.params import parameter_specs, resolve_params
    from dsp.graphs import image_graph
    from dsp.registry import all_blocks

    block = all_blocks()["spectrogram"]
    windows = np.asarray(orjson.loads(batch_bytes)["features"], dtype=np.float64)
    params = resolve_params(parameter_specs(block.parameters), SPECTROGRAM_PARAMS)
    request = Request(raw=windows[:, :, np.newaxis], axes=["audio"], sampling_freq=SAMPLING_FREQ,
                      implementation_version=IMPLEMENTATION_VERSION, params=params)
    batch_s = median_seconds(lambda: block.compute_batch(request))
    spectrogram = block.compute_batch(request).features[0].reshape(41, 65)
    # The embeddings block on the same windows: its front-end (the tutorial spectrogram, from
    # the default model's metadata) and the int8 embedder, as /batch runs them.
    embeddings = all_blocks()["embeddings"]
    embeddings_request = Request(raw=request.raw, axes=["audio"], sampling_freq=SAMPLING_FREQ,
                                 implementation_version=1, params={})
    embeddings_s = median_seconds(lambda: embeddings.compute_batch(embeddings_request))
    return {"block_windows_per_s": len(windows) / batch_s,
            "embeddings_windows_per_s": len(windows) / embeddings_s,
            "graph": median_seconds(lambda: image_graph("Spectrogram", spectrogram), repeats=50)}


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {name: metadata.version(name)
                for name in ("numpy", "orjson", "pysimdjson", "flask", "gunicorn")}
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "versions": ", ".join(f"{name} {version}" for name, version in versions.items()),
        "load": " / ".join(f"{value:.2f}" for value in os.getloadavg()),
    }


def gunicorn_settings() -> str:
    """Workers and threads as gunicorn.conf.py resolves them in this environment."""
    config = runpy.run_path(str(REPO_ROOT / "gunicorn.conf.py"))
    return (f"worker_class {config.get('worker_class', 'sync')}, "
            f"{config.get('workers', 1)} workers x {config.get('threads', 1)} threads")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def report(project: Server, baseline: Server, floor: dict[str, float], in_process: dict[str, float],
           machine: dict[str, str], agreement: float, run_requests: int, batch_repeats: int,
           batch_body_size: int, fusion: list[dict]) -> tuple[str, bool]:
    """BENCHMARKS.md text and whether every bar passed."""
    run_p50, run_p99 = (np.percentile(project.run_latencies_s, q) for q in (50, 99))
    base_p50, base_p99 = (np.percentile(baseline.run_latencies_s, q) for q in (50, 99))
    batch_s, base_batch_s = np.median(project.batch_times_s), np.median(baseline.batch_times_s)
    rate, base_rate = BATCH_WINDOWS / batch_s, BATCH_WINDOWS / base_batch_s

    bars = [
        ("`/run` p50 <= 0.5 x baseline p50", f"{run_p50 / base_p50:.2f} x", run_p50 <= 0.5 * base_p50),
        ("`/batch` windows/s >= 4 x baseline", f"{rate / base_rate:.2f} x", rate >= 4 * base_rate),
        ("`/batch` time per 100 windows <= 2 x JSON floor", f"{batch_s / floor['floor']:.2f} x",
         batch_s <= 2 * floor["floor"]),
        ("spectrogram graph (`draw_graphs`, 41 x 65 PNG) < 15 ms", ms(in_process["graph"]),
         in_process["graph"] < 0.015),
        ("embeddings block in process (front-end + int8 model) > 10,000 windows/s",
         f"{in_process['embeddings_windows_per_s']:,.0f} windows/s",
         in_process["embeddings_windows_per_s"] > 10_000),
        *[(f"{row['name']} < {row['bar']:g} {row['unit']}", f"{row['figure']:.2f} {row['unit']}",
           row["figure"] < row["bar"]) for row in fusion if row["bar"]],
    ]
    all_passed = all(passed for *_, passed in bars)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`bench/run_bench.py`) on {now}. Figures depend on the machine and",
        "its load; compare the ratios, which come from both servers measured side by side in one run.",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores",
        f"- Python {machine['python']}; {machine['versions']}",
        f"- Load average (1/5/15 min) when the run started: {machine['load']}",
        "",
        "## Set-up",
        "",
        f"- Project: `gunicorn -c gunicorn.conf.py \"dsp_server:create_app()\"` ({gunicorn_settings()}),"
        f" `POST {project.run_path}` and `POST {project.batch_path}`.",
        "- Baseline: `bench/reference_server.py`, the official servers' design (`ThreadingHTTPServer`,"
        " stdlib `json`, the feature function once per window, `.tolist()`), plain numpy spectrogram;"
        " unlike the official server it keeps connections alive (with TCP_NODELAY), so it pays no"
        " TCP handshake per request.",
        "- Window: 1 s of 16 kHz int16-valued audio (seeded noise + tone) as a JSON list; spectrogram"
        " frame_length 0.032, frame_stride 0.024, fft_length 128, noise_floor_db -85,"
        f" implementation_version 4: {FEATURES_PER_WINDOW} features. `/batch`: {BATCH_WINDOWS}"
        f" different windows ({batch_body_size / 1e6:.1f} MB body).",
        "- Client: `http.client`, one kept-alive connection per server, one request at a time, bodies"
        f" encoded once before timing. `/run`: {run_requests} timed requests per server after"
        f" {RUN_WARMUP} warm-up, in alternating chunks of {RUN_CHUNK}; `/batch`: {batch_repeats}"
        f" timed requests per server after {BATCH_WARMUP} warm-up, in alternating chunks of {BATCH_CHUNK}.",
        f"- Both servers' batch features agree to max |difference| {agreement:.1e}.",
        "",
        "## Results",
        "",
        "| measure | project | baseline | project / baseline |",
        "|---|---|---|---|",
        f"| `/run` p50 | {ms(run_p50)} | {ms(base_p50)} | {run_p50 / base_p50:.2f} |",
        f"| `/run` p99 | {ms(run_p99)} | {ms(base_p99)} | {run_p99 / base_p99:.2f} |",
        f"| `/batch`, median time per {BATCH_WINDOWS} windows | {ms(batch_s)} | {ms(base_batch_s)} |"
        f" {batch_s / base_batch_s:.2f} |",
        f"| `/batch` windows/s (from the median) | {rate:,.0f} | {base_rate:,.0f} | {rate / base_rate:.2f} |",
        "",
        f"## JSON floor for the {BATCH_WINDOWS}-window body (this process, median of {FLOOR_REPEATS})",
        "",
        "| step | time |",
        "|---|---|",
        "| decode: `parser.parse(body)` (parser reused, as the server does), each window"
        f" `.as_buffer(of_type='d')` as float64 | {ms(floor['decode_simdjson'])} |",
        f"| encode: `orjson.dumps` of the ({BATCH_WINDOWS}, {FEATURES_PER_WINDOW}) float64 result,"
        f" `OPT_SERIALIZE_NUMPY` | {ms(floor['encode_orjson'])} |",
        f"| **floor** (decode + encode) | **{ms(floor['floor'])}** |",
        "| for comparison, the same decode with a fresh `simdjson.Parser()` per body"
        f" | {ms(floor['decode_simdjson_fresh_parser'])} |",
        f"| for comparison, decode with `orjson.loads` + `np.asarray` | {ms(floor['decode_orjson'])} |",
        "",
        f"The project's `/batch` takes {batch_s / floor['floor']:.2f} x the floor.",
        "",
        "## In process (this process, no HTTP or JSON)",
        "",
        "| measure | figure |",
        "|---|---|",
        f"| spectrogram block, `compute_batch` on the {BATCH_WINDOWS} windows | "
        f"{in_process['block_windows_per_s']:,.0f} windows/s |",
        f"| embeddings block (default model: that spectrogram, then the int8 embedder per window),"
        f" `compute_batch` on the {BATCH_WINDOWS} windows | {in_process['embeddings_windows_per_s']:,.0f} windows/s |",
        "| spectrogram graph: `image_graph` PNG of one window's 41 x 65 spectrogram, median of 50 | "
        f"{ms(in_process['graph'])} (official block: 72 ms, matplotlib SVG) |",
        "",
        "## Fusion blocks (this process: `bench/bench_fuzzy.py`, `bench/bench_kalman.py`)",
        "",
        "Medians of repeated runs on random or synthetic inputs (the scripts' docstrings give the set-ups);"
        " each library runs the same system on the same data in the same process.",
        "",
        "| measure | ours | library, same process | library / ours |",
        "|---|---|---|---|",
        *[f"| {row['name']} | {row['figure']:.2f} {row['unit']} | "
          + (f"{row['baseline_name']}: {row['baseline']:.2f} {row['unit']} | {row['baseline'] / row['figure']:,.0f} x |"
             if row["baseline"] else " | |") for row in fusion],
        "",
        "## Bars",
        "",
        "| bar | measured | result |",
        "|---|---|---|",
        *[f"| {name} | {value} | {'PASS' if passed else 'FAIL'} |" for name, value, passed in bars],
        "",
    ]
    return "\n".join(lines), all_passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-requests", type=int, default=2000, help="timed /run requests per server")
    parser.add_argument("--batch-repeats", type=int, default=30, help="timed /batch requests per server")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    # `kill` of the runner must stop the servers too: turn SIGTERM into a normal exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    machine = machine_info()
    run_bytes = run_body(seed=0)
    batch_bytes = batch_body(BATCH_WINDOWS)
    project = Server("project", [str(BIN_DIR / "gunicorn"), "-c", "gunicorn.conf.py", "dsp_server:create_app()"],
                     "/blocks/spectrogram/run", "/blocks/spectrogram/batch")
    baseline = Server("baseline", [sys.executable, str(REPO_ROOT / "bench" / "reference_server.py")],
                      "/run", "/batch")

    with ExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dsp-bench-")))
        servers = [stack.enter_context(running(server, log_dir)) for server in (baseline, project)]
        print(f"servers ready: baseline :{baseline.port}, project :{project.port}; measuring...", flush=True)
        try:
            batch_features = measure_servers(servers, args.run_requests, args.batch_repeats,
                                             run_bytes, batch_bytes)
        except Exception:
            for server in servers:
                print(f"--- {server.name} log (tail) ---\n{server.log_tail()}", file=sys.stderr)
            raise

    agreement = float(np.max(np.abs(batch_features["project"] - batch_features["baseline"])))
    # The floor encodes the real result (not zeros), so the number of digits matches the server's.
    floor = measure_json_floor(batch_bytes, batch_features["project"])

    in_process = measure_in_process(batch_bytes)
    print("timing the fusion blocks' numerics...", flush=True)
    fusion = bench_fuzzy.run() + bench_kalman.run()
    text, all_passed = report(project, baseline, floor, in_process, machine, agreement,
                              args.run_requests, args.batch_repeats, len(batch_bytes), fusion)
    args.output.write_text(text)
    print(text)
    print(f"wrote {args.output}")
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
