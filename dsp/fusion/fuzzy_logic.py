"""A small fuzzy inference engine, vectorised over samples: Mamdani (min/max) and zero-order Sugeno.

Pieces, all immutable (frozen dataclasses and tuples), so one compiled system can serve any
number of requests and threads at once:

* `MembershipFunction`: piecewise linear through breakpoints, constant beyond the first and last
  (so a two-point function is a shoulder). Constructors for shoulders, triangles, trapezoids.
* `Variable`: a name and its fuzzy sets; an output variable also has a universe (sampled, 101
  points by default) and, per set, the constant a zero-order Sugeno system uses.
* Rules: a small AST, `Is(variable, set)`, `Not`, `And` (min), `Or` (max), with a consequent
  set of the output variable and an optional weight in [0, 1] that scales the firing strength.
* `parse_rule_base(text, inputs, output)`: rules from JSON text, parsed without `eval`, with errors
  naming the rule and the clause at fault.
* `FuzzySystem.evaluate(...)`: per sample, the membership degree of every input set, the firing
  strength of every rule and the crisp output.

Mamdani: each rule clips its consequent set at its firing strength (min), the clipped sets are
joined by max, and the result, sampled on the output universe, is reduced to a number by the
centroid or bisector of the piecewise-linear curve through the samples (integrated exactly, not
as a Riemann sum) or by the mean of the universe points where it is maximal. Sugeno: the
firing-strength-weighted mean of each rule's consequent constant. A sample where no rule fires
(every strength 0) gets `no_fire_output`, never NaN or an exception.

Rule-base JSON, either a list of rules or {"rules": [...]}; each rule
    {"if": <condition>, "then": "<SET>" or "<output> is <SET>", "weight": 1.0 (optional)}
where a condition is a clause string "<variable> is <SET>" or "<variable> is not <SET>", or
{"and": [<condition>, ...]}, {"or": [<condition>, ...]}, {"not": <condition>}.
Variable and set names match case-insensitively.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from dsp.core.errors import ConfigurationError

__all__ = [
    "MembershipFunction",
    "FuzzySet",
    "Variable",
    "OutputVariable",
    "Is",
    "Not",
    "And",
    "Or",
    "Rule",
    "FuzzySystem",
    "InferenceResult",
    "parse_rule_base",
    "compile_system",
    "DEFUZZIFIERS",
    "METHODS",
]

DEFUZZIFIERS = ("centroid", "bisector", "mom")
METHODS = DEFUZZIFIERS + ("sugeno",)
DEFAULT_UNIVERSE_POINTS = 101
# Bounds on what a rule base from a request may ask for, so a hostile text cannot make the
# server recurse or allocate without limit.
MAX_RULE_TEXT_CHARS = 100_000
MAX_RULES = 500
MAX_CONDITION_DEPTH = 32
# Cells (samples x universe points) per block of the Mamdani aggregation: keeps the scratch arrays
# in cache (2048 samples x 101 points of float64 is 1.6 MB), and bounded for large universes.
AGGREGATION_CELLS = 2048 * 101
PEAK_TOLERANCE = 1e-9

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CLAUSE = re.compile(r"^\s*(\S+)\s+is\s+(not\s+)?(\S+)\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Membership functions and variables
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MembershipFunction:
    """Piecewise linear through (xs[i], ys[i]); ys[0] below xs[0] and ys[-1] above xs[-1].

    xs must be non-decreasing; a repeated x is a vertical edge, where the value is the later
    point's (the function is continuous from the right there).
    """

    xs: tuple[float, ...]
    ys: tuple[float, ...]

    def __post_init__(self):
        if len(self.xs) != len(self.ys) or len(self.xs) < 1:
            raise ConfigurationError("A membership function needs at least one (x, degree) point, "
                                     f"with as many degrees as breakpoints; got {len(self.xs)} "
                                     f"breakpoints and {len(self.ys)} degrees")
        if not all(math.isfinite(v) for v in self.xs + self.ys):
            raise ConfigurationError(f"Membership breakpoints must be finite numbers; got {self.xs}")
        if any(b < a for a, b in zip(self.xs, self.xs[1:])):
            raise ConfigurationError(
                f"Membership breakpoints must be in increasing order; got {_numbers(self.xs)}")
        if any(not 0.0 <= y <= 1.0 for y in self.ys):
            raise ConfigurationError(
                f"Membership degrees must be between 0 and 1; got {_numbers(self.ys)}")

    def __call__(self, x) -> np.ndarray:
        return np.interp(x, self.xs, self.ys)

    @classmethod
    def left_shoulder(cls, full_until: float, zero_from: float) -> "MembershipFunction":
        """1 up to `full_until`, 0 from `zero_from`, linear in between."""
        return cls((float(full_until), float(zero_from)), (1.0, 0.0))

    @classmethod
    def right_shoulder(cls, zero_until: float, full_from: float) -> "MembershipFunction":
        """0 up to `zero_until`, 1 from `full_from`, linear in between."""
        return cls((float(zero_until), float(full_from)), (0.0, 1.0))

    @classmethod
    def trapezoid(cls, zero_below: float, full_from: float, full_until: float,
                  zero_above: float) -> "MembershipFunction":
        """0 below `zero_below` and above `zero_above`, 1 from `full_from` to `full_until`."""
        return cls((float(zero_below), float(full_from), float(full_until), float(zero_above)),
                   (0.0, 1.0, 1.0, 0.0))

    @classmethod
    def triangle(cls, zero_below: float, peak: float, zero_above: float) -> "MembershipFunction":
        return cls.trapezoid(zero_below, peak, peak, zero_above)


@dataclass(frozen=True)
class FuzzySet:
    """A named set of a variable. `constant`: its output in a zero-order Sugeno system."""

    name: str
    membership: MembershipFunction
    constant: Optional[float] = None


@dataclass(frozen=True)
class Variable:
    """An input variable: a name and its sets (names unique, case-insensitively)."""

    name: str
    sets: tuple[FuzzySet, ...]

    def __post_init__(self):
        _check_names(self.name, self.sets)

    @property
    def set_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sets)

    def find_set(self, name: str) -> Optional[int]:
        lowered = name.lower()
        return next((i for i, s in enumerate(self.sets) if s.name.lower() == lowered), None)


@dataclass(frozen=True)
class OutputVariable(Variable):
    """The output variable: its sets are sampled on `points` evenly spaced values from `low` to `high`.

    A set without a `constant` uses, in Sugeno mode, the midpoint of its core on the universe
    (the universe points where its membership is highest).
    """

    low: float = 0.0
    high: float = 1.0
    points: int = DEFAULT_UNIVERSE_POINTS

    def __post_init__(self):
        super().__post_init__()
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.high > self.low):
            raise ConfigurationError(f"The output universe must run from a lower to a higher finite "
                                     f"value; got {self.low} to {self.high}")
        if not 3 <= self.points <= 100_000:
            raise ConfigurationError(f"The output universe needs 3 to 100000 points; got {self.points}")

    @property
    def universe(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.points)

    def sampled_sets(self) -> np.ndarray:
        """(sets, points): each set's membership on the universe."""
        universe = self.universe
        return np.stack([s.membership(universe) for s in self.sets])

    def constants(self) -> np.ndarray:
        universe = self.universe
        values = []
        for fuzzy_set in self.sets:
            if fuzzy_set.constant is not None:
                values.append(float(fuzzy_set.constant))
                continue
            degrees = fuzzy_set.membership(universe)
            core = universe[degrees == degrees.max()]
            values.append(float((core[0] + core[-1]) / 2))
        return np.asarray(values)


def _check_names(variable: str, sets: Sequence[FuzzySet]) -> None:
    if not _NAME.match(variable):
        raise ConfigurationError(f"Variable name {variable!r} must be letters, digits and '_' "
                                 "(not starting with a digit)")
    if not sets:
        raise ConfigurationError(f"Variable {variable} needs at least one fuzzy set")
    seen = set()
    for fuzzy_set in sets:
        if not _NAME.match(fuzzy_set.name):
            raise ConfigurationError(f"Set name {fuzzy_set.name!r} of {variable} must be letters, "
                                     "digits and '_' (not starting with a digit)")
        if fuzzy_set.name.lower() in seen:
            raise ConfigurationError(f"Variable {variable} has two sets named {fuzzy_set.name}")
        seen.add(fuzzy_set.name.lower())


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Is:
    """"variable is SET": the set's membership degree."""

    variable: str
    set_name: str

    def __str__(self) -> str:
        return f"{self.variable} is {self.set_name}"


@dataclass(frozen=True)
class Not:
    operand: "Condition"

    def __str__(self) -> str:
        return f"NOT ({self.operand})"


@dataclass(frozen=True)
class And:
    operands: tuple["Condition", ...]

    def __str__(self) -> str:
        return "(" + " AND ".join(str(o) for o in self.operands) + ")"


@dataclass(frozen=True)
class Or:
    operands: tuple["Condition", ...]

    def __str__(self) -> str:
        return "(" + " OR ".join(str(o) for o in self.operands) + ")"


Condition = Union[Is, Not, And, Or]


@dataclass(frozen=True)
class Rule:
    """IF `condition` THEN output is `consequent`, its strength scaled by `weight` (0..1)."""

    condition: Condition
    consequent: str
    weight: float = 1.0

    def __str__(self) -> str:
        text = f"IF {self.condition} THEN {self.consequent}"
        return text if self.weight == 1.0 else f"{text} (weight {self.weight:g})"


# --------------------------------------------------------------------------------------------
# Parsing rule bases from JSON text
# --------------------------------------------------------------------------------------------

def parse_rule_base(text: str, inputs: Sequence[Variable], output: OutputVariable) -> tuple[Rule, ...]:
    """Rules from JSON text (format in the module docstring), checked against the variables.

    Names are normalised to the variables' own spelling. Raises ConfigurationError naming the
    rule (1-based) and the clause at fault.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError("The rule base is empty; give a JSON list of rules such as "
                                 '[{"if": "light is HIGH", "then": "CERTAINLY_OFF"}]')
    if len(text) > MAX_RULE_TEXT_CHARS:
        raise ConfigurationError(f"The rule base is {len(text)} characters; at most "
                                 f"{MAX_RULE_TEXT_CHARS} are accepted")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"The rule base is not valid JSON: {exc.msg} at line {exc.lineno}, "
                                 f"column {exc.colno}") from None
    except RecursionError:
        raise ConfigurationError("The rule base is nested too deeply") from None
    if isinstance(document, dict) and set(document) == {"rules"}:
        document = document["rules"]
    if not isinstance(document, list):
        raise ConfigurationError('The rule base must be a JSON list of rules, or {"rules": [...]}; '
                                 f"got {_json_kind(document)}")
    if not document:
        raise ConfigurationError("The rule base has no rules")
    if len(document) > MAX_RULES:
        raise ConfigurationError(f"The rule base has {len(document)} rules; at most {MAX_RULES} "
                                 "are accepted")
    by_name = {v.name.lower(): v for v in inputs}
    return tuple(_parse_rule(number, item, by_name, output)
                 for number, item in enumerate(document, start=1))


def _parse_rule(number: int, item, inputs: Mapping[str, Variable], output: OutputVariable) -> Rule:
    where = f"rule {number}"
    if not isinstance(item, dict):
        raise ConfigurationError(f'{where}: expected an object {{"if": ..., "then": ...}}; got '
                                 f"{_json_kind(item)}")
    unknown = sorted(set(item) - {"if", "then", "weight"})
    if unknown:
        raise ConfigurationError(f"{where}: unknown key {unknown[0]!r}; a rule has 'if', 'then' "
                                 "and optionally 'weight'")
    if "if" not in item or "then" not in item:
        raise ConfigurationError(f"{where}: needs both 'if' (the condition) and 'then' (an output "
                                 f"set: {', '.join(output.set_names)})")
    condition = _parse_condition(item["if"], where, inputs, depth=0)
    consequent = _parse_consequent(item["then"], where, output)
    weight = item.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
            or not math.isfinite(weight) or not 0.0 <= weight <= 1.0:
        raise ConfigurationError(f"{where}: weight must be a number from 0 to 1; got {weight!r}")
    return Rule(condition, consequent, float(weight))


def _parse_condition(node, where: str, inputs: Mapping[str, Variable], depth: int) -> Condition:
    if depth > MAX_CONDITION_DEPTH:
        raise ConfigurationError(f"{where}: condition nested deeper than {MAX_CONDITION_DEPTH} levels")
    if isinstance(node, str):
        return _parse_clause(node, where, inputs)
    if isinstance(node, dict) and len(node) == 1:
        (operator, operand), = node.items()
        operator = operator.lower()
        if operator == "not":
            return Not(_parse_condition(operand, where, inputs, depth + 1))
        if operator in ("and", "or"):
            if not isinstance(operand, list) or not operand:
                raise ConfigurationError(f'{where}: "{operator}" needs a non-empty list of '
                                         f"conditions; got {_json_kind(operand)}")
            operands = tuple(_parse_condition(o, where, inputs, depth + 1) for o in operand)
            return And(operands) if operator == "and" else Or(operands)
        raise ConfigurationError(f"{where}: unknown operator {operator!r}; use \"and\", \"or\" or "
                                 "\"not\"")
    raise ConfigurationError(
        f'{where}: a condition is a clause such as "light is HIGH", or {{"and": [...]}}, '
        f'{{"or": [...]}}, {{"not": ...}} (one key); got {_json_kind(node)}')


def _parse_clause(text: str, where: str, inputs: Mapping[str, Variable]) -> Condition:
    match = _CLAUSE.match(text)
    if not match:
        raise ConfigurationError(f'{where}, clause "{text}": expected "<variable> is <SET>" or '
                                 f'"<variable> is not <SET>"')
    variable_name, negated, set_name = match.groups()
    variable = inputs.get(variable_name.lower())
    if variable is None:
        names = ", ".join(v.name for v in inputs.values())
        raise ConfigurationError(f'{where}, clause "{text}": unknown variable {variable_name}; '
                                 f"variables: {names}")
    index = variable.find_set(set_name)
    if index is None:
        raise ConfigurationError(f'{where}, clause "{text}": {variable.name} has no set {set_name}; '
                                 f"sets: {', '.join(variable.set_names)}")
    clause = Is(variable.name, variable.sets[index].name)
    return Not(clause) if negated else clause


def _parse_consequent(node, where: str, output: OutputVariable) -> str:
    if not isinstance(node, str):
        raise ConfigurationError(f"{where}: 'then' must be an output set name "
                                 f"({', '.join(output.set_names)}); got {_json_kind(node)}")
    text = node.strip()
    match = _CLAUSE.match(text)
    if match:
        variable_name, negated, text = match.groups()
        if variable_name.lower() != output.name.lower() or negated:
            raise ConfigurationError(f'{where}, consequent "{node}": expected "<SET>" or '
                                     f'"{output.name} is <SET>"')
    index = output.find_set(text)
    if index is None:
        raise ConfigurationError(f'{where}, consequent "{node}": {output.name} has no set {text}; '
                                 f"sets: {', '.join(output.set_names)}")
    return output.sets[index].name


def _json_kind(value) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"[:80]
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return "a list" if isinstance(value, list) else "an object"


def _numbers(values) -> str:
    return ", ".join(f"{v:g}" for v in values)


# --------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InferenceResult:
    """Per sample: memberships (input sets, samples), firing (rules, samples), output (samples,).

    `membership_names[i]` is (variable, set) for row i of `memberships`.
    """

    membership_names: tuple[tuple[str, str], ...]
    memberships: np.ndarray
    firing: np.ndarray
    output: np.ndarray


@dataclass(frozen=True)
class FuzzySystem:
    """Inputs, output and rules, checked and compiled for fast evaluation. Immutable."""

    inputs: tuple[Variable, ...]
    output: OutputVariable
    rules: tuple[Rule, ...]
    _compiled: "_Compiled" = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        names = [v.name.lower() for v in self.inputs]
        if len(set(names)) != len(names):
            raise ConfigurationError("Two input variables share a name")
        if not self.rules:
            raise ConfigurationError("A fuzzy system needs at least one rule")
        object.__setattr__(self, "_compiled", _Compiled.build(self.inputs, self.output, self.rules))

    @property
    def membership_names(self) -> tuple[tuple[str, str], ...]:
        return self._compiled.membership_names

    def evaluate(self, values: Mapping[str, object], method: str = "centroid",
                 no_fire_output: float = 0.5) -> InferenceResult:
        """Infer the crisp output for every sample.

        values:         input variable name -> scalar or 1-D array of crisp values (same length).
        method:         "centroid", "bisector", "mom" (Mamdani) or "sugeno".
        no_fire_output: the output where no rule fires.
        """
        if method not in METHODS:
            raise ConfigurationError(f"Inference method must be one of {', '.join(METHODS)}; "
                                     f"got {method!r}")
        columns = []
        for variable in self.inputs:
            if variable.name not in values:
                raise ConfigurationError(f"No values given for input variable {variable.name}")
            columns.append(np.asarray(values[variable.name], dtype=np.float64).reshape(-1))
        samples = columns[0].shape[0]
        if any(c.shape[0] != samples for c in columns):
            raise ConfigurationError("Every input variable needs a series of the same length; got "
                                     f"lengths {[c.shape[0] for c in columns]}")
        compiled = self._compiled
        memberships = compiled.memberships(np.stack(columns))
        firing = compiled.firing(memberships)
        if method == "sugeno":
            output = compiled.sugeno(firing, no_fire_output)
        else:
            output = compiled.mamdani(firing, method, no_fire_output)
        return InferenceResult(compiled.membership_names, memberships, firing, output)


@dataclass(frozen=True)
class _Compiled:
    """A system as flat index arrays, so evaluation is a fixed, short series of numpy calls
    whatever the number of sets and rules.

    Memberships: every piecewise-linear function is its first degree plus one clipped ramp per
    sloped segment, (clip(x, lo, hi) - lo) / (hi - lo) * rise (exact at the segment ends), plus
    a step per vertical edge; ramps of all sets are evaluated together and summed per set.
    Rules: each distinct condition node gets a row of a register array (the memberships first);
    nodes of the same depth and operator are computed by one fancy-indexed min, max or 1 - x,
    with shorter operand lists padded by repeating an operand (min(a, a, b) = min(a, b)).
    """

    membership_names: tuple[tuple[str, str], ...]
    first_degree: np.ndarray            # (sets,)
    ramp_variable: np.ndarray           # (ramps,) input row of each ramp
    ramp_low: np.ndarray                # (ramps, 1)
    ramp_high: np.ndarray
    ramp_width: np.ndarray
    ramp_rise: np.ndarray
    ramp_set_starts: np.ndarray         # first ramp of each set (every set has at least one)
    steps: tuple                        # (variable row, x, rise, set row) per vertical edge
    node_count: int
    levels: tuple                       # per depth: ((np.minimum|np.maximum|None, rows, operands), ...)
    rule_rows: np.ndarray               # register row of each rule's condition
    weights: Optional[np.ndarray]       # (rules, 1), None when every weight is 1
    consequent_order: np.ndarray        # rules sorted by consequent set
    consequent_starts: np.ndarray       # where each used consequent set starts in that order
    clipped_sets: np.ndarray            # (used sets, universe) sampled memberships
    rule_constants: np.ndarray          # (rules,) Sugeno constant of each rule's consequent
    universe: np.ndarray
    integration: np.ndarray             # (universe, 2): area and first-moment weights

    @classmethod
    def build(cls, inputs, output, rules) -> "_Compiled":
        names, first, ramps, steps, starts = [], [], [], [], []
        for v, variable in enumerate(inputs):
            for fuzzy_set in variable.sets:
                row = len(names)
                names.append((variable.name, fuzzy_set.name))
                xs, ys = fuzzy_set.membership.xs, fuzzy_set.membership.ys
                first.append(ys[0])
                starts.append(len(ramps))
                for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]):
                    if y1 == y0:
                        continue
                    if x1 == x0:
                        steps.append((v, x0, y1 - y0, row))
                    else:
                        ramps.append((v, x0, x1, y1 - y0))
                if len(ramps) == starts[-1]:
                    ramps.append((v, 0.0, 1.0, 0.0))  # a constant function: a ramp that adds 0
        index = {name: row for row, name in enumerate(names)}
        ramp = np.array(ramps, dtype=np.float64).reshape(-1, 4)

        registers: dict = {}
        depth: dict = {}
        groups: dict = {}

        def register(node, where: str) -> int:
            if isinstance(node, Is):
                key = (node.variable, node.set_name)
                if key not in index:
                    raise ConfigurationError(f"{where}: no input set {node}")
                return index[key]
            if node in registers:
                return registers[node]
            children = (node.operand,) if isinstance(node, Not) else node.operands
            rows = [register(child, where) for child in children]
            node_depth = 1 + max(depth.get(r, 0) for r in rows)
            row = len(names) + len(registers)
            registers[node] = row
            depth[row] = node_depth
            operator = None if isinstance(node, Not) else np.minimum if isinstance(node, And) \
                else np.maximum
            groups.setdefault((node_depth, operator), []).append((row, rows))
            return row

        rule_rows = []
        for number, rule in enumerate(rules, start=1):
            rule_rows.append(register(rule.condition, f"rule {number}"))
            if output.find_set(rule.consequent) is None:
                raise ConfigurationError(f"rule {number}: {output.name} has no set {rule.consequent}")
        levels = []
        for node_depth, operator in sorted(groups, key=lambda k: (k[0], k[1] is None)):
            members = groups[(node_depth, operator)]
            arity = max(len(rows) for _, rows in members)
            operands = np.array([rows + [rows[0]] * (arity - len(rows)) for _, rows in members])
            levels.append((node_depth, operator, np.array([row for row, _ in members]), operands))
        leveled = tuple((operator, rows, operands) for _, operator, rows, operands in
                        sorted(levels, key=lambda level: level[0]))

        consequents = np.array([output.find_set(r.consequent) for r in rules])
        sampled = output.sampled_sets()
        if (sampled.max(axis=1) <= 0).any():
            empty = output.sets[int(np.argmax(sampled.max(axis=1) <= 0))].name
            raise ConfigurationError(f"Output set {empty} is 0 everywhere on the output universe "
                                     f"{output.low:g}..{output.high:g}")
        order = np.argsort(consequents, kind="stable")
        used, consequent_starts = np.unique(consequents[order], return_index=True)
        weights = np.array([[r.weight] for r in rules])
        universe = output.universe
        compiled = cls(
            membership_names=tuple(names), first_degree=np.array(first),
            ramp_variable=ramp[:, 0].astype(np.intp), ramp_low=ramp[:, 1:2],
            ramp_high=ramp[:, 2:3], ramp_width=ramp[:, 2:3] - ramp[:, 1:2], ramp_rise=ramp[:, 3:4],
            ramp_set_starts=np.array(starts, dtype=np.intp), steps=tuple(steps),
            node_count=len(registers), levels=leveled, rule_rows=np.array(rule_rows),
            weights=None if (weights == 1.0).all() else weights,
            consequent_order=order, consequent_starts=consequent_starts,
            clipped_sets=sampled[used], rule_constants=output.constants()[consequents],
            universe=universe, integration=np.stack(_trapezoid_weights(universe), axis=1))
        for value in vars(compiled).values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
        return compiled

    def memberships(self, inputs: np.ndarray) -> np.ndarray:
        """(sets, samples) membership degrees of the inputs (variables, samples)."""
        ramps = inputs[self.ramp_variable]
        np.clip(ramps, self.ramp_low, self.ramp_high, out=ramps)
        ramps -= self.ramp_low
        ramps /= self.ramp_width
        ramps *= self.ramp_rise
        degrees = np.add.reduceat(ramps, self.ramp_set_starts, axis=0)
        degrees += self.first_degree[:, None]
        for variable, x, rise, row in self.steps:
            degrees[row] += rise * (inputs[variable] >= x)
        # Sums of ramps can stray past [0, 1] by rounding; degrees are defined inside it.
        return np.clip(degrees, 0.0, 1.0, out=degrees)

    def firing(self, memberships: np.ndarray) -> np.ndarray:
        """(rules, samples) firing strengths, weights applied."""
        if self.node_count:
            registers = np.empty((memberships.shape[0] + self.node_count, memberships.shape[1]))
            registers[: memberships.shape[0]] = memberships
            for operator, rows, operands in self.levels:
                if operator is None:
                    registers[rows] = 1.0 - registers[operands[:, 0]]
                else:
                    registers[rows] = operator.reduce(registers[operands], axis=1)
        else:
            registers = memberships
        firing = registers[self.rule_rows]
        if self.weights is not None:
            firing *= self.weights
        return firing

    def sugeno(self, firing: np.ndarray, no_fire_output: float) -> np.ndarray:
        total = firing.sum(axis=0)
        weighted = self.rule_constants @ firing
        fired = total > 0
        return np.where(fired, weighted / np.where(fired, total, 1.0), no_fire_output)

    def mamdani(self, firing: np.ndarray, method: str, no_fire_output: float) -> np.ndarray:
        # Rules sharing a consequent join by max before clipping: min(max(a, b), mf) equals
        # max(min(a, mf), min(b, mf)), and it clips each output set once instead of once per rule.
        levels = np.maximum.reduceat(firing[self.consequent_order], self.consequent_starts, axis=0)
        samples = firing.shape[1]
        output = np.empty(samples)
        chunk = max(1, AGGREGATION_CELLS // self.universe.size)
        for start in range(0, samples, chunk):
            stop = min(start + chunk, samples)
            aggregated = _aggregate(self.clipped_sets, levels[:, start:stop])
            output[start:stop] = self._defuzzify(aggregated, method, no_fire_output)
        return output

    def _defuzzify(self, aggregated: np.ndarray, method: str, no_fire_output: float) -> np.ndarray:
        integrals = aggregated @ self.integration
        area = integrals[:, 0]
        fired = area > 0
        if method == "centroid":
            value = integrals[:, 1] / np.where(fired, area, 1.0)
        elif method == "bisector":
            value = _bisector(aggregated, self.universe, area)
        else:
            value = _mean_of_maximum(aggregated, self.universe)
        return np.where(fired, value, no_fire_output)


def _aggregate(sampled_sets: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """(samples, universe): max over output sets of each set clipped at its level (sets, samples)."""
    aggregated = np.minimum(levels[0][:, None], sampled_sets[0])
    if len(sampled_sets) > 1:
        clipped = np.empty_like(aggregated)
        for sampled, level in zip(sampled_sets[1:], levels[1:]):
            np.minimum(level[:, None], sampled, out=clipped)
            np.maximum(aggregated, clipped, out=aggregated)
    return aggregated


def _trapezoid_weights(universe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights w_a, w_m with y @ w_a = the area and y @ w_m = the first moment (integral of x*y)
    of the piecewise-linear curve through (universe[i], y[i]), integrated exactly."""
    x0, x1 = universe[:-1], universe[1:]
    h = x1 - x0
    area = np.zeros_like(universe)
    moment = np.zeros_like(universe)
    # On [x0, x1], y = y0 + (y1 - y0) t: area h (y0 + y1) / 2, moment h x0 (y0 + y1) / 2 +
    # h^2 (y0 / 6 + y1 / 3).
    area[:-1] += h / 2
    area[1:] += h / 2
    moment[:-1] += h * x0 / 2 + h * h / 6
    moment[1:] += h * x0 / 2 + h * h / 3
    return area, moment


def _bisector(aggregated: np.ndarray, universe: np.ndarray, area: np.ndarray) -> np.ndarray:
    """The x splitting the area under each row's piecewise-linear curve into equal halves.

    The universe is evenly spaced (an OutputVariable's linspace), so segment areas are
    width * (y0 + y1) / 2 with one width.
    """
    width = universe[1] - universe[0]
    # Twice the cumulative area over the width, compared with the total on the same scale.
    cumulative = aggregated[:, :-1] + aggregated[:, 1:]
    np.cumsum(cumulative, axis=1, out=cumulative)
    target = area / width
    # The relative slack absorbs rounding between the two sums: when the half-way point falls in
    # a gap with no area (two lobes of equal area), the answer is the gap's left edge, as in
    # scikit-fuzzy, instead of whichever side rounding picks.
    segment = np.argmax(cumulative >= target[:, None] * (1 - 1e-12), axis=1)
    rows = np.arange(aggregated.shape[0])
    before = np.where(segment > 0, cumulative[rows, segment - 1], 0.0)
    c = np.maximum((target - before) / 2, 0.0)     # area still needed, over the width
    a, b = aggregated[rows, segment], aggregated[rows, segment + 1]
    # Within the segment, y = a + (b - a) t; the area up to t over the width is a t + (b - a) t^2 / 2.
    # Its root in the form 2c / (a + sqrt(a^2 + 2 (b - a) c)) stays accurate when b ~ a.
    denominator = a + np.sqrt(np.maximum(a * a + 2 * (b - a) * c, 0.0))
    t = np.where(denominator > 0, 2 * c / np.where(denominator > 0, denominator, 1.0), 0.0)
    return universe[segment] + np.clip(t, 0.0, 1.0) * width


def _mean_of_maximum(aggregated: np.ndarray, universe: np.ndarray) -> np.ndarray:
    # Degrees within 1e-9 of the peak count as the peak: two plateaus clipped at the same
    # strength must not be told apart by how each set's samples rounded.
    peak = aggregated.max(axis=1, keepdims=True)
    at_peak = aggregated >= peak - PEAK_TOLERANCE
    return (at_peak @ universe) / at_peak.sum(axis=1)


@lru_cache(maxsize=64)
def compile_system(inputs: tuple[Variable, ...], output: OutputVariable,
                   rule_text: str) -> FuzzySystem:
    """A system from variables and rule-base JSON text, cached (the result is immutable, so one
    cached system can be shared by every thread)."""
    return FuzzySystem(inputs, output, parse_rule_base(rule_text, inputs, output))
