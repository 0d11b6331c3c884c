"""HTTP server for Edge Impulse custom processing blocks: routes and protocol only.

Every block answers at `/blocks/<name>/` (`GET`, `GET parameters`, `POST run`, `POST batch`, and
`POST tflite-impl` where the block has one); the root block (env `DSP_BLOCK`) also answers at `/`.
Errors on `run` and `batch` are HTTP 200 `{"success": false, "error": ...}`, which Studio shows
to the user. `GET /healthz` and `GET /metrics` (Prometheus) serve operations, and
`GET /openapi.json` documents every route (`server_openapi.py`); with env
`DSP_API_KEY` set, every route but `/healthz` needs that key (`server_ops.py`). Run it with
`make run` (gunicorn, `gunicorn.conf.py`) or `python dsp_server.py`.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from typing import Any, Optional

import numpy as np
import orjson
import simdjson
from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from dsp.core.block import Block, Request, compute_in_order
from dsp.core.errors import ConfigurationError
from dsp.core.params import describe_value, parameter_specs, resolve_params
from dsp.core.window import AxisMap
from dsp.registry import DEFAULT_ROOT_BLOCK, all_blocks
from server_openapi import openapi_document
from server_ops import API_KEY_ENV, API_KEY_HEADER, URL_KEY, Metrics, key_problem, redact_url_keys, strip_url_key

DEFAULT_MAX_BODY_MB = 64
# A parser keeps buffers sized to the largest document it has read; past this size, parse with
# a throwaway parser so one huge batch does not pin hundreds of MB per thread.
REUSABLE_PARSER_LIMIT = 16 * 1024 * 1024
BODY_READ_STEP = 1024 * 1024

access_log = logging.getLogger("dsp_server.access")
error_log = logging.getLogger("dsp_server.error")


def create_app(
    blocks: Optional[dict[str, Block]] = None,
    root_block: Optional[str] = None,
    max_body_mb: Optional[float] = None,
    api_key: Optional[str] = None,
) -> Flask:
    """Build the app from a block registry and settings (environment variables by default).

    blocks:      name -> Block; default: every block in `dsp.registry`.
    root_block:  the block that also answers at `/`; default env `DSP_BLOCK` or the registry's.
    max_body_mb: request bodies above this get 413; default env `DSP_MAX_BODY_MB` or 64.
    api_key:     the shared key every route but `/healthz` needs; default env `DSP_API_KEY`;
                 empty: no key.
    """
    blocks = all_blocks() if blocks is None else blocks
    root_name = root_block or os.environ.get("DSP_BLOCK") or DEFAULT_ROOT_BLOCK
    if root_name not in blocks:
        raise SystemExit(
            f"DSP_BLOCK={root_name!r} is not a block of this server; choose one of: {', '.join(blocks)}"
        )
    if max_body_mb is None:
        max_body_mb = float(os.environ.get("DSP_MAX_BODY_MB", DEFAULT_MAX_BODY_MB))

    api_key = os.environ.get(API_KEY_ENV, "") if api_key is None else api_key

    app = Flask(__name__, static_folder=None)  # no files to serve: no /static route
    app.config["MAX_CONTENT_LENGTH"] = int(max_body_mb * 1024 * 1024)
    app.wsgi_app = strip_url_key(app.wsgi_app)
    metrics = Metrics()
    _configure_logging()
    # Our access log shows the path without the key; these two print the raw request line.
    redact_url_keys("werkzeug", "gunicorn.error")
    hosted = {name: HostedBlock(block) for name, block in blocks.items()}
    root = hosted[root_name]

    def block_or_404(name: str) -> "HostedBlock":
        if name not in hosted:
            raise _NotFound(f"Unknown block '{name}'. Blocks: {', '.join(hosted)} (GET /blocks).")
        g.block = name  # for the access log and the metrics' labels
        return hosted[name]

    @app.get("/blocks", strict_slashes=False)
    def list_blocks():
        listing = [
            {
                "name": name,
                "title": hb.block.info.get("title", name),
                "description": hb.block.info.get("description", ""),
                "prefix": f"/blocks/{name}/",
                "root": name == root_name,
            }
            for name, hb in hosted.items()
        ]
        return _json_response(listing)

    def describe(hb: "HostedBlock"):
        info = hb.block.info
        text = f"Edge Impulse DSP block: {info.get('title', hb.block.name)} by {info.get('author', '')}\n"
        return Response(text, mimetype="text/plain")

    def parameters(hb: "HostedBlock"):
        return _json_response(hb.block.parameters)

    def run(hb: "HostedBlock"):
        return _protocol_response(lambda: hb.run(_request_body()))

    def batch(hb: "HostedBlock"):
        return _protocol_response(lambda: hb.batch(_request_body()))

    def tflite_impl(hb: "HostedBlock"):
        if hb.block.tflite_implementation is None:
            raise _NotFound(
                f"Block '{hb.block.name}' has no TFLite implementation (info.hasTfliteImplementation is false)."
            )
        try:
            model = hb.tflite_implementation(_request_body())
        except ConfigurationError as exc:
            # Not 200: Studio would take a 200 body for the model file itself.
            return _json_response({"success": False, "error": str(exc)}, status=400)
        return Response(model, mimetype="application/octet-stream",
                        headers={"Content-Disposition": 'attachment; filename="dsp.tflite"'})

    def _as_block(hb: "HostedBlock", view):
        g.block = hb.block.name
        return view(hb)

    routes = {"": ("GET", describe), "parameters": ("GET", parameters), "run": ("POST", run),
              "batch": ("POST", batch), "tflite-impl": ("POST", tflite_impl)}
    for suffix, (method, view) in routes.items():
        app.add_url_rule(
            f"/blocks/<name>/{suffix}", f"block_{suffix or 'describe'}",
            lambda name, view=view: view(block_or_404(name)), methods=[method], strict_slashes=False,
        )
        app.add_url_rule(
            f"/{suffix}", f"root_{suffix or 'describe'}",
            lambda view=view: _as_block(root, view), methods=[method], strict_slashes=False,
        )

    @app.get("/healthz")
    def healthz():
        """200 when every block can serve from this process, else 503 naming what is missing."""
        missing = {name: problem for name, hb in hosted.items() if (problem := hb.problem())}
        if missing:
            names = ", ".join(missing)
            return _json_response({"success": False, "error": f"Not ready: {names}.", "missing": missing,
                                   "pid": os.getpid()}, status=503)
        return _json_response({"success": True, "status": "ok", "blocks": list(hosted), "pid": os.getpid()})

    @app.get("/metrics", endpoint="metrics")
    def prometheus_metrics():
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    # Built once per app: the hosted blocks do not change while it runs.
    openapi = orjson.dumps(openapi_document(blocks, root_name, key_required=bool(api_key), key_header=API_KEY_HEADER))

    @app.get("/openapi.json", endpoint="openapi")
    def openapi_json():
        return Response(openapi, mimetype="application/json")

    @app.before_request
    def start_timer_and_check_key():
        g.started = time.perf_counter()
        if api_key and request.path != "/healthz":
            problem = key_problem(api_key, request.headers.get(API_KEY_HEADER), request.environ.get(URL_KEY))
            if problem:
                return _json_response({"success": False, "error": problem}, status=401)
        return None

    @app.after_request
    def log_request(response: Response):
        route = _route()
        started = g.get("started")
        metrics.observe(g.get("block"), route, response.status_code,
                        time.perf_counter() - started if started else None,
                        _windows(), g.get("error_kind"))
        _log_access(response.status_code, route)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        allowed = getattr(exc, "valid_methods", None) or []
        messages = {
            404: f"No route {request.method} {request.path}. Routes: GET /blocks, and per block "
            "GET /blocks/<name>/, GET parameters, POST run, POST batch (the root block also at /); "
            "GET /openapi.json documents them all.",
            405: f"{request.method} is not allowed on {request.path}; "
            f"allowed: {', '.join(sorted(allowed))}.",
            413: f"The request body is larger than the limit of {max_body_mb:g} MiB "
            "(set DSP_MAX_BODY_MB to change it); send fewer windows per batch.",
        }
        message = getattr(exc, "user_message", None) or messages.get(exc.code, exc.description)
        response = _json_response({"success": False, "error": message}, status=exc.code)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        error_log.error("unhandled error on %s %s\n%s", request.method, request.path, traceback.format_exc())
        return _json_response({"success": False, "error": "Internal server error; see the server log."}, 500)

    return app


class HostedBlock:
    """A block plus its parsed parameter specs: turns decoded request bodies into responses."""

    def __init__(self, block: Block):
        self.block = block
        self.specs = parameter_specs(block.parameters)
        self.versions = list(range(1, block.latest_version + 1))

    def problem(self) -> Optional[str]:
        """Why the block cannot serve from this process, or None (`/healthz`)."""
        if self.block.ready is None:
            return None
        try:
            self.block.ready()
        except Exception as exc:  # any failure to load is "not ready", with its reason
            return f"{type(exc).__name__}: {exc}"
        return None

    def run(self, body: "simdjson.Object") -> dict:
        window = _numeric_array(_required(body, "features"), "features")
        g.window_values = int(window.size)
        req, _ = self._request(body, window, draw_graphs=_optional_bool(body, "draw_graphs", False))
        result = self.block.compute(req)
        features = np.ascontiguousarray(result.features, dtype=np.float64).reshape(-1)
        _check_output(features, self.block.name)
        response = {
            "success": True,
            "features": features,
            "graphs": result.graphs if req.draw_graphs else [],
            "labels": result.labels,
            "output_config": result.output_config,
            "fft_used": result.fft_used,
        }
        if result.state or result.state_string:
            response["state"] = result.state
            response["state_string"] = result.state_string
        return response

    def batch(self, body: "simdjson.Object") -> dict:
        windows = _batch_windows(_required(body, "features"))
        g.windows = len(windows)
        g.window_values = int(windows[0].size) if len(windows) else 0
        req, axis_map = self._request(body, None, draw_graphs=False)
        if len(windows) == 0:
            raise ConfigurationError("'features' is an empty list; send at least one window.")
        if self.block.compute_batch is not None and isinstance(windows, np.ndarray):
            req.raw = axis_map.split(windows)
            result = self.block.compute_batch(req)
        else:
            result = compute_in_order(self.block, req, windows, prepare=axis_map.split)
        features = np.ascontiguousarray(result.features, dtype=np.float64)
        _check_output(features, self.block.name)
        return {
            "success": True,
            "features": features,
            "labels": result.labels,
            "output_config": result.output_config,
            "fft_used": result.fft_used,
            "state": result.state,
            "state_string": result.state_string,
        }

    def tflite_implementation(self, body: "simdjson.Object") -> bytes:
        """The block's raw-window TFLite model for the impulse described by the request."""
        return self.block.tflite_implementation(self._request(body, None, draw_graphs=False)[0])

    def _request(self, body, window: Optional[np.ndarray], draw_graphs: bool) -> tuple[Request, AxisMap]:
        axis_map = AxisMap(_axes(_required(body, "axes")), self.block.info.get("axes"),
                           _plain(body.get("named_axes")))
        sampling_freq = _sampling_freq(_required(body, "sampling_freq"))
        version = self._version(body.get("implementation_version"))
        params = resolve_params(self.specs, _plain(body.get("params")))
        # `/batch` sends `state`; a `/run` caller passes back the `state_string` it was given.
        state = body.get("state") or body.get("state_string") or ""
        if not isinstance(state, str):
            raise ConfigurationError("'state' must be a string (the state returned for the previous window).")
        raw = axis_map.split(window) if window is not None else None
        return Request(raw=raw, axes=axis_map.axes, sampling_freq=sampling_freq, implementation_version=version,
                       params=params, draw_graphs=draw_graphs, state=state), axis_map

    def _version(self, value: Any) -> int:
        if value is None:
            return self.block.latest_version
        supported = ", ".join(map(str, self.versions))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            raise ConfigurationError(f"'implementation_version' must be one of {supported}; got {value!r}.")
        if int(value) not in self.versions:
            raise ConfigurationError(
                f"implementation_version {int(value)} is not supported by block '{self.block.name}'; "
                f"supported: {supported}."
            )
        return int(value)


# --- request decoding -------------------------------------------------------------------------

_parsers = threading.local()


def _read_body() -> bytes:
    """The raw request body, Content-Length or chunked, refusing more than MAX_CONTENT_LENGTH.

    Reads the WSGI input in large steps: werkzeug's `get_data` reads it 8 KB at a time, which
    costs 20 ms on a 10 MB batch (four times the socket read itself).
    """
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    stream = request.environ["wsgi.input"]
    length = request.content_length
    if length is not None:
        if length > limit:
            raise RequestEntityTooLarge()
        return stream.read(length)
    parts, total = [], 0
    while True:
        part = stream.read(BODY_READ_STEP)
        if not part:
            return b"".join(parts)
        total += len(part)
        if total > limit:
            raise RequestEntityTooLarge()
        parts.append(part)


def _request_body() -> "simdjson.Object":
    data = _read_body()
    if not data.strip():
        raise ConfigurationError(
            "The request body is empty; expected a JSON object with 'features', 'axes', "
            "'sampling_freq' and 'params'."
        )
    try:
        document, parser = _parse(data)
    except (ValueError, RuntimeError) as exc:  # simdjson raises RuntimeError for a too-big integer
        raise ConfigurationError(_invalid_json_message(data, exc)) from None
    # Keep the parser alive with the document: proxies read from the parser's buffers.
    g.parser = parser
    if not isinstance(document, simdjson.Object):
        raise ConfigurationError("The request body must be a JSON object with 'features', 'axes', "
                                 "'sampling_freq' and 'params'.")
    return document


def _parse(data: bytes):
    """Parse with this thread's reusable parser, or a throwaway one for huge bodies."""
    if len(data) > REUSABLE_PARSER_LIMIT:
        parser = simdjson.Parser()
        return parser.parse(data), parser
    parser = getattr(_parsers, "parser", None)
    if parser is not None:
        try:
            return parser.parse(data), parser
        except RuntimeError:
            pass  # proxies of an earlier document are still alive somewhere: use a new parser
    parser = _parsers.parser = simdjson.Parser()
    return parser.parse(data), parser


def _invalid_json_message(data: bytes, exc: Exception) -> str:
    for token in (b"NaN", b"Infinity"):
        if token in data:
            return (f"'features' contains {token.decode()}, which is neither valid JSON nor a "
                    "usable sample; send finite numbers only.")
    if "NUMBER_ERROR" in str(exc) or "BIGINT" in str(exc):
        return "The body has a number JSON cannot represent as a finite float (too large?)."
    return f"The request body is not valid JSON ({exc})."


def _required(body, name: str):
    value = body.get(name)
    if value is None:
        raise ConfigurationError(f"The request has no '{name}'; {_FIELD_HELP[name]}")
    return value


_FIELD_HELP = {
    "features": "expected the raw window as a flat list of numbers, axes interleaved.",
    "axes": "expected a list with one name per input axis, e.g. [\"accX\", \"accY\", \"accZ\"].",
    "sampling_freq": "expected the sampling frequency in Hz, e.g. 16000.",
}


def _numeric_array(value, name: str) -> np.ndarray:
    """A JSON list of numbers as float64, read straight from the parser's buffers."""
    if not isinstance(value, simdjson.Array):
        raise ConfigurationError(f"'{name}' must be a list of numbers; got {_type_name(value)}.")
    try:
        array = np.frombuffer(value.as_buffer(of_type="d"), dtype=np.float64)
    except TypeError:
        raise ConfigurationError(_first_non_number(value, name)) from None
    if array.size != len(value):
        raise ConfigurationError(f"'{name}' must be a flat list of numbers; it holds nested lists.")
    return array


def _batch_windows(value) -> "np.ndarray | list[np.ndarray]":
    """The windows of a batch: one (windows, values) array when they share a length (the fast,
    common case: a single read of the parser's buffers), else a list of 1-D arrays."""
    if not isinstance(value, simdjson.Array):
        raise ConfigurationError(f"'features' must be a list of windows (lists of numbers); got {_type_name(value)}.")
    lengths = []
    for index, window in enumerate(value):
        if not isinstance(window, simdjson.Array):
            raise ConfigurationError(
                f"'features' must be a list of windows, each a list of numbers; "
                f"window {index} is {_type_name(window)}."
            )
        lengths.append(len(window))
    if lengths and min(lengths) == max(lengths):
        try:
            flat = np.frombuffer(value.as_buffer(of_type="d"), dtype=np.float64)
        except TypeError:
            flat = None  # a non-number somewhere: the per-window path below names it
        if flat is not None and flat.size == sum(lengths):
            return flat.reshape(len(lengths), lengths[0])
    return [_numeric_array(window, f"features[{index}]") for index, window in enumerate(value)]


def _first_non_number(array, name: str) -> str:
    for index, item in enumerate(array):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return f"'{name}' must hold only numbers; item {index} is {_type_name(item)}."
    return f"'{name}' must hold only numbers."


def _axes(value) -> list[str]:
    axes = _plain(value)
    if not isinstance(axes, list) or not axes or not all(isinstance(a, str) for a in axes):
        raise ConfigurationError(
            f"'axes' must be a non-empty list of axis names, e.g. [\"audio\"]; got {_type_name(value)}."
        )
    return axes


def _sampling_freq(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise ConfigurationError(f"'sampling_freq' must be a positive number of Hz; got {_type_name(value)}.")
    return float(value)


def _optional_bool(body, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigurationError(f"'{name}' must be true or false; got {_type_name(value)}.")
    return value


def _plain(value):
    """simdjson proxies to plain Python values (small fields only)."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _type_name(value) -> str:
    """describe_value, also for the parser's lazy lists and objects."""
    if isinstance(value, simdjson.Array):
        return "a list"
    if isinstance(value, simdjson.Object):
        return "an object"
    return describe_value(value)


def _check_output(features: np.ndarray, block_name: str) -> None:
    if not np.isfinite(features).all():
        error_log.error("block %s produced non-finite features", block_name)
        raise ConfigurationError(
            f"Block '{block_name}' produced non-finite features for this window; "
            "check that the window holds a real signal."
        )


# --- responses ------------------------------------------------------------------------------


def _protocol_response(handler) -> Response:
    """Run a protocol handler; any failure becomes HTTP 200 success:false, as Studio expects."""
    try:
        payload = handler()
    except HTTPException:
        raise  # 413 and friends keep their status
    except ConfigurationError as exc:
        g.error_kind = "user"  # HTTP 200 for Studio, but an error for the metrics
        payload = {"success": False, "error": str(exc)}
    except Exception as exc:  # a bug in a block must not take the request (or the worker) down
        g.error_kind = "server"
        error_log.error("block %s failed\n%s", g.get("block"), traceback.format_exc())
        payload = {"success": False, "error": f"Internal error in block '{g.get('block')}': {exc}"}
    return _json_response(payload)


def _json_response(payload: Any, status: int = 200) -> Response:
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status=status, mimetype="application/json")


class _NotFound(HTTPException):
    code = 404

    def __init__(self, message: str):
        super().__init__(message)
        self.user_message = message


# --- logging --------------------------------------------------------------------------------


def _configure_logging() -> None:
    for logger in (access_log, error_log):
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


# Routes that orchestrators and Prometheus poll: logged at debug level, not as traffic.
QUIET_ROUTES = {"healthz", "metrics"}


def _route() -> str:
    """The route's name, from the URL rule that matched (a bounded set, for metric labels):
    run, batch, parameters, describe, tflite-impl, blocks, healthz, metrics, or unmatched."""
    endpoint = request.url_rule.endpoint if request.url_rule is not None else None
    if endpoint is None:
        return "unmatched"
    return endpoint.split("_", 1)[1] if endpoint.startswith(("block_", "root_")) else endpoint.removeprefix("list_")


def _windows() -> int:
    return g.get("windows", 1 if g.get("window_values") else 0)


def _log_access(status: int, route: str) -> None:
    started = g.get("started")
    line = {
        "method": request.method,
        # request.path: the `/k/<key>` prefix is already off it (server_ops.strip_url_key).
        "path": request.path,
        "status": status,
        "block": g.get("block"),
        "route": route,
        "windows": _windows(),
        "window_values": g.get("window_values", 0),
        "duration_ms": round((time.perf_counter() - started) * 1000, 3) if started else None,
        "project_id": request.headers.get("x-ei-project-id"),
        "sample_id": request.headers.get("x-ei-sample-id") or request.headers.get("x-ei-sample-ids"),
        "pid": os.getpid(),
    }
    level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
    access_log.log(level, orjson.dumps({k: v for k, v in line.items() if v is not None}).decode())


def main(argv: Optional[list[str]] = None) -> None:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Edge Impulse DSP block server (development server).")
    parser.add_argument("--print-parameters", action="store_true",
                        help="print the root block's parameters.json (env DSP_BLOCK) and exit; "
                             "`make parameters.json` writes it for `edge-impulse-blocks push`")
    args = parser.parse_args(argv)
    if args.print_parameters:
        blocks = all_blocks()
        name = os.environ.get("DSP_BLOCK") or DEFAULT_ROOT_BLOCK
        if name not in blocks:
            raise SystemExit(f"DSP_BLOCK={name!r} is not a block of this server; choose one of: {', '.join(blocks)}")
        sys.stdout.write(orjson.dumps(blocks[name].parameters, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    create_app().run(host=os.environ.get("HOST", "0.0.0.0"), port=int(os.environ.get("PORT", 4446)), threaded=True)


if __name__ == "__main__":
    main()
