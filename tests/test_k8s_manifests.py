"""deploy/k8s/: the manifests agree with the Dockerfile, with each other and with the server.

No cluster here: these are the invariants a typo would break silently (a probe on the wrong port
restarts every pod forever; a Service whose selector matches nothing routes nowhere; an env name
the server never reads configures nothing). The manifests also run for real under
`podman kube play` in test_container.py.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
# Where the server's code reads its environment (gunicorn.conf.py included: it is the entry point).
SERVER_SOURCES = [ROOT / "dsp_server.py", ROOT / "server_ops.py", ROOT / "gunicorn.conf.py",
                  *sorted((ROOT / "dsp").rglob("*.py"))]


def _documents() -> list[dict]:
    # Only the top folder: that is what `kubectl apply -f deploy/k8s/` applies.
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _one(kind: str, docs: list[dict] | None = None) -> dict:
    found = [doc for doc in (docs if docs is not None else _documents()) if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _container() -> dict:
    containers = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _exposed_port() -> int:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words and words[0].upper() == "EXPOSE":
            return int(words[1])
    raise AssertionError("the Dockerfile has no EXPOSE line")


def _port_number(port, container: dict) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert port in named, f"port name {port!r} is not one of the container's ports {sorted(named)}"
    return named[port]


def _quantity(text) -> float:
    """A Kubernetes quantity (cpu "500m", "2"; memory "384Mi", "1G") as a plain number."""
    text = str(text)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[:-len(suffix)]) * units[suffix]
    return float(text)


def _string_constants(trees) -> dict[str, str]:
    """NAME = "text" assignments over every source: dsp_server.py imports API_KEY_ENV from server_ops."""
    return {target.id: node.value.value for tree in trees for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str) for target in node.targets if isinstance(target, ast.Name)}


def _env_names_read(paths: list[Path]) -> set[str]:
    """Names passed to os.environ.get / os.environ[...] / os.getenv, constants resolved
    (server_ops reads os.environ.get(API_KEY_ENV) with API_KEY_ENV = "DSP_API_KEY")."""
    trees = [ast.parse(path.read_text()) for path in paths]
    constants = _string_constants(trees)

    def is_environ(node) -> bool:
        # os.environ only: request.environ (the WSGI environ) is not the process environment.
        return (isinstance(node, ast.Attribute) and node.attr == "environ"
                and isinstance(node.value, ast.Name) and node.value.id == "os")

    names = set()
    for node in (node for tree in trees for node in ast.walk(tree)):
        arg = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            getenv = node.func.attr == "getenv" and isinstance(node.func.value, ast.Name) and node.func.value.id == "os"
            if (node.func.attr == "get" and is_environ(node.func.value)) or getenv:
                arg = node.args[0]
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            arg = node.slice
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            names.add(arg.value)
        elif isinstance(arg, ast.Name) and arg.id in constants:
            names.add(constants[arg.id])
    return names


def test_every_manifest_parses_and_has_a_kind():
    docs = _documents()
    assert {doc["kind"] for doc in docs} == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    # The Secret example stays out of `kubectl apply -f deploy/k8s/`: its value is a placeholder.
    assert not any(doc["kind"] == "Secret" for doc in docs)


def test_container_port_is_the_dockerfile_expose():
    assert [p["containerPort"] for p in _container()["ports"]] == [_exposed_port()]


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_get_healthz_on_the_exposed_port(probe):
    container = _container()
    assert probe in container, f"the container has no {probe}"
    get = container[probe]["httpGet"]
    assert get["path"] == "/healthz"
    assert _port_number(get["port"], container) == _exposed_port()
    # /healthz never needs the key, so a probe sends none; a scheme other than HTTP would fail.
    assert get.get("scheme", "HTTP") == "HTTP" and "httpHeaders" not in get


def test_startup_probe_allows_the_model_to_load():
    # Startup measured at a few seconds (test_container.py); give it at least 30 s.
    startup = _container()["startupProbe"]
    assert startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) >= 30


def test_service_targets_the_exposed_port_and_selects_the_pods():
    deployment, service = _one("Deployment"), _one("Service")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    targets = [_port_number(p.get("targetPort", p["port"]), _container()) for p in service["spec"]["ports"]]
    assert targets == [_exposed_port()]
    selector = service["spec"]["selector"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector and selector.items() <= labels.items(), f"Service selector {selector} misses pod labels {labels}"
    # The Deployment's own selector must match its template too (the API server refuses otherwise).
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_hpa_scales_the_deployment_on_cpu():
    deployment, hpa = _one("Deployment"), _one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert deployment["spec"]["replicas"] >= hpa["spec"]["minReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    # Utilization is relative to the request: without one the HPA cannot compute it.
    assert "cpu" in _container()["resources"]["requests"]


def test_limits_are_at_least_the_requests():
    resources = _container()["resources"]
    for name in ("cpu", "memory"):
        request, limit = resources["requests"][name], resources["limits"][name]
        assert _quantity(limit) >= _quantity(request), f"{name}: limit {limit} < request {request}"
    # LOAD_TEST.md: two workers reach about 190 MB RSS each; a limit below that would OOM-kill.
    assert _quantity(resources["limits"]["memory"]) >= 2 * 190e6


def test_the_secret_the_deployment_references_has_that_key():
    secrets = {}
    for path in (K8S / "secret").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "Secret":
                secrets[doc["metadata"]["name"]] = {**doc.get("data", {}), **doc.get("stringData", {})}
    refs = [(var["name"], var["valueFrom"]["secretKeyRef"]) for var in _container()["env"]
            if "secretKeyRef" in var.get("valueFrom", {})]
    assert refs, "no env var comes from a Secret"
    for var, ref in refs:
        assert ref["name"] in secrets, f"{var}: Secret {ref['name']!r} is not in deploy/k8s/secret/"
        assert ref["key"] in secrets[ref["name"]], f"{var}: Secret {ref['name']!r} has no key {ref['key']!r}"
        # Optional, so the server starts (without a key) where no Secret was created.
        assert ref.get("optional") is True
    assert ("DSP_API_KEY", "dsp-api-key") in [(var, ref["name"]) for var, ref in refs]


def test_every_env_var_is_one_the_server_reads():
    read = _env_names_read(SERVER_SOURCES)
    # The reader itself must work, or this test would pass on nothing.
    assert {"DSP_API_KEY", "DSP_BLOCKS", "DSP_BLOCK", "WEB_CONCURRENCY", "GUNICORN_THREADS", "DSP_MAX_BODY_MB"} <= read
    unknown = [var["name"] for var in _container()["env"] if var["name"] not in read]
    assert not unknown, f"the server never reads {unknown}"


def test_runs_as_the_dockerfiles_non_root_user():
    pod = _one("Deployment")["spec"]["template"]["spec"]
    context = {**pod.get("securityContext", {}), **_container().get("securityContext", {})}
    assert context.get("runAsNonRoot") is True
    lines = [line.split() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    uid = next(words[words.index("--uid") + 1] for words in lines if "useradd" in words and "--uid" in words)
    assert context.get("runAsUser") == int(uid)


def test_image_is_a_placeholder_the_readme_says_to_replace():
    image = _container()["image"]
    assert "REPLACE" in image
    assert image.split("/")[0] in (ROOT / "README.md").read_text()
