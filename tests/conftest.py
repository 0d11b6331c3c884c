"""Shared fixtures: apps built from a test registry, and the real app; the orientation filters'
C library built from the current sources for the whole session."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from dsp.core.block import BatchFeatures, Block, Features, Request
from dsp.core.errors import ConfigurationError

def pytest_configure(config):
    # Built (or found in device.build's cache, keyed by the sources' hash) and pointed to for this
    # process and the servers tests start, so no test runs a library older than the C code.
    from device import build
    from dsp.fusion import orientation_library

    try:
        os.environ[orientation_library.ENV] = str(build.server_library())
    except build.BuildError as exc:
        raise pytest.UsageError(f"cannot build the orientation filters' C library: {exc}") from None


PROBE_PARAMETERS = {
    "version": 1,
    "type": "dsp",
    "info": {
        "title": "Probe",
        "author": "Tests",
        "description": "Scales the window; counts windows in its state.",
        "name": "Probe",
        "latestImplementationVersion": 2,
        "usesState": True,
    },
    "parameters": [
        {
            "group": "Probe",
            "items": [
                {"name": "Scale", "param": "scale-axes", "type": "float", "value": 1},
                {"name": "Repeat", "param": "repeat", "type": "int", "value": 1},
                {"name": "Mode", "param": "mode", "type": "select", "value": "keep",
                 "valid": ["keep", "negate"]},
                {"name": "Ratio", "param": "ratio", "type": "select", "value": "1",
                 "valid": ["1", "3", "10"], "configType": "int"},
                {"name": "Log", "param": "do_log", "type": "boolean", "value": False},
                {"name": "Cutoff", "param": "cutoff", "type": "float", "value": 0, "optional": True},
                {"name": "Fail", "param": "fail", "type": "select", "value": "no",
                 "valid": ["no", "config", "crash", "nan"]},
            ],
        }
    ],
}


def probe_compute(req: Request) -> Features:
    """A block whose output is easy to predict: the scaled window, and a window counter as state."""
    p = req.params
    if p["fail"] == "config":
        raise ConfigurationError("probe: asked to fail")
    if p["fail"] == "crash":
        raise RuntimeError("probe: simulated bug")
    values = np.tile(req.raw.reshape(-1) * p["scale_axes"], p["repeat"])
    if p["mode"] == "negate":
        values = -values
    if p["fail"] == "nan":
        values = values * np.nan
    seen = int(req.state or 0) + 1
    return Features(
        features=values,
        labels=[f"v{i}" for i in range(values.size)],
        output_config={"type": "flat", "shape": {"width": int(values.size)}},
        fft_used=[p["ratio"]],
        state=str(seen),
        state_string=f"{seen} windows seen",
    )


def probe_block(batch: bool = False) -> Block:
    def compute_batch(req: Request) -> BatchFeatures:
        rows = req.raw.reshape(req.raw.shape[0], -1) * req.params["scale_axes"]
        return BatchFeatures(features=rows, labels=[], output_config={"type": "flat",
                             "shape": {"width": rows.shape[1]}}, fft_used=[])

    return Block(name="probe", parameters=PROBE_PARAMETERS, compute=probe_compute,
                 compute_batch=compute_batch if batch else None)


@pytest.fixture
def probe_app():
    from dsp_server import create_app

    return create_app(blocks={"probe": probe_block()}, root_block="probe", max_body_mb=1)


@pytest.fixture
def probe_client(probe_app):
    return probe_app.test_client()


@pytest.fixture(scope="session")
def real_app():
    from dsp_server import create_app

    return create_app()


@pytest.fixture
def client(real_app):
    return real_app.test_client()


@pytest.fixture
def access_records():
    """Access-log records as the logger emits them (INFO and above), for tests of what is logged."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("dsp_server.access")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
