"""Fuzzy inference engine: agreement with scikit-fuzzy, no-rule-fires, Sugeno, the rule parser."""
import json
import threading

import numpy as np
import pytest

from dsp.core.errors import ConfigurationError
from dsp.fusion.fuzzy_logic import (
    And,
    FuzzySet,
    FuzzySystem,
    Is,
    MembershipFunction,
    Not,
    Or,
    OutputVariable,
    Rule,
    Variable,
    compile_system,
    parse_rule_base,
)

fuzz = pytest.importorskip("skfuzzy")

MF = MembershipFunction

# The off-arm system of the article, built here independently of dsp.fusion.off_arm.
LIGHT = Variable("light", (FuzzySet("LOW", MF.left_shoulder(25, 50)),
                           FuzzySet("MID", MF.trapezoid(25, 50, 100, 200)),
                           FuzzySet("HIGH", MF.right_shoulder(100, 200))))
MOTION = Variable("motion", (FuzzySet("LOW", MF.left_shoulder(0.2, 0.5)),
                             FuzzySet("MODERATE", MF.triangle(0.2, 0.5, 0.8)),
                             FuzzySet("HIGH", MF.right_shoulder(0.5, 0.8))))
HR = Variable("hr", (FuzzySet("LOCKED", MF.right_shoulder(0, 1)),
                     FuzzySet("NOT_LOCKED", MF.left_shoulder(0, 1))))
OUT = OutputVariable("off_arm", (FuzzySet("ON_ARM", MF.left_shoulder(0, 0.3)),
                                 FuzzySet("PROBABLY_OFF", MF.triangle(0.5, 0.7, 0.9)),
                                 FuzzySet("CERTAINLY_OFF", MF.right_shoulder(0.7, 1.0))))
INPUTS = (LIGHT, MOTION, HR)

NINE_RULES = json.dumps([
    {"if": {"and": ["motion is LOW", "hr is NOT_LOCKED", "light is HIGH"]}, "then": "CERTAINLY_OFF"},
    {"if": {"and": ["motion is HIGH", "hr is NOT_LOCKED", "light is HIGH"]}, "then": "CERTAINLY_OFF"},
    {"if": {"and": ["motion is LOW", "hr is NOT_LOCKED", {"or": ["light is LOW", "light is MID"]}]},
     "then": "CERTAINLY_OFF"},
    {"if": "light is HIGH", "then": "CERTAINLY_OFF"},
    {"if": {"and": ["motion is HIGH", "hr is NOT_LOCKED", "light is MID"]}, "then": "PROBABLY_OFF"},
    {"if": {"and": ["motion is HIGH", "hr is NOT_LOCKED", "light is LOW"]}, "then": "PROBABLY_OFF"},
    {"if": {"and": ["motion is LOW", "hr is LOCKED", "light is LOW"]}, "then": "PROBABLY_OFF"},
    {"if": {"and": ["motion is HIGH", "hr is LOCKED", "light is LOW"]}, "then": "ON_ARM"},
    {"if": {"and": ["motion is MODERATE", "hr is LOCKED", "light is LOW"]}, "then": "ON_ARM"},
])

# The same sets as scikit-fuzzy arrays on its own universes (breakpoints on the grids, so its
# linear interpolation between grid points is exact).
LIGHT_UNIVERSE = np.arange(0, 301, 1.0)
UNIT_UNIVERSE = np.linspace(0, 1, 101)
SK_SETS = {
    ("light", "LOW"): (LIGHT_UNIVERSE, fuzz.trapmf(LIGHT_UNIVERSE, [-1, -1, 25, 50])),
    ("light", "MID"): (LIGHT_UNIVERSE, fuzz.trapmf(LIGHT_UNIVERSE, [25, 50, 100, 200])),
    ("light", "HIGH"): (LIGHT_UNIVERSE, fuzz.trapmf(LIGHT_UNIVERSE, [100, 200, 400, 400])),
    ("motion", "LOW"): (UNIT_UNIVERSE, fuzz.trapmf(UNIT_UNIVERSE, [-1, -1, 0.2, 0.5])),
    ("motion", "MODERATE"): (UNIT_UNIVERSE, fuzz.trimf(UNIT_UNIVERSE, [0.2, 0.5, 0.8])),
    ("motion", "HIGH"): (UNIT_UNIVERSE, fuzz.trapmf(UNIT_UNIVERSE, [0.5, 0.8, 2, 2])),
    ("hr", "LOCKED"): (UNIT_UNIVERSE, fuzz.trimf(UNIT_UNIVERSE, [0, 1, 1])),
    ("hr", "NOT_LOCKED"): (UNIT_UNIVERSE, fuzz.trimf(UNIT_UNIVERSE, [0, 0, 1])),
}


def sk_output_sets(universe):
    return {"ON_ARM": fuzz.trimf(universe, [0, 0, 0.3]),
            "PROBABLY_OFF": fuzz.trimf(universe, [0.5, 0.7, 0.9]),
            "CERTAINLY_OFF": fuzz.trimf(universe, [0.7, 1, 1])}


def sk_strength(condition, sample):
    """Firing strength with scikit-fuzzy's membership interpolation and Zadeh operators."""
    if isinstance(condition, Is):
        universe, degrees = SK_SETS[(condition.variable, condition.set_name)]
        return float(fuzz.interp_membership(universe, degrees, sample[condition.variable]))
    if isinstance(condition, Not):
        return 1.0 - sk_strength(condition.operand, sample)
    strengths = [sk_strength(o, sample) for o in condition.operands]
    return min(strengths) if isinstance(condition, And) else max(strengths)


def sk_mamdani(rules, sample, method, universe):
    """scikit-fuzzy's defuzzification of the min/max aggregate of `rules`; None if none fires."""
    sets = sk_output_sets(universe)
    aggregated = np.zeros_like(universe)
    for rule in rules:
        strength = rule.weight * sk_strength(rule.condition, sample)
        aggregated = np.fmax(aggregated, np.fmin(strength, sets[rule.consequent]))
    if aggregated.max() == 0:
        return None
    return float(fuzz.defuzz(universe, aggregated, method))


def random_samples(n, seed):
    rng = np.random.default_rng(seed)
    return {"light": rng.uniform(0, 300, n), "motion": rng.uniform(0, 1, n),
            "hr": rng.uniform(0, 1, n)}


def random_condition(rng, depth=0):
    """A random AND / OR / NOT tree over the system's clauses."""
    if depth >= 2 or rng.random() < 0.35:
        variable = INPUTS[rng.integers(len(INPUTS))]
        clause = Is(variable.name, variable.sets[rng.integers(len(variable.sets))].name)
        return Not(clause) if rng.random() < 0.2 else clause
    kind = rng.choice(["and", "or", "not"], p=[0.5, 0.35, 0.15])
    if kind == "not":
        return Not(random_condition(rng, depth + 1))
    operands = tuple(random_condition(rng, depth + 1) for _ in range(rng.integers(2, 4)))
    return And(operands) if kind == "and" else Or(operands)


def tied_peaks(rules, firing):
    """True when two output sets reach the aggregate's maximum within 1e-6 (every output set
    here peaks at 1 on the grid, so a set's peak is min(its strength, 1))."""
    peaks = {}
    for rule, strength in zip(rules, firing):
        peaks[rule.consequent] = max(peaks.get(rule.consequent, 0.0), min(strength, 1.0))
    top = sorted(peaks.values(), reverse=True)
    return len(top) > 1 and top[0] - top[1] < 1e-6


def sample_at(samples, i):
    return {k: v[i] for k, v in samples.items()}


# ---------------------------------------------------------------------------------------------
# Agreement with scikit-fuzzy
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["centroid", "bisector", "mom"])
def test_article_system_agrees_with_scikit_fuzzy_on_a_fine_universe(method):
    # scikit-fuzzy on a 5001-point output universe is close to the continuous answer; ours
    # samples the default 101 points and must stay within 0.01 of it.
    system = compile_system(INPUTS, OUT, NINE_RULES)
    samples = random_samples(600, seed=1)
    ours = system.evaluate(samples, method).output
    fine = np.linspace(0, 1, 5001)
    compared = 0
    for i in range(600):
        expected = sk_mamdani(system.rules, sample_at(samples, i), method, fine)
        if expected is None:
            continue
        assert ours[i] == pytest.approx(expected, abs=0.01), (i, sample_at(samples, i))
        compared += 1
    assert compared > 550


@pytest.mark.parametrize("method", ["centroid", "mom"])
def test_same_sampled_universe_gives_scikit_fuzzy_result_to_rounding(method):
    # On the same 101 points, centroid (both integrate the piecewise-linear aggregate exactly)
    # and mean of maximum agree to floating-point rounding.
    system = compile_system(INPUTS, OUT, NINE_RULES)
    samples = random_samples(300, seed=2)
    ours = system.evaluate(samples, method).output
    for i in range(300):
        expected = sk_mamdani(system.rules, sample_at(samples, i), method, OUT.universe)
        if expected is not None:
            assert ours[i] == pytest.approx(expected, abs=1e-9)


def test_random_rule_bases_with_not_or_and_weights_agree_with_scikit_fuzzy():
    rng = np.random.default_rng(3)
    fine = np.linspace(0, 1, 5001)
    consequents = OUT.set_names
    for trial in range(12):
        rules = tuple(Rule(random_condition(rng), consequents[rng.integers(3)],
                           float(rng.choice([1.0, 0.5, 0.8]))) for _ in range(rng.integers(1, 7)))
        system = FuzzySystem(INPUTS, OUT, rules)
        samples = random_samples(40, seed=100 + trial)
        # Mean of maximum is compared on the same 101 points: with plateaus of equal height in
        # several lobes, the share of grid points per lobe moves it by more than 0.01 from the
        # fine-grid answer, and the sampled definition is what the block documents. (Not to
        # rounding: scikit-fuzzy tells points at the peak apart by their last bit; we do not.)
        for method, universe in (("centroid", fine), ("bisector", fine), ("mom", OUT.universe)):
            result = system.evaluate(samples, method, no_fire_output=-1.0)
            for i in range(40):
                sample = sample_at(samples, i)
                for r, rule in enumerate(rules):
                    assert result.firing[r, i] == pytest.approx(
                        rule.weight * sk_strength(rule.condition, sample), abs=1e-12)
                expected = sk_mamdani(rules, sample, method, universe)
                if method == "mom" and tied_peaks(rules, result.firing[:, i]):
                    continue  # the maximum is a tie between sets: it rests on the last bit
                if expected is None:
                    assert result.output[i] == -1.0
                else:
                    assert result.output[i] == pytest.approx(expected, abs=0.01), (trial, method)


def test_memberships_match_scikit_fuzzy_interpolation():
    samples = random_samples(500, seed=4)
    result = compile_system(INPUTS, OUT, NINE_RULES).evaluate(samples)
    for row, (variable, set_name) in enumerate(result.membership_names):
        universe, degrees = SK_SETS[(variable, set_name)]
        expected = fuzz.interp_membership(universe, degrees, samples[variable])
        np.testing.assert_allclose(result.memberships[row], expected, atol=1e-12)


def test_bisector_splits_the_area_in_two_halves():
    system = compile_system(INPUTS, OUT, NINE_RULES)
    samples = random_samples(200, seed=5)
    split = system.evaluate(samples, "bisector").output
    sets = sk_output_sets(OUT.universe)
    for i in range(200):
        sample = sample_at(samples, i)
        aggregated = np.zeros(OUT.points)
        for rule in system.rules:
            aggregated = np.fmax(aggregated, np.fmin(sk_strength(rule.condition, sample),
                                                     sets[rule.consequent]))
        fine = np.linspace(0, 1, 200001)
        curve = np.interp(fine, OUT.universe, aggregated)  # the piecewise-linear aggregate
        left = np.trapezoid(np.where(fine <= split[i], curve, 0), fine)
        assert left == pytest.approx(np.trapezoid(curve, fine) / 2, abs=1e-4)


def test_scalar_input_is_one_sample():
    system = compile_system(INPUTS, OUT, NINE_RULES)
    one = system.evaluate({"light": 500.0, "motion": 0.1, "hr": 0.0})
    assert one.output.shape == (1,)
    assert one.output[0] == pytest.approx(0.9, abs=1e-9)  # CERTAINLY_OFF alone: its centroid


# ---------------------------------------------------------------------------------------------
# No rule fires, Sugeno, weights, immutability
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["centroid", "bisector", "mom", "sugeno"])
def test_no_rule_firing_gives_the_defined_output(method):
    # Light MID with the heart rate fully locked: none of the nine rules applies.
    system = compile_system(INPUTS, OUT, NINE_RULES)
    samples = {"light": np.array([75.0, 60.0, 75.0]), "motion": np.array([0.0, 0.5, 1.0]),
               "hr": np.array([1.0, 1.0, 1.0])}
    result = system.evaluate(samples, method, no_fire_output=0.37)
    assert (result.firing == 0).all()
    assert result.output.tolist() == [0.37, 0.37, 0.37]


def test_sugeno_is_the_weighted_mean_of_rule_constants():
    output = OutputVariable("y", (FuzzySet("ZERO", MF.left_shoulder(0, 0.3)),
                                  FuzzySet("SEVEN", MF.triangle(0.5, 0.7, 0.9)),
                                  FuzzySet("ONE", MF.right_shoulder(0.7, 1.0)),
                                  FuzzySet("GIVEN", MF.triangle(0, 0.5, 1), constant=0.25)))
    assert output.constants().tolist() == pytest.approx([0.0, 0.7, 1.0, 0.25])
    rules = parse_rule_base(json.dumps([
        {"if": "hr is LOCKED", "then": "ZERO"},
        {"if": "hr is NOT_LOCKED", "then": "ONE"},
        {"if": "light is HIGH", "then": "y is SEVEN", "weight": 0.5},
        {"if": "motion is HIGH", "then": "GIVEN"},
    ]), INPUTS, output)
    system = FuzzySystem(INPUTS, output, rules)
    hr = np.array([0.25, 0.25, 1.0])
    light = np.array([0.0, 200.0, 150.0])
    motion = np.array([0.0, 0.0, 1.0])
    got = system.evaluate({"light": light, "motion": motion, "hr": hr}, "sugeno").output
    expected = [
        (0.25 * 0 + 0.75 * 1) / 1.0,
        (0.25 * 0 + 0.75 * 1 + 0.5 * 1 * 0.7) / 1.5,
        (1 * 0 + 0 * 1 + 0.5 * 0.5 * 0.7 + 1 * 0.25) / (1 + 0.25 + 1),
    ]
    assert got.tolist() == pytest.approx(expected, abs=1e-12)


def test_weight_scales_the_firing_strength():
    weighted = parse_rule_base('[{"if": "light is HIGH", "then": "CERTAINLY_OFF", "weight": 0.25}]',
                               INPUTS, OUT)
    result = FuzzySystem(INPUTS, OUT, weighted).evaluate({"light": 150.0, "motion": 0, "hr": 0})
    assert result.firing[0, 0] == pytest.approx(0.125)


def test_one_system_shared_by_threads_gives_the_serial_results():
    system = compile_system(INPUTS, OUT, NINE_RULES)
    inputs = [random_samples(500, seed=10 + k) for k in range(8)]
    serial = [system.evaluate(x, "bisector").output for x in inputs]
    results = [None] * 8

    def work(k):
        for _ in range(20):
            results[k] = system.evaluate(inputs[k], "bisector").output

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(8):
        np.testing.assert_array_equal(results[k], serial[k])


def test_compiled_systems_are_cached_by_text_and_immutable():
    first = compile_system(INPUTS, OUT, NINE_RULES)
    assert compile_system(INPUTS, OUT, NINE_RULES) is first
    with pytest.raises(AttributeError):
        first.rules = ()
    with pytest.raises(ValueError):
        first._compiled.clipped_sets[0, 0] = 2.0


def test_membership_function_shapes():
    low, mid, high = (s.membership for s in LIGHT.sets)
    x = np.array([0, 25, 37.5, 50, 75, 100, 150, 200, 1000])
    assert low(x).tolist() == [1, 1, 0.5, 0, 0, 0, 0, 0, 0]
    assert mid(x).tolist() == [0, 0, 0.5, 1, 1, 1, 0.5, 0, 0]
    assert high(x).tolist() == [0, 0, 0, 0, 0, 0, 0.5, 1, 1]
    step = MF((1.0, 1.0), (0.0, 1.0))  # a crisp step: right-continuous at the edge
    assert step(np.array([0.5, 1.0, 2.0])).tolist() == [0, 1, 1]
    system = FuzzySystem((Variable("x", (FuzzySet("ON", step),)),), OUT,
                         (Rule(Is("x", "ON"), "ON_ARM"),))
    assert system.evaluate({"x": np.array([0.5, 1.0])}).memberships[0].tolist() == [0, 1]
    with pytest.raises(ConfigurationError, match="increasing order"):
        MF.trapezoid(50, 25, 100, 200)
    with pytest.raises(ConfigurationError, match="between 0 and 1"):
        MF((0.0, 1.0), (0.0, 2.0))


# ---------------------------------------------------------------------------------------------
# Rule parser
# ---------------------------------------------------------------------------------------------

def parse(rules):
    text = rules if isinstance(rules, str) else json.dumps(rules)
    return parse_rule_base(text, INPUTS, OUT)


def test_parser_builds_the_ast_and_normalises_names():
    (rule,) = parse({"rules": [{"if": {"and": ["Motion is low", {"not": "hr is LOCKED"},
                                                {"or": ["light is not HIGH", "light is mid"]}]},
                                 "then": "off_arm is probably_off", "weight": 0.5}]})
    assert rule == Rule(And((Is("motion", "LOW"), Not(Is("hr", "LOCKED")),
                             Or((Not(Is("light", "HIGH")), Is("light", "MID"))))),
                        "PROBABLY_OFF", 0.5)


@pytest.mark.parametrize("rules, message", [
    ([{"if": "light is HIGH", "then": "CERTAINLY_OFF"}] * 2
     + [{"if": {"and": ["motion is FAST"]}, "then": "ON_ARM"}],
     'rule 3, clause "motion is FAST": motion has no set FAST; sets: LOW, MODERATE, HIGH'),
    ([{"if": "speed is HIGH", "then": "ON_ARM"}],
     'rule 1, clause "speed is HIGH": unknown variable speed; variables: light, motion, hr'),
    ([{"if": "light HIGH", "then": "ON_ARM"}],
     'rule 1, clause "light HIGH": expected "<variable> is <SET>"'),
    ([{"if": "light is HIGH", "then": "OFF"}],
     'rule 1, consequent "OFF": off_arm has no set OFF; sets: ON_ARM, PROBABLY_OFF, CERTAINLY_OFF'),
    ([{"if": {"xor": ["light is HIGH"]}, "then": "ON_ARM"}], "rule 1: unknown operator 'xor'"),
    ([{"if": {"and": []}, "then": "ON_ARM"}], 'rule 1: "and" needs a non-empty list'),
    ([{"if": 3, "then": "ON_ARM"}], "rule 1: a condition is a clause"),
    ([{"if": "light is HIGH", "then": "ON_ARM", "weight": 2}], "rule 1: weight must be a number from 0 to 1"),
    ([{"if": "light is HIGH", "then": "ON_ARM", "wieght": 1}], "rule 1: unknown key 'wieght'"),
    ([{"if": "light is HIGH"}], "rule 1: needs both 'if'"),
    (["light is HIGH"], "rule 1: expected an object"),
    ([], "The rule base has no rules"),
    ({"if": "light is HIGH", "then": "ON_ARM"}, "must be a JSON list of rules"),
    ("[{\"if\": ", "not valid JSON"),
    ("", "The rule base is empty"),
    ("[" * 100_001, "characters; at most"),
])
def test_parser_errors_point_at_the_rule_and_clause(rules, message):
    with pytest.raises(ConfigurationError) as error:
        parse(rules)
    assert message in str(error.value)


def test_deeply_nested_conditions_are_refused_not_recursed():
    condition = "light is HIGH"
    for _ in range(40):
        condition = {"not": condition}
    with pytest.raises(ConfigurationError, match="nested deeper than"):
        parse([{"if": condition, "then": "ON_ARM"}])
    with pytest.raises(ConfigurationError):
        parse("[" * 5000 + "]" * 5000)


def test_evaluate_rejects_missing_or_mismatched_inputs_and_unknown_method():
    system = compile_system(INPUTS, OUT, NINE_RULES)
    with pytest.raises(ConfigurationError, match="No values given for input variable hr"):
        system.evaluate({"light": [1.0], "motion": [0.0]})
    with pytest.raises(ConfigurationError, match="same length"):
        system.evaluate({"light": [1.0, 2.0], "motion": [0.0], "hr": [0.0]})
    with pytest.raises(ConfigurationError, match="centroid, bisector, mom, sugeno"):
        system.evaluate({"light": 1.0, "motion": 0.0, "hr": 0.0}, "lom")


def test_output_set_outside_the_universe_is_refused():
    output = OutputVariable("y", (FuzzySet("FAR", MF.triangle(2, 3, 4)),))
    with pytest.raises(ConfigurationError, match="FAR is 0 everywhere"):
        FuzzySystem(INPUTS, output, (Rule(Is("light", "HIGH"), "FAR"),))
