"""Named axes (`info.axes` and the request's `named_axes`) and state passed back through `/run`."""
from __future__ import annotations

import numpy as np
import pytest

from dsp.core.block import BatchFeatures, Block, Features, Request

AXES_PARAMETERS = {
    "version": 1,
    "type": "dsp",
    "info": {
        "title": "Axes probe", "author": "Tests", "description": "Echoes its columns.",
        "name": "Axes probe", "latestImplementationVersion": 1, "usesState": True,
        "axes": [
            {"name": "light", "description": "ambient light"},
            {"name": "motion", "description": "motion events"},
            {"name": "hr_locked", "description": "heart-rate lock", "optional": True},
        ],
    },
    "parameters": [],
}


def _echo(req: Request) -> Features:
    """Features: the first sample of each received column; labels: the axis names received."""
    count = int(req.state or 0) + 1
    return Features(features=req.raw[0].astype(np.float64), labels=list(req.axes),
                    output_config={"type": "flat", "shape": {"width": len(req.axes)}},
                    state=str(count), state_string=str(count))


def _echo_batch(req: Request) -> BatchFeatures:
    return BatchFeatures(features=req.raw[:, 0, :].astype(np.float64), labels=list(req.axes),
                         output_config={"type": "flat", "shape": {"width": len(req.axes)}}, fft_used=[])


@pytest.fixture(params=["loop", "vectorised"])
def client(request):
    from dsp_server import create_app

    block = Block(name="axes", parameters=AXES_PARAMETERS, compute=_echo,
                  compute_batch=_echo_batch if request.param == "vectorised" else None)
    return create_app(blocks={"axes": block}, root_block="axes").test_client()


def _run(client, axes, features, **extra):
    body = {"features": features, "axes": axes, "sampling_freq": 10, "draw_graphs": False,
            "params": {}, **extra}
    return client.post("/run", json=body).get_json()


def test_named_axes_reorder_input_columns_into_the_declared_order(client):
    answer = _run(client, ["hr", "lux", "acc"], [1, 200, -1, 1, 210, 1],
                  named_axes={"light": "lux", "motion": "acc", "hr_locked": "hr"})
    assert answer["success"], answer
    assert answer["labels"] == ["light", "motion", "hr_locked"]
    assert answer["features"] == [200, -1, 1]


def test_an_optional_axis_mapped_to_false_is_left_out(client):
    answer = _run(client, ["lux", "acc", "hr"], [200, -1, 1],
                  named_axes={"light": "lux", "motion": "acc", "hr_locked": False})
    assert answer["labels"] == ["light", "motion"]
    assert answer["features"] == [200, -1]


def test_input_axes_with_the_declared_names_match_by_name(client):
    answer = _run(client, ["motion", "light"], [-1, 200])
    assert answer["labels"] == ["light", "motion"]
    assert answer["features"] == [200, -1]


def test_without_named_axes_input_axes_are_taken_in_the_declared_order(client):
    answer = _run(client, ["a", "b", "c"], [200, -1, 1], named_axes=False)
    assert answer["labels"] == ["light", "motion", "hr_locked"]
    assert answer["features"] == [200, -1, 1]
    two = _run(client, ["a", "b"], [200, -1])
    assert two["labels"] == ["light", "motion"]


@pytest.mark.parametrize("axes, features, named_axes, expected", [
    (["a"], [1], None, "needs light, motion"),
    (["a", "b", "c", "d"], [1, 2, 3, 4], None, "takes at most 3"),
    (["a", "b"], [1, 2], {"light": "a", "motion": "b", "heart": "c"}, "'heart'"),
    (["a", "b"], [1, 2], {"light": "a", "motion": "z"}, "maps 'motion' to 'z'"),
    (["a", "b"], [1, 2], {"light": "a"}, "leaves out motion"),
    (["a", "b"], [1, 2], ["a", "b"], "'named_axes' must be an object"),
])
def test_axis_mapping_errors_say_what_was_expected(client, axes, features, named_axes, expected):
    extra = {} if named_axes is None else {"named_axes": named_axes}
    answer = _run(client, axes, features, **extra)
    assert answer["success"] is False
    assert expected in answer["error"]


def test_batch_maps_named_axes_for_every_window(client):
    body = {"features": [[1, 200, -1], [0, 5, 1]], "axes": ["hr", "lux", "acc"], "sampling_freq": 10,
            "params": {}, "state": "", "named_axes": {"light": "lux", "motion": "acc", "hr_locked": "hr"}}
    answer = client.post("/batch", json=body).get_json()
    assert answer["success"], answer
    assert answer["labels"] == ["light", "motion", "hr_locked"]
    assert answer["features"] == [[200, -1, 1], [5, 1, 0]]


def test_run_continues_from_the_state_string_it_returned(client):
    first = _run(client, ["light", "motion"], [1, 2])
    assert first["state_string"] == "1"
    second = _run(client, ["light", "motion"], [1, 2], state_string=first["state_string"])
    assert second["state_string"] == "2"
    third = _run(client, ["light", "motion"], [1, 2], state=second["state"])
    assert third["state"] == "3"


def test_a_mix_of_declared_and_other_names_is_refused_not_mapped_by_position(client):
    # By position, "motion" would land on light: refuse and say how to map instead.
    answer = _run(client, ["lux", "motion"], [200, -1])
    assert answer["success"] is False
    assert "lux" in answer["error"] and "named_axes" in answer["error"]
