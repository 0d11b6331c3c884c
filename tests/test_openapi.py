"""`GET /openapi.json`: a valid OpenAPI 3.1 document that names every route the app serves and
each block's own parameters, and an app that keeps to it under schemathesis' generated requests.

The fuzzing is bounded (FUZZ_EXAMPLES per operation, seeded so that a failure reproduces) and runs
in-process through WSGI; it checks no 5xx, statuses, media types and bodies as documented, no
NaN or Infinity in any answer, a message in every error, and afterwards the same features as
before for a known request. A second, shorter run against an app with DSP_API_KEY set sends the
key as documented and checks (schemathesis' ignored_auth) that each operation but /healthz
refuses the same request without it. Two of schemathesis' checks do not apply to this protocol, which
answers refused windows with HTTP 200 and `success: false` for Studio: negative_data_rejection
(it expects a 4xx) and positive_data_acceptance (the schema cannot say that the axes must match
the length of `features`).
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from dsp.registry import all_blocks
from dsp_server import create_app

FUZZ_EXAMPLES = 50
FUZZ_SEED = 20261203
AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture(scope="module")
def blocks():
    return all_blocks()


@pytest.fixture(scope="module")
def app(blocks):
    return create_app(blocks, api_key="")


@pytest.fixture(scope="module")
def document(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def _served(app, blocks) -> set[tuple[str, str]]:
    """(method, path) for every URL rule, with `<name>` spelled out for each block it serves."""
    served = set()
    root = app.test_client().get("/blocks").get_json()
    root_block = next(entry["name"] for entry in root if entry["root"])
    has_impl = {name for name, block in blocks.items() if block.tflite_implementation is not None}
    for rule in app.url_map.iter_rules():
        if "<name>" in rule.rule:
            names = has_impl if rule.rule.endswith("tflite-impl") else blocks
            paths = [rule.rule.replace("<name>", name) for name in names]
        elif rule.rule == "/tflite-impl" and root_block not in has_impl:
            paths = []  # answers 404 naming why, for a root block without a model of its own
        else:
            paths = [rule.rule]
        for path in paths:
            served |= {(method, path) for method in rule.methods - AUTOMATIC_METHODS}
    return served


def _documented(document) -> set[tuple[str, str]]:
    return {(method.upper(), path.rstrip("/") or "/") for path, item in document["paths"].items() for method in item}


def test_the_document_is_valid_openapi_3_1(document):
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_every_route_the_app_serves_is_documented_and_nothing_else(app, blocks, document):
    served = {(method, path.rstrip("/") or "/") for method, path in _served(app, blocks)}
    assert served == _documented(document)


def test_every_documented_operation_exists(app, document):
    client = app.test_client()
    for path, item in document["paths"].items():
        for method in item:
            response = client.open(path, method=method.upper(), json={} if method == "post" else None)
            assert response.status_code not in (404, 405), (method, path, response.get_data(as_text=True))


def test_each_blocks_parameters_are_typed_from_its_parameters_json(blocks, document):
    schemas = document["components"]["schemas"]
    for name, block in blocks.items():
        properties = schemas[f"{name}.Params"]["properties"]
        items = [item for group in block.parameters["parameters"] for item in group["items"]]
        assert list(properties) == [item["param"].replace("-", "_") for item in items]
        for item in items:
            schema = properties[item["param"].replace("-", "_")]
            schema = schema["anyOf"][0] if item.get("optional") else schema
            if item["type"] == "select":
                assert schema["enum"] == [str(v["value"] if isinstance(v, dict) else v) for v in item["valid"]]
            else:
                assert schema["type"] == {"int": "integer", "float": "number", "boolean": "boolean",
                                          "string": "string"}[item["type"]]
            if item.get("value") is not None:
                default = properties[item["param"].replace("-", "_")]["default"]
                assert str(default) == str(item["value"]) if item["type"] == "select" else default == item["value"]
        versions = schemas[f"{name}.RunRequest"]["properties"]["implementation_version"]["enum"]
        assert versions == list(range(1, block.latest_version + 1))


def test_a_registered_block_is_documented_by_being_registered(blocks):
    demo = dataclasses.replace(blocks["spectral-analysis"], name="demo")
    document = create_app({"demo": demo}, root_block="demo", api_key="").test_client().get("/openapi.json").get_json()
    validate(document)
    assert {"/blocks/demo/run", "/blocks/demo/batch", "/blocks/demo/parameters", "/run"} <= set(document["paths"])
    assert "demo.Params" in document["components"]["schemas"]
    assert not any("spectrogram" in path for path in document["paths"])


def test_with_a_key_every_operation_but_healthz_declares_it(blocks):
    document = create_app(blocks, api_key="s3cret").test_client().get(
        "/openapi.json", headers={"x-api-key": "s3cret"}).get_json()
    validate(document)
    assert document["security"] == [{"apiKey": []}]
    assert document["components"]["securitySchemes"]["apiKey"]["name"] == "x-api-key"
    for path, item in document["paths"].items():
        for operation in item.values():
            assert ("401" in operation["responses"]) == (path != "/healthz"), path
    assert document["paths"]["/healthz"]["get"]["security"] == []


# --- schemathesis --------------------------------------------------------------------------------

def _non_finite(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False


@schemathesis.check
def no_nan_or_infinity(ctx, response, case):
    """JSON has no NaN; Python's reader accepts the tokens, so a server that wrote them would show here."""
    if "json" in response.headers.get("content-type", [""])[0]:
        body = json.loads(response.content)
        if _non_finite(body):
            raise AssertionError(f"non-finite number in the answer to {case.method} {case.path}")
        if isinstance(body, dict) and "features" in body and None in _flat(body["features"]):
            raise AssertionError(f"null (a NaN written by a JSON encoder) in the features of {case.path}")


def _flat(value) -> list:
    return [leaf for item in value for leaf in _flat(item)] if isinstance(value, list) else [value]


@schemathesis.check
def every_error_has_a_message(ctx, response, case):
    if "json" in response.headers.get("content-type", [""])[0]:
        body = json.loads(response.content)
        if isinstance(body, dict) and (body.get("success") is False or response.status_code >= 400):
            if not isinstance(body.get("error"), str) or not body["error"].strip():
                raise AssertionError(f"an error without a message: {response.status_code} {body!r}")


# Built at collection: schemathesis makes one test per documented operation from the document.
# (Its lazy `from_fixture` loader does not work with pytest 9.)
FUZZ_APP = create_app(api_key="")
schema = schemathesis.openapi.from_wsgi("/openapi.json", FUZZ_APP, config=schemathesis.Config.from_dict({
    "seed": FUZZ_SEED,
    "generation": {"mode": "all", "max-examples": FUZZ_EXAMPLES},
    "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    "checks": {"negative_data_rejection": {"enabled": False}, "positive_data_acceptance": {"enabled": False}},
}))


# With DSP_API_KEY set: the same operations, each needing the key (fewer examples: the bodies
# are those above; what is new is the key, which schemathesis' ignored_auth check also removes).
FUZZ_KEY = "fuzz-key-0123"
KEYED_APP = create_app(api_key=FUZZ_KEY)
keyed_schema = schemathesis.openapi.from_wsgi(
    "/openapi.json", KEYED_APP, headers={"x-api-key": FUZZ_KEY}, config=schemathesis.Config.from_dict({
        "seed": FUZZ_SEED,
        "generation": {"mode": "positive", "max-examples": 5},
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        "checks": {"positive_data_acceptance": {"enabled": False}},
        "auth": {"openapi": {"apiKey": {"api_key": FUZZ_KEY}}},
    }))


@pytest.fixture(scope="module")
def known_answer():
    """A spectral-analysis window and its features before any fuzzing."""
    rng = np.random.default_rng(7)
    body = {"features": rng.normal(size=128 * 3).round(4).tolist(), "axes": ["accX", "accY", "accZ"],
            "sampling_freq": 62.5}
    response = FUZZ_APP.test_client().post("/blocks/spectral-analysis/run", json=body).get_json()
    assert response["success"], response
    return body, response["features"]


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_app_keeps_to_its_document_under_generated_requests(case, known_answer):
    case.call_and_validate(excluded_checks=[negative_data_rejection, positive_data_acceptance],
                           additional_checks=[no_nan_or_infinity, every_error_has_a_message])


def test_after_the_fuzzing_the_server_still_answers_exactly(known_answer):
    body, features = known_answer
    client = FUZZ_APP.test_client()
    response = client.post("/blocks/spectral-analysis/run", json=body).get_json()
    assert response["success"] and response["features"] == features
    assert client.get("/healthz").status_code == 200


@keyed_schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_with_a_key_the_app_keeps_to_its_document_and_refuses_requests_without_it(case):
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance],
                                      additional_checks=[no_nan_or_infinity, every_error_has_a_message])
    assert response.status_code != 401, response.text  # the key was sent
