"""Block state text: round trips exactly, and refuses what it did not make."""
from __future__ import annotations

import numpy as np
import pytest

from dsp.core.errors import ConfigurationError
from dsp.core.state import decode_state, encode_state


def test_state_round_trips_floats_exactly():
    quat = np.array([0.1 + 1e-17, 1 / 3, -2 / 7, np.pi])
    payload = decode_state(encode_state("kalman", {"filter": "ekf", "quat": quat, "count": 3}), "kalman")
    assert payload == {"filter": "ekf", "quat": quat.tolist(), "count": 3}


def test_empty_state_starts_a_stream():
    assert decode_state("", "kalman") is None


@pytest.mark.parametrize("text, expected", [
    ("not json", "not JSON"),
    ("[1, 2]", "not a state this server produced"),
    ('{"block": "fuzzy-off-arm", "format": 1}', "produced by block 'fuzzy-off-arm'"),
    ('{"block": "kalman", "format": 99}', "format 99"),
    ('{"block": "kalman", "format": 1, "x": 1e999}', "not a state this server produced"),
])
def test_foreign_or_damaged_state_is_refused_clearly(text, expected):
    with pytest.raises(ConfigurationError, match=expected):
        decode_state(text, "kalman")


def test_a_non_finite_state_is_never_emitted():
    with pytest.raises(ConfigurationError, match="non-finite"):
        encode_state("kalman", {"quat": np.array([np.nan, 0, 0, 1])})
