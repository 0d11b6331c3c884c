"""The embeddings block: front-end from the model's metadata, then the int8 embedder."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from dsp.embeddings.model import DEFAULT_MODEL, ModelLoadError, load_model

ROOT = Path(__file__).resolve().parent.parent
META = json.loads(DEFAULT_MODEL.read_text())
WINDOW = META["window_samples"]
RATE = META["sampling_freq"]
EMBEDDING = META["output"]["shape"][-1]


def audio(seed: int, n: int = WINDOW) -> list[float]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    signal = 4000 * np.sin(2 * np.pi * (300 + 50 * seed) * t) + rng.normal(0, 800, n)
    return np.clip(np.round(signal), -32768, 32767).tolist()


def run(client, features, path="/run", **changes):
    body = {"features": features, "axes": ["audio"], "sampling_freq": RATE, **changes}
    response = client.post(path, json=body)
    assert response.status_code == 200
    return response.get_json()


@pytest.mark.parametrize("path", ["/run", "/blocks/embeddings/run"])
def test_run_returns_the_embedding(client, path):
    payload = run(client, audio(1), path)
    assert payload["success"] is True, payload
    assert len(payload["features"]) == EMBEDDING
    assert payload["labels"] == [f"emb_{i}" for i in range(EMBEDDING)]
    assert payload["output_config"] == {"type": "flat", "shape": {"width": EMBEDDING}}
    assert payload["fft_used"] == [META["frontend"]["params"]["fft_length"]]
    assert payload["graphs"] == []


def test_embedding_depends_on_the_sound(client):
    a = np.array(run(client, audio(1))["features"])
    b = np.array(run(client, audio(7))["features"])
    assert np.linalg.norm(a - b) > 0


def test_root_block_is_embeddings(client):
    assert client.get("/parameters").get_json()["info"]["title"] == "Audio embeddings"
    assert [b["name"] for b in client.get("/blocks").get_json() if b["root"]] == ["embeddings"]


def test_batch_equals_run_per_window(client):
    windows = [audio(s) for s in range(3)]
    batch = client.post("/batch", json={"features": windows, "axes": ["audio"], "sampling_freq": RATE}).get_json()
    assert batch["success"] is True
    for window, features in zip(windows, batch["features"]):
        assert np.allclose(run(client, window)["features"], features, rtol=0, atol=1e-6)


@pytest.mark.parametrize("changes, got", [
    ({"features": audio(1, WINDOW // 2)}, f"got {WINDOW // 2} samples of 1 axis at {RATE:g} Hz"),
    ({"sampling_freq": 8000}, f"got {WINDOW} samples of 1 axis at 8000 Hz"),
    ({"features": audio(1, 2 * WINDOW), "axes": ["a", "b"]}, f"got {WINDOW} samples of 2 axes"),
])
def test_window_that_does_not_fit_says_what_the_model_expects(client, changes, got):
    body = {"features": audio(1), **changes}
    payload = run(client, **body)
    assert payload["success"] is False
    assert f"expects {WINDOW} samples of 1 axis at {RATE:g} Hz" in payload["error"]
    assert got in payload["error"]


def test_draw_graphs_shows_the_front_end(client):
    graphs = run(client, audio(2), draw_graphs=True)["graphs"]
    assert graphs and graphs[0]["type"] == "image" and graphs[0]["imageMimeType"] == "image/png"


def test_unknown_parameter_is_refused(client):
    payload = run(client, audio(2), params={"frame_length": 0.02})
    assert payload["success"] is False and "Unknown parameter 'frame_length'" in payload["error"]


def test_concurrent_threads_get_their_own_interpreter():
    model = load_model(DEFAULT_MODEL)
    rng = np.random.default_rng(0)
    rows = rng.random((64, model.metadata.input_width)).astype(np.float32)
    expected = model.embed(rows)
    results, errors = {}, []

    def worker(k):
        try:
            for _ in range(5):
                results[k] = model.embed(rows)
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(np.array_equal(r, expected) for r in results.values())


# --- loading -------------------------------------------------------------------------------------


def _copy_model(tmp_path: Path) -> Path:
    for name in [DEFAULT_MODEL.name, *META["files"].values()]:
        if (DEFAULT_MODEL.parent / name).exists():
            shutil.copy(DEFAULT_MODEL.parent / name, tmp_path / name)
    return tmp_path / DEFAULT_MODEL.name


def test_model_is_found_by_its_tflite_path_too():
    model = load_model(DEFAULT_MODEL.with_suffix(".tflite"))
    assert model.metadata.name == META["name"]


def test_missing_model_names_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match=r"nope\.json: no such model metadata file"):
        load_model(tmp_path / "nope.json")


def test_missing_tflite_names_the_given_path_then_what_was_looked_for(tmp_path):
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / "model.tflite")
    assert str(info.value) == f"{tmp_path / 'model.tflite'}: no such model file (nor its metadata model.json beside it)"


def test_tflite_without_metadata_says_where_it_was_looked_for(tmp_path):
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(DEFAULT_MODEL.with_suffix(".tflite").read_bytes())
    with pytest.raises(ModelLoadError) as info:
        load_model(tflite)
    assert str(info.value) == f"{tflite}: no model metadata beside it (looked for {tmp_path / 'model.json'})"


@pytest.mark.parametrize("name", ["", "model.h5"])
def test_a_folder_or_other_file_is_not_a_model(tmp_path, name):
    given = tmp_path / name
    if name:
        given.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"give (a model's|its) metadata \.json or its \.tflite") as info:
        load_model(given)
    assert str(info.value).startswith(str(given))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_model_names_the_path_and_reason(tmp_path, damage):
    meta_path = _copy_model(tmp_path)
    tflite = tmp_path / META["files"]["int8"]
    data = tflite.read_bytes()
    tflite.write_bytes({"garbage": b"not a model" * 100, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(ModelLoadError) as info:
        load_model(meta_path)
    message = str(info.value)
    assert str(tflite) in message and "\n" not in message


def test_metadata_without_front_end_is_refused(tmp_path):
    meta_path = _copy_model(tmp_path)
    broken = dict(META)
    del broken["frontend"]
    meta_path.write_text(json.dumps(broken))
    with pytest.raises(ModelLoadError, match="no 'frontend"):
        load_model(meta_path)


def test_server_with_a_missing_model_exits_with_one_line(tmp_path):
    gunicorn = Path(sys.executable).parent / "gunicorn"
    proc = subprocess.run([str(gunicorn), "-c", "gunicorn.conf.py", "dsp_server:create_app()"], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PORT": "0", "HOST": "127.0.0.1",
                               "EMBEDDINGS_MODEL": str(tmp_path / "missing.tflite")},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1] == ("Cannot load the embeddings model: "
                         f"{tmp_path / 'missing.tflite'}: no such model file (nor its metadata missing.json beside it)")
    assert "Traceback" not in proc.stderr


def test_another_model_is_picked_by_environment(tmp_path, monkeypatch):
    from dsp_server import create_app

    meta_path = _copy_model(tmp_path)
    renamed = {**META, "name": "my-other-model"}
    meta_path.write_text(json.dumps(renamed))
    monkeypatch.setenv("EMBEDDINGS_MODEL", str(meta_path))
    client = create_app().test_client()
    assert "my-other-model" in client.get("/parameters").get_json()["info"]["description"]
    assert "'my-other-model' expects" in run(client, audio(1, 100))["error"]


# --- /tflite-impl --------------------------------------------------------------------------------

TFLITE_IMPL_BODY = {"params": {}, "axes": ["audio"], "sampling_freq": RATE, "implementation_version": 1,
                    "input_shape": [WINDOW]}


def test_parameters_announce_the_tflite_implementation(client):
    assert client.get("/blocks/embeddings/parameters").get_json()["info"]["hasTfliteImplementation"] is True


def test_tflite_impl_maps_the_raw_window_to_the_same_embedding_as_run(client):
    from ai_edge_litert.interpreter import Interpreter

    from models.hard_windows import hard_windows

    response = client.post("/tflite-impl", json=TFLITE_IMPL_BODY)
    assert response.status_code == 200 and response.mimetype == "application/octet-stream"
    interpreter = Interpreter(model_content=response.data, num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(inp["shape"]) == [1, WINDOW] and inp["dtype"] == np.float32
    assert out["dtype"] == np.float32
    worst = 0.0
    for name, window in hard_windows(WINDOW, RATE).items():
        interpreter.set_tensor(inp["index"], window.astype(np.float32)[np.newaxis])
        interpreter.invoke()
        raw = interpreter.get_tensor(out["index"])[0]
        served = np.array(run(client, window.tolist())["features"])
        error = np.linalg.norm(raw - served) / max(np.linalg.norm(served), 1e-6)
        worst = max(worst, error)
        assert error <= 1e-2, (name, error)


def test_tflite_impl_refuses_an_impulse_the_model_does_not_fit(client):
    response = client.post("/tflite-impl", json={**TFLITE_IMPL_BODY, "sampling_freq": 8000})
    assert response.status_code == 400
    assert f"expects {WINDOW} samples of 1 axis at {RATE:g} Hz" in response.get_json()["error"]


@pytest.mark.parametrize("raw_model", [None, {"device_ready": False}, {"worst_relative_l2": 0.0}],
                         ids=["no record", "not device-ready", "record before the device check"])
def test_a_raw_model_not_checked_on_the_device_is_not_served(tmp_path, monkeypatch, raw_model):
    # A raw-window model that was not run and found equal on upstream TFLM and the EI fork
    # (the RFFT2D models shipped before, or a per-channel embedder) would give a Studio export
    # that fails to load or computes wrong embeddings: better no /tflite-impl at all.
    from dsp_server import create_app

    meta_path = _copy_model(tmp_path)
    changed = {key: value for key, value in META.items() if key != "raw_model"}
    if raw_model is not None:
        changed["raw_model"] = raw_model
    meta_path.write_text(json.dumps(changed))
    monkeypatch.setenv("EMBEDDINGS_MODEL", str(meta_path))
    client = create_app().test_client()

    assert client.get("/blocks/embeddings/parameters").get_json()["info"]["hasTfliteImplementation"] is False
    response = client.post("/tflite-impl", json=TFLITE_IMPL_BODY)
    assert response.status_code >= 400 and response.get_json()["success"] is False
    assert run(client, audio(1))["success"] is True


def test_the_shipped_raw_model_is_device_ready():
    record = META["raw_model"]
    assert record["device_ready"] is True
    assert record["on_devices"]["upstream TFLM"]["worst_relative_l2"] <= 1e-2
