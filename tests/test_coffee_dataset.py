"""The simulated coffee-machine dataset: what its users rely on.

Determinism, shapes and units, the split by machine, the Edge Impulse acquisition JSON, and the
property it exists for: some pairs of stages need the audio, others the vibration, so fusion
beats either alone (measured on a small dataset; the full-size figures are in
models/coffee_dataset_report.md).
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from models import coffee_dataset as cd
from models.coffee_dataset import (ACCEL_RATE, AUDIO_RATE, STAGES, CoffeeDataset, generate,
                                   split_by_machine, to_common_rate, write_acquisition_json)

# Small enough to keep the module's tests to a few seconds, big enough for 4 machine folds
# with 6 training machines each.
SMALL = {"n_machines": 8, "windows_per_stage": 8, "seed": 0}


@pytest.fixture(scope="module")
def small() -> CoffeeDataset:
    return generate(**SMALL)


@pytest.fixture(scope="module")
def tiny() -> CoffeeDataset:
    return generate(n_machines=3, windows_per_stage=2, seed=7)


def _same(a: CoffeeDataset, b: CoffeeDataset) -> bool:
    return all(np.array_equal(x, y) and x.dtype == y.dtype
               for x, y in ((a.audio, b.audio), (a.accel, b.accel), (a.labels, b.labels),
                            (a.machines, b.machines)))


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------

def test_same_seed_same_arrays_bit_for_bit(tiny):
    assert _same(tiny, generate(n_machines=3, windows_per_stage=2, seed=7))


def test_another_seed_gives_other_data(tiny):
    other = generate(n_machines=3, windows_per_stage=2, seed=8)
    assert not np.array_equal(tiny.audio, other.audio)
    assert not np.array_equal(tiny.accel, other.accel)


def test_a_machine_does_not_depend_on_how_many_are_asked_for(tiny):
    fewer = generate(n_machines=2, windows_per_stage=2, seed=7)
    assert _same(fewer, tiny.subset(tiny.machines < 2))


# ---------------------------------------------------------------------------------------------
# Shapes, types and units
# ---------------------------------------------------------------------------------------------

def test_shapes_and_dtypes(tiny):
    n = 3 * len(STAGES) * 2
    assert len(tiny) == n
    assert tiny.audio.shape == (n, AUDIO_RATE) and tiny.audio.dtype == np.float64
    assert tiny.accel.shape == (n, ACCEL_RATE, 3) and tiny.accel.dtype == np.float64
    assert tiny.labels.shape == tiny.machines.shape == (n,)
    assert np.issubdtype(tiny.labels.dtype, np.integer)
    assert np.issubdtype(tiny.machines.dtype, np.integer)
    assert cd.WINDOW_SECONDS == 1.0


def test_audio_is_int16_valued(small):
    assert np.array_equal(small.audio, np.round(small.audio))
    assert small.audio.min() >= -32768 and small.audio.max() <= 32767
    # Not silent, not a square wave: real int16 audio uses many levels.
    assert len(np.unique(small.audio[:, :1000])) > 1000


def test_accelerometer_includes_gravity(small):
    magnitude = np.linalg.norm(small.accel, axis=2)
    assert magnitude.mean() == pytest.approx(9.81, abs=0.15)
    # At rest the reading is gravity alone, give or take noise and calibration (m/s^2).
    idle = magnitude[small.labels == STAGES.index("idle")]
    assert np.all(np.abs(idle.mean(axis=1) - 9.81) < 0.3)
    # Mounting differs between machines: gravity is not always on z.
    dominant_axis = np.abs(small.accel.mean(axis=1)).argmax(axis=1)
    assert len(np.unique(dominant_axis)) > 1


def test_every_stage_of_every_machine_is_there(small):
    for machine in np.unique(small.machines):
        counts = np.bincount(small.labels[small.machines == machine], minlength=len(STAGES))
        assert np.all(counts == SMALL["windows_per_stage"])


def test_designed_signatures(small):
    """The physics the fusion property rests on, per machine."""
    def rms_db(audio):
        return 20 * np.log10(np.sqrt(np.mean(audio**2, axis=1)) / 32768)

    def vibration_rms(accel):
        ac = accel - accel.mean(axis=1, keepdims=True)
        return np.sqrt(np.mean(np.sum(ac**2, axis=2), axis=1))

    for machine in np.unique(small.machines):
        stage = {name: (small.machines == machine) & (small.labels == index)
                 for index, name in enumerate(STAGES)}
        loudness = {name: np.median(rms_db(small.audio[mask])) for name, mask in stage.items()}
        shaking = {name: np.median(vibration_rms(small.accel[mask]))
                   for name, mask in stage.items()}
        assert loudness["grind"] > loudness["pump"] > loudness["idle"] + 10
        assert loudness["extract"] > loudness["idle"] + 10
        assert shaking["grind"] > 3 * shaking["idle"]
        assert shaking["pump"] > 3 * shaking["extract"]
        assert shaking["extract"] < 2 * shaking["idle"]


# ---------------------------------------------------------------------------------------------
# Split by machine
# ---------------------------------------------------------------------------------------------

def test_split_by_machine_keeps_machines_apart(small):
    train, test = split_by_machine(small, test_fraction=0.25, seed=3)
    train_machines, test_machines = set(train.machines), set(test.machines)
    assert not train_machines & test_machines
    assert train_machines | test_machines == set(small.machines)
    assert len(test_machines) == 2
    assert len(train) + len(test) == len(small)
    for part in (train, test):
        assert set(part.labels) == set(range(len(STAGES)))
    # Deterministic for a seed.
    again_train, _ = split_by_machine(small, test_fraction=0.25, seed=3)
    assert _same(train, again_train)


def test_split_by_machine_needs_two_machines():
    one = generate(n_machines=1, windows_per_stage=1)
    with pytest.raises(ValueError):
        split_by_machine(one)


def test_machine_folds_test_every_machine_once(small):
    folds = cd.machine_folds(small, folds=4, seed=0)
    assert np.array_equal(np.sum(folds, axis=0), np.ones(len(small)))
    for test in folds:
        assert not set(small.machines[test]) & set(small.machines[~test])


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

# Studio and the ingestion service infer the label from the file name with this pattern.
EI_LABEL_FROM_NAME = re.compile(r"^[a-zA-Z0-9\s\-_]+")


def test_acquisition_json_is_valid_and_round_trips_at_16khz(tiny, tmp_path):
    paths = write_acquisition_json(tiny, tmp_path)
    assert len(paths) == len(tiny) == len(set(paths))
    expected = to_common_rate(tiny, AUDIO_RATE)
    for index, path in enumerate(paths):
        document = json.loads(path.read_text())
        assert document["protected"] == {"ver": "v1", "alg": "none"}
        assert re.fullmatch(r"0{64}", document["signature"])
        payload = document["payload"]
        assert payload["device_type"]
        assert payload["interval_ms"] == 1000 / AUDIO_RATE
        assert payload["sensors"] == [{"name": "audio", "units": "wav"},
                                      {"name": "accX", "units": "m/s2"},
                                      {"name": "accY", "units": "m/s2"},
                                      {"name": "accZ", "units": "m/s2"}]
        values = np.array(payload["values"], dtype=np.float64)
        assert values.shape == (AUDIO_RATE, 4)
        assert np.array_equal(values, expected[index])
        # The audio column is the dataset's audio, integers in the file ...
        assert np.array_equal(values[:, 0], tiny.audio[index])
        assert all(isinstance(row[0], int) for row in payload["values"][:50])
        # ... and every 160th row gives back the 100 Hz accelerometer exactly.
        assert np.array_equal(values[::AUDIO_RATE // ACCEL_RATE, 1:], tiny.accel[index])
        label = EI_LABEL_FROM_NAME.match(path.name).group(0)
        assert label == STAGES[tiny.labels[index]]
        assert path.suffix == ".json"


def test_acquisition_json_at_a_lower_rate(tiny, tmp_path):
    rate = 1000
    paths = write_acquisition_json(tiny.subset(np.arange(4)), tmp_path, rate=rate)
    expected = to_common_rate(tiny.subset(np.arange(4)), rate)
    for index, path in enumerate(paths):
        label, read_rate, names, values = cd.read_acquisition_json(path)
        assert (label, read_rate, names) == (STAGES[tiny.labels[index]], rate,
                                             ["audio", "accX", "accY", "accZ"])
        assert values.shape == (rate, 4)
        assert np.array_equal(values, expected[index])
        assert np.array_equal(values[:, 0], np.round(values[:, 0]))
        assert np.array_equal(values[::rate // ACCEL_RATE, 1:], tiny.accel[index])


@pytest.mark.parametrize("rate", [0, 300, 3000, 32000])
def test_acquisition_json_rejects_rates_that_do_not_fit(tiny, tmp_path, rate):
    with pytest.raises(ValueError):
        write_acquisition_json(tiny, tmp_path, rate=rate)


def test_npz_round_trip(tiny, tmp_path):
    path = cd.save_npz(tiny, tmp_path / "d.npz", seed=7)
    assert _same(cd.load_npz(path), tiny)


def test_command_line_writes_both_formats(tmp_path, capsys):
    common = ["--machines", "4", "--windows-per-stage", "1", "--seed", "2"]
    assert cd.main(["--out", str(tmp_path / "npz"), *common]) == 0
    loaded = cd.load_npz(tmp_path / "npz" / "coffee_dataset.npz")
    assert _same(loaded, generate(4, 1, 2))

    assert cd.main(["--out", str(tmp_path / "ei"), "--format", "ei-json", *common]) == 0
    training = sorted((tmp_path / "ei" / "training").glob("*.json"))
    testing = sorted((tmp_path / "ei" / "testing").glob("*.json"))
    assert (len(training), len(testing)) == (12, 4)
    machine_of = re.compile(r"\.m(\d+)-")
    assert not ({machine_of.search(p.name).group(1) for p in training}
                & {machine_of.search(p.name).group(1) for p in testing})


# ---------------------------------------------------------------------------------------------
# Fusion matters
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def measured(small):
    pytest.importorskip("sklearn")
    return cd.measure(small, folds=4, seed=0)


def test_fused_beats_either_sensor_alone(measured):
    accuracy = measured.accuracy
    assert accuracy["fused"] >= 0.93
    assert accuracy["audio"] <= accuracy["fused"] - 0.08
    assert accuracy["vibration"] <= accuracy["fused"] - 0.08
    # Neither sensor is useless on its own either.
    assert accuracy["audio"] >= 0.6 and accuracy["vibration"] >= 0.6


def test_pump_and_extract_need_the_vibration(measured):
    pair = measured.pair_accuracy[("pump", "extract")]
    assert pair["audio"] <= 0.85
    assert pair["vibration"] >= 0.9


def test_idle_and_extract_need_the_audio(measured):
    pair = measured.pair_accuracy[("idle", "extract")]
    assert pair["vibration"] <= 0.75
    assert pair["audio"] >= 0.9


def test_measurement_report_formats(measured):
    text = cd.format_measurement(measured)
    assert "| fused |" in text and "pump vs extract" in text
