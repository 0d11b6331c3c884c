"""Speed of the fuzzy engine and the fuzzy-off-arm block, beside scikit-fuzzy in the same process.

`run()` returns rows {name, figure, unit, bar, skfuzzy, skfuzzy_how}: the median of repeated
timings on the article's off-arm system (3 inputs, 9 rules, min/max Mamdani, 101-point output
universe), random inputs. scikit-fuzzy runs the same system through its ControlSystem when its
`control` module imports (it needs networkx), else through its own primitives (membership
interpolation and `defuzz`) looped per sample.

Usage: `.venv/bin/python bench/bench_fuzzy.py`
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsp import off_arm  # noqa: E402
from dsp.block import Request  # noqa: E402
from dsp.params import parameter_specs, resolve_params  # noqa: E402

SAMPLES = 10_000
BAR_BATCH_MS = 20.0
BAR_ONE_US = 100.0


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _inputs(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"light": rng.uniform(0, 300, n), "motion": rng.uniform(0, 1, n),
            "hr": rng.uniform(0, 1, n)}


def _skfuzzy_runner():
    """(how, evaluate(light, motion, hr) -> crisp or None) for the article system in skfuzzy."""
    import skfuzzy as fuzz

    light_u, unit_u = np.arange(0, 301, 1.0), np.linspace(0, 1, 101)
    out_u = np.linspace(0, 1, 101)
    sets = {
        "light": (light_u, {"LOW": fuzz.trapmf(light_u, [-1, -1, 25, 50]),
                            "MID": fuzz.trapmf(light_u, [25, 50, 100, 200]),
                            "HIGH": fuzz.trapmf(light_u, [100, 200, 400, 400])}),
        "motion": (unit_u, {"LOW": fuzz.trapmf(unit_u, [-1, -1, 0.2, 0.5]),
                            "MODERATE": fuzz.trimf(unit_u, [0.2, 0.5, 0.8]),
                            "HIGH": fuzz.trapmf(unit_u, [0.5, 0.8, 2, 2])}),
        "hr": (unit_u, {"LOCKED": fuzz.trimf(unit_u, [0, 1, 1]),
                        "NOT_LOCKED": fuzz.trimf(unit_u, [0, 0, 1])}),
    }
    outputs = {"ON_ARM": fuzz.trimf(out_u, [0, 0, 0.3]),
               "PROBABLY_OFF": fuzz.trimf(out_u, [0.5, 0.7, 0.9]),
               "CERTAINLY_OFF": fuzz.trimf(out_u, [0.7, 1, 1])}
    try:
        from skfuzzy import control as ctrl
    except ImportError:
        ctrl = None
    if ctrl is not None:
        ant = {name: ctrl.Antecedent(universe, name) for name, (universe, _) in sets.items()}
        for name, (_, mfs) in sets.items():
            for label, mf in mfs.items():
                ant[name][label] = mf
        out = ctrl.Consequent(out_u, "off_arm")
        for label, mf in outputs.items():
            out[label] = mf
        L, M, H = ant["light"], ant["motion"], ant["hr"]
        rules = [
            ctrl.Rule(M["LOW"] & H["NOT_LOCKED"] & L["HIGH"], out["CERTAINLY_OFF"]),
            ctrl.Rule(M["HIGH"] & H["NOT_LOCKED"] & L["HIGH"], out["CERTAINLY_OFF"]),
            ctrl.Rule(M["LOW"] & H["NOT_LOCKED"] & (L["LOW"] | L["MID"]), out["CERTAINLY_OFF"]),
            ctrl.Rule(L["HIGH"], out["CERTAINLY_OFF"]),
            ctrl.Rule(M["HIGH"] & H["NOT_LOCKED"] & L["MID"], out["PROBABLY_OFF"]),
            ctrl.Rule(M["HIGH"] & H["NOT_LOCKED"] & L["LOW"], out["PROBABLY_OFF"]),
            ctrl.Rule(M["LOW"] & H["LOCKED"] & L["LOW"], out["PROBABLY_OFF"]),
            ctrl.Rule(M["HIGH"] & H["LOCKED"] & L["LOW"], out["ON_ARM"]),
            ctrl.Rule(M["MODERATE"] & H["LOCKED"] & L["LOW"], out["ON_ARM"]),
        ]
        simulation = ctrl.ControlSystemSimulation(ctrl.ControlSystem(rules), cache=False)

        def evaluate(light, motion, hr):
            simulation.input["light"], simulation.input["motion"], simulation.input["hr"] = \
                light, motion, hr
            try:
                simulation.compute()
            except Exception:  # skfuzzy raises when no rule fires
                return None
            return simulation.output["off_arm"]

        return "ControlSystemSimulation", evaluate

    def degree(variable, label, value):
        universe, mfs = sets[variable]
        return float(fuzz.interp_membership(universe, mfs[label], value))

    def evaluate(light, motion, hr):
        L = {k: degree("light", k, light) for k in sets["light"][1]}
        M = {k: degree("motion", k, motion) for k in sets["motion"][1]}
        H = {k: degree("hr", k, hr) for k in sets["hr"][1]}
        strengths = [
            (min(M["LOW"], H["NOT_LOCKED"], L["HIGH"]), "CERTAINLY_OFF"),
            (min(M["HIGH"], H["NOT_LOCKED"], L["HIGH"]), "CERTAINLY_OFF"),
            (min(M["LOW"], H["NOT_LOCKED"], max(L["LOW"], L["MID"])), "CERTAINLY_OFF"),
            (L["HIGH"], "CERTAINLY_OFF"),
            (min(M["HIGH"], H["NOT_LOCKED"], L["MID"]), "PROBABLY_OFF"),
            (min(M["HIGH"], H["NOT_LOCKED"], L["LOW"]), "PROBABLY_OFF"),
            (min(M["LOW"], H["LOCKED"], L["LOW"]), "PROBABLY_OFF"),
            (min(M["HIGH"], H["LOCKED"], L["LOW"]), "ON_ARM"),
            (min(M["MODERATE"], H["LOCKED"], L["LOW"]), "ON_ARM"),
        ]
        aggregated = np.zeros_like(out_u)
        for strength, label in strengths:
            aggregated = np.fmax(aggregated, np.fmin(strength, outputs[label]))
        if aggregated.max() == 0:
            return None
        return fuzz.defuzz(out_u, aggregated, "centroid")

    return "primitives looped (skfuzzy.control needs networkx, not installed)", evaluate


def run(repeats: int = 15) -> list[dict]:
    params = resolve_params(parameter_specs(off_arm.BLOCK.parameters), {})
    system = off_arm.build_system(params)
    batch = _inputs(SAMPLES)
    one = {k: v[:1] for k, v in batch.items()}
    rows = []
    how, sk_evaluate = _skfuzzy_runner()
    sk_one = _median_seconds(lambda: sk_evaluate(0.5 * 300, 0.3, 0.2), repeats * 20)
    # scikit-fuzzy has no vectorised path for this system: time 300 samples and scale.
    sk_part = _median_seconds(lambda: [sk_evaluate(batch["light"][i], batch["motion"][i],
                                                   batch["hr"][i]) for i in range(300)], 3)
    sk_batch_ms = sk_part * SAMPLES / 300 * 1e3
    for method in ("centroid", "bisector", "mom", "sugeno"):
        seconds = _median_seconds(lambda: system.evaluate(batch, method), repeats)
        rows.append({"name": f"fuzzy engine, {SAMPLES:,} samples, {method}",
                     "figure": seconds * 1e3, "unit": "ms", "bar": BAR_BATCH_MS,
                     "skfuzzy": sk_batch_ms if method == "centroid" else None,
                     "skfuzzy_how": how if method == "centroid" else None})
    for method in ("centroid", "bisector", "mom", "sugeno"):
        seconds = _median_seconds(lambda: system.evaluate(one, method), repeats * 100)
        rows.append({"name": f"fuzzy engine, one evaluation, {method}", "figure": seconds * 1e6,
                     "unit": "us", "bar": BAR_ONE_US,
                     "skfuzzy": sk_one * 1e6 if method == "centroid" else None,
                     "skfuzzy_how": how if method == "centroid" else None})
    # The whole block on one 10,000-sample window: validation, composite motion, running
    # averages, inference, features, state.
    rng = np.random.default_rng(1)
    raw = np.stack([rng.uniform(0, 300, SAMPLES),
                    rng.choice([0.0, 1.0, -1.0], size=SAMPLES, p=[0.9, 0.08, 0.02]),
                    np.repeat(rng.integers(0, 2, SAMPLES // 50), 50).astype(float)], axis=1)
    request = Request(raw=raw, axes=list(off_arm.AXES), sampling_freq=50.0,
                      implementation_version=1, params=params)
    seconds = _median_seconds(lambda: off_arm.compute(request), repeats)
    rows.append({"name": f"fuzzy-off-arm block, {SAMPLES:,}-sample window (events mode)",
                 "figure": seconds * 1e3, "unit": "ms", "bar": None, "skfuzzy": None,
                 "skfuzzy_how": None})
    return rows


def main() -> None:
    for row in run():
        bar = f"  (bar {row['bar']:g} {row['unit']}: {'pass' if row['figure'] < row['bar'] else 'FAIL'})" \
            if row["bar"] else ""
        sk = f"  | scikit-fuzzy {row['skfuzzy']:,.1f} {row['unit']} ({row['skfuzzy_how']})" \
            if row["skfuzzy"] is not None else ""
        print(f"{row['name']}: {row['figure']:,.2f} {row['unit']}{bar}{sk}")


if __name__ == "__main__":
    main()
