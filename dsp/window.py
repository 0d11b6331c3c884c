"""Checks on the raw window that every block shares, before any block sees it."""
from __future__ import annotations

import numpy as np

from dsp.errors import ConfigurationError


def split_axes(values: np.ndarray, axes: list[str]) -> np.ndarray:
    """De-interleave a flat window [s0ax0, s0ax1, ..., s1ax0, ...] into (samples, axes).

    Works on a batch too: (windows, values) becomes (windows, samples, axes).
    """
    n_axes = len(axes)
    n_values = values.shape[-1]
    if n_values == 0:
        raise ConfigurationError(
            "The window is empty: 'features' must hold at least one sample per axis."
        )
    if n_values % n_axes:
        raise ConfigurationError(
            f"The window has {n_values} values, which does not divide by the {n_axes} axes "
            f"({', '.join(axes)}): 'features' must hold one value per axis per sample, interleaved."
        )
    return values.reshape(values.shape[:-1] + (n_values // n_axes, n_axes))


def check_finite(values: np.ndarray, what: str = "features") -> None:
    """Reject NaN and infinity: they poison every feature computed from them."""
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values.reshape(-1)))[0]
        raise ConfigurationError(
            f"'{what}' must be finite numbers; value {bad} is {values.reshape(-1)[bad]!r}."
        )
