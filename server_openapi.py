"""The OpenAPI 3.1 document of the HTTP API (`GET /openapi.json`), built from the hosted blocks.

Each block's operations get their own paths (`/blocks/<name>/run`, ...) so that each request
schema lists that block's own parameters, typed from its `parameters.json`: registering a block
documents it. The root block's operations at `/` share its schemas. `tests/test_openapi.py`
validates the document, checks that it names every route the app serves, and fuzzes the app
against it with schemathesis.
"""
from __future__ import annotations

from typing import Any, Mapping

from dsp.core.block import Block
from dsp.core.params import option_value

OPENAPI_VERSION = "3.1.0"
# The protocol's shape, not the package's release: bump it when a route or a field changes.
API_VERSION = "1.0.0"

_ERROR = {"$ref": "#/components/schemas/Error"}
_NUMBERS = {"type": "array", "items": {"type": "number"}}


def openapi_document(blocks: Mapping[str, Block], root_name: str, *, key_required: bool,
                     key_header: str, health_path: str = "/healthz") -> dict[str, Any]:
    """The document for an app hosting `blocks` (name -> Block) with `root_name` also at `/`."""
    schemas: dict[str, Any] = {**_shared_schemas()}
    paths: dict[str, Any] = {
        "/blocks": {"get": _operation("list-blocks", "Every hosted block", "blocks",
                                      _json_content({"type": "array", "items": {"$ref": "#/components/schemas/BlockListing"}}))},
        health_path: {"get": {**_operation(
            "healthz", "200 when every hosted block can serve from the worker that answered, else 503", "operations",
            _json_content({"$ref": "#/components/schemas/Health"})),
            "security": []}},
        "/metrics": {"get": _operation("metrics", "Prometheus metrics, summed over every gunicorn worker", "operations",
                                       {"text/plain": {"schema": {"type": "string"}}})},
        "/openapi.json": {"get": _operation("openapi", "This document", "operations",
                                            _json_content({"type": "object"}))},
    }
    paths[health_path]["get"]["responses"]["503"] = {
        "description": "A block cannot serve from this worker; missing names each with its reason",
        "content": _json_content({"$ref": "#/components/schemas/Health"})}
    for name, block in blocks.items():
        schemas.update(_block_schemas(name, block))
        paths.update(_block_paths(f"/blocks/{name}/", name, block, operation_prefix=name))
    paths.update(_block_paths("/", root_name, blocks[root_name], operation_prefix="root"))
    for item in paths.values():
        for operation in item.values():
            _add_common_responses(operation, key_required and operation.get("security") != [])
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Edge Impulse custom DSP blocks",
            "version": API_VERSION,
            "description": (
                "Edge Impulse's custom processing block protocol. Errors on run and batch are HTTP 200 "
                "with success false and a message, which Studio shows to the user."
            ),
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if key_required:
        document["components"]["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": key_header,
                       "description": "Or as the first path segment: /k/<key>/blocks/..."},
        }
        document["security"] = [{"apiKey": []}]
    return document


def _block_paths(prefix: str, name: str, block: Block, operation_prefix: str) -> dict[str, Any]:
    title = block.info.get("title", name)
    paths = {
        prefix: {"get": _operation(f"{operation_prefix}-describe", f"{title}: title and author", name,
                                   {"text/plain": {"schema": {"type": "string"}}})},
        f"{prefix}parameters": {"get": _operation(f"{operation_prefix}-parameters", f"{title}: its parameters.json",
                                                  name, _json_content({"$ref": "#/components/schemas/ParametersJson"}))},
        f"{prefix}run": {"post": _post(f"{operation_prefix}-run", f"{title}: features for one window", name,
                                       f"{name}.RunRequest", {"oneOf": [{"$ref": "#/components/schemas/RunResult"}, _ERROR]})},
        f"{prefix}batch": {"post": _post(f"{operation_prefix}-batch", f"{title}: features for many windows, in order",
                                         name, f"{name}.BatchRequest",
                                         {"oneOf": [{"$ref": "#/components/schemas/BatchResult"}, _ERROR]})},
    }
    if block.tflite_implementation is not None:
        operation = _operation(f"{operation_prefix}-tflite-impl", f"{title}: a TFLite model of the whole block "
                               "(raw window in, features out) for the impulse in the body", name,
                               {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}})
        operation["requestBody"] = _request_body(f"{name}.ImplRequest")
        operation["responses"]["400"] = {"description": "A setting the model cannot be built for",
                                         "content": _json_content(_ERROR)}
        paths[f"{prefix}tflite-impl"] = {"post": operation}
    return paths


def _block_schemas(name: str, block: Block) -> dict[str, Any]:
    """The request schemas of one block: its typed params and the window(s) they apply to."""
    items = [item for group in block.parameters.get("parameters", []) for item in group.get("items", [])]
    params = {
        "type": "object",
        "description": "Every parameter is optional (missing ones take their default). Studio sends the "
                       "underscore spelling; the dash spelling of parameters.json is accepted too.",
        "properties": {item["param"].replace("-", "_"): _parameter_schema(item) for item in items},
        "additionalProperties": False,
    }
    versions = list(range(1, block.latest_version + 1))
    common = {
        "axes": {"type": "array", "minItems": 1, "items": {"type": "string"},
                 "description": "One name per input axis, in the order they are interleaved in features"},
        "sampling_freq": {"type": "number", "exclusiveMinimum": 0, "description": "Hz"},
        "params": {"$ref": f"#/components/schemas/{name}.Params"},
        "implementation_version": {"type": "integer", "enum": versions, "default": versions[-1]},
        "named_axes": {"type": "object", "description": "Studio's mapping of the block's declared axes to "
                                                        "the impulse's axes"},
        "project_id": {"type": "integer"},
    }
    run = {
        "type": "object",
        "required": ["features", "axes", "sampling_freq"],
        "properties": {
            "features": {**_NUMBERS, "description": "The raw window, flat, axes interleaved: x0, y0, z0, x1, ..."},
            **common,
            "draw_graphs": {"type": "boolean", "default": False},
            "state_string": {"type": "string", "description": "The state_string of the previous window's answer "
                                                              "(stateful blocks)"},
        },
    }
    batch = {
        "type": "object",
        "required": ["features", "axes", "sampling_freq"],
        "properties": {
            "features": {"type": "array", "items": _NUMBERS, "minItems": 1,
                         "description": "Windows, each flat with axes interleaved, in stream order"},
            **common,
            "state": {"type": "string", "description": "The state of the previous batch's answer (stateful blocks)"},
        },
    }
    schemas = {f"{name}.Params": params, f"{name}.RunRequest": run, f"{name}.BatchRequest": batch}
    if block.tflite_implementation is not None:
        schemas[f"{name}.ImplRequest"] = {"type": "object", "required": ["axes", "sampling_freq"],
                                          "properties": dict(common)}
    return schemas


def _parameter_schema(item: dict) -> dict[str, Any]:
    """One parameters.json item as a JSON schema: its type, options and default."""
    kind, default = item["type"], item.get("value")
    if kind == "select":
        schema: dict[str, Any] = {"enum": [option_value(v) for v in item["valid"]]}
        default = None if default is None else str(default)
    else:
        schema = {"type": {"int": "integer", "float": "number", "boolean": "boolean", "flag": "boolean"}.get(kind, "string")}
    if item.get("optional"):
        schema = {"anyOf": [schema, {"type": "null"}]}
    if default is not None:
        schema["default"] = default
    text = item.get("help") or item.get("name")
    if text:
        schema["description"] = text
    return schema


def _operation(operation_id: str, summary: str, tag: str, content: dict) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, "tags": [tag],
            "responses": {"200": {"description": "OK", "content": content}}}


def _post(operation_id: str, summary: str, tag: str, request_schema: str, result: dict) -> dict[str, Any]:
    operation = _operation(operation_id, summary, tag, _json_content(result))
    operation["responses"]["200"]["description"] = "Features, or success false with a message"
    operation["requestBody"] = _request_body(request_schema)
    operation["responses"]["413"] = {"description": "The body is over the limit (DSP_MAX_BODY_MB)",
                                     "content": _json_content(_ERROR)}
    return operation


def _request_body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": _json_content({"$ref": f"#/components/schemas/{schema}"})}


def _add_common_responses(operation: dict, needs_key: bool) -> None:
    operation["responses"]["405"] = {"description": "Method not allowed (the Allow header lists the allowed ones)",
                                     "content": _json_content(_ERROR)}
    if needs_key:
        operation["responses"]["401"] = {"description": "The key is missing or wrong", "content": _json_content(_ERROR)}


def _json_content(schema: dict) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _shared_schemas() -> dict[str, Any]:
    state = {"type": "string"}
    common = {
        "success": {"const": True},
        "labels": {"type": "array", "items": {"type": "string"}},
        "output_config": {"type": "object"},
        "fft_used": {"type": "array", "items": {"type": "integer"}},
        "state": state,
        "state_string": state,
    }
    return {
        "Error": {"type": "object", "required": ["success", "error"],
                  "properties": {"success": {"const": False}, "error": {"type": "string", "minLength": 1}}},
        "RunResult": {
            "type": "object", "required": ["success", "features", "labels", "output_config", "fft_used", "graphs"],
            "properties": {**common, "features": _NUMBERS, "graphs": {"type": "array", "items": {"type": "object"}}},
        },
        "BatchResult": {
            "type": "object", "required": ["success", "features", "labels", "output_config", "fft_used"],
            "properties": {**common, "features": {"type": "array", "items": _NUMBERS}},
        },
        "BlockListing": {
            "type": "object", "required": ["name", "title", "description", "prefix", "root"],
            "properties": {"name": {"type": "string"}, "title": {"type": "string"},
                           "description": {"type": "string"}, "prefix": {"type": "string"},
                           "root": {"type": "boolean"}},
        },
        "Health": {"type": "object", "required": ["success", "pid"],
                   "properties": {"success": {"type": "boolean"}, "status": {"const": "ok"},
                                  "blocks": {"type": "array", "items": {"type": "string"}},
                                  "missing": {"type": "object", "additionalProperties": {"type": "string"}},
                                  "error": {"type": "string"}, "pid": {"type": "integer"}}},
        "ParametersJson": {"type": "object", "required": ["version", "type", "info", "parameters"],
                           "properties": {"version": {"const": 1}, "type": {"const": "dsp"},
                                          "info": {"type": "object"}, "parameters": {"type": "array"}}},
    }
