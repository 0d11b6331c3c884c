"""The real Dockerfile, built and run with podman: what `edge-impulse-blocks push` would ship.

There is no Docker engine and no container registry here (see container-testing.md), so:
- podman, buildah, runc and debootstrap come from Debian's mirror (installed here if missing);
- the Dockerfile's FROM image is a Debian minbase rootfs with Python, made with debootstrap and
  imported under the FROM name into a podman storage of our own, so the Dockerfile stays the one
  users build;
- every podman setting lives in config files of this test (nothing in /etc is changed).
The storage (base image and build layers) is kept in CACHE, so a second run reuses both.
At the end, one block's folder from `make block-context` (kalman's) is built as its own context
and run the same way, and deploy/k8s/deployment.yaml is played with `podman kube play`.
Measured on a 2-core machine: first run about 80 s (apt 15 s, debootstrap 50 s, import 7 s,
build 25 s, plus the build stage's apt-get of gcc), later runs about 7 s. Needs root; skipped
otherwise.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from tests.test_live_server import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
CACHE = Path(os.environ.get("DSP_CONTAINER_CACHE", "/var/tmp/dsp-container-test"))
IMAGE = "localhost/dsp-server-test:latest"
# catatonit: the pause process of the pod's infra container that `podman kube play` builds locally.
TOOLS = ("podman", "buildah", "runc", "debootstrap", "catatonit")
# What the base image holds; its hash labels the image, so changing this rebuilds it.
BASE_RECIPE = {"suite": "bookworm", "variant": "minbase",
               "include": ["python3", "python3-venv", "python3-pip", "ca-certificates"]}
BASE_KEY = hashlib.sha256(json.dumps(BASE_RECIPE, sort_keys=True).encode()).hexdigest()[:16]
KEY_LABEL = "dsp-container-test.base-key"
PROBE = ROOT / "dsp" / "__pycache__" / f"dockerignore-probe-{os.getpid()}.pyc"
# Podman's run state: one fixed place per CACHE, not per session. Podman records these paths in
# the storage's database at first use and keeps using them, and a new tmp_dir makes it "refresh"
# (reset) every container in the storage, a parallel pytest-xdist worker's included.
RUN = Path("/run") / ("dsp-container-test-" + hashlib.sha256(str(CACHE).encode()).hexdigest()[:8])
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"


def _instructions() -> list[list[str]]:
    """The Dockerfile's instructions as word lists (comments and blank lines dropped)."""
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    return [line.split() for line in lines if line and not line.startswith("#")]


def _from_image() -> str:
    """The FROM image, fully qualified the way podman looks it up (python:3.11-slim -> docker.io/library/...)."""
    name = next(words[1] for words in _instructions() if words[0].upper() == "FROM")
    first = name.split("/")[0]
    if "/" not in name:
        return "docker.io/library/" + name
    if "." not in first and ":" not in first and first != "localhost":
        return "docker.io/" + name
    return name


def _run(args: list[str], env: dict, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args[:4])} ... exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


# --- a plain file check: no podman needed ------------------------------------------------------

def test_first_expose_is_bare_4446_and_matches_parameters_json():
    # The runner and `edge-impulse-blocks push` read the port from the first EXPOSE line.
    expose = [words for words in _instructions() if words[0].upper() == "EXPOSE"]
    assert expose, "the Dockerfile has no EXPOSE line"
    assert expose[0] == ["EXPOSE", "4446"], f"first EXPOSE line is {' '.join(expose[0])!r}"
    parameters = ROOT / "parameters.json"
    if parameters.exists():
        port = json.loads(parameters.read_text()).get("info", {}).get("port")
        assert str(port) == expose[0][1], f"parameters.json info.port is {port!r}, the Dockerfile exposes {expose[0][1]}"


# --- setup: tools, podman config, base image, build ----------------------------------------------

def _ensure_tools() -> None:
    missing = [t for t in TOOLS if not shutil.which(t, path=SBIN_PATH)]
    if not missing:
        return
    install = ["apt-get", "install", "-y", "--no-install-recommends", *TOOLS]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": SBIN_PATH}
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # A fresh machine may have no (or stale) package lists: refresh once and retry.
        _run(["apt-get", "update"], env, timeout=300)
        _run(install, env, timeout=600)


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory) -> dict:
    """Environment for podman commands: its config files in a temp dir, its storage in CACHE, its state in RUN."""
    if os.geteuid() != 0:
        pytest.skip("container tests need root: debootstrap makes the base image and podman runs rootful")
    _ensure_tools()
    conf = tmp_path_factory.mktemp("podman")
    (conf / "net").mkdir()
    # runc: crun fails on this cgroup layout; ulimits: podman's defaults exceed the sandbox's hard
    # limits, and both must be set together; file events: there is no systemd/journald.
    (conf / "containers.conf").write_text(f"""
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
events_logger = "file"
tmp_dir = "{RUN}/tmp"
[network]
network_config_dir = "{conf}/net"
""")
    (conf / "storage.conf").write_text(f"""
[storage]
driver = "overlay"
graphroot = "{CACHE}/storage"
runroot = "{RUN}/runroot"
""")
    # Short names (FROM python:3.11-slim) resolve to docker.io, found in local storage, never pulled.
    (conf / "registries.conf").write_text('unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n')
    return {**os.environ, "PATH": SBIN_PATH,
            "CONTAINERS_CONF": str(conf / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf")}


def _debian_mirror() -> str:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def _ensure_base_image(env: dict) -> None:
    """The FROM image, made once with debootstrap and kept in CACHE's storage, labelled with BASE_KEY."""
    name = _from_image()
    have = _run(["podman", "image", "inspect", "--format", "{{index .Labels \"%s\"}}" % KEY_LABEL, name], env, check=False)
    if have.returncode == 0 and have.stdout.strip() == BASE_KEY:
        return
    rootfs = CACHE / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    _run(["debootstrap", f"--variant={BASE_RECIPE['variant']}", "--include=" + ",".join(BASE_RECIPE["include"]),
          BASE_RECIPE["suite"], str(rootfs), _debian_mirror()], env, timeout=900)
    # Like the official slim image: no package cache or lists (about 100 MB less).
    for junk in [*rootfs.glob("var/cache/apt/archives/*.deb"), *rootfs.glob("var/lib/apt/lists/*")]:
        if junk.is_file():
            junk.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    _run(["podman", "import", "--change", f"LABEL {KEY_LABEL}={BASE_KEY}", "-", name], env, stdin=tar.stdout, timeout=300)
    assert tar.wait() == 0
    shutil.rmtree(rootfs)


def _ca_bundle() -> str:
    # The network intercepts TLS: pip inside the build needs the host's extra CAs, passed through
    # the Dockerfile's own build argument (the same hook users behind a proxy use).
    certs = sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt"))
    return "\n".join(cert.read_text().strip() for cert in certs)


@pytest.fixture(scope="module")
def image(podman_env) -> str:
    CACHE.mkdir(parents=True, exist_ok=True)
    # One builder at a time (pytest-xdist workers share CACHE).
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _ensure_base_image(podman_env)
        # A file .dockerignore must keep out of `COPY dsp/ dsp/` (bytecode may be off: PYTHONDONTWRITEBYTECODE).
        PROBE.parent.mkdir(exist_ok=True)
        PROBE.write_bytes(b"")
        try:
            # --format docker: the OCI format drops HEALTHCHECK. --pull=never: FROM must be the local base.
            _run(["podman", "build", "--format", "docker", "--pull=never", "-t", IMAGE,
                  "--build-arg", f"EXTRA_CA_CERTS={_ca_bundle()}", "-f", str(DOCKERFILE), str(ROOT)],
                 podman_env, timeout=1800)
        finally:
            PROBE.unlink()
            if not any(PROBE.parent.iterdir()):
                PROBE.parent.rmdir()
        # Drop superseded builds so CACHE does not grow run after run (tagged and in-use images stay).
        _run(["podman", "image", "prune", "-f"], podman_env, check=False)
    return IMAGE


def _start(env: dict, name: str, image: str = IMAGE) -> tuple[str, float]:
    """Run the image detached on a loopback port; return its URL and seconds until GET / answered."""
    started = time.monotonic()
    # Without systemd, podman logs that it cannot set the healthcheck timer: harmless, the test runs it.
    _run(["podman", "run", "-d", "--name", name, "-p", "127.0.0.1::4446", image], env)
    host_port = _run(["podman", "port", name, "4446/tcp"], env).stdout.split()[0]
    url = f"http://{host_port}"
    running = "true"
    while running == "true" and time.monotonic() - started < 60:
        try:
            requests.get(url + "/", timeout=1)
            return url, time.monotonic() - started
        except requests.ConnectionError:
            time.sleep(0.2)
            running = _run(["podman", "inspect", "--format", "{{.State.Running}}", name], env).stdout.strip()
    logs = _run(["podman", "logs", name], env, check=False)
    pytest.fail(f"container did not answer (running: {running}):\n{(logs.stdout + logs.stderr)[-3000:]}")


def _container(request, env: dict, suffix: str, image: str = IMAGE) -> tuple[str, str, float]:
    name = f"dsp-test-{os.getpid()}-{suffix}"
    # Registered before starting: the container goes even if the start or a test fails.
    request.addfinalizer(lambda: subprocess.run(["podman", "rm", "-f", "-t", "0", name], env=env, capture_output=True))
    return (name, *_start(env, name, image))


@pytest.fixture(scope="module")
def container(request, podman_env, image):
    return _container(request, podman_env, "main")


# --- the running container -----------------------------------------------------------------------

def test_answers_within_a_few_seconds_of_start(container):
    _, _, startup = container
    assert startup < 10, f"first answer {startup:.1f} s after podman run"


def test_root_is_text(container):
    response = requests.get(container[1] + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/")
    assert response.text.strip()


def test_parameters_is_version_1_json(container):
    response = requests.get(container[1] + "/parameters", timeout=10)
    assert response.status_code == 200
    assert response.json()["version"] == 1


def test_spectrogram_run_matches_the_in_process_app(container, client):
    audio = np.round(np.random.default_rng(0).normal(0, 2000, 16000)).clip(-32768, 32767).tolist()
    body = {"features": audio, "axes": ["audio"], "sampling_freq": 16000, "draw_graphs": False,
            "params": {"frame_length": 0.032, "frame_stride": 0.024, "fft_length": 128, "noise_floor_db": -85}}
    payload = requests.post(container[1] + "/blocks/spectrogram/run", json=body, timeout=30).json()
    assert payload["success"] is True, payload
    assert len(payload["features"]) == 41 * 65
    # The image holds the same code and pinned libraries as the repo: same numbers.
    local = client.post("/blocks/spectrogram/run", json=body).get_json()
    np.testing.assert_allclose(payload["features"], local["features"], rtol=1e-6, atol=1e-9)


def test_embeddings_run_matches_the_in_process_app(container, client):
    # The model through the image's ai-edge-litert, which the build stage pruned (IMAGE_SIZE.md).
    audio = np.round(np.random.default_rng(2).normal(0, 2000, 16000)).clip(-32768, 32767).tolist()
    body = {"features": audio, "axes": ["audio"], "sampling_freq": 16000}
    payload = requests.post(container[1] + "/blocks/embeddings/run", json=body, timeout=30).json()
    assert payload["success"] is True, payload
    local = client.post("/blocks/embeddings/run", json=body).get_json()
    np.testing.assert_allclose(payload["features"], local["features"], rtol=1e-5, atol=1e-6)
    model = requests.post(container[1] + "/blocks/embeddings/tflite-impl", json=body, timeout=60)
    assert model.status_code == 200 and model.content == client.post("/blocks/embeddings/tflite-impl", json=body).data


def test_image_has_no_installer_tests_or_unused_accelerators(container, podman_env):
    probe = ("import importlib.util, pathlib, sysconfig; site = pathlib.Path(sysconfig.get_paths()['purelib']); "
             "print(importlib.util.find_spec('pip'), importlib.util.find_spec('setuptools'), "
             "sum(1 for _ in site.rglob('tests')), (site / 'ai_edge_litert' / 'libLiteRtWebGpuAccelerator.so').exists())")
    found = _run(["podman", "exec", container[0], "/opt/venv/bin/python", "-c", probe], podman_env).stdout
    assert found.split() == ["None", "None", "0", "False"], found


def test_kalman_runs_on_filters_compiled_into_the_image(container, client, podman_env):
    # The C library from the build stage, where the server looks by default; the compiler that
    # made it stayed in that stage, and numba is gone.
    probe = ("import importlib.util, shutil; from dsp.fusion import orientation_library as o; "
             "print(o.path(), o.path().is_file(), shutil.which('cc') or shutil.which('gcc'), "
             "importlib.util.find_spec('numba'))")
    found = _run(["podman", "exec", "-w", "/app", container[0], "/opt/venv/bin/python", "-c", probe], podman_env).stdout
    assert found.split() == ["/app/build/server/liborientation_f64.so", "True", "None", "None"], found
    rng = np.random.default_rng(1)
    imu = np.hstack([[0.0, 4.9, 8.49] + rng.normal(0, 0.05, (200, 3)), rng.normal(0, 0.01, (200, 3))])
    body = {"features": imu.reshape(-1).tolist(), "axes": ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ"],
            "sampling_freq": 100, "params": {"filter": "ekf"}, "state_string": ""}
    payload = requests.post(container[1] + "/blocks/kalman/run", json=body, timeout=30).json()
    assert payload["success"] is True, payload
    local = client.post("/blocks/kalman/run", json=body).get_json()
    np.testing.assert_allclose(payload["features"], local["features"], rtol=1e-9, atol=1e-12)


def test_runs_as_non_root(container, podman_env, image):
    user = _run(["podman", "image", "inspect", "--format", "{{.Config.User}}", image], podman_env).stdout.strip()
    assert user and user.split(":")[0] not in ("root", "0"), f"image User is {user!r}"
    assert _run(["podman", "exec", container[0], "id", "-u"], podman_env).stdout.strip() != "0"


def test_image_honours_dockerignore(container, podman_env):
    # The build context had dsp/__pycache__/PROBE: .dockerignore's **/__pycache__/ must keep it out.
    found = _run(["podman", "exec", container[0], "find", "/app", "-name", "__pycache__"], podman_env).stdout
    assert found.strip() == ""
    listing = set(_run(["podman", "exec", container[0], "ls", "-A", "/app"], podman_env).stdout.split())
    assert {"dsp", "dsp_server.py", "gunicorn.conf.py", "parameters.json"} <= listing


def test_healthcheck_succeeds(container, podman_env):
    # Fails with "no defined healthcheck" if HEALTHCHECK is missing from the image.
    check = _run(["podman", "healthcheck", "run", container[0]], podman_env, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_log_has_no_errors(container, podman_env):
    requests.get(container[1] + "/parameters", timeout=10)
    logs = _run(["podman", "logs", container[0]], podman_env)
    errors = [line for line in (logs.stdout + logs.stderr).splitlines() if "[ERROR]" in line or "Traceback" in line]
    assert not errors, "\n".join(errors)


def test_stop_is_prompt_and_clean(request, podman_env, image):
    # Its own container, so the order of the other tests does not matter. Without SIGTERM
    # handling podman would wait the full 10 s and SIGKILL (exit code 137).
    name, _, _ = _container(request, podman_env, "stop")
    started = time.monotonic()
    _run(["podman", "stop", "-t", "10", name], podman_env, timeout=60)
    elapsed = time.monotonic() - started
    exit_code = _run(["podman", "inspect", "--format", "{{.State.ExitCode}}", name], podman_env).stdout.strip()
    assert elapsed < 5, f"podman stop took {elapsed:.1f} s"
    assert exit_code == "0"


# --- one block's folder (make block-context), built as `edge-impulse-blocks push` would -----------
# Only kalman's: it is the one with the build stage; the other folders' invariants are checked
# without a build in test_block_context.py.

KALMAN_IMAGE = "localhost/dsp-server-test-kalman:latest"


@pytest.fixture(scope="module")
def kalman_image(podman_env, tmp_path_factory) -> str:
    from deploy.block_context import write_context

    folder = write_context("kalman", tmp_path_factory.mktemp("block-context") / "kalman")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _ensure_base_image(podman_env)
        # The folder alone is the context, with its own Dockerfile, as the CLI packs it.
        _run(["podman", "build", "--format", "docker", "--pull=never", "-t", KALMAN_IMAGE,
              "--build-arg", f"EXTRA_CA_CERTS={_ca_bundle()}", "-f", str(folder / "Dockerfile"), str(folder)],
             podman_env, timeout=1800)
        _run(["podman", "image", "prune", "-f"], podman_env, check=False)
    return KALMAN_IMAGE


@pytest.fixture(scope="module")
def kalman_container(request, podman_env, kalman_image):
    return _container(request, podman_env, "kalman", kalman_image)


def test_kalman_folder_image_serves_the_kalman_block_at_the_root(kalman_container, client, podman_env):
    name, url, _ = kalman_container
    assert requests.get(url + "/parameters", timeout=10).json() == client.get("/blocks/kalman/parameters").get_json()
    assert [block["name"] for block in requests.get(url + "/blocks", timeout=10).json()] == ["kalman"]
    # The C library came from the folder's build stage; no model went in.
    listing = set(_run(["podman", "exec", name, "ls", "-A", "/app"], podman_env).stdout.split())
    assert "models" not in listing and "device" not in listing
    imu = np.hstack([np.tile([0.0, 4.9, 8.49], (100, 1)), np.zeros((100, 3))])
    body = {"features": imu.reshape(-1).tolist(), "axes": ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ"],
            "sampling_freq": 100, "params": {"filter": "ekf"}, "state_string": ""}
    payload = requests.post(url + "/run", json=body, timeout=30).json()
    assert payload["success"] is True, payload
    local = client.post("/blocks/kalman/run", json=body).get_json()
    np.testing.assert_allclose(payload["features"], local["features"], rtol=1e-9, atol=1e-12)


# --- deploy/k8s/deployment.yaml under `podman kube play` ------------------------------------------
# What podman 4.3 (Debian 12) does with it, found by running it:
# - kinds: Pod, Deployment (one pod per replica, NAME-pod-0, -pod-1...: a fixed hostPort fits only
#   one, hence replicas 1 here), PVC, and Secret: a played
#   Secret is stored as a podman secret holding the YAML text, but secretKeyRef reads a secret as
#   JSON {key: base64 value} and fails on that YAML ("secret dsp-api-key is not valid JSON");
#   with `optional: true` the failure is silent and the server runs without a key. So the key goes
#   in with `podman secret create` in the form secretKeyRef reads. Service and HPA are not played.
# - probes: only livenessProbe is used, turned into the container's healthcheck (replacing the
#   image's HEALTHCHECK) as `curl -f http://localhost:4446/healthz`, restart on failure; the image
#   has no curl, so `podman healthcheck run` reports unhealthy. Without systemd no timer runs it.
#   startupProbe and readinessProbe are ignored.
# - resources.limits become the container's memory and CPU limits; runAsUser its user.

K8S_DEPLOYMENT = ROOT / "deploy" / "k8s" / "deployment.yaml"
K8S_SECRET = ROOT / "deploy" / "k8s" / "secret" / "dsp-api-key.yaml"


@pytest.fixture(scope="module")
def kube_pod(request, podman_env, image, tmp_path_factory):
    """The shipped Deployment, rendered for this test (its image, one replica, a loopback host
    port, names unique to this run, its Secret created as podman reads one), then played."""
    suffix = f"{os.getpid()}"
    deployment = yaml.safe_load(K8S_DEPLOYMENT.read_text())
    deployment["metadata"]["name"] = f"dsp-kube-{suffix}"
    deployment["spec"]["replicas"] = 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["image"] = image
    port = free_port()
    container["ports"][0].update(hostPort=port, hostIP="127.0.0.1")
    [ref] = [var["valueFrom"]["secretKeyRef"] for var in container["env"] if var["name"] == "DSP_API_KEY"]
    secret_name = ref["name"] = f"dsp-api-key-{suffix}"
    # Required here: a secret podman cannot read must fail the play, not start a keyless server.
    ref["optional"] = False
    # The key name comes from the shipped Secret example: the two must agree.
    shipped = yaml.safe_load(K8S_SECRET.read_text())
    assert ref["key"] in shipped["stringData"], f"{K8S_SECRET.name} has no key {ref['key']!r}"
    key = f"kube-test-{suffix}"
    folder = tmp_path_factory.mktemp("kube")
    (folder / "secret.json").write_text(json.dumps({ref["key"]: base64.b64encode(key.encode()).decode()}))
    rendered = folder / "deployment.yaml"
    rendered.write_text(yaml.safe_dump(deployment, sort_keys=False))
    # Registered first: the pod and the secret go even if the play or a test fails.
    request.addfinalizer(lambda: subprocess.run(["podman", "secret", "rm", secret_name], env=podman_env, capture_output=True))
    request.addfinalizer(lambda: subprocess.run(["podman", "kube", "down", str(rendered)], env=podman_env, capture_output=True))
    _run(["podman", "secret", "create", secret_name, str(folder / "secret.json")], podman_env)
    started = time.monotonic()
    _run(["podman", "kube", "play", str(rendered)], podman_env, timeout=120)
    name = f"{deployment['metadata']['name']}-pod-0-{container['name']}"
    url = f"http://127.0.0.1:{port}"
    status = None
    while time.monotonic() - started < 60:
        try:
            status = requests.get(url + "/healthz", timeout=2).status_code
            if status == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    else:
        logs = _run(["podman", "logs", name], podman_env, check=False)
        pytest.fail(f"/healthz never answered 200 (last: {status}):\n{(logs.stdout + logs.stderr)[-3000:]}")
    return {"name": name, "url": url, "key": key, "container": container, "rendered": rendered,
            "startup": time.monotonic() - started}


def test_kube_play_serves_healthz_then_a_keyed_run(kube_pod, client):
    url, key = kube_pod["url"], kube_pod["key"]
    assert kube_pod["startup"] < 30, f"/healthz answered 200 {kube_pod['startup']:.1f} s after kube play"
    health = requests.get(url + "/healthz", timeout=10).json()
    assert health["status"] == "ok" and "kalman" in health["blocks"]
    imu = np.hstack([np.tile([0.0, 4.9, 8.49], (100, 1)), np.zeros((100, 3))])
    body = {"features": imu.reshape(-1).tolist(), "axes": ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ"],
            "sampling_freq": 100, "params": {"filter": "ekf"}, "state_string": ""}
    # The Secret reached the server through secretKeyRef: without the key, 401.
    assert requests.post(url + "/blocks/kalman/run", json=body, timeout=30).status_code == 401
    payload = requests.post(url + "/blocks/kalman/run", json=body, headers={"x-api-key": key}, timeout=30).json()
    assert payload["success"] is True, payload
    local = client.post("/blocks/kalman/run", json=body).get_json()
    np.testing.assert_allclose(payload["features"], local["features"], rtol=1e-9, atol=1e-12)


def test_kube_play_applies_the_manifests_user_limits_and_liveness_probe(kube_pod, podman_env):
    container = kube_pod["container"]
    fields = "{{.Config.User}}|{{.HostConfig.Memory}}|{{json .Config.Healthcheck}}"
    user, memory, health = _run(["podman", "inspect", "--format", fields, kube_pod["name"]], podman_env).stdout.strip().split("|", 2)
    assert user == str(yaml.safe_load(K8S_DEPLOYMENT.read_text())["spec"]["template"]["spec"]["securityContext"]["runAsUser"])
    assert _run(["podman", "exec", kube_pod["name"], "id", "-u"], podman_env).stdout.strip() == user
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") and int(memory) == int(limit[:-2]) * 2 ** 20
    # podman's healthcheck is the livenessProbe: same path, port and timings.
    probe, check = container["livenessProbe"], json.loads(health)
    assert f":{probe['httpGet']['port']}{probe['httpGet']['path']}" in " ".join(check["Test"])
    assert (check["Interval"], check["Timeout"], check["Retries"]) == \
        (probe["periodSeconds"] * 10 ** 9, probe["timeoutSeconds"] * 10 ** 9, probe["failureThreshold"])
