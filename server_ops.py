"""Operating the DSP server: Prometheus metrics over every gunicorn worker, and the optional
shared key (env `DSP_API_KEY`). HTTP concerns only; `dsp_server.py` wires them into the app.

Metrics use prometheus-client's multiprocess mode when env `PROMETHEUS_MULTIPROC_DIR` is set
(gunicorn.conf.py sets it before the app is imported: the client picks its value storage at
import time), so a scrape answered by one worker sums every worker's counts. Without it (the
Flask test client, `python dsp_server.py`) each app counts in its own registry.
"""
from __future__ import annotations

import hmac
import logging
import os
import re
from typing import Optional

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
API_KEY_ENV = "DSP_API_KEY"
API_KEY_HEADER = "x-api-key"
# Read when the client is imported, as the client itself does to choose how values are stored.
MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))
KEY_PREFIX = "/k/"
# The WSGI environ entry the key taken off a `/k/<key>/...` path is kept in.
URL_KEY = "dsp.url_key"
# From a /run of a light block (about a millisecond) to a large batch (seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The server's counters and latency histogram, labelled by block and route."""

    def __init__(self):
        # Per app, not the global registry: tests build many apps in one process. In multiprocess
        # mode the values live in the shared directory whatever registry the metrics are in.
        self.registry = CollectorRegistry()
        labels = ("block", "route")
        self.requests = Counter("dsp_requests", "HTTP requests answered, by status code.",
                                (*labels, "status"), registry=self.registry)
        self.errors = Counter("dsp_errors", "Failed requests: kind=user (4xx, and run/batch answers with "
                              "success false for a bad request) or kind=server (5xx, a block's bug).",
                              (*labels, "kind"), registry=self.registry)
        self.latency = Histogram("dsp_request_duration_seconds", "Time to answer a request.", labels,
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.windows = Counter("dsp_windows", "Windows processed by run and batch (successful requests).",
                               labels, registry=self.registry)

    def observe(self, block: Optional[str], route: str, status: int, seconds: Optional[float],
                windows: int, error_kind: Optional[str]) -> None:
        block = block or ""
        self.requests.labels(block, route, str(status)).inc()
        if status >= 500:
            error_kind = "server"
        elif status >= 400:
            error_kind = "user"
        if error_kind:
            self.errors.labels(block, route, error_kind).inc()
        elif windows:
            self.windows.labels(block, route).inc(windows)
        if seconds is not None:
            self.latency.labels(block, route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text a scrape gets, and its content type."""
        if MULTIPROCESS:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def strip_url_key(wsgi_app):
    """WSGI middleware: `/k/<key>/rest` is served as `/rest`, the key kept aside in the environ,
    so the prefix reaches exactly the same views and nothing that logs the path sees the key."""

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(KEY_PREFIX):
            key, _, rest = path[len(KEY_PREFIX):].partition("/")
            environ[URL_KEY] = key
            environ["PATH_INFO"] = "/" + rest
            # gunicorn's copies of the raw request line also hold the key.
            for name in ("RAW_URI", "REQUEST_URI"):
                environ.pop(name, None)
        return wsgi_app(environ, start_response)

    return app


def key_problem(expected: str, header_key: Optional[str], url_key: Optional[str]) -> Optional[str]:
    """None when the request carries the key, else why it is refused (never echoing the key)."""
    given = url_key if url_key is not None else header_key
    if not given:
        return (f"This server needs its key: send it in an '{API_KEY_HEADER}' header, or put it "
                f"first in the path, /k/<key>/... (set by {API_KEY_ENV}).")
    # Constant time: how long the comparison takes must not tell how much of a guess was right.
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return "The key is wrong."
    return None


_KEY_IN_PATH = re.compile(r"/k/[^/\s?\"]*")


class RedactUrlKeys(logging.Filter):
    """Replaces `/k/<key>` in a record's message with `/k/***`: for loggers that print the raw
    request line (werkzeug's development server, gunicorn's 'Error handling request')."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if KEY_PREFIX in message:
            record.msg, record.args = _KEY_IN_PATH.sub(KEY_PREFIX + "***", message), None
        return True


def redact_url_keys(*logger_names: str) -> None:
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUrlKeys) for f in logger.filters):
            logger.addFilter(RedactUrlKeys())
