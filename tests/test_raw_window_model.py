"""The raw-window model (`models.raw_window_model`): built-in ops only, and it agrees with `/run`.

`/run` is the server's numpy front-end block (float64) followed by the int8 embedder; the raw
model is a float32 TFLite front-end stitched to that same embedder. They must agree on every
window of `models.hard_windows` (silence, DC, full-scale on-bin tones, square waves, ...), to a
relative L2 error of 1e-2 on the embedding. Embedders are tiny random Keras models (a conv and
a dense layer, cut before their classifier as the seed's script does), converted to int8 with
a representative set of the configuration's own features; random biases keep silence from
mapping to an all-zero embedding, which would make the relative error trivial.
"""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from models import raw_window_model as rwm  # noqa: E402
from models.hard_windows import hard_windows  # noqa: E402

# The converter warns that the float input has no statistics; it calibrates it from the data.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")

WINDOW_SAMPLES = 4000
SAMPLING_FREQ = 16000
EMBEDDING_SIZE = 16
MAX_RELATIVE_L2 = rwm.MAX_RELATIVE_L2

# One configuration per supported front-end version; between them they take every framing
# branch: frames truncated to the FFT, spanning several strides, and zero-padded.
CONFIGS = {
    "spectrogram_v1": ("spectrogram", 1, {"frame_length": 0.032, "frame_stride": 0.024,
                                          "fft_length": 128, "noise_floor_db": -85}),
    "spectrogram_v2": ("spectrogram", 2, {"frame_length": 0.016, "frame_stride": 0.008,
                                          "fft_length": 256, "noise_floor_db": -85}),
    "spectrogram_v3": ("spectrogram", 3, {"frame_length": 0.01, "frame_stride": 0.01,
                                          "fft_length": 256, "noise_floor_db": -85}),
    "spectrogram_v4": ("spectrogram", 4, {"frame_length": 0.032, "frame_stride": 0.024,
                                          "fft_length": 128, "noise_floor_db": -85}),
    "mfe_v3": ("mfe", 3, {"frame_length": 0.025, "frame_stride": 0.01, "num_filters": 32,
                          "fft_length": 512, "low_frequency": 0, "high_frequency": 0,
                          "noise_floor_db": -100}),
    # A floor below -100 dB makes the 1e-10 stand-in for zero energy visible in the output.
    "mfe_v4": ("mfe", 4, {"frame_length": 0.02, "frame_stride": 0.01, "num_filters": 40,
                          "fft_length": 256, "low_frequency": 0, "high_frequency": 0,
                          "noise_floor_db": -120}),
}


def metadata_for(config: str) -> dict:
    block, version, params = CONFIGS[config]
    return {
        "format_version": 1,
        "name": f"tiny-{config}",
        "frontend": {"block": block, "implementation_version": version, "params": dict(params)},
        "sampling_freq": SAMPLING_FREQ,
        "window_samples": WINDOW_SAMPLES,
        "axes": 1,
        "output": {"shape": [1, EMBEDDING_SIZE], "dtype": "float32"},
    }


def calibration_windows() -> np.ndarray:
    """Windows for the representative set: hard windows of another seed, plus noise levels."""
    rng = np.random.default_rng(7)
    noise = [np.clip(np.round(rng.normal(0, level, WINDOW_SAMPLES)), -32768, 32767)
             for level in (5, 100, 1000, 8000, 25000)]
    return np.stack(list(hard_windows(WINDOW_SAMPLES, SAMPLING_FREQ, seed=1).values()) + noise)


def tiny_embedder(metadata: dict, int8_io: bool = False) -> bytes:
    """A random conv + dense embedder for the metadata's features, converted to int8."""
    from models.tf_setup import configure_tensorflow

    tf = configure_tensorflow()
    import keras
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    features = rwm.frontend_features(metadata, calibration_windows()).astype(np.float32)
    frames = rwm._frame_geometry(metadata)[0]
    rows = features.shape[1] // frames
    keras.utils.set_random_seed(0)
    biases = keras.initializers.RandomUniform(-0.3, 0.3)
    inputs = keras.Input((features.shape[1],), batch_size=1)
    x = keras.layers.Reshape((frames, rows, 1))(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", bias_initializer=biases)(x)
    x = keras.layers.Flatten()(x)
    embedding = keras.layers.Dense(EMBEDDING_SIZE, bias_initializer=biases, name="embedding")(x)
    scores = keras.layers.Dense(3, activation="softmax")(embedding)
    classifier = keras.Model(inputs, scores)
    cut = keras.Model(inputs, classifier.layers[-2].output)

    @tf.function(input_signature=[tf.TensorSpec([1, features.shape[1]], tf.float32)])
    def embed(rows_in):
        return cut(rows_in)

    # Keras variables frozen into constants, so the converter sees a plain graph.
    frozen = convert_variables_to_constants_v2(embed.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([row[None]] for row in features)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # Dense layers per tensor, as models.convert_embeddings makes them: the EI fork computes
    # per-channel int8 FULLY_CONNECTED wrongly.
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return bytes(converter.convert())


@functools.lru_cache(maxsize=None)
def built(config: str) -> tuple[dict, bytes, bytes]:
    """(metadata, int8 embedder, raw-window model) for a configuration, built once."""
    metadata = metadata_for(config)
    embedder = tiny_embedder(metadata)
    return metadata, embedder, rwm.build_raw_window_model(metadata, embedder)


@functools.lru_cache(maxsize=1)
def windows() -> dict[str, np.ndarray]:
    return hard_windows(WINDOW_SAMPLES, SAMPLING_FREQ)


@pytest.mark.parametrize("config", CONFIGS)
def test_raw_model_takes_the_raw_window_with_builtin_ops_only(config):
    metadata, _, raw = built(config)

    ops = rwm.check_raw_window_model(raw, WINDOW_SAMPLES, EMBEDDING_SIZE)

    assert not [op for op in ops if op.startswith("CUSTOM") or "FLEX" in op.upper()]
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(ops)
    # No complex types and no op that only one TFLM tree has (RFFT2D, SELECT, ...).
    assert not rwm.ONE_TREE_OPS & set(ops)
    assert not {"COMPLEX64", "COMPLEX128"} & tensor_types(raw)


def tensor_types(model: bytes) -> set[str]:
    schema = rwm._schema()
    names = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    return {names[tensor.type] for tensor in rwm._read(model).subgraphs[0].tensors}


@pytest.mark.parametrize("runtime", ["upstream TFLM", "EI SDK fork"])
@pytest.mark.parametrize("config", CONFIGS)
def test_raw_model_gives_runs_embedding_on_both_tflm_trees(config, runtime):
    from models import device_runtimes

    metadata, embedder, raw = built(config)
    stacked = np.stack(list(windows().values()))
    run = rwm.embedder_outputs(embedder, rwm.frontend_features(metadata, stacked))
    if runtime == "upstream TFLM":
        outputs = device_runtimes.run_upstream_tflm(raw, stacked).outputs
    else:
        runner = device_runtimes.ei_fork_runner()
        if runner is None:
            pytest.skip(f"the EI SDK fork's sources are not at {device_runtimes.EI_SDK_TFLM}")
        outputs = device_runtimes.run_ei_fork(raw, stacked, runner).outputs

    errors = device_runtimes.relative_l2(outputs, run)
    worst = int(np.argmax(errors))
    assert errors[worst] <= MAX_RELATIVE_L2, f"{config} on {runtime}: {list(windows())[worst]} at {errors[worst]:.3g}"


@pytest.mark.parametrize("config", CONFIGS)
def test_raw_model_agrees_with_run_on_every_hard_window(config):
    metadata, embedder, raw = built(config)

    errors = rwm.agreement(metadata, raw, embedder, windows())

    worst = max(errors, key=errors.get)
    assert errors[worst] <= MAX_RELATIVE_L2, f"{config}: worst {worst} at {errors[worst]:.3g}"
    assert list(errors) == list(windows())


@pytest.mark.parametrize("config", CONFIGS)
def test_frontend_matches_the_numpy_block_to_float32_precision(config):
    # Stronger than the embedding check: the int8 input quantisation hides small errors.
    metadata, _, _ = built(config)
    stacked = np.stack(list(windows().values()))
    expected = rwm.frontend_features(metadata, stacked)

    actual = rwm._run_rows(rwm.build_frontend_tflite(metadata), stacked.astype(np.float32))

    assert actual.shape == expected.shape
    if metadata["frontend"]["block"] == "mfe":
        # Multiples of 1/256: float32 may round a value at a half-step the other way.
        off = np.abs(actual - expected) > 1e-6
        assert off.mean() <= 1e-3
        assert np.all(np.abs(actual - expected)[off] <= 1 / 256 + 1e-6)
    else:
        # Most windows agree to 1e-7. A full-scale on-bin tone is the worst: float32 rounds
        # its FFT by about 1e-7 of the tone (0.07 on an amplitude of 2e6 at 128 points), and
        # the harmonics that int16 rounding leaves are only about 3 there, near the floor.
        for name, a, b in zip(windows(), actual, expected):
            assert rwm.relative_l2(a, b) <= (2e-3 if name.startswith("tone_") else 2e-6), name


def test_raw_model_holds_the_embedder_unchanged():
    metadata, embedder, raw = built("spectrogram_v4")
    frontend = rwm.build_frontend_tflite(metadata)
    stacked = np.stack(list(windows().values()))

    stitched = rwm.raw_model_outputs(raw, stacked)
    features = rwm._run_rows(frontend, stacked.astype(np.float32))
    in_two_steps = rwm.embedder_outputs(embedder, features)

    assert np.array_equal(stitched, in_two_steps)
    raw_model, embedder_model = rwm._read(raw), rwm._read(embedder)
    raw_buffers = {bytes(np.asarray(b.data, np.uint8))
                   for b in raw_model.buffers if b.data is not None}
    embedder_graph = embedder_model.subgraphs[0]
    weights = [bytes(np.asarray(embedder_model.buffers[t.buffer].data, np.uint8))
               for t in embedder_graph.tensors if embedder_model.buffers[t.buffer].data is not None]
    assert weights and all(w in raw_buffers for w in weights)
    assert len(raw_model.subgraphs[0].operators) == (len(rwm._read(frontend).subgraphs[0].operators)
                                                    + len(embedder_model.subgraphs[0].operators))


def test_int8_input_and_output_embedder_gets_quantize_and_dequantize():
    from ai_edge_litert.interpreter import Interpreter

    metadata = metadata_for("mfe_v4")
    embedder = tiny_embedder(metadata, int8_io=True)
    raw = rwm.build_raw_window_model(metadata, embedder)
    rwm.check_raw_window_model(raw, WINDOW_SAMPLES, EMBEDDING_SIZE)
    stacked = np.stack(list(windows().values()))

    interpreter = Interpreter(model_content=embedder, num_threads=1)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    (in_scale, in_zero), (out_scale, out_zero) = source["quantization"], target["quantization"]
    expected = []
    for row in rwm.frontend_features(metadata, stacked).astype(np.float32):
        quantized = np.clip(np.round(row / in_scale) + in_zero, -128, 127).astype(np.int8)
        interpreter.set_tensor(source["index"], quantized[None])
        interpreter.invoke()
        expected.append((interpreter.get_tensor(target["index"])[0].astype(np.float32) - out_zero)
                        * out_scale)

    actual = rwm.raw_model_outputs(raw, stacked)

    assert max(rwm.relative_l2(a, b) for a, b in zip(actual, expected)) <= MAX_RELATIVE_L2


@pytest.mark.parametrize("block, version", [("mfcc", 4), ("mfcc", 1), ("mfe", 1), ("mfe", 2)])
def test_unsupported_frontend_is_refused_naming_the_supported_ones(block, version):
    metadata = metadata_for("mfe_v4")
    metadata["frontend"]["block"] = block
    metadata["frontend"]["implementation_version"] = version

    with pytest.raises(rwm.UnsupportedFrontend) as error:
        rwm.build_raw_window_model(metadata, b"")

    message = str(error.value)
    assert f"{block} block, implementation version {version}" in message
    assert "spectrogram v1/2/3/4" in message and "mfe v3/4" in message


def test_embedder_for_other_features_is_refused():
    _, other_embedder, _ = built("spectrogram_v4")

    with pytest.raises(ValueError, match="features"):
        rwm.build_raw_window_model(metadata_for("mfe_v4"), other_embedder)


def test_command_writes_the_raw_model_beside_and_records_agreement(tmp_path):
    metadata, embedder, _ = built("spectrogram_v4")
    metadata = dict(metadata, files={"int8": "tiny.tflite", "float32": "tiny.float32.tflite"})
    (tmp_path / "tiny.tflite").write_bytes(embedder)
    metadata_path = tmp_path / "tiny.json"
    metadata_path.write_text(json.dumps(metadata))

    assert rwm.main([str(metadata_path)]) == 0

    written = json.loads(metadata_path.read_text())
    assert written["files"]["raw"] == f"{metadata['name']}.raw.tflite"
    raw = (tmp_path / written["files"]["raw"]).read_bytes()
    rwm.check_raw_window_model(raw, WINDOW_SAMPLES, EMBEDDING_SIZE)
    record = written["raw_model"]
    assert record["worst_relative_l2"] <= MAX_RELATIVE_L2
    assert record["features_worst_relative_l2"] <= 2e-3  # a full-scale tone; see above
    assert record["windows"] == list(windows())
    assert record["ops"] == rwm.op_names(raw)
    assert record["size_bytes"] == len(raw)
    assert record["device_ready"] is True
    assert record["on_devices"]["upstream TFLM"]["worst_relative_l2"] <= MAX_RELATIVE_L2
    fork = record["on_devices"]["EI SDK fork"]
    assert "skipped" in fork or (fork["worst_relative_l2"] <= MAX_RELATIVE_L2
                                 and fork["arena_used_bytes"] == record["footprint"]["arena_used_bytes"] > 0)
    figures = record["footprint"]
    assert figures["file_bytes"] == len(raw)
    assert figures["frontend_file_bytes"] == len(raw) - len(embedder)
    assert 0 < figures["frontend_constant_bytes"] < figures["constant_bytes"]


def test_hard_windows_are_int16_valued_except_the_float_ones():
    for name, window in windows().items():
        assert window.shape == (WINDOW_SAMPLES,) and window.dtype == np.float64, name
        if name.startswith("float_"):
            assert np.abs(window).max() <= 1, name
        else:
            assert np.array_equal(window, np.round(window)), name
            assert window.min() >= -32768 and window.max() <= 32767, name


def test_hard_windows_are_reproducible_and_hold_exact_zero_bins():
    again = hard_windows(WINDOW_SAMPLES, SAMPLING_FREQ)
    assert all(np.array_equal(again[name], window) for name, window in windows().items())
    # The point of the on-bin tones: float64 gives exactly zero power off their bins.
    for name in ("dc_full_scale", "tone_nyquist_full_scale", "tone_fs4_sine_full_scale",
                 "square_period_8_full_scale"):
        power = np.abs(np.fft.rfft(windows()[name][:128])) ** 2
        assert np.count_nonzero(power == 0) >= 60, name
