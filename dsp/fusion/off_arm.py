"""Fuzzy off-arm detector (fuzzy-off-arm): is a wrist-worn heart-rate monitor worn or not?

After the article in `shared/seeds/fuzzy-off-arm-detection.md`. Three input axes, in this order:

* ``light``: ambient light sensor counts (>= 0).
* ``motion``: by default the accelerometer's motion events, +1 any-motion, -1 no-motion, 0 none
  (at most one event per sample). Parameter ``motion-input`` also accepts a motion quantity in
  0..1, or the acceleration magnitude (see below).
* ``hr_locked``: 1 when the heart-rate algorithm has locked, else 0 (fractions in 0..1 accepted).

Preprocessing, per sample, continuing across windows through the state:

* Composite motion level m in 0..1 (events mode). An any-motion event raises m by
  1 / (rise time x event rate); a no-motion event lowers it by 1 / (fall time x event rate), and
  because the sensor reports no-motion only once, synthetic no-motion events follow at the event
  rate (at t0 + k / rate) until an any-motion event arrives. m stays in [0, 1]; 1 - m is the
  "no-motion side". With the defaults (2 Hz, 10 s, 10 s), any-motion events at 2 Hz or more for
  10 s take m from 0 to 1, and 10 s after a no-motion event with no any-motion since m is 0
  whatever it was. A stream starts at rest (m = 0, no synthetic events pending).
* Quantity mode: m is the running average of the motion axis over ``motion-average-time``.
  Magnitude mode: m is the running average of |magnitude / gravity - 1| / full scale, clipped
  to [0, 1]: the deviation from 1 g, as a fraction of ``motion-full-scale`` (in g), so a device at
  rest reads 0 and one shaken by 0.2 g or more (default) reads 1. Gravity is given in the
  axis's own units (9.80665 for m/s^2, 1 for g).
* The heart-rate lock is the running average of ``hr_locked`` over ``hr-average-time``.

Running averages are boxcar means over the last round(T x fs) samples; a stream's first window
averages over the samples seen so far (it starts from its own first samples), later windows
continue from the tail carried in the state, so splitting a stream into windows changes nothing.

Fuzzy inference (`dsp.fusion.fuzzy_logic`): light LOW / MID / HIGH, motion LOW / MODERATE / HIGH, hr
LOCKED / NOT_LOCKED, output ``off_arm`` on 0..1 with ON_ARM near 0, PROBABLY_OFF around 0.7,
CERTAINLY_OFF near 1; rule base: the article's nine rules, the reduced equivalent five, or custom
JSON text. A certainty above 0.5 means off-arm.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache

import numpy as np

from dsp.core.block import Block, Features, Request, load_parameters
from dsp.core.errors import ConfigurationError
from dsp.core.state import continuing_overlapping_windows, decode_state, encode_state
from dsp.fusion.fuzzy_logic import FuzzySet, FuzzySystem, MembershipFunction, OutputVariable, Variable, parse_rule_base
from dsp.graphs import line_graph

__all__ = ["BLOCK", "compute", "ARTICLE_RULES", "REDUCED_RULES", "build_system",
           "motion_from_events", "running_mean", "AXES"]

NAME = "fuzzy-off-arm"
AXES = ("light", "motion", "hr_locked")
MOTION_INPUTS = ("events", "quantity", "magnitude")
RULE_BASES = ("article", "reduced", "custom")
OUTPUT = "off_arm"
OFF_ARM_THRESHOLD = 0.5
# Levels this close to 0 or 1 are snapped there, so 20 steps of 1/20 end exactly at 0 or 1.
LEVEL_SNAP = 1e-9
# Synthetic event times t0 + k / rate are compared with sample times k' / fs: this slack keeps
# an event that falls exactly on a sample from slipping to the next one by rounding.
TIME_SLACK = 1e-9
# A running average longer than this many samples would make the state (its tail) unwieldy.
MAX_AVERAGE_SAMPLES = 200_000


def _clause_rule(condition, consequent: str) -> dict:
    return {"if": condition, "then": consequent}


def _all(*clauses) -> dict:
    return {"and": list(clauses)}


def _rule_list_text(rules: list) -> str:
    """JSON text with one rule per line: readable in Studio's text box."""
    return "[\n  " + ",\n  ".join(json.dumps(rule) for rule in rules) + "\n]"


# The article's nine rules, in its order and words.
ARTICLE_RULES = _rule_list_text([
    _clause_rule(_all("motion is LOW", "hr is NOT_LOCKED", "light is HIGH"), "CERTAINLY_OFF"),
    _clause_rule(_all("motion is HIGH", "hr is NOT_LOCKED", "light is HIGH"), "CERTAINLY_OFF"),
    _clause_rule(_all("motion is LOW", "hr is NOT_LOCKED", {"or": ["light is LOW", "light is MID"]}),
                 "CERTAINLY_OFF"),
    _clause_rule("light is HIGH", "CERTAINLY_OFF"),
    _clause_rule(_all("motion is HIGH", "hr is NOT_LOCKED", "light is MID"), "PROBABLY_OFF"),
    _clause_rule(_all("motion is HIGH", "hr is NOT_LOCKED", "light is LOW"), "PROBABLY_OFF"),
    _clause_rule(_all("motion is LOW", "hr is LOCKED", "light is LOW"), "PROBABLY_OFF"),
    _clause_rule(_all("motion is HIGH", "hr is LOCKED", "light is LOW"), "ON_ARM"),
    _clause_rule(_all("motion is MODERATE", "hr is LOCKED", "light is LOW"), "ON_ARM"),
])

# The same decisions in five rules. Mamdani joins rules with the same consequent by max, so:
# rules 1 and 2 (... and light HIGH) are covered by rule 4 (light HIGH alone), since
# min(a, b, c) <= c; rules 5 and 6 differ only in light MID / LOW, and max(min(x, MID),
# min(x, LOW)) = min(x, max(MID, LOW)); likewise rules 8 and 9 differ only in motion HIGH /
# MODERATE. Every consequent's strength is unchanged for any membership functions, so every
# Mamdani output (centroid, bisector, mean of maximum) is identical. Sugeno is not: it sums the
# strengths of all rules, so it differs wherever rule 1 or 2 fires, or 5 and 6 both fire, or 8
# and 9 both fire.
REDUCED_RULES = _rule_list_text([
    _clause_rule("light is HIGH", "CERTAINLY_OFF"),
    _clause_rule(_all("motion is LOW", "hr is NOT_LOCKED", {"or": ["light is LOW", "light is MID"]}),
                 "CERTAINLY_OFF"),
    _clause_rule(_all("motion is HIGH", "hr is NOT_LOCKED", {"or": ["light is LOW", "light is MID"]}),
                 "PROBABLY_OFF"),
    _clause_rule(_all("motion is LOW", "hr is LOCKED", "light is LOW"), "PROBABLY_OFF"),
    _clause_rule(_all({"or": ["motion is HIGH", "motion is MODERATE"]}, "hr is LOCKED", "light is LOW"),
                 "ON_ARM"),
])

# Shapes of the sets: (parameter, set name, shape). "low" sets are 1 up to a, 0 from b; "high"
# sets 0 up to a, 1 from b; "middle" sets 0 below a, 1 from b to c, 0 above d (3 numbers: a
# triangle with its peak at b).
INPUT_SETS = {
    "light": (("light_low", "LOW", "low"), ("light_mid", "MID", "middle"),
              ("light_high", "HIGH", "high")),
    "motion": (("motion_low", "LOW", "low"), ("motion_moderate", "MODERATE", "middle"),
               ("motion_high", "HIGH", "high")),
    "hr": (("hr_not_locked", "NOT_LOCKED", "low"), ("hr_locked", "LOCKED", "high")),
}
OUTPUT_SETS = (("on_arm", "ON_ARM", "low"), ("probably_off", "PROBABLY_OFF", "middle"),
               ("certainly_off", "CERTAINLY_OFF", "high"))


# --------------------------------------------------------------------------------------------
# The fuzzy system
# --------------------------------------------------------------------------------------------

def _membership(param: str, text: str, shape: str) -> MembershipFunction:
    """A membership function from a breakpoint parameter such as "25, 50"."""
    expected = {"low": "2 numbers: 1 up to the first, 0 from the second",
                "high": "2 numbers: 0 up to the first, 1 from the second",
                "middle": "3 or 4 numbers: 0 below the first, 1 from the second to the "
                          "third (or at the second, for 3), 0 above the last"}[shape]
    try:
        points = [float(item) for item in str(text).split(",")]
    except ValueError:
        raise ConfigurationError(f"Parameter '{param.replace('_', '-')}' must be {expected}, "
                                 f"comma-separated; got {text!r}") from None
    counts = (3, 4) if shape == "middle" else (2,)
    if len(points) not in counts or not all(math.isfinite(p) for p in points):
        raise ConfigurationError(f"Parameter '{param.replace('_', '-')}' must be {expected}; "
                                 f"got {text!r}")
    if any(b < a for a, b in zip(points, points[1:])):
        raise ConfigurationError(f"Parameter '{param.replace('_', '-')}' must list its breakpoints "
                                 f"in increasing order; got {text!r}")
    if shape == "low":
        return MembershipFunction.left_shoulder(*points)
    if shape == "high":
        return MembershipFunction.right_shoulder(*points)
    if len(points) == 3:
        return MembershipFunction.triangle(*points)
    return MembershipFunction.trapezoid(*points)


def _set_params(params: dict) -> tuple:
    keys = [key for sets in INPUT_SETS.values() for key, _, _ in sets]
    keys += [key for key, _, _ in OUTPUT_SETS]
    return tuple((key, str(params[key])) for key in keys)


def _rule_text(params: dict) -> str:
    choice = params["rule_base"]
    if choice == "article":
        return ARTICLE_RULES
    if choice == "reduced":
        return REDUCED_RULES
    if choice == "custom":
        return params["custom_rules"]
    raise ConfigurationError(f"Parameter 'rule-base' must be one of {', '.join(RULE_BASES)}; "
                             f"got {choice!r}")


def build_system(params: dict) -> FuzzySystem:
    """The fuzzy system the parameters describe (cached: it is immutable, so shared safely)."""
    points = params["universe_points"]
    if not 11 <= points <= 10001:
        raise ConfigurationError(f"Parameter 'universe-points' must be from 11 to 10001; got {points}")
    return _cached_system(_set_params(params), _rule_text(params), int(points))


@lru_cache(maxsize=32)
def _cached_system(set_params: tuple, rule_text: str, points: int) -> FuzzySystem:
    texts = dict(set_params)
    inputs = tuple(
        Variable(name, tuple(FuzzySet(set_name, _membership(key, texts[key], shape))
                             for key, set_name, shape in sets))
        for name, sets in INPUT_SETS.items())
    output = OutputVariable(OUTPUT, tuple(FuzzySet(set_name, _membership(key, texts[key], shape))
                                          for key, set_name, shape in OUTPUT_SETS),
                            low=0.0, high=1.0, points=points)
    return FuzzySystem(inputs, output, parse_rule_base(rule_text, inputs, output))


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------

def running_mean(values: np.ndarray, tail: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxcar mean over the last `length` samples, continuing from `tail` (earlier samples, at
    most length - 1; fewer at a stream's start, where the mean is over the samples so far).

    Returns (the mean at every sample of `values`, the tail to carry into the next window).
    """
    joined = np.concatenate([tail, values])
    cumulative = np.concatenate([[0.0], np.cumsum(joined)])
    ends = np.arange(tail.size + 1, joined.size + 1)
    starts = np.maximum(ends - length, 0)
    means = (cumulative[ends] - cumulative[starts]) / (ends - starts)
    return means, joined[joined.size - min(length - 1, joined.size):].copy()


def motion_from_events(events: np.ndarray, fs: float, *, level: float, no_motion_age: int,
                       event_rate: float, rise_time: float, fall_time: float
                       ) -> tuple[np.ndarray, float, int]:
    """The composite motion level at every sample from motion events (+1, -1, 0).

    level:         the level before the first sample.
    no_motion_age: samples from the last real no-motion event to the sample before this window,
                   when synthetic no-motion events are being generated; -1 when they are not.
    Returns (levels, level after the last sample, no_motion_age after the last sample).
    """
    n = events.size
    step_up = 1.0 / (rise_time * event_rate)
    step_down = 1.0 / (fall_time * event_rate)
    index = np.arange(n)
    no_motion_start = -(no_motion_age + 1) if no_motion_age >= 0 else -np.inf
    last_no = np.maximum.accumulate(np.where(events < 0, index, -np.inf))
    last_no = np.maximum(last_no, no_motion_start)
    last_any = np.maximum.accumulate(np.where(events > 0, index, -np.inf))
    # Synthetic no-motion events fire at t0 + k / rate (k >= 1) while no any-motion came after
    # the real no-motion event at t0; a sample counts the ones since the previous sample.
    pending = last_no > last_any
    elapsed = np.where(pending, index - np.where(pending, last_no, 0), 0)
    per_sample = event_rate / fs
    synthetic = np.where(pending & (elapsed > 0),
                         np.floor(elapsed * per_sample + TIME_SLACK)
                         - np.floor((elapsed - 1) * per_sample + TIME_SLACK), 0)
    delta = step_up * (events > 0) - step_down * ((events < 0) + synthetic)
    changes = np.flatnonzero(delta)
    # The clamped running sum is sequential, but only samples with a change need a step.
    history = [level]
    for change in delta[changes].tolist():
        level = min(1.0, max(0.0, level + change))
        if level < LEVEL_SNAP:
            level = 0.0
        elif level > 1.0 - LEVEL_SNAP:
            level = 1.0
        history.append(level)
    # The level at each sample: the value after the last change at or before it.
    levels = np.asarray(history)[np.searchsorted(changes, index, side="right")]
    if not pending[-1]:
        return levels, level, -1
    return levels, level, int(elapsed[-1])


def _average_length(params: dict, key: str, fs: float) -> int:
    seconds = params[key]
    if not 0.0 <= seconds <= 3600.0:
        raise ConfigurationError(f"Parameter '{key.replace('_', '-')}' must be from 0 to 3600 "
                                 f"seconds; got {seconds:g}")
    length = max(1, int(round(seconds * fs)))
    if length > MAX_AVERAGE_SAMPLES:
        raise ConfigurationError(
            f"Parameter '{key.replace('_', '-')}' ({seconds:g} s at {fs:g} Hz) spans {length} "
            f"samples; at most {MAX_AVERAGE_SAMPLES} are supported. Shorten it or resample.")
    return length


def _check_positive(params: dict, key: str, unit: str) -> float:
    value = params[key]
    if not value > 0:
        raise ConfigurationError(f"Parameter '{key.replace('_', '-')}' must be above 0 {unit}; "
                                 f"got {value:g}")
    return value


def _first_bad(values: np.ndarray, bad: np.ndarray) -> str:
    index = int(np.argmax(bad))
    return f"{int(bad.sum())} sample(s), the first is sample {index} = {values[index]:g}"


def _check_inputs(light: np.ndarray, motion: np.ndarray, hr: np.ndarray, motion_input: str) -> None:
    for name, values in (("light", light), ("motion", motion), ("hr_locked", hr)):
        if not np.isfinite(values).all():
            raise ConfigurationError(f"Axis '{name}' must be finite numbers; "
                                     f"{_first_bad(values, ~np.isfinite(values))}")
    if (light < 0).any():
        raise ConfigurationError("Axis 'light' is ambient light sensor counts and must be >= 0; "
                                 f"{_first_bad(light, light < 0)}")
    bad_hr = (hr < 0) | (hr > 1)
    if bad_hr.any():
        raise ConfigurationError("Axis 'hr_locked' must be 1 (heart rate locked) or 0 (not "
                                 f"locked), or a fraction between; {_first_bad(hr, bad_hr)}")
    if motion_input == "events":
        bad = (motion != 1) & (motion != 0) & (motion != -1)
        if bad.any():
            raise ConfigurationError(
                "Axis 'motion' must hold motion events: +1 any-motion, -1 no-motion, 0 none "
                f"(parameter 'motion-input' = events); {_first_bad(motion, bad)}. For a motion "
                "quantity in 0..1 or an acceleration magnitude, set 'motion-input' to quantity or "
                "magnitude.")
    elif motion_input == "quantity":
        bad = (motion < 0) | (motion > 1)
        if bad.any():
            raise ConfigurationError(
                "Axis 'motion' must be a motion quantity from 0 (still) to 1 (moving) (parameter "
                f"'motion-input' = quantity); {_first_bad(motion, bad)}")
    elif motion_input == "magnitude":
        if (motion < 0).any():
            raise ConfigurationError(
                "Axis 'motion' must be the acceleration magnitude, >= 0 (parameter "
                f"'motion-input' = magnitude); {_first_bad(motion, motion < 0)}")
    else:
        raise ConfigurationError(f"Parameter 'motion-input' must be one of "
                                 f"{', '.join(MOTION_INPUTS)}; got {motion_input!r}")


def _fresh_state() -> dict:
    return {"motion_level": 0.0, "no_motion_age": -1, "motion_tail": np.empty(0),
            "hr_tail": np.empty(0)}


def _read_state(text: str, fs: float, motion_input: str, motion_length: int,
                hr_length: int) -> dict:
    state = decode_state(text, NAME)
    if state is None:
        return _fresh_state()
    made_with = (state.get("sampling_freq"), state.get("motion_input"),
                 state.get("motion_average_samples"), state.get("hr_average_samples"))
    now = (fs, motion_input, motion_length, hr_length)
    if made_with != now:
        raise ConfigurationError(
            "'state' was made with sampling frequency {0} Hz, motion input {1}, running averages "
            "of {2} (motion) and {3} (heart rate) samples; this request has {4:g} Hz, {5}, {6} "
            "and {7}. Send \"\" to start a new stream.".format(*made_with, *now))
    try:
        level = float(state["motion_level"])
        age = int(state["no_motion_age"])
        motion_tail = np.asarray(state["motion_tail"], dtype=np.float64).reshape(-1)
        hr_tail = np.asarray(state["hr_tail"], dtype=np.float64).reshape(-1)
    except (KeyError, TypeError, ValueError):
        raise ConfigurationError("'state' is not a fuzzy-off-arm state this server produced; send "
                                 "\"\" to start a new stream.") from None
    if not (0.0 <= level <= 1.0 and age >= -1 and motion_tail.size < motion_length
            and hr_tail.size < hr_length):
        raise ConfigurationError("'state' holds values out of range for fuzzy-off-arm; send \"\" "
                                 "to start a new stream.")
    return {"motion_level": level, "no_motion_age": age, "motion_tail": motion_tail,
            "hr_tail": hr_tail}


def preprocess(req: Request) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """The three crisp inputs of the fuzzy system per sample (light, motion 0..1, hr lock 0..1)
    and the state to carry into the next window."""
    params, fs = req.params, float(req.sampling_freq)
    if not (math.isfinite(fs) and fs > 0):
        raise ConfigurationError(f"'sampling_freq' must be above 0 Hz; got {fs:g}")
    raw = np.asarray(req.raw, dtype=np.float64)
    missing = [axis for axis in AXES if axis not in req.axes]
    if missing:
        raise ConfigurationError(f"fuzzy-off-arm needs the axes {', '.join(AXES)}; missing: "
                                 f"{', '.join(missing)}")
    if raw.ndim != 2 or raw.shape[0] == 0:
        raise ConfigurationError("The window must hold at least one sample of light, motion and "
                                 "hr_locked")
    light, motion, hr = (raw[:, req.axes.index(axis)] for axis in AXES)
    motion_input = params["motion_input"]
    _check_inputs(light, motion, hr, motion_input)
    hr_length = _average_length(params, "hr_average_time", fs)
    motion_length = 1 if motion_input == "events" else \
        _average_length(params, "motion_average_time", fs)
    state = _read_state(req.state, fs, motion_input, motion_length, hr_length)

    hr_level, hr_tail = running_mean(hr, state["hr_tail"], hr_length)
    level, age, motion_tail = state["motion_level"], state["no_motion_age"], np.empty(0)
    if motion_input == "events":
        motion_level, level, age = motion_from_events(
            motion, fs, level=level, no_motion_age=age,
            event_rate=_check_positive(params, "motion_event_rate", "Hz"),
            rise_time=_check_positive(params, "motion_rise_time", "s"),
            fall_time=_check_positive(params, "motion_fall_time", "s"))
    else:
        if motion_input == "magnitude":
            gravity = _check_positive(params, "gravity", "(in the motion axis's units)")
            full_scale = _check_positive(params, "motion_full_scale", "g")
            motion = np.abs(motion / gravity - 1.0) / full_scale
        motion_level, motion_tail = running_mean(motion, state["motion_tail"], motion_length)
        np.clip(motion_level, 0.0, 1.0, out=motion_level)
    new_state = encode_state(NAME, {
        "sampling_freq": fs, "motion_input": motion_input,
        "motion_average_samples": motion_length, "hr_average_samples": hr_length,
        "motion_level": level, "no_motion_age": age,
        "motion_tail": motion_tail.tolist(), "hr_tail": hr_tail.tolist()})
    return light, motion_level, hr_level, new_state


def compute(req: Request) -> Features:
    params = req.params
    system = build_system(params)
    no_fire = params["no_rule_output"]
    if not 0.0 <= no_fire <= 1.0:
        raise ConfigurationError(f"Parameter 'no-rule-output' must be an off-arm certainty from 0 "
                                 f"to 1; got {no_fire:g}")
    light, motion, hr, state = preprocess(req)
    result = system.evaluate({"light": light, "motion": motion, "hr": hr},
                             method=params["inference"], no_fire_output=no_fire)
    certainty = result.output
    features = np.concatenate([
        result.memberships.mean(axis=1),
        result.firing.mean(axis=1),
        [certainty.mean(), certainty[-1], (certainty > OFF_ARM_THRESHOLD).mean()],
    ])
    labels = [f"{variable}_{set_name}" for variable, set_name in result.membership_names]
    labels += [f"rule_{number}_{rule.consequent}"
               for number, rule in enumerate(system.rules, start=1)]
    labels += ["off_arm_mean", "off_arm_last", "off_arm_fraction"]
    graphs = _graphs(light, motion, hr, certainty, float(req.sampling_freq)) \
        if req.draw_graphs else []
    return Features(features=features, labels=labels,
                    output_config={"type": "flat", "shape": {"width": int(features.size)}},
                    graphs=graphs, state=state, state_string=state)


def _graphs(light, motion, hr, certainty, fs: float) -> list[dict]:
    time_ms = np.arange(light.size) * (1000.0 / fs)
    return [
        line_graph("Light (counts)", {"light": light}, time_ms, suggested_y_min=0,
                   axis_labels={"X": "Light (sensor counts)", "y": "Time (ms)"}),
        line_graph("Motion and heart-rate lock", {"motion": motion, "hr_locked": hr}, time_ms,
                   suggested_y_min=0, suggested_y_max=1,
                   axis_labels={"X": "Level (0..1)", "y": "Time (ms)"}),
        line_graph("Off-arm certainty", {"off_arm": certainty}, time_ms,
                   suggested_y_min=0, suggested_y_max=1,
                   axis_labels={"X": "Certainty (> 0.5: off-arm)", "y": "Time (ms)"}),
    ]


BLOCK = Block(name=NAME, parameters=load_parameters(NAME), compute=continuing_overlapping_windows(compute))
