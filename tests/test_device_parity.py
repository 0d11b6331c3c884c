"""The shipped models' `/tflite-impl` file gives `/run`'s embedding on the device runtimes.

What Studio's C++ export does with the block: it takes the file `/tflite-impl` returns and runs it
on TensorFlow Lite Micro. Here that very file is run in LiteRT, upstream TFLM (`tflite-micro`) and
Edge Impulse's SDK fork of TFLM (built from `../shared/device/ei-sdk-tflm/`; skipped, saying so,
where that folder is absent) on hard windows, realistic synthetic ones and recorded ESC-10 clips,
and compared with the embedding the running server returns from `/batch`: relative L2 at most
1e-2 on every window.
"""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from models import device_runtimes
from models.hard_windows import hard_windows

pytest.importorskip("tflite_micro")

MODELS = {"coffee-machine": "models/coffee-machine.json", "esc10": "models/esc10.json"}
RATE = 16000
WINDOW = 16000
MAX_RELATIVE_L2 = 1e-2
ESC10 = device_runtimes.SHARED_DIR / "data" / "esc10" / "esc10_16k.npz"
CLIPS_PER_CLASS = 3


def realistic_windows() -> dict[str, np.ndarray]:
    """Microphone-like windows: a DC offset, hum, speech-band tones, noise at several levels."""
    rng = np.random.default_rng(11)
    t = np.arange(WINDOW) / RATE
    windows = {}
    for level in (30, 300, 3000):
        windows[f"noise_{level}"] = rng.normal(0, level, WINDOW)
    windows["hum_with_dc_offset"] = 1500 + 2000 * np.sin(2 * np.pi * 50 * t) + rng.normal(0, 40, WINDOW)
    windows["tones_off_bin"] = (6000 * np.sin(2 * np.pi * 441.3 * t) + 3000 * np.sin(2 * np.pi * 2207.9 * t)
                                + rng.normal(0, 200, WINDOW))
    windows["bursts"] = np.where((t * 4) % 1 < 0.3, 1.0, 0.0) * rng.normal(0, 8000, WINDOW) - 900
    return {name: np.clip(np.round(w), -32768, 32767) for name, w in windows.items()}


def esc10_windows() -> dict[str, np.ndarray]:
    """The loudest second of the first clips of every ESC-10 class (real recordings)."""
    if not ESC10.is_file():
        return {}
    data = np.load(ESC10)
    names, labels, audio = data["class_names"], data["labels"], data["audio"]
    windows = {}
    for label, name in enumerate(names):
        for clip in np.flatnonzero(labels == label)[:CLIPS_PER_CLASS]:
            signal = audio[clip].astype(np.float64)
            seconds = signal[: len(signal) // WINDOW * WINDOW].reshape(-1, WINDOW)
            loudest = int(np.argmax(np.sqrt((seconds ** 2).mean(axis=1))))
            windows[f"esc10_{name}_{clip}"] = seconds[loudest]
    return windows


@functools.lru_cache(maxsize=None)
def served(model: str) -> tuple[bytes, list[str], np.ndarray, np.ndarray]:
    """(the /tflite-impl file, window names, windows, /batch embeddings) from the real server."""
    from dsp.registry import all_blocks
    from dsp_server import create_app

    client = create_app(blocks=all_blocks(MODELS[model])).test_client()
    windows = {**hard_windows(WINDOW, RATE), **realistic_windows(), **esc10_windows()}
    names = list(windows)
    stacked = np.stack([windows[name] for name in names])
    response = client.post("/tflite-impl", json={"params": {}, "axes": ["audio"], "sampling_freq": RATE,
                                                  "implementation_version": 1, "input_shape": [WINDOW]})
    assert response.status_code == 200, response.get_data(as_text=True)
    batch = client.post("/batch", json={"features": stacked.tolist(), "axes": ["audio"],
                                        "sampling_freq": RATE}).get_json()
    assert batch["success"] is True, batch
    return response.data, names, stacked, np.array(batch["features"], dtype=np.float64)


def outputs_on(runtime: str, model_file: bytes, stacked: np.ndarray) -> np.ndarray:
    if runtime == "LiteRT":
        return device_runtimes.run_litert(model_file, stacked)
    if runtime == "upstream TFLM":
        return device_runtimes.run_upstream_tflm(model_file, stacked).outputs
    runner = device_runtimes.ei_fork_runner()
    if runner is None:
        pytest.skip(f"the EI SDK fork's sources are not at {device_runtimes.EI_SDK_TFLM}")
    return device_runtimes.run_ei_fork(model_file, stacked, runner).outputs


@pytest.mark.parametrize("runtime", ["LiteRT", "upstream TFLM", "EI SDK fork"])
@pytest.mark.parametrize("model", MODELS)
def test_tflite_impl_gives_runs_embedding_on_every_window(model, runtime):
    model_file, names, stacked, from_batch = served(model)

    errors = device_runtimes.relative_l2(outputs_on(runtime, model_file, stacked), from_batch)

    worst = int(np.argmax(errors))
    assert errors[worst] <= MAX_RELATIVE_L2, f"{model} on {runtime}: {names[worst]} at {errors[worst]:.3g}"


def test_the_parity_windows_include_recorded_clips():
    if not ESC10.is_file():
        pytest.skip(f"no {ESC10}")
    assert len(esc10_windows()) == 10 * CLIPS_PER_CLASS


@pytest.mark.parametrize("model", MODELS)
def test_the_recorded_footprint_is_the_served_files(model):
    from models.footprint import constant_bytes

    metadata = json.loads(open(MODELS[model]).read())
    figures = metadata["raw_model"]["footprint"]
    model_file = served(model)[0]
    assert figures["file_bytes"] == len(model_file)
    assert figures["constant_bytes"] == constant_bytes(model_file)
