"""The off-arm controller built in scikit-fuzzy's control API: the oracle for tests and bench.

Built from the block's own definitions (breakpoints from its parameters, set shapes from
`off_arm.INPUT_SETS` / `OUTPUT_SETS`, rules from the rule-base text), translated here rather than
through our parser, so the parser is under test too. scikit-fuzzy is a test-only dependency.
"""
from __future__ import annotations

import functools
import json
import operator

import numpy as np
import skfuzzy as fuzz
from skfuzzy import control as ctrl

from dsp.fusion import off_arm

# The crisp inputs' domains: light counts past the last breakpoint (HIGH stays 1 there), motion
# and heart-rate levels 0..1 by definition.
INPUT_SPANS = {"light": (0.0, 400.0), "motion": (0.0, 1.0), "hr": (0.0, 1.0)}


def breakpoints(text):
    return [float(item) for item in str(text).split(",")]


def skfuzzy_membership(universe, shape, points):
    """scikit-fuzzy's own trapmf / trimf for a set given as our parameters give it ("low" is 1 up
    to a, 0 from b; "high" the reverse; "middle" a triangle or trapezoid)."""
    below, above = universe[0] - 1.0, universe[-1] + 1.0
    if shape == "low":
        return fuzz.trapmf(universe, [below, below, *points])
    if shape == "high":
        return fuzz.trapmf(universe, [*points, above, above])
    return fuzz.trimf(universe, points) if len(points) == 3 else fuzz.trapmf(universe, points)


def skfuzzy_condition(node, antecedents):
    """Our rule JSON as scikit-fuzzy term expressions (its & is min, | max, ~ 1 - x), translated
    here rather than through our parser, so the parser is under test too."""
    if isinstance(node, str):
        words = node.split()  # "<variable> is [not] <SET>"
        term = antecedents[words[0]][words[-1]]
        return ~term if len(words) == 4 else term
    (operation, operand), = node.items()
    if operation == "not":
        return ~skfuzzy_condition(operand, antecedents)
    terms = [skfuzzy_condition(item, antecedents) for item in operand]
    return functools.reduce(operator.and_ if operation == "and" else operator.or_, terms)


def skfuzzy_controller(params, rule_text, input_points: int = 401):
    """(antecedents, consequent, ControlSystem) for the block's system with these parameters:
    breakpoints from the parameters, set shapes from off_arm.INPUT_SETS / OUTPUT_SETS, rules from
    the rule-base text. Every breakpoint is a point of its input universe, so scikit-fuzzy's
    linear interpolation between universe points is exactly our piecewise-linear function; the
    output universe is ours (universe-points evenly spaced over 0..1)."""
    antecedents = {}
    for name, sets in off_arm.INPUT_SETS.items():
        points = {key: breakpoints(params[key]) for key, _, _ in sets}
        universe = np.union1d(np.linspace(*INPUT_SPANS[name], input_points),
                              np.concatenate(list(points.values())))
        antecedents[name] = ctrl.Antecedent(universe, name)
        for key, set_name, shape in sets:
            antecedents[name][set_name] = skfuzzy_membership(universe, shape, points[key])
    universe = np.linspace(0.0, 1.0, params["universe_points"])
    consequent = ctrl.Consequent(universe, off_arm.OUTPUT)
    for key, set_name, shape in off_arm.OUTPUT_SETS:
        consequent[set_name] = skfuzzy_membership(universe, shape, breakpoints(params[key]))
    rules = []
    for rule in json.loads(rule_text):
        then = consequent[rule["then"].split()[-1]]
        if "weight" in rule:
            then = then % rule["weight"]
        rules.append(ctrl.Rule(skfuzzy_condition(rule["if"], antecedents), then))
    return antecedents, consequent, ctrl.ControlSystem(rules)


def skfuzzy_outputs(control, consequent, method, inputs):
    """scikit-fuzzy's crisp outputs for arrays of inputs (its array mode, one compute call)."""
    consequent.defuzzify_method = method
    simulation = ctrl.ControlSystemSimulation(control, cache=False)
    for name, values in inputs.items():
        simulation.input[name] = values
    simulation.compute()
    return np.asarray(simulation.output[off_arm.OUTPUT], dtype=np.float64)
