"""Speed of the fuzzy engine and the fuzzy-off-arm block, beside scikit-fuzzy in the same process.

`run()` returns rows {name, figure, unit, bar, baseline, baseline_name} (the schema of
`bench/run_bench.py`): medians of repeated timings on the block's default system (the article's
3 inputs, 9 rules, min/max Mamdani, 101-point output universe) with random inputs.

scikit-fuzzy runs the same system through its control API (Antecedent / Consequent / Rule /
ControlSystem / ControlSystemSimulation), built from the block's parameters and rule text, with
input universes holding every breakpoint (so its memberships are ours exactly) and our output
universe. Its simulation is made once and reused, with `cache=False` so every call computes:
* one evaluation: `compute()` on scalar inputs;
* 10,000 samples: its array mode (arrays as inputs, one `compute()`). That mode raises
  `EmptyMembershipError` for the whole batch when any sample fires no rule (centroid and
  bisector), so it is timed on inputs where every sample fires one, and `main()` reports what it
  does on block-like inputs (heart-rate lock exactly 0 or 1), where some samples fire none.

Usage: `.venv/bin/python bench/bench_fuzzy.py`
"""
from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsp.core.block import Request  # noqa: E402
from dsp.core.params import parameter_specs, resolve_params  # noqa: E402
from dsp.fusion import off_arm  # noqa: E402

SAMPLES = 10_000
BAR_BATCH_MS = 20.0
BAR_ONE_US = 100.0
MAMDANI = ("centroid", "bisector", "mom")
INPUT_SPANS = {"light": (0.0, 300.0), "motion": (0.0, 1.0), "hr": (0.0, 1.0)}


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _inputs(n: int, seed: int = 0) -> dict:
    """Uniform random crisp inputs: some rule fires at every sample (none fires only on a set of
    measure zero: MID light with motion exactly 0.5 or the heart rate exactly locked)."""
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(*span, n) for name, span in INPUT_SPANS.items()}


def _block_like_inputs(n: int, seed: int = 2) -> dict:
    """As the block's preprocessing gives them: the averaged heart-rate lock often exactly 0 or 1."""
    inputs = _inputs(n, seed)
    rng = np.random.default_rng(seed + 1)
    settled = rng.random(n) < 0.5
    inputs["hr"][settled] = rng.integers(0, 2, int(settled.sum()))
    return inputs


class _SkfuzzyRunner:
    """scikit-fuzzy's simulations of the block's default system, reused across calls: one for
    array inputs, one for scalars (a simulation resets itself when switched between the two)."""

    def __init__(self, params: dict):
        import skfuzzy
        from skfuzzy import control as ctrl

        from tests.skfuzzy_oracle import skfuzzy_controller

        self.version = skfuzzy.__version__
        _, self.consequent, self.system = skfuzzy_controller(params, off_arm.ARTICLE_RULES)
        self.simulations = {kind: ctrl.ControlSystemSimulation(self.system, cache=False)
                            for kind in ("array", "scalar")}

    def evaluate(self, inputs: dict, method: str):
        self.consequent.defuzzify_method = method
        arrays = any(isinstance(value, np.ndarray) for value in inputs.values())
        simulation = self.simulations["array" if arrays else "scalar"]
        for name, value in inputs.items():
            simulation.input[name] = value
        simulation.compute()
        return simulation.output[off_arm.OUTPUT]


def _skfuzzy_runner(params: dict):
    try:
        return _SkfuzzyRunner(params), ""
    except ImportError as error:  # skfuzzy.control needs networkx (a dev requirement)
        return None, f"scikit-fuzzy's control API does not import ({error})"


def skfuzzy_on_block_like_inputs(system, runner) -> str:
    """What scikit-fuzzy's array mode does on 10,000 block-like samples, some firing no rule."""
    # Array mode lets the defuzzifier's own error through; scalar mode wraps it in control's.
    from skfuzzy.defuzzify.exceptions import EmptyMembershipError

    inputs = _block_like_inputs(SAMPLES)
    silent = ~(system.evaluate(inputs).firing > 0).any(axis=0)
    lines = []
    for method in MAMDANI:
        try:
            outputs = np.asarray(runner.evaluate(inputs, method))
            values = ", ".join(f"{v:g}" for v in np.unique(outputs[silent]))
            outcome = f"returns {values} where no rule fires"
        except EmptyMembershipError:
            outcome = "raises EmptyMembershipError for the whole batch"
        lines.append(f"scikit-fuzzy array mode, {method}, {SAMPLES:,} block-like samples of which "
                     f"{int(silent.sum())} fire no rule: {outcome}")
    return "\n".join(lines)


def skfuzzy_agreement(system, runner) -> str:
    """Largest |ours - scikit-fuzzy| on the timed 10,000-sample batch: the same system."""
    batch = _inputs(SAMPLES)
    parts = []
    for method in MAMDANI:
        difference = np.abs(system.evaluate(batch, method).output - runner.evaluate(batch, method))
        parts.append(f"{method} {difference.max():.4f} ({int((difference > 0.01).sum())} samples "
                     "over 0.01)")
    # Over 0.01 only where the answer is ill-conditioned: see tests/test_off_arm.py.
    return "; ".join(parts)


def run(repeats: int = 15) -> list[dict]:
    params = resolve_params(parameter_specs(off_arm.BLOCK.parameters), {})
    system = off_arm.build_system(params)
    batch = _inputs(SAMPLES)
    one = {name: values[:1] for name, values in batch.items()}
    scalar = {name: float(values[0]) for name, values in batch.items()}
    runner, missing = _skfuzzy_runner(params)
    label = f"scikit-fuzzy {runner.version} ControlSystemSimulation" if runner else missing
    rows = []
    with warnings.catch_warnings():
        # scikit-fuzzy 0.5.0 passes an out array positionally to np.maximum (deprecated in numpy 2).
        warnings.simplefilter("ignore", DeprecationWarning)
        for method in MAMDANI + ("sugeno",):
            seconds = _median_seconds(lambda: system.evaluate(batch, method), repeats)
            baseline = _median_seconds(lambda: runner.evaluate(batch, method), 3) * 1e3 \
                if runner and method in MAMDANI else None
            rows.append({"name": f"fuzzy engine, {SAMPLES:,} samples, {method}",
                         "figure": seconds * 1e3, "unit": "ms", "bar": BAR_BATCH_MS,
                         "baseline": baseline,
                         "baseline_name": f"{label}, array mode (one compute)" if baseline else ""})
        for method in MAMDANI + ("sugeno",):
            seconds = _median_seconds(lambda: system.evaluate(one, method), repeats * 100)
            baseline = _median_seconds(lambda: runner.evaluate(scalar, method), repeats * 10) * 1e6 \
                if runner and method in MAMDANI else None
            rows.append({"name": f"fuzzy engine, one evaluation, {method}", "figure": seconds * 1e6,
                         "unit": "us", "bar": BAR_ONE_US, "baseline": baseline,
                         "baseline_name": f"{label}, scalar compute" if baseline else ""})
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
                 "figure": seconds * 1e3, "unit": "ms", "bar": None, "baseline": None,
                 "baseline_name": ""})
    return rows


def main() -> None:
    print("| measure | ours | bar | scikit-fuzzy, same process | scikit-fuzzy / ours |")
    print("|---|---|---|---|---|", flush=True)
    for row in run():
        bar = f"< {row['bar']:g} {row['unit']}: {'pass' if row['figure'] < row['bar'] else 'FAIL'}" \
            if row["bar"] else ""
        baseline = f"{row['baseline']:,.1f} {row['unit']} ({row['baseline_name']})" \
            if row["baseline"] is not None else ""
        ratio = f"{row['baseline'] / row['figure']:,.0f} x" if row["baseline"] is not None else ""
        print(f"| {row['name']} | {row['figure']:,.2f} {row['unit']} | {bar} | {baseline} | {ratio} |")
    params = resolve_params(parameter_specs(off_arm.BLOCK.parameters), {})
    runner, missing = _skfuzzy_runner(params)
    if runner is None:
        print(missing)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        system = off_arm.build_system(params)
        print()
        print(f"Largest |ours - scikit-fuzzy| on the timed {SAMPLES:,} samples: "
              f"{skfuzzy_agreement(system, runner)}")
        print(skfuzzy_on_block_like_inputs(system, runner))


if __name__ == "__main__":
    main()
