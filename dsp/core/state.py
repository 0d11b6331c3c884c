"""The state a stateful block carries from one window to the next.

The state travels through the client (`state` in `/batch`, `state_string` or `state` in `/run`), so
any server replica can continue a stream. It is compact JSON text: readable in Studio, and safe to
parse (no pickle). The block's name is stored with it so that a state cannot be fed to another block.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable, Optional

import numpy as np
import orjson

from dsp.core.block import Features, Request
from dsp.core.errors import ConfigurationError

STATE_FORMAT = 1


def encode_state(block_name: str, payload: dict) -> str:
    """`payload` (JSON-able, finite numbers only) as state text for `block_name`."""
    if not _all_finite(payload):
        raise ConfigurationError(
            f"Block '{block_name}' cannot continue this stream: its state became non-finite on this "
            "window (the input drove the filter out of range); check the input's units and values."
        )
    return orjson.dumps({**payload, "block": block_name, "format": STATE_FORMAT},
                        option=orjson.OPT_SERIALIZE_NUMPY).decode()


def decode_state(text: str, block_name: str) -> Optional[dict]:
    """The payload stored by `encode_state`, or None for "" (the first window of a stream)."""
    if not text:
        return None
    try:
        state = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ConfigurationError(
            f"'state' is not a state this server produced (not JSON); send \"\" to start a new stream, "
            f"or the state returned for the previous window of block '{block_name}'."
        ) from None
    if not isinstance(state, dict) or "block" not in state:
        raise ConfigurationError(
            f"'state' is not a state this server produced; send \"\" to start a new stream, or the "
            f"state returned for the previous window of block '{block_name}'."
        )
    if state["block"] != block_name:
        raise ConfigurationError(
            f"'state' was produced by block '{state['block']}', not '{block_name}'; send \"\" to start "
            "a new stream."
        )
    if state.get("format") != STATE_FORMAT:
        raise ConfigurationError(
            f"'state' has format {state.get('format')!r}; this server reads format {STATE_FORMAT}. "
            "Send \"\" to start a new stream."
        )
    if not _all_finite(state):
        raise ConfigurationError("'state' holds a non-finite number; send \"\" to start a new stream.")
    del state["block"], state["format"]
    return state


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, np.ndarray):
        return value.dtype.kind not in "fc" or bool(np.isfinite(value).all())
    if isinstance(value, dict):
        return all(_all_finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(item) for item in value)
    return True


def continuing_overlapping_windows(compute: Callable[[Request], Features]) -> Callable[[Request], Features]:
    """`compute` for a stateful block whose windows may overlap.

    Studio cuts a sample into windows `window increase` apart; when that is shorter than the
    window, consecutive windows share samples, and continuing from the state at the *end* of the
    previous window would run the filters over the shared samples twice (a gyroscope integrates
    that rotation twice). With the block's `window-increase-ms` parameter set to the impulse's
    window increase, the state handed on is the one after the first `increase` samples of this
    window: where the next window starts. 0 (the default) means windows follow each other.
    """

    def compute_window(req: Request) -> Features:
        result = compute(req)
        increase_ms = req.params["window_increase_ms"]
        if not (math.isfinite(increase_ms) and increase_ms >= 0):
            raise ConfigurationError(
                f"Parameter 'window-increase-ms' must be 0 (windows follow each other) or the "
                f"impulse's window increase in ms; got {increase_ms!r}.")
        increase = int(round(increase_ms * req.sampling_freq / 1000.0))
        if 0 < increase < req.raw.shape[0]:
            lead = replace(req, raw=req.raw[:increase], draw_graphs=False, lead_only=True)
            try:
                result.state = result.state_string = compute(lead).state
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"Cannot compute the state where the next window starts (after the first {increase} "
                    f"samples: 'window-increase-ms' {increase_ms:g}): {exc}") from None
        return result

    return compute_window
