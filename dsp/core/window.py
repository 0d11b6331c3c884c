"""The raw window as a block takes it: de-interleaved, its columns mapped onto the declared axes."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from dsp.core.errors import ConfigurationError


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


class AxisMap:
    """Which input columns feed a block's declared axes (`info.axes`), and in what order.

    Blocks that declare named axes receive their columns in declared order, named as declared,
    whatever the input calls them. Studio sends `named_axes` (declared name -> input axis name, or
    false for an optional axis left unselected). Without it, input axes that all carry declared
    names are matched by name; input axes none of which carries a declared name are taken
    positionally, in the declared order; a mix of the two is refused.
    """

    def __init__(self, input_axes: list[str], declared: Optional[list[dict]], named_axes: Any):
        self.input_axes = input_axes
        if not declared:
            self.axes, self.columns = list(input_axes), None
            return
        names = [axis["name"] for axis in declared]
        required = [axis["name"] for axis in declared if not axis.get("optional")]
        if named_axes is None or named_axes is False:
            chosen = self._implicit(input_axes, names, required)
        elif isinstance(named_axes, dict):
            chosen = self._named(input_axes, names, required, named_axes)
        else:
            raise ConfigurationError(
                "'named_axes' must be an object mapping the block's axes "
                f"({', '.join(names)}) to input axis names; got {type(named_axes).__name__}."
            )
        self.axes = [name for name in names if name in chosen]
        self.columns = [chosen[name] for name in self.axes]
        if self.columns == list(range(len(input_axes))):
            self.columns = None  # identity: no copy needed

    def split(self, values: np.ndarray) -> np.ndarray:
        """Flat interleaved window(s) -> (..., samples, len(self.axes)) in declared order."""
        raw = split_axes(values, self.input_axes)
        return raw if self.columns is None else raw[..., self.columns]

    @staticmethod
    def _implicit(input_axes: list[str], names: list[str], required: list[str]) -> dict[str, int]:
        known = [axis for axis in input_axes if axis in names]
        if known and (len(known) < len(input_axes) or len(set(known)) < len(known)):
            # Some names match and some do not: by position, a matching name could land on another
            # declared axis (gyrX's values as accX), so say what to do instead of guessing.
            others = [axis for axis in input_axes if axis not in names]
            raise ConfigurationError(
                f"Axes {', '.join(others) or ', '.join(known)} do not match this block's axes one to one "
                f"({', '.join(names)}): name every axis as declared, or map them with 'named_axes'."
            )
        if known:
            chosen = {name: input_axes.index(name) for name in input_axes}
        elif len(input_axes) <= len(names):
            chosen = {name: index for index, name in enumerate(names[: len(input_axes)])}
        else:
            raise ConfigurationError(
                f"Got {len(input_axes)} axes ({', '.join(input_axes)}) but this block takes at most "
                f"{len(names)}: {', '.join(names)}, in that order (or map them with 'named_axes')."
            )
        missing = [name for name in required if name not in chosen]
        if missing:
            raise ConfigurationError(
                f"Got {len(input_axes)} axes ({', '.join(input_axes)}); this block needs "
                f"{', '.join(required)}, in that order, then optionally "
                f"{', '.join(n for n in names if n not in required) or 'nothing more'} "
                f"(or map them with 'named_axes'). Missing: {', '.join(missing)}."
            )
        return chosen

    @staticmethod
    def _named(input_axes: list[str], names: list[str], required: list[str], named_axes: dict) -> dict[str, int]:
        unknown = [key for key in named_axes if key not in names]
        if unknown:
            raise ConfigurationError(
                f"'named_axes' names {', '.join(map(repr, unknown))}, which this block does not have; "
                f"its axes are {', '.join(names)}."
            )
        chosen = {}
        for name in names:
            selected = named_axes.get(name)
            if selected is None or selected is False or selected == "":
                continue
            if not isinstance(selected, str) or selected not in input_axes:
                raise ConfigurationError(
                    f"'named_axes' maps '{name}' to {selected!r}, which is not one of the input axes "
                    f"({', '.join(input_axes)})."
                )
            chosen[name] = input_axes.index(selected)
        missing = [name for name in required if name not in chosen]
        if missing:
            raise ConfigurationError(
                f"'named_axes' leaves out {', '.join(missing)}; this block needs "
                f"{', '.join(required)} mapped to input axes."
            )
        return chosen
