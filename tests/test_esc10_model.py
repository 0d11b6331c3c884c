"""The shipped ESC-10 embedder, `models/esc10.*`: loads, is documented, is small, is served.

Needs no audio: the figures are read from the metadata that `models/train_esc10.py` wrote.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dsp.embeddings.model import load_model

ROOT = Path(__file__).resolve().parent.parent
META_PATH = ROOT / "models" / "esc10.json"
META = json.loads(META_PATH.read_text())
ESC10_CLASSES = ["Dog bark", "Rain", "Sea waves", "Baby cry", "Clock tick", "Person sneeze",
                 "Helicopter", "Chainsaw", "Rooster", "Fire crackling"]


def test_loads_with_the_project_loader():
    model = load_model(META_PATH)
    assert model.metadata.name == "esc10"
    assert model.metadata.classes == tuple(ESC10_CLASSES)
    assert model.metadata.window_samples == 16000 and model.metadata.sampling_freq == 16000
    rows = np.random.default_rng(0).random((3, model.metadata.input_width)).astype(np.float32)
    assert model.embed(rows).shape == (3, model.metadata.embedding_size)


def test_metadata_names_dataset_licence_and_attribution():
    data = META["data"]
    assert "ESC-10" in data["dataset"] and "Piczak 2015" in data["dataset"]
    assert "CC BY 3.0" in data["licence"] and "Sampling+" in data["licence"]
    assert "ESC-10_README_attributions.txt" in data["attribution"]
    assert "Sampling+" in data["attribution"]


def test_metadata_holds_the_cross_validation_per_fold_and_seed():
    accuracy = META["quality"]["esc10_5fold_accuracy"]
    assert len(accuracy["per_seed"]) >= 2
    fold_means = []
    for run in accuracy["per_seed"].values():
        folds = run["per_fold"]
        assert sorted(folds) == ["1", "2", "3", "4", "5"]
        assert all(0 <= value <= 1 for value in folds.values())
        assert run["mean"] == pytest.approx(np.mean(list(folds.values())), abs=1e-4)
        fold_means.append(run["mean"])
    assert accuracy["mean"] == pytest.approx(np.mean(fold_means), abs=1e-4)
    assert accuracy["bar"] == 0.90 and accuracy["meets_bar"] == (accuracy["mean"] >= 0.90)
    # The device-ready recipe (per-tensor dense layers, AVERAGE_POOL_2D) measured 0.895, the
    # recipe before it 0.9025: within the two seeds' spread, just under the bar (README).
    assert accuracy["mean"] >= 0.885
    assert accuracy["how"]


def test_int8_model_is_under_100_kb():
    size = (META_PATH.parent / META["files"]["int8"]).stat().st_size
    assert size < 100 * 1024
    assert size == META["conversion"]["sizes_bytes"]["int8"]


def test_raw_window_model_is_shipped():
    assert (META_PATH.parent / META["files"]["raw"]).is_file()
    assert "raw_model" in META


def test_embeddings_block_serves_it(monkeypatch):
    from dsp_server import create_app

    monkeypatch.setenv("EMBEDDINGS_MODEL", str(META_PATH))
    client = create_app().test_client()
    rng = np.random.default_rng(3)
    t = np.arange(16000) / 16000
    window = np.clip(np.round(6000 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 500, 16000)),
                     -32768, 32767)
    response = client.post("/run", json={"features": window.tolist(), "axes": ["audio"],
                                         "sampling_freq": 16000})
    assert response.status_code == 200
    payload = response.get_json()
    assert payload["success"] is True, payload
    width = META["output"]["shape"][-1]
    assert len(payload["features"]) == width
    assert payload["output_config"] == {"type": "flat", "shape": {"width": width}}
    assert "esc10" in client.get("/parameters").get_json()["info"]["description"]
