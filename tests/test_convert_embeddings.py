"""The saved-model-to-embeddings command (`models/convert_embeddings.py`) on a tiny Keras model.

The model is made here (untrained: conversion does not care), with a separate Softmax layer after
the classifier, so the default cut must skip it. Most runs call `main` in process (TensorFlow
loads once); one runs the real command to check the exit status the shell sees.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")
# Keras itself trips this numpy 2 warning when it exports a model; nothing to fix here.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402

from models.convert_embeddings import (  # noqa: E402
    ConversionError,
    float_ops_inside,
    main,
    validate_metadata,
)

REPO = Path(__file__).resolve().parent.parent
INPUT_WIDTH = 20  # the front-end below: 4 frames x 5 bins
EMBEDDING_SIZE = 8
CONV_OUTPUT_SIZE = 4 * 5 * 4
# A spectrogram front-end that yields exactly INPUT_WIDTH features per window.
FRONTEND = {"block": "spectrogram", "implementation_version": 4,
            "params": {"frame_length": 0.04, "frame_stride": 0.04, "fft_length": 8,
                       "noise_floor_db": -85},
            "sampling_freq": 100, "window_samples": 16, "axes": 1}
DATA = {"dataset": "random rows made by the test", "licence": "CC0", "attribution": "none",
        "made_by": "tests/test_convert_embeddings.py"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A tiny model as .keras and as a SavedModel, its features and front-end description."""
    import keras

    from models.tf_setup import configure_tensorflow

    configure_tensorflow(2)
    directory = tmp_path_factory.mktemp("convert")
    model = tiny_classifier(keras)
    model.save(directory / "model.keras")
    model.export(str(directory / "saved_model"), verbose=False)

    rows = np.random.default_rng(0).normal(1.0, 0.5, (120, INPUT_WIDTH)).astype(np.float32)
    np.save(directory / "input.npy", rows)
    (directory / "frontend.json").write_text(json.dumps(FRONTEND))
    (directory / "data.json").write_text(json.dumps(DATA))
    return directory


def tiny_classifier(keras_module):
    """The tiny classifier, built with Keras 3 (`keras`) or Keras 2 (`tf_keras`)."""
    layers = keras_module.layers
    keras_module.utils.set_random_seed(0)
    features = keras_module.Input((INPUT_WIDTH,), name="features")
    hidden = layers.Reshape((4, 5, 1), name="reshape")(features)
    hidden = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(hidden)
    hidden = layers.Flatten(name="flatten")(hidden)
    hidden = layers.Dense(EMBEDDING_SIZE, activation="relu", name="embedding")(hidden)
    hidden = layers.Dense(3, name="logits")(hidden)
    scores = layers.Softmax(name="softmax")(hidden)
    return keras_module.Model(features, scores)


def convert(workdir: Path, name: str, *extra: str, model: str = "model.keras",
            features: str = "input.npy") -> int:
    return main([str(workdir / model), str(workdir / features), "--out-dir",
                 str(workdir / "out"), "--name", name, "--frontend-json",
                 str(workdir / "frontend.json"), *extra])


@pytest.fixture(scope="module")
def converted(workdir) -> Path:
    status = convert(workdir, "tiny", "--classes", "a,b,c", "--calibration-samples", "50",
                     "--data-json", str(workdir / "data.json"))
    assert status == 0
    return workdir / "out"


def interpreter(path: Path) -> Interpreter:
    # No default delegate, so the op list is the converted graph, not XNNPACK's fused node.
    result = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    result.allocate_tensors()
    return result


def embed(path: Path, rows: np.ndarray) -> np.ndarray:
    model = interpreter(path)
    out = []
    for row in rows:
        model.set_tensor(model.get_input_details()[0]["index"], row[np.newaxis])
        model.invoke()
        out.append(model.get_tensor(model.get_output_details()[0]["index"])[0])
    return np.array(out)


def test_writes_float32_and_int8_models_with_float_io(converted):
    for file_name in ("tiny.float32.tflite", "tiny.tflite"):
        model = interpreter(converted / file_name)
        (inp,), (out,) = model.get_input_details(), model.get_output_details()
        assert list(inp["shape"]) == [1, INPUT_WIDTH] and inp["dtype"] == np.float32
        assert list(out["shape"]) == [1, EMBEDDING_SIZE] and out["dtype"] == np.float32


def test_int8_model_computes_in_int8(converted):
    model_bytes = (converted / "tiny.tflite").read_bytes()
    assert float_ops_inside(model_bytes) == []
    model = interpreter(converted / "tiny.tflite")
    ops = {op["op_name"] for op in model._get_ops_details()}
    assert {"QUANTIZE", "CONV_2D", "FULLY_CONNECTED", "DEQUANTIZE"} <= ops
    tensors = {t["index"]: t for t in model.get_tensor_details()}
    for op in model._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            data = [tensors[i]["dtype"] for i in (*op["inputs"][:2], *op["outputs"])]
            assert all(dtype == np.int8 for dtype in data), op
    # ...while the float32 model is the float reference.
    assert float_ops_inside((converted / "tiny.float32.tflite").read_bytes()) != []


def test_int8_embeddings_follow_float32(workdir, converted):
    rows = np.load(workdir / "input.npy")[:30]
    reference, quantized = embed(converted / "tiny.float32.tflite", rows), \
        embed(converted / "tiny.tflite", rows)
    cosine = np.sum(reference * quantized, 1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(quantized, axis=1) + 1e-12)
    assert np.median(cosine) > 0.99


def test_metadata_is_complete(converted):
    metadata = json.loads((converted / "tiny.json").read_text())
    validate_metadata(metadata)
    assert metadata["name"] == "tiny"
    assert metadata["frontend"] == {key: FRONTEND[key]
                                    for key in ("block", "implementation_version", "params")}
    assert (metadata["sampling_freq"], metadata["window_samples"], metadata["axes"]) == (100, 16, 1)
    assert metadata["input"]["shape"] == [1, INPUT_WIDTH]
    assert metadata["output"]["shape"] == [1, EMBEDDING_SIZE]
    assert metadata["classes"] == ["a", "b", "c"]
    # The command also builds the raw-window model for /tflite-impl beside the embedder.
    assert metadata["files"] == {"int8": "tiny.tflite", "float32": "tiny.float32.tflite",
                                 "raw": "tiny.raw.tflite"}
    assert metadata["raw_model"]["worst_relative_l2"] <= 1e-2
    assert metadata["data"] == DATA
    conversion = metadata["conversion"]
    assert "models.convert_embeddings" in conversion["command"]
    # The separate Softmax layer is skipped: the cut is before the Dense classifier.
    assert conversion["cut"]["layer"] == "embedding"
    assert conversion["calibration"]["rows"] == 50
    figures = conversion["int8_vs_float32"]
    assert figures["rows"] == 70  # 120 rows, 50 calibrate, the rest are held out
    assert set(figures["relative_l2"]) >= {"mean", "p95", "max", "how"}
    assert set(figures["cosine"]) >= {"mean", "p5", "min", "how"}
    assert 0 <= figures["argmax_agreement"]["value"] <= 1
    assert conversion["sizes_bytes"]["int8"] == (converted / "tiny.tflite").stat().st_size


def test_layer_option_cuts_at_the_named_layer(workdir):
    assert convert(workdir, "at-conv", "--layer", "conv") == 0
    model = interpreter(workdir / "out" / "at-conv.tflite")
    assert list(model.get_output_details()[0]["shape"]) == [1, CONV_OUTPUT_SIZE]
    metadata = json.loads((workdir / "out" / "at-conv.json").read_text())
    assert metadata["output"]["shape"] == [1, CONV_OUTPUT_SIZE]
    assert metadata["conversion"]["cut"]["layer"] == "conv"


def test_saved_model_directory_gives_the_same_embedder(workdir, converted):
    assert convert(workdir, "from-saved-model", model="saved_model") == 0
    rows = np.load(workdir / "input.npy")[:10]
    from_keras = embed(converted / "tiny.float32.tflite", rows)
    from_saved_model = embed(workdir / "out" / "from-saved-model.float32.tflite", rows)
    np.testing.assert_allclose(from_saved_model, from_keras, rtol=1e-5, atol=1e-6)
    metadata = json.loads((workdir / "out" / "from-saved-model.json").read_text())
    assert metadata["conversion"]["cut"]["source"] == "saved_model"
    assert "argmax_agreement" in metadata["conversion"]["int8_vs_float32"]
    # Layers of a SavedModel are its graph scopes; Keras 3 renames them "conv_1" and so on.
    assert convert(workdir, "saved-model-at-conv", "--layer", "conv", model="saved_model") == 0
    model = interpreter(workdir / "out" / "saved-model-at-conv.tflite")
    assert list(model.get_output_details()[0]["shape"]) == [1, CONV_OUTPUT_SIZE]


def keras2_saved_model(directory: Path) -> Path:
    """The tiny model made with Keras 2 (tf_keras) and saved as a SavedModel, as Studio exports."""
    import tf_keras

    path = directory / "keras2_saved_model"
    tiny_classifier(tf_keras).save(str(path), save_format="tf")
    assert (path / "keras_metadata.pb").is_file()  # Keras 2's own SavedModel, not Keras 3's export
    return path


@pytest.mark.parametrize("source", ["model.keras", "keras 2 saved model"])
def test_the_users_model_gives_its_embedding_on_both_tflm_trees(workdir, source):
    # The user's route: a model from Keras 3 (.keras) or exported by Studio (a Keras 2
    # SavedModel), converted; the raw-window model /tflite-impl would serve was run on
    # upstream TFLM and the EI fork against /run by the conversion, which records it.
    model = "model.keras" if source == "model.keras" else keras2_saved_model(workdir).name
    name = "users-" + source.replace(" ", "-").replace(".", "-")
    assert convert(workdir, name, "--calibration-samples", "50", model=model) == 0

    record = json.loads((workdir / "out" / f"{name}.json").read_text())["raw_model"]
    assert record["device_ready"] is True
    assert record["worst_relative_l2"] <= 1e-2
    assert record["on_devices"]["upstream TFLM"]["worst_relative_l2"] <= 1e-2
    fork = record["on_devices"]["EI SDK fork"]
    if "skipped" in fork:
        pytest.skip(f"EI SDK fork: {fork['skipped']}")
    assert fork["worst_relative_l2"] <= 1e-2 and fork["arena_used_bytes"] > 0


def test_bad_layer_name_fails_with_the_layer_list(workdir):
    # The real command, to see the exit status a shell or a Makefile sees.
    result = subprocess.run(
        [sys.executable, "-m", "models.convert_embeddings", str(workdir / "model.keras"),
         str(workdir / "input.npy"), "--out-dir", str(workdir / "bad"), "--name", "bad",
         "--frontend-json", str(workdir / "frontend.json"), "--layer", "no_such_layer"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("convert_embeddings: error: no layer named 'no_such_layer'")
    assert "conv" in message and "embedding" in message and "logits" in message
    assert not (workdir / "bad").exists()


def test_wrong_input_width_fails_loudly(workdir, capsys):
    np.save(workdir / "wide.npy", np.ones((10, INPUT_WIDTH + 1), dtype=np.float32))
    assert convert(workdir, "wide", features="wide.npy") != 0
    message = capsys.readouterr().err.strip()
    assert "\n" not in message
    assert f"{INPUT_WIDTH + 1} values per row" in message and f"takes {INPUT_WIDTH}" in message
    assert not (workdir / "out" / "wide.tflite").exists()


@pytest.mark.parametrize("bad, expected", [
    (np.full((10, INPUT_WIDTH), np.nan, dtype=np.float32), "NaN"),
    (np.ones((10, 4, 5), dtype=np.float32), "expected (rows, features)"),
    (np.ones((1, INPUT_WIDTH), dtype=np.float32), "at least 2"),
])
def test_bad_input_npy_fails_loudly(workdir, capsys, bad, expected):
    np.save(workdir / "bad.npy", bad)
    assert convert(workdir, "bad-input", features="bad.npy") != 0
    assert expected in capsys.readouterr().err


def test_missing_files_fail_loudly(workdir, capsys):
    assert convert(workdir, "missing", model="nowhere.keras") != 0
    assert "nowhere.keras: no such model" in capsys.readouterr().err
    assert convert(workdir, "missing", features="nowhere.npy") != 0
    assert "nowhere.npy: no such input file" in capsys.readouterr().err


def test_frontend_that_does_not_match_the_model_fails(workdir, capsys):
    frontend = dict(FRONTEND, window_samples=32)  # 8 frames: 40 features, not 20
    (workdir / "frontend-long.json").write_text(json.dumps(frontend))
    status = main([str(workdir / "model.keras"), str(workdir / "input.npy"), "--out-dir",
                   str(workdir / "out"), "--name", "long", "--frontend-json",
                   str(workdir / "frontend-long.json")])
    assert status != 0
    assert "gives 40 features per window; the model takes 20" in capsys.readouterr().err


def test_invalid_metadata_is_refused():
    with pytest.raises(ConversionError, match="frontend.block"):
        validate_metadata({"format_version": 1, "frontend": {"block": "fft"}})


# --- dense layers per tensor, and the int8 model run on the device runtimes ----------------------

def _dense_weight_scales(path: Path) -> list[int]:
    """Number of weight scales of each FULLY_CONNECTED layer's weights."""
    model = interpreter(path)
    tensors = {t["index"]: t for t in model.get_tensor_details()}
    return [len(tensors[op["inputs"][1]]["quantization_parameters"]["scales"])
            for op in model._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]


def test_dense_layers_are_quantized_per_tensor_by_default(converted):
    assert _dense_weight_scales(converted / "tiny.tflite") == [1]
    conversion = json.loads((converted / "tiny.json").read_text())["conversion"]
    assert conversion["dense_quantization"] == "per-tensor"


def test_the_int8_model_was_run_on_upstream_tflm_and_the_ei_fork(converted):
    from models.device_runtimes import ei_fork_runner

    devices = json.loads((converted / "tiny.json").read_text())["conversion"]["int8_on_devices"]
    assert devices["upstream TFLM"]["worst_relative_l2"] <= 1e-2
    if ei_fork_runner(build=False) is None and "skipped" in devices["EI SDK fork"]:
        pytest.skip("the EI SDK fork's sources (../shared/device/ei-sdk-tflm) are absent")
    assert devices["EI SDK fork"]["worst_relative_l2"] <= 1e-2
    assert devices["EI SDK fork"]["arena_used_bytes"] > 0


def test_per_channel_dense_layers_on_request_with_a_warning(workdir, capsys):
    assert convert(workdir, "per-channel", "--per-channel-dense", "--calibration-samples", "50") == 0
    assert "warning: per-channel dense layers" in capsys.readouterr().err
    out = workdir / "out"
    assert _dense_weight_scales(out / "per-channel.tflite") == [EMBEDDING_SIZE]
    conversion = json.loads((out / "per-channel.json").read_text())["conversion"]
    assert conversion["dense_quantization"] == "per-channel"
    assert "skipped" in conversion["int8_on_devices"]["EI SDK fork"]


def test_a_model_the_ei_fork_computes_wrong_stops_the_conversion(workdir):
    from models.convert_embeddings import check_int8_on_devices
    from models.device_runtimes import ei_fork_runner

    if ei_fork_runner() is None:
        pytest.skip("the EI SDK fork's sources (../shared/device/ei-sdk-tflm) are absent")
    per_channel = (workdir / "out" / "per-channel.tflite")
    if not per_channel.exists():
        assert convert(workdir, "per-channel", "--per-channel-dense", "--calibration-samples", "50") == 0
    rows = np.load(workdir / "input.npy")[:32]
    with pytest.raises(ConversionError, match=r"^the int8 model fails on the device: EI SDK fork: outputs "
                                              r"differ from LiteRT by relative L2"):
        check_int8_on_devices(per_channel.read_bytes(), rows)


def test_footprint_counts_the_tiny_models_arithmetic_and_bytes(converted):
    from models.footprint import footprint

    model = (converted / "tiny.tflite").read_bytes()
    figures = footprint(model)
    # By hand: a 3 x 3 convolution of 1 channel into 4 over 4 x 5 (same padding), then the
    # 80 -> 8 embedding layer.
    assert figures["macs_by_op"] == {"CONV_2D": 4 * 5 * 4 * 3 * 3, "FULLY_CONNECTED": 80 * EMBEDDING_SIZE}
    assert figures["file_bytes"] == len(model)
    # int8 weights (36 + 640) and int32 biases (4 + 8) at least; below the whole file.
    assert 36 + 640 + 4 * (4 + 8) <= figures["constant_bytes"] < len(model)
    from models.device_runtimes import ei_fork_runner
    if ei_fork_runner(build=False) is not None:
        assert 0 < figures["arena_used_bytes"] < 64 * 1024


def test_the_metadata_records_the_int8_models_footprint(converted):
    conversion = json.loads((converted / "tiny.json").read_text())["conversion"]
    figures = conversion["int8_footprint"]
    assert figures["file_bytes"] == conversion["sizes_bytes"]["int8"]
    assert figures["macs"] == 4 * 5 * 4 * 3 * 3 + 80 * EMBEDDING_SIZE
