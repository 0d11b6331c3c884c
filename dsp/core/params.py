"""Turn the `params` of a request into the typed values a block's parameters.json declares.

Studio sends every declared parameter (hidden ones too) with dashes replaced by underscores;
select values arrive as strings and an int may arrive as a float. curl users send fewer, in
either spelling. This module accepts all of that, fills the declared defaults, and rejects
anything else with a message that names the parameter and what it accepts.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Optional

from dsp.core.errors import ConfigurationError


@dataclass(frozen=True)
class ParameterSpec:
    """One item of a parameters.json group."""

    key: str  # the underscore form: what blocks receive
    param: str  # as declared (may use dashes)
    type: str
    default: Any
    options: tuple[str, ...] = ()
    config_type: Optional[str] = None
    optional: bool = False


def parameter_specs(parameters_json: dict) -> dict[str, ParameterSpec]:
    """All items of all groups, keyed by underscore name, in declaration order."""
    specs: dict[str, ParameterSpec] = {}
    for group in parameters_json.get("parameters", []):
        for item in group.get("items", []):
            param = item["param"]
            options = tuple(option_value(v) for v in item.get("valid", []))
            spec = ParameterSpec(
                key=param.replace("-", "_"),
                param=param,
                type=item["type"],
                default=item.get("value"),
                options=options,
                config_type=item.get("configType"),
                optional=bool(item.get("optional", False)),
            )
            specs[spec.key] = spec
    return specs


def resolve_params(specs: dict[str, ParameterSpec], given: Any) -> dict[str, Any]:
    """Every declared parameter, typed, from the request's `params` (None means all defaults).

    Raises ConfigurationError for a non-object `params`, an unknown key (suggesting the closest
    declared one) or a value that does not fit its declared type or options.
    """
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ConfigurationError(
            f"'params' must be an object mapping parameter names to values; got {describe_value(given)}"
        )
    values: dict[str, Any] = {}
    for raw_key, raw_value in given.items():
        key = str(raw_key).replace("-", "_")
        spec = specs.get(key)
        if spec is None:
            raise ConfigurationError(_unknown_parameter_message(str(raw_key), specs))
        values[key] = coerce(spec, raw_value)
    for key, spec in specs.items():
        if key not in values:
            values[key] = coerce(spec, spec.default)
    return values


def coerce(spec: ParameterSpec, value: Any) -> Any:
    """`value` converted to the declared type of `spec`; None is the default (or unset if optional)."""
    if value is None:
        if spec.optional:
            return None
        value = spec.default
    convert = _CONVERTERS.get(spec.type)
    if convert is None:
        return value
    return convert(spec, value)


def _to_int(spec: ParameterSpec, value: Any) -> int:
    number = _to_number(spec, value, "a whole number")
    if not float(number).is_integer():
        raise ConfigurationError(f"Parameter '{spec.param}' must be a whole number; got {value!r}")
    return int(number)


def _to_float(spec: ParameterSpec, value: Any) -> float:
    return float(_to_number(spec, value, "a number"))


def _to_number(spec: ParameterSpec, value: Any, expected: str) -> float:
    # bool is an int subclass in Python; true/false in a numeric field is a client mistake.
    if isinstance(value, bool):
        raise ConfigurationError(f"Parameter '{spec.param}' must be {expected}; got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigurationError(
                f"Parameter '{spec.param}' must be {expected}; got {value!r}"
            ) from None
    if not isinstance(value, (int, float)):
        raise ConfigurationError(f"Parameter '{spec.param}' must be {expected}; got {describe_value(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigurationError(f"Parameter '{spec.param}' must be a finite number; got {value!r}")
    return value


def _to_bool(spec: ParameterSpec, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise ConfigurationError(f"Parameter '{spec.param}' must be true or false; got {value!r}")


def _to_string(spec: ParameterSpec, value: Any) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigurationError(f"Parameter '{spec.param}' must be a string; got {describe_value(value)}")


def _to_option(spec: ParameterSpec, value: Any) -> Any:
    # Select values travel as strings ("3"); curl users send numbers (3, 3.0): match both.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigurationError(
            f"Parameter '{spec.param}' must be one of {_quoted(spec.options)}; got {describe_value(value)}"
        )
    text = str(value).strip()
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    chosen = next((o for o in spec.options if o == text), None)
    if chosen is None:
        chosen = next((o for o in spec.options if o.lower() == text.lower()), None)
    if chosen is None:
        raise ConfigurationError(
            f"Parameter '{spec.param}' must be one of {_quoted(spec.options)}; got {value!r}"
        )
    if spec.config_type == "int":
        return int(chosen)
    if spec.config_type == "float":
        return float(chosen)
    return chosen


_CONVERTERS = {
    "int": _to_int,
    "float": _to_float,
    "boolean": _to_bool,
    "flag": _to_bool,
    "string": _to_string,
    "select": _to_option,
}


def option_value(option: Any) -> str:
    """A select option of parameters.json as the string requests carry: `{"value": v}` or a bare v."""
    return str(option["value"] if isinstance(option, dict) else option)


def _unknown_parameter_message(name: str, specs: dict[str, ParameterSpec]) -> str:
    declared = [s.param for s in specs.values()]
    normalised = {s.key: s.param for s in specs.values()}
    close = difflib.get_close_matches(name.replace("-", "_"), list(normalised), n=1, cutoff=0.6)
    hint = f" Did you mean '{normalised[close[0]]}'?" if close else ""
    listing = ", ".join(declared) if declared else "none"
    return f"Unknown parameter '{name}'.{hint} This block's parameters are: {listing}."


def _quoted(options: tuple[str, ...]) -> str:
    return ", ".join(f"'{o}'" for o in options)


def describe_value(value: Any) -> str:
    """A short description of a JSON value for error messages ("the string 'x'", "a list")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"[:80]
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
