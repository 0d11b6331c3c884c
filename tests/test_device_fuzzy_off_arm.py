"""The device build of fuzzy-off-arm (device/lib/fuzzy_off_arm.c, float32) gives the server's
features: every inference method, rule base (article, reduced, custom JSON), motion input,
non-default breakpoints and universe sizes, overlapping windows and long streams carried window
by window, compared with `/batch` at |device - server| <= 1e-3 (1 + |server|) per feature; and it
refuses the windows and parameters the server refuses, leaving its stream untouched.

Measured when written, the worst relative difference over every comparison here: centroid 5e-7,
bisector 6e-6, mom 5e-5 (a near-tie: a sampled degree within the device's float32 peak tolerance
of 4e-7 of the peak but not within the server's 1e-9), sugeno 4e-7; the median is 1e-8 (float32
rounding). The firmware under QEMU is compared with this host build in tests/test_device_qemu.py.
"""
from __future__ import annotations

import ctypes
import itertools
import json

import numpy as np
import pytest

from device import host
from dsp.fusion import off_arm
from tests.test_off_arm import any_motion_events, random_stream

AXES = ["light", "motion", "hr_locked"]
RELATIVE = 1e-3
METHODS = ["centroid", "bisector", "mom", "sugeno"]
MOTION_INPUTS = ["events", "quantity", "magnitude"]
FUSION_ERR_PARAMETER, FUSION_ERR_AXES, FUSION_ERR_INPUT, FUSION_ERR_CAPACITY, FUSION_ERR_READ = -1, -2, -3, -4, -5

# A custom rule base unlike the built-in ones: weights, NOT, "is not", "off_arm is", nesting,
# case-insensitive names. (Why the odd weight: with weight w on the first rule, light MID and
# motion 0.6, the Sugeno output is exactly 0.5, the off-arm threshold, at heart-rate lock
# (w + 0.4) / (1 + w): 2/3 for w = 0.8, 13/19 for 0.9, values a running mean of 0/1 takes early in
# a stream. There float64 rounds the output to 0.5000000000000001 (off-arm) and float32 to
# 0.49999997 (not); no float32 code can follow float64's rounding at such a tie, so the weight
# puts it at 12317/18317, which no average of up to 200 samples takes.)
CUSTOM_RULES = json.dumps([
    {"if": {"not": "hr is LOCKED"}, "then": "CERTAINLY_OFF", "weight": 0.8317},
    {"if": {"and": ["hr is LOCKED", {"or": ["motion is HIGH", "motion is not LOW"]}]}, "then": "off_arm is ON_ARM"},
    {"if": {"and": ["light is MID", {"not": {"or": ["motion is HIGH", "hr is NOT_LOCKED"]}}]},
     "then": "PROBABLY_OFF", "weight": 0.5},
    {"if": "LIGHT IS high", "then": "certainly_off"},
    {"if": {"AND": [{"Or": ["light is LOW", "light is MID"]}, "motion is MODERATE"]}, "then": "PROBABLY_OFF"},
])


@pytest.fixture(scope="module")
def client():
    from dsp_server import create_app

    return create_app(blocks={"fuzzy-off-arm": off_arm.BLOCK}, root_block="fuzzy-off-arm").test_client()


def body_of(windows, fs, **params) -> dict:
    return {"features": [np.asarray(w, dtype=np.float64).reshape(-1).tolist() for w in windows],
            "axes": AXES, "sampling_freq": fs, "params": params, "state": ""}


def split(light, motion, hr, sizes) -> list[np.ndarray]:
    """Consecutive windows of the given sizes (each samples x 3)."""
    columns = np.stack([np.broadcast_to(np.asarray(c, dtype=np.float64), (sum(sizes),))
                        for c in (light, motion, hr)], axis=1)
    bounds = np.cumsum([0, *sizes])
    return [columns[a:b] for a, b in zip(bounds, bounds[1:])]


def server_features(client, body) -> np.ndarray:
    answer = client.post("/blocks/fuzzy-off-arm/batch", json=body).get_json()
    assert answer["success"], answer
    return np.asarray(answer["features"])


def assert_parity(client, body, ties_at_threshold: bool = False) -> float:
    """Device and server agree on every feature of every window; returns the worst relative difference.

    ties_at_threshold (one-sample windows only): where the certainty is 0.5 exactly in real
    arithmetic (a symmetric tie, e.g. ON_ARM and CERTAINLY_OFF clipped at the same strength),
    whether it counts as above 0.5 (off_arm_fraction) is decided by the last bit in float64 and
    float32 alike; there the device's certainty must be 0.5 too, and the fraction is not compared.
    """
    server = server_features(client, body)
    device = np.asarray(host.run_batch("fuzzy-off-arm", body))
    assert device.shape == server.shape
    relative = np.abs(device - server) / (1 + np.abs(server))
    if ties_at_threshold:
        assert all(len(window) == len(body["axes"]) for window in body["features"])
        tie = np.abs(server[:, -2] - 0.5) <= 1e-6
        assert (np.abs(device[tie, -2] - 0.5) <= 2e-6).all()
        relative[tie, -1] = 0.0
    worst = np.unravel_index(int(np.argmax(relative)), relative.shape)
    assert relative.max() <= RELATIVE, (f"window {worst[0]} feature {worst[1]}: device {device[worst]} "
                                        f"server {server[worst]}", body["params"])
    return float(relative.max())


# ---------------------------------------------------------------------------------------------
# Parity on streams
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule_base", ["article", "reduced", "custom"])
@pytest.mark.parametrize("inference", METHODS)
@pytest.mark.parametrize("motion_input", MOTION_INPUTS)
def test_random_streams_in_uneven_windows(client, motion_input, inference, rule_base):
    light, motion, hr = random_stream(1200, motion_input, seed=7)
    windows = split(light, motion, hr, [1, 6, 193, 1, 449, 549, 1])
    params = {"motion_input": motion_input, "inference": inference, "rule_base": rule_base}
    if rule_base == "custom":
        params["custom_rules"] = CUSTOM_RULES
    assert_parity(client, body_of(windows, 20.0, **params))


@pytest.mark.parametrize("inference", METHODS)
def test_the_articles_scenarios(client, inference):
    n = 300
    on_table = np.zeros(n)
    on_table[0] = -1
    scenarios = [
        (np.full(n, 15.0), on_table, np.zeros(n)),                      # on a table, dark-ish
        (np.full(n, 800.0), np.zeros(n), np.zeros(n)),                  # face up in daylight
        (np.full(n, 10.0), any_motion_events(30), np.ones(n)),          # worn, moving, locked
        (np.full(n, 70.0), any_motion_events(30), np.zeros(n)),         # in a hand
        (np.full(n, 75.0), np.zeros(n), np.ones(n)),                    # no rule fires
    ]
    for light, motion, hr in scenarios:
        for params in ({}, {"no_rule_output": 0.3}, {"rule_base": "reduced"}):
            assert_parity(client, body_of(split(light, motion, hr, [100, 100, 100]), 10.0,
                                          inference=inference, **params))


@pytest.mark.parametrize("fs, rate, rise, fall", [(10.0, 2.0, 10.0, 10.0), (50.0, 2.0, 10.0, 10.0),
                                                  (20.0, 3.0, 7.0, 4.5), (12.5, 2.5, 3.0, 2.0),
                                                  (10.0, 25.0, 1.0, 1.0)])
def test_motion_event_timing_sample_by_sample(client, fs, rate, rise, fall):
    """One-sample windows: each window's motion memberships are the level at that sample, so
    any synthetic event a sample late (or a level off at a breakpoint) shows."""
    n = 240
    rng = np.random.default_rng(int(fs * rate))
    events = np.zeros(n)
    events[rng.choice(n, 20, replace=False)] = 1
    events[[3, 100, 101, 200]] = -1
    events[:60:int(max(1, round(fs / rate)))] = 1
    light = np.repeat(rng.uniform(0, 260, n // 24), 24)
    hr = np.repeat(rng.integers(0, 2, n // 40), 40).astype(float)
    params = {"motion_event_rate": rate, "motion_rise_time": rise, "motion_fall_time": fall}
    assert_parity(client, body_of(split(light, events, hr, [1] * n), fs, **params))
    assert_parity(client, body_of(split(light, events, hr, [7] * (n // 8) + [n - 7 * (n // 8)]), fs,
                                  inference="mom", **params))


# Sets unlike the defaults: 4-point trapezoids, 3-point triangles, vertical edges, sets that end
# outside the universe or fall between universe points.
BREAKPOINTS = [
    {"motion_moderate": "0.2, 0.4, 0.6, 0.8", "light_mid": "25, 75, 200", "probably_off": "0.4, 0.6, 0.7, 0.9"},
    {"light_low": "40, 40", "light_mid": "40, 40, 120, 120", "light_high": "120, 120",
     "on_arm": "0.3, 0.3", "certainly_off": "0.75, 0.75"},
    {"on_arm": "-0.5, 0.25", "certainly_off": "0.8, 1.5", "probably_off": "0.33, 0.55, 0.77",
     "hr_not_locked": "0.2, 0.8", "hr_locked": "0.3, 0.9"},
    {"motion_low": "0, 0.3", "motion_moderate": "0.1, 0.5, 0.5, 0.9", "motion_high": "0.45, 1",
     "probably_off": "0.52, 0.58, 0.62, 0.68", "on_arm": "0.05, 0.15"},
]


@pytest.mark.parametrize("sets, points", [(sets, points) for sets in range(len(BREAKPOINTS))
                                          for points in (11, 57, 101, 1001)] + [(0, 10001), (2, 10001)])
def test_other_sets_and_universes(client, sets, points):
    for motion_input, seed in (("quantity", 5), ("events", 6)):
        light, motion, hr = random_stream(400, motion_input, seed=seed)
        hr = np.clip(hr * 0.7 + np.repeat(np.random.default_rng(seed).uniform(0, 0.3, 20), 20), 0, 1)
        windows = split(light, motion, hr, [100, 100, 200])
        for inference in METHODS:
            assert_parity(client, body_of(windows, 20.0, motion_input=motion_input, inference=inference,
                                          universe_points=points, **BREAKPOINTS[sets]))


def grid_windows(n, seed):
    """Crisp inputs, a third of them on breakpoints or values giving exact ties (LOW = MID, a
    clip level equal to a sampled degree)."""
    rng = np.random.default_rng(seed)
    columns = []
    for low, high, exact in ((0, 260, [0, 25, 37.5, 50, 75, 100, 150, 175, 200]),
                             (0, 1, [0, 0.2, 0.275, 0.35, 0.5, 0.65, 0.8, 1]),
                             (0, 1, [0, 0.25, 0.5, 0.605, 0.75, 1])):
        values = rng.uniform(low, high, n)
        pick = rng.random(n) < 0.35
        values[pick] = rng.choice(exact, int(pick.sum()))
        columns.append(values)
    return [np.array([[a, b, c]]) for a, b, c in zip(*columns)]


@pytest.mark.parametrize("points", [11, 101, 1001])
@pytest.mark.parametrize("inference", METHODS)
def test_inference_point_by_point(client, inference, points):
    """One-sample windows without averaging: off_arm_last is the inference at that point."""
    params = {"motion_input": "quantity", "motion_average_time": 0, "hr_average_time": 0,
              "inference": inference, "universe_points": points}
    assert_parity(client, body_of(grid_windows(400, seed=points), 10.0, **params), ties_at_threshold=True)
    assert_parity(client, body_of(grid_windows(100, seed=3), 10.0, rule_base="custom",
                                  custom_rules=CUSTOM_RULES, **params), ties_at_threshold=True)


def test_exact_ties_point_by_point(client):
    """Every combination of breakpoint-aligned inputs (structural ties for mom and the bisector)."""
    values = itertools.product([0, 25, 37.5, 50, 75, 100, 150, 200], [0, 0.2, 0.35, 0.5, 0.65, 0.8, 1],
                               [0, 0.25, 0.5, 0.75, 1])
    windows = [np.array([v]) for v in values]
    for inference, points in [(method, 101) for method in METHODS] + [("mom", 201), ("bisector", 201)]:
        assert_parity(client, body_of(windows, 10.0, motion_input="quantity", motion_average_time=0,
                                      hr_average_time=0, inference=inference, universe_points=points),
                      ties_at_threshold=True)


def test_bisector_next_to_a_gap(client):
    # The server's test: two lobes of nearly equal area with nothing between them.
    windows = [np.array([[10.0, 0.9, hr]]) for hr in np.linspace(0.58, 0.63, 51)]
    assert_parity(client, body_of(windows, 10.0, motion_input="quantity", motion_average_time=0,
                                  hr_average_time=0, inference="bisector"))


@pytest.mark.parametrize("window, increase, fs, increase_ms", [
    (200, 50, 20.0, 2500.0), (120, 37, 10.0, 3700.0), (64, 1, 16.0, 62.5), (100, 100, 10.0, 10000.0),
    (80, 120, 10.0, 12000.0), (50, 2, 10.0, 250.0)])  # 250 ms at 10 Hz is 2.5 samples: 2 (half to even)
@pytest.mark.parametrize("motion_input", MOTION_INPUTS)
def test_overlapping_windows(client, motion_input, window, increase, fs, increase_ms):
    light, motion, hr = random_stream(1500, motion_input, seed=increase)
    stream = np.stack([light, motion, hr], axis=1)
    starts = range(0, stream.shape[0] - window + 1, increase)
    windows = [stream[s:s + window] for s in list(starts)[:14]]
    for inference in ("centroid", "mom"):
        assert_parity(client, body_of(windows, fs, motion_input=motion_input, inference=inference,
                                      window_increase_ms=increase_ms, hr_average_time=3.0,
                                      motion_average_time=1.3))


@pytest.mark.parametrize("motion_input", ["quantity", "magnitude"])
def test_long_stream_running_averages_do_not_drift(client, motion_input):
    """100 000 samples of fractional values through averages of 499 and 181 samples."""
    rng = np.random.default_rng(17)
    n = 100_000
    hr = np.clip(np.cumsum(rng.normal(0, 0.02, n)) % 2.0, 0, 2)
    hr = np.where(hr > 1, 2 - hr, hr)
    light = np.abs(100 + np.cumsum(rng.normal(0, 2, n)) % 300)
    motion = rng.uniform(0, 1, n) if motion_input == "quantity" else np.abs(9.80665 + rng.normal(0, 1.5, n))
    windows = split(light, motion, hr, [1000] * 100)
    params = {"motion_input": motion_input, "hr_average_time": 24.95, "motion_average_time": 9.05}
    assert_parity(client, body_of(windows, 20.0, **params))


def test_columns_mapped_by_name_and_wide_windows(client):
    light, motion, hr = random_stream(400, "events", seed=2)
    # Five input axes in another order, mapped with named_axes.
    extra = np.random.default_rng(0).normal(size=(400, 2))
    wide = np.stack([hr, extra[:, 0], light, motion, extra[:, 1]], axis=1)
    body = {"features": [w.reshape(-1).tolist() for w in np.split(wide, 4)], "sampling_freq": 10,
            "axes": ["hr", "x", "lux", "acc_motion", "y"], "state": "",
            "named_axes": {"hr_locked": "hr", "light": "lux", "motion": "acc_motion"}, "params": {}}
    assert_parity(client, body)
    # More axes than the device's read buffer holds (one value per read).
    axes = [f"a{i}" for i in range(60)]
    very_wide = np.zeros((400, 60))
    very_wide[:, 59], very_wide[:, 7], very_wide[:, 31] = light, motion, hr
    body = {"features": [w.reshape(-1).tolist() for w in np.split(very_wide, 4)], "sampling_freq": 10,
            "axes": axes, "state": "", "named_axes": {"light": "a59", "motion": "a7", "hr_locked": "a31"},
            "params": {"inference": "bisector"}}
    assert_parity(client, body)


# ---------------------------------------------------------------------------------------------
# Custom rule bases: what the server accepts, the device accepts alike
# ---------------------------------------------------------------------------------------------

ACCEPTED_RULES = [
    off_arm.ARTICLE_RULES,
    off_arm.REDUCED_RULES,
    json.dumps({"rules": json.loads(off_arm.REDUCED_RULES)}),
    # the last of repeated keys counts, as in Python's json
    '[{"if": 5, "if": "light is HIGH", "then": "ON_ARM", "then": "CERTAINLY_OFF", "weight": NaN, "weight": 1}]',
    '[{"if": {"and": ["motion is LOW"], "and": ["hr is LOCKED", "light is low"]}, "then": "ON_ARM"}]',
    '{"rules": 3, "rules": [{"then": "probably_off", "if": "\\u006cight  is\\tnot   MID "}]}',
    '[{"if": {"not": {"not": {"not": "hr is NOT_LOCKED"}}}, "then": " off_arm  IS  on_arm ", "weight": 0}]',
    '[{"if": "hr is LOCKED", "then": "ON_ARM", "weight": 0.25}, {"if": "hr is not LOCKED", "then": "CERTAINLY_OFF", "weight": 1e-1}]',
    # nested 16 levels deep (the device's FUZZY_RULES_MAX_DEPTH)
    '[{"if": ' + '{"not": ' * 16 + '"light is LOW"' + '}' * 16 + ', "then": "ON_ARM"}]',
]


@pytest.mark.parametrize("rules", range(len(ACCEPTED_RULES)))
def test_custom_rule_bases(client, rules):
    light, motion, hr = random_stream(300, "events", seed=rules)
    for inference in METHODS:
        assert_parity(client, body_of(split(light, motion, hr, [100, 200]), 10.0, rule_base="custom",
                                      custom_rules=ACCEPTED_RULES[rules], inference=inference))


def test_article_text_as_custom_rules_equals_the_built_in_article_rules():
    light, motion, hr = random_stream(500, "events", seed=4)
    windows = split(light, motion, hr, [250, 250])
    for inference in METHODS:
        built_in = host.run_batch("fuzzy-off-arm", body_of(windows, 10.0, inference=inference))
        parsed = host.run_batch("fuzzy-off-arm", body_of(windows, 10.0, inference=inference, rule_base="custom",
                                                          custom_rules=off_arm.ARTICLE_RULES))
        assert built_in == parsed


# ---------------------------------------------------------------------------------------------
# Errors where the server errors
# ---------------------------------------------------------------------------------------------

def server_error(client, body) -> str:
    answer = client.post("/blocks/fuzzy-off-arm/batch", json=body).get_json()
    assert answer["success"] is False, "the server accepted it"
    return answer["error"]


@pytest.mark.parametrize("columns, params, device_says", [
    ((10.0, 0.0, 2.0), {}, "Axis 'hr_locked' must be 1"),
    ((10.0, 0.5, 1.0), {}, "Axis 'motion' must hold motion events"),
    ((-1.0, 0.0, 1.0), {}, "Axis 'light' is ambient light sensor counts and must be >= 0"),
    ((np.nan, 0.0, 1.0), {}, "Axis 'light' must be finite"),
    ((10.0, 0.0, np.inf), {}, "Axis 'hr_locked' must be finite"),
    ((10.0, 1.5, 1.0), {"motion_input": "quantity"}, "motion quantity from 0"),
    ((10.0, -9.8, 1.0), {"motion_input": "magnitude"}, "acceleration magnitude, >= 0"),
])
def test_bad_windows_are_refused(client, columns, params, device_says):
    good = np.tile([10.0, 0.0, 1.0], (20, 1))
    bad = good.copy()
    bad[13] = columns
    body = body_of([good, bad, good], 10.0, **params)
    server_error(client, body)  # (NaN and inf: the server refuses the body's JSON already)
    with pytest.raises(host.DeviceError) as error:
        host.run_batch("fuzzy-off-arm", body)
    assert error.value.code == FUSION_ERR_INPUT and error.value.window == 1
    assert device_says in error.value.message and "sample 13" in error.value.message


BAD_PARAMETERS = [
    ({"light_low": "50, 25"}, "Parameter 'light-low' must list its breakpoints in increasing order; got '50, 25'"),
    ({"light_mid": "25, 50"}, "'light-mid' must be 3 or 4 numbers"),
    ({"light_mid": "25, 50, 75, 100, 125"}, "'light-mid' must be 3 or 4 numbers"),
    ({"motion_high": "a, b"}, "Parameter 'motion-high' must be 2 numbers: 0 up to the first, 1 from the second, "
                              "comma-separated; got 'a, b'"),
    ({"hr_locked": "0; 1"}, "'hr-locked' must be 2 numbers"),
    ({"on_arm": "0, inf"}, "'on-arm' must be 2 numbers"),
    ({"probably_off": ""}, "'probably-off' must be 3 or 4 numbers"),
    ({"no_rule_output": 2}, "'no-rule-output' must be an off-arm certainty from 0 to 1; got 2"),
    ({"motion_rise_time": 0}, "'motion-rise-time' must be above 0 s; got 0"),
    ({"motion_event_rate": -2}, "'motion-event-rate' must be above 0 Hz"),
    ({"motion_fall_time": 0}, "'motion-fall-time' must be above 0"),
    ({"hr_average_time": -1}, "'hr-average-time' must be from 0 to 3600 seconds; got -1"),
    ({"motion_input": "quantity", "motion_average_time": 4000}, "'motion-average-time' must be from 0 to 3600"),
    ({"motion_input": "magnitude", "gravity": 0}, "'gravity' must be above 0"),
    ({"motion_input": "magnitude", "motion_full_scale": -1}, "'motion-full-scale' must be above 0 g"),
    ({"universe_points": 5}, "'universe-points' must be from 11 to 10001; got 5"),
    ({"universe_points": 10002}, "'universe-points' must be from 11"),
    ({"certainly_off": "2, 3"}, "Output set CERTAINLY_OFF is 0 everywhere on the output universe 0..1"),
    ({"probably_off": "0.301, 0.305, 0.309"}, "Output set PROBABLY_OFF is 0 everywhere"),
    ({"window_increase_ms": -5}, "'window-increase-ms' must be 0"),
]

BAD_RULES = [
    ("[]", "The rule base has no rules"),
    ("  ", "The rule base is empty"),
    ("[{\"if\": \"light is HIGH\", \"then\": \"CERTAINLY_OFF\"},]", "The rule base is not valid JSON"),
    ("[{'if': 'light is HIGH'}]", "The rule base is not valid JSON"),
    ('[{"if": "light is HIGH", "then": "CERTAINLY_OFF"}] x', "The rule base is not valid JSON"),
    ('{"rule": []}', "The rule base must be a JSON list of rules, or {\"rules\": [...]}; got an object"),
    ('"light is HIGH"', "must be a JSON list of rules"),
    (json.dumps([{"if": "light is HIGH", "then": "CERTAINLY_OFF"},
                 {"if": {"and": ["motion is FAST", "hr is LOCKED"]}, "then": "ON_ARM"}]),
     'rule 2, clause "motion is FAST": motion has no set FAST; sets: LOW, MODERATE, HIGH'),
    ('[{"if": "speed is HIGH", "then": "ON_ARM"}]', 'rule 1, clause "speed is HIGH": unknown variable speed'),
    ('[{"if": "light HIGH", "then": "ON_ARM"}]', 'expected "<variable> is <SET>"'),
    ('[{"if": "light is not", "then": "ON_ARM"}]', "light has no set not"),
    ('[{"if": "light is HIGH"}]', "rule 1: needs both 'if'"),
    ('[{"if": "light is HIGH", "then": "ON_ARM", "when": 1}]', "rule 1: unknown key 'when'"),
    ('[{"if": "light is HIGH", "then": "ON ARM"}]', "off_arm has no set ON ARM"),
    ('[{"if": "light is HIGH", "then": "output is ON_ARM"}]', 'expected "<SET>" or "off_arm is <SET>"'),
    ('[{"if": "light is HIGH", "then": "off_arm is not ON_ARM"}]', 'expected "<SET>" or "off_arm is <SET>"'),
    ('[{"if": "light is HIGH", "then": 3}]', "'then' must be an output set name"),
    ('[{"if": "light is HIGH", "then": "ON_ARM", "weight": 1.5}]', "weight must be a number from 0 to 1; got 1.5"),
    ('[{"if": "light is HIGH", "then": "ON_ARM", "weight": true}]', "weight must be a number from 0 to 1; got true"),
    ('[{"if": "light is HIGH", "then": "ON_ARM", "weight": NaN}]', "weight must be a number from 0 to 1"),
    ('[{"if": "light is HIGH", "then": "ON_ARM", "weight": 1e400}]', "weight must be a number from 0 to 1"),
    ('[{"if": {"and": []}, "then": "ON_ARM"}]', '"and" needs a non-empty list of conditions; got a list'),
    ('[{"if": {"or": "light is LOW"}, "then": "ON_ARM"}]', '"or" needs a non-empty list'),
    ('[{"if": {"xor": ["light is LOW"]}, "then": "ON_ARM"}]', "unknown operator 'xor'"),
    ('[{"if": {"and": ["light is LOW"], "or": ["light is LOW"]}, "then": "ON_ARM"}]', "a condition is a clause"),
    ('[{"if": 1, "then": "ON_ARM"}]', "a condition is a clause"),
    ('[3]', 'rule 1: expected an object'),
    ('[{"if": ' + '{"not": ' * 40 + '"light is LOW"' + '}' * 40 + ', "then": "ON_ARM"}]', "nested deeper than 32"),
]


@pytest.mark.parametrize("params, message", BAD_PARAMETERS + [
    ({"rule_base": "custom", "custom_rules": text}, message) for text, message in BAD_RULES])
def test_bad_parameters_are_refused_at_init(client, params, message):
    body = body_of([np.tile([10.0, 0.0, 1.0], (10, 1))], 10.0, **params)
    server = server_error(client, body)
    with pytest.raises(host.DeviceError) as error:
        host.run_batch("fuzzy-off-arm", body)
    assert error.value.window is None and error.value.code == FUSION_ERR_PARAMETER
    assert message in error.value.message
    if message.startswith("rule ") or message.startswith("Parameter"):
        assert error.value.message in server or server.startswith(error.value.message[:60]), (server, error.value.message)


@pytest.mark.parametrize("params, message", [
    ({"hr_average_time": 30.0}, "FUZZY_OFF_ARM_MAX_AVERAGE_SAMPLES"),              # 600 samples at 20 Hz
    ({"motion_input": "quantity", "motion_average_time": 26.0}, "spans 520 samples"),
    ({"rule_base": "custom", "custom_rules": json.dumps([{"if": "light is HIGH", "then": "ON_ARM"}] * 17)},
     "FUZZY_RULES_MAX_RULES"),
    ({"rule_base": "custom", "custom_rules": '[{"if": ' + '{"not": ' * 20 + '"light is LOW"' + '}' * 20
      + ', "then": "ON_ARM"}]'}, "FUZZY_RULES_MAX_DEPTH"),
    ({"rule_base": "custom", "custom_rules": json.dumps(
        [{"if": {"and": ["light is LOW"] * 30 + ["hr is LOCKED"]}, "then": "ON_ARM"}] * 3)}, "FUZZY_RULES_MAX_OPERANDS"),
])
def test_device_maxima_are_capacity_errors(client, params, message):
    """Beyond a documented compile-time maximum the server accepts, the device says which."""
    body = body_of([np.tile([10.0, 0.0, 1.0], (10, 1))], 20.0, **params)
    server_features(client, body)
    with pytest.raises(host.DeviceError) as error:
        host.run_batch("fuzzy-off-arm", body)
    assert error.value.code == FUSION_ERR_CAPACITY and message in error.value.message


def test_unmapped_axis_is_an_axes_error():
    stream = DeviceStream({}, 10.0, columns=[0, 1, -1])
    assert stream.init_code == FUSION_ERR_AXES and "missing: hr_locked" in stream.message


# ---------------------------------------------------------------------------------------------
# The state survives a refused window
# ---------------------------------------------------------------------------------------------

READ_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                           ctypes.POINTER(ctypes.c_float))


class DeviceStream:
    """One device instance driven window by window (device.host's ctypes pieces), with a reader
    that can be told to fail."""

    def __init__(self, params: dict, fs: float, columns=(0, 1, 2)):
        config = host._configure("fuzzy-off-arm", {"axes": AXES, "sampling_freq": fs, "params": params})
        lib = host._library()
        self.instance = ctypes.create_string_buffer(lib.fuzzy_off_arm_instance_size())
        self._init = host._function("fuzzy_off_arm", "init", ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.c_float, ctypes.POINTER(ctypes.c_int), ctypes.c_size_t)
        self._process = host._function("fuzzy_off_arm", "process", ctypes.c_int, ctypes.c_void_p,
                                       ctypes.POINTER(host._Window), ctypes.POINTER(ctypes.c_float), ctypes.c_size_t)
        self._message = host._function("fuzzy_off_arm", "message", ctypes.c_char_p, ctypes.c_void_p)
        count = host._function("fuzzy_off_arm", "feature_count", ctypes.c_size_t, ctypes.c_void_p)
        self.params = host._params_struct(config)
        self.init_code = self._init(self.instance, ctypes.byref(self.params), fs,
                                    (ctypes.c_int * 3)(*columns), 3)
        self.count = count(self.instance)
        self.fail_after = None  # reads allowed before the reader fails
        self.reads = 0

    @property
    def message(self) -> str:
        return self._message(self.instance).decode()

    def process(self, window: np.ndarray):
        values = np.ascontiguousarray(window, dtype=np.float32).reshape(-1)

        def read(_context, offset, length, out):
            self.reads += 1
            if self.fail_after is not None and self.reads > self.fail_after:
                return 1
            ctypes.memmove(out, values.ctypes.data + offset * 4, length * 4)
            return 0

        callback = READ_FN(read)
        window_struct = host._Window(ctypes.cast(callback, ctypes.c_void_p), None, values.size // 3, 3)
        output = (ctypes.c_float * self.count)()
        self.reads = 0
        code = self._process(self.instance, ctypes.byref(window_struct), output, self.count)
        return code, list(output)


@pytest.mark.parametrize("params", [{}, {"motion_input": "quantity", "window_increase_ms": 2000.0},
                                    {"motion_input": "magnitude", "inference": "bisector"}])
def test_a_refused_window_leaves_the_stream_as_it_was(params):
    motion_input = params.get("motion_input", "events")
    light, motion, hr = random_stream(900, motion_input, seed=9)
    a, b, c = split(light, motion, hr, [300, 300, 300])
    reference = DeviceStream(params, 20.0)
    expected = [reference.process(w)[1] for w in (a, b, c)]

    stream = DeviceStream(params, 20.0)
    assert stream.process(a) == (0, expected[0])
    bad = b.copy()
    bad[290, 0] = -5.0  # late in the window: 290 samples already went through the filters
    code, _ = stream.process(bad)
    assert code == FUSION_ERR_INPUT and "sample 290" in stream.message
    stream.fail_after = 3  # the reader fails part way through
    assert stream.process(b)[0] == FUSION_ERR_READ
    stream.fail_after = None
    assert stream.process(b) == (0, expected[1])
    assert stream.process(c) == (0, expected[2])


def test_a_reader_failing_only_on_the_second_read_resets_the_stream():
    light, motion, hr = random_stream(600, "events", seed=1)
    a, b = split(light, motion, hr, [300, 300])
    stream = DeviceStream({}, 20.0)
    stream.process(a)
    reads = stream.reads  # the reads of one whole pass, tails included
    stream.fail_after = reads - 1  # every read of the pass works, the last (handing the tail on) fails
    code, _ = stream.process(b)
    assert code == FUSION_ERR_READ and "the stream was reset" in stream.message
    stream.fail_after = None
    fresh = DeviceStream({}, 20.0)
    assert stream.process(b) == fresh.process(b)


def test_sizes_and_feature_counts():
    lib = host._library()
    size = lib.fuzzy_off_arm_instance_size()
    assert 1000 < size < 6000, size  # about 1.2 KB plus two tails of 511 floats
    assert DeviceStream({}, 10.0).count == 20
    assert DeviceStream({"rule_base": "reduced"}, 10.0).count == 16
    assert DeviceStream({"rule_base": "custom", "custom_rules": CUSTOM_RULES}, 10.0).count == 16
