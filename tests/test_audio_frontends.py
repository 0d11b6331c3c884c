"""The spectrogram, MFE and MFCC blocks: properties a user relies on (parity lives in test_golden)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dsp.audio import mfcc, mfe, spectrogram
from dsp.audio.framing import (
    frame_layout,
    frame_length_in_samples,
    frame_stride_in_samples,
    preemphasis,
    stack_frames,
)
from dsp.audio.mel import cmvnw, mel_filterbank
from dsp.core.block import Request
from dsp.core.errors import ConfigurationError
from dsp.core.params import parameter_specs, resolve_params

BLOCKS = {"spectrogram": spectrogram.BLOCK, "mfe": mfe.BLOCK, "mfcc": mfcc.BLOCK}
VERSIONS = (1, 2, 3, 4)
# Defaults that work in every version: the official block defaults leave an empty mel filter
# with the old mel mapping of versions 1 to 3 (see test_old_mels_defaults_fail_with_a_fix).
WORKING_OVERRIDES = {"spectrogram": {}, "mfe": {"num_filters": 24}, "mfcc": {"num_filters": 20}}


def audio(seconds: float = 1.0, fs: int = 16000, seed: int = 0, windows: int | None = None):
    """int16-valued noisy chirp, shaped (samples, 1) or (windows, samples, 1)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fs)
    t = np.arange(n) / fs
    shape = (windows, n) if windows else (n,)
    tone = 8000 * np.sin(2 * np.pi * (200 + 2000 * t) * t)
    signal = np.round(tone + rng.normal(0, 1500, shape)).clip(-32768, 32767)
    return signal[..., None]


def request(block: str, raw: np.ndarray, version: int = 4, fs: float = 16000,
            draw_graphs: bool = False, **params) -> Request:
    given = {**WORKING_OVERRIDES[block], **params}
    resolved = resolve_params(parameter_specs(BLOCKS[block].parameters), given)
    axes = [f"ax{i}" for i in range(raw.shape[-1])]
    return Request(raw=raw, axes=axes, sampling_freq=fs, implementation_version=version,
                   params=resolved, draw_graphs=draw_graphs)


# --- Framing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("version, frames", [(1, 40), (2, 41), (3, 41), (4, 41)])
def test_tutorial_config_frame_count_per_version(version, frames):
    # 512-sample frames every 384 samples over 16000 samples: v1 drops the last whole frame.
    result = spectrogram.BLOCK.compute(request("spectrogram", audio(), version, frame_length=0.032,
                                               frame_stride=0.024, fft_length=128))
    assert result.output_config == {"type": "spectrogram", "shape": {"width": frames, "height": 65}}
    assert result.features.shape == (frames * 65,)


def test_frame_length_rounding_rules():
    assert frame_length_in_samples(16000, 0.0202, 1) == 323  # 323.2 rounded
    assert frame_length_in_samples(16000, 0.0202, 2) == 324  # rounded up
    # 0.018 * 16000 is 288.00000000000006 in floating point: not rounded up to 289.
    assert frame_length_in_samples(16000, 0.018, 4) == 288
    assert frame_stride_in_samples(16000, 0.0113) == 181


def test_frames_are_strided_views_of_the_signal():
    signal = np.arange(100.0)[None]
    layout = frame_layout(100, 10, 1.0, 0.5, 2)
    frames = stack_frames(signal, layout)
    assert (layout.length, layout.stride, layout.count) == (10, 5, 19)
    np.testing.assert_array_equal(frames[0, 3], np.arange(15.0, 25.0))
    assert np.shares_memory(frames, signal)


def test_preemphasis_wraps_around():
    x = np.array([[1.0, 2.0, 4.0, 8.0]])
    np.testing.assert_allclose(preemphasis(x, 0.5, 1), [[1 - 0.5 * 8, 2 - 0.5, 4 - 1, 8 - 2]])


# --- Errors a user can cause -----------------------------------------------------------------

@pytest.mark.parametrize("block", BLOCKS)
def test_more_than_one_axis_is_rejected(block):
    raw = np.hstack([audio(), audio(seed=1)])
    with pytest.raises(ConfigurationError, match="exactly one axis.*2"):
        BLOCKS[block].compute(request(block, raw))


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("params, message", [
    ({"frame_length": 0.0002}, "Frame length must be at least 4 samples"),
    ({"frame_stride": 0.0002}, "Frame stride must be at least 4 samples"),
    ({"fft_length": 100}, "power of 2.*got 100"),
    ({"fft_length": 0}, "power of 2"),
    ({"frame_length": 1.5}, "Frame length is larger than your window size"),
    ({"frame_stride": 0.001}, "larger than 500 \\(981\\)"),
])
def test_framing_errors(block, params, message):
    with pytest.raises(ConfigurationError, match=message):
        BLOCKS[block].compute(request(block, audio(), **params))


def test_v1_needs_room_for_one_more_stride():
    # 16000 samples, 1 s frames: one frame fits (v2+), but v1 counts floor((N - L) / S) = 0.
    assert spectrogram.BLOCK.compute(request("spectrogram", audio(), 2, frame_length=1.0))
    with pytest.raises(ConfigurationError, match="larger than your window size"):
        spectrogram.BLOCK.compute(request("spectrogram", audio(), 1, frame_length=1.0))


@pytest.mark.parametrize("block", ["mfe", "mfcc"])
@pytest.mark.parametrize("params, message", [
    ({"num_filters": 1}, "Filter number must be from 2 to 512"),
    ({"num_filters": 513}, "Filter number must be from 2 to 512"),
    ({"fft_length": 32768}, "FFT length must be at most 16384"),
    ({"high_frequency": 9000}, "at most half the sampling frequency \\(8000 Hz\\); got 9000"),
    ({"low_frequency": 4000, "high_frequency": 3000}, "must be below the high frequency"),
    ({"low_frequency": 8000}, "must be below the high frequency"),
    ({"low_frequency": -10}, "0 Hz or more"),
])
def test_filterbank_errors(block, params, message):
    with pytest.raises(ConfigurationError, match=message):
        BLOCKS[block].compute(request(block, audio(), **params))


def test_normalization_window_is_bounded():
    with pytest.raises(ConfigurationError, match="up to 1001"):
        BLOCKS["mfcc"].compute(request("mfcc", audio(), win_size=1003))


@pytest.mark.parametrize("block, version", [("mfe", 1), ("mfe", 2), ("mfe", 3), ("mfcc", 3)])
def test_old_mels_defaults_fail_with_a_fix(block, version):
    # The official defaults (40 filters MFE, 32 MFCC, FFT 256, 16 kHz) leave an empty filter
    # with the old mel mapping; the message names a filter count and an FFT length that work.
    official_defaults = {"mfe": 40, "mfcc": 32}[block]
    req = request(block, audio(), version, num_filters=official_defaults)
    with pytest.raises(ConfigurationError, match="contains all zeros") as error:
        BLOCKS[block].compute(req)
    text = str(error.value)
    fewer = int(text.split("lower the filter number to ")[1].split()[0])
    larger_fft = int(text.split("increase the FFT length to ")[1].rstrip("."))
    assert BLOCKS[block].compute(request(block, audio(), version, num_filters=fewer))
    assert BLOCKS[block].compute(request(block, audio(), version, num_filters=official_defaults,
                                         fft_length=larger_fft))
    with pytest.raises(ConfigurationError):
        BLOCKS[block].compute(request(block, audio(), version, num_filters=fewer + 1))


@pytest.mark.parametrize("block, version, win_size", [
    ("mfe", 1, 100), ("mfe", 2, 0), ("mfcc", 4, 50), ("mfcc", 4, -1)])
def test_normalization_window_must_be_odd(block, version, win_size):
    with pytest.raises(ConfigurationError, match="odd"):
        BLOCKS[block].compute(request(block, audio(), version, win_size=win_size))


def test_mfe_ignores_win_size_from_version_3():
    assert mfe.BLOCK.compute(request("mfe", audio(), 3, win_size=100))


def test_mfcc_zero_window_disables_normalization():
    raw = audio()
    plain = mfcc.BLOCK.compute(request("mfcc", raw, win_size=0)).features.reshape(50, 13)
    normalized = mfcc.BLOCK.compute(request("mfcc", raw, win_size=101)).features.reshape(50, 13)
    assert plain[:, 0].mean() > 10  # log frame energy of int16 audio, not normalised
    assert abs(normalized[:, 0].mean()) < 0.5


@pytest.mark.parametrize("num_cepstral", [0, 21])
def test_mfcc_coefficient_count_must_fit_the_filters(num_cepstral):
    with pytest.raises(ConfigurationError, match="between 1 and the filter number \\(20\\)"):
        mfcc.BLOCK.compute(request("mfcc", audio(), num_cepstral=num_cepstral))


@pytest.mark.parametrize("shift", [0, -2])
def test_mfcc_preemphasis_shift_must_be_positive(shift):
    with pytest.raises(ConfigurationError, match="shift must be at least 1"):
        mfcc.BLOCK.compute(request("mfcc", audio(), pre_shift=shift))


@pytest.mark.parametrize("block", ["spectrogram", "mfe"])
def test_noise_floor_of_12_db_is_rejected(block):
    with pytest.raises(ConfigurationError, match="12 dB"):
        BLOCKS[block].compute(request(block, audio(), 4, noise_floor_db=12))


# --- Batch path equals single path -----------------------------------------------------------

@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("version", VERSIONS)
def test_batch_equals_single(block, version):
    windows = audio(seconds=0.5, windows=4)
    windows[1] = 0.0  # silence
    windows[2] /= 40000.0  # a float window inside [-1, 1] (spectrogram v3 does not rescale it)
    batch = BLOCKS[block].compute_batch(request(block, windows, version))
    assert batch.features.shape[0] == 4
    assert batch.features.dtype == np.float64
    for i in range(4):
        single = BLOCKS[block].compute(request(block, windows[i], version))
        np.testing.assert_array_equal(batch.features[i], single.features)
        assert batch.output_config == single.output_config
        assert batch.fft_used == single.fft_used


# --- Output properties -----------------------------------------------------------------------

@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", ["zeros", "constant", "one_lsb"])
def test_degenerate_input_gives_finite_features(block, version, kind):
    raw = {"zeros": np.zeros((16000, 1)), "constant": np.full((16000, 1), 1234.0),
           "one_lsb": np.random.default_rng(0).integers(-1, 2, (16000, 1)).astype(float)}[kind]
    result = BLOCKS[block].compute(request(block, raw, version))
    assert np.isfinite(result.features).all()


@pytest.mark.parametrize("version", [1, 2])
def test_spectrogram_silence_is_all_zeros_in_v1_v2(version):
    result = spectrogram.BLOCK.compute(request("spectrogram", np.zeros((16000, 1)), version))
    assert not result.features.any()


def test_spectrogram_v1_v2_are_min_max_normalized():
    result = spectrogram.BLOCK.compute(request("spectrogram", audio(), 2))
    assert result.features.min() == 0 and result.features.max() == 1


def test_spectrogram_v3_clips_to_one_and_v4_does_not():
    raw = audio()
    v3 = spectrogram.BLOCK.compute(request("spectrogram", raw, 3)).features
    v4 = spectrogram.BLOCK.compute(request("spectrogram", raw, 4)).features
    assert v3.min() >= 0 and v3.max() <= 1
    assert v4.min() >= 0 and v4.max() > 1.5  # int16 audio without the v3 rescale


def test_spectrogram_v3_treats_int16_and_unit_scale_audio_alike():
    raw = audio()
    int16_scale = spectrogram.BLOCK.compute(request("spectrogram", raw, 3)).features
    unit_scale = spectrogram.BLOCK.compute(request("spectrogram", raw / 32768, 3)).features
    np.testing.assert_allclose(int16_scale, unit_scale, atol=1e-6)


@pytest.mark.parametrize("version", [3, 4])
def test_mfe_v3_v4_are_quantized_to_256_levels(version):
    features = mfe.BLOCK.compute(request("mfe", audio(), version)).features
    levels = features * 256
    np.testing.assert_array_equal(levels, np.round(levels))
    assert features.min() >= 0 and features.max() <= 255 / 256


def test_mfe_quantization_wraps_full_scale_to_zero_like_uint8():
    # A full-scale 6.1 kHz tone saturates the mel bands around it (1.0), which uint8 wraps to 0
    # upstream; the bands beside them, merely loud, keep high values.
    t = np.arange(16000) / 16000
    raw = np.round(32767 * np.sin(2 * np.pi * 6100 * t))[:, None]
    energies = mfe.BLOCK.compute(request("mfe", raw, 4)).features.reshape(99, 24)
    tone_bin = round(6100 * 256 / 16000)
    tone_bands = np.flatnonzero(mel_filterbank(24, 256, 16000, 0, None)[:, tone_bin])
    assert list(tone_bands) == [21, 22]
    assert np.all(energies[:, tone_bands] == 0)
    assert np.all(energies[:, [20, 23]] > 0.5)


def test_old_mels_cover_only_the_lower_half_of_the_spectrum():
    old = mel_filterbank(24, 256, 16000, 0, None, old_mels=True)
    new = mel_filterbank(24, 256, 16000, 0, None, old_mels=False)
    assert old.shape == new.shape == (24, 129)
    top_old = np.flatnonzero(old.any(axis=0)).max()
    top_new = np.flatnonzero(new.any(axis=0)).max()
    assert top_old <= 129 // 2 + 1  # about fs / 4
    assert top_new > 120  # reaches fs / 2
    assert old.max() == new.max() == 1.0


def test_high_frequency_unset_and_zero_mean_nyquist():
    raw = audio()
    unset = mfe.BLOCK.compute(request("mfe", raw, 4, high_frequency=None)).features
    zero = mfe.BLOCK.compute(request("mfe", raw, 4, high_frequency=0)).features
    nyquist = mfe.BLOCK.compute(request("mfe", raw, 4, high_frequency=8000)).features
    np.testing.assert_array_equal(unset, zero)
    np.testing.assert_array_equal(unset, nyquist)


def test_cmvnw_matches_a_window_by_window_reference():
    rng = np.random.default_rng(3)
    features = rng.normal(5, 2, (2, 7, 3))
    win_size = 11  # longer than the 7 frames: the mirror padding repeats
    pad = win_size // 2
    result = cmvnw(features, win_size, variance_normalization=True)
    assert result.dtype == np.float32
    for w in range(2):
        padded = np.pad(features[w], ((pad, pad), (0, 0)), mode="symmetric")
        centred = features[w] - np.array([padded[i:i + win_size].mean(axis=0) for i in range(7)])
        padded_centred = np.pad(centred, ((pad, pad), (0, 0)), mode="symmetric")
        spread = np.array([padded_centred[i:i + win_size].std(axis=0) for i in range(7)])
        np.testing.assert_allclose(result[w], centred / (spread + 1e-10), rtol=1e-5, atol=1e-6)


def test_mfcc_output_width_is_an_integer_frame_count():
    result = mfcc.BLOCK.compute(request("mfcc", audio(), 4))
    assert result.output_config == {"type": "spectrogram", "shape": {"width": 50, "height": 13}}
    assert isinstance(result.output_config["shape"]["width"], int)
    assert result.fft_used == [20, 256]


@pytest.mark.parametrize("block, names", [
    ("spectrogram", ["Spectrogram"]),
    ("mfe", ["Mel Energies (DSP Output)", "FFT Bin Weighting"]),
    ("mfcc", ["Cepstral Coefficients"]),
])
def test_graphs_only_when_asked(block, names):
    assert BLOCKS[block].compute(request(block, audio())).graphs == []
    graphs = BLOCKS[block].compute(request(block, audio(), draw_graphs=True)).graphs
    assert [g["name"] for g in graphs] == names
    assert all(g["type"] == "image" and g["image"] for g in graphs)


# --- parameters.json -------------------------------------------------------------------------

OFFICIAL_ORDER = {
    "spectrogram": ["frame_length", "frame_stride", "fft_length", "noise_floor_db", "show_axes"],
    "mfe": ["frame_length", "frame_stride", "num_filters", "fft_length", "low_frequency",
            "high_frequency", "win_size", "noise_floor_db"],
    "mfcc": ["num_cepstral", "frame_length", "frame_stride", "num_filters", "fft_length",
             "win_size", "low_frequency", "high_frequency", "pre_cof", "pre_shift"],
}


@pytest.mark.parametrize("block", BLOCKS)
def test_parameters_json_keeps_the_official_order_and_info(block):
    spec = BLOCKS[block].parameters
    params = [item["param"] for group in spec["parameters"] for item in group["items"]]
    assert params == OFFICIAL_ORDER[block]
    info = spec["info"]
    assert info["author"] == "Edge Impulse"
    assert info["latestImplementationVersion"] == 4
    assert info["port"] == 4446
    assert info["cppType"] == f"{block}_custom"
    # Autotune runs Studio-side code of the built-in blocks; a custom block cannot offer it.
    assert info["preferConvolution"] is True and info["hasAutoTune"] is False
    assert all(item.get("help") for group in spec["parameters"] for item in group["items"])
    json.dumps(spec)


def test_hidden_parameters_are_declared_with_their_versions():
    def item(block, param):
        return next(i for g in BLOCKS[block].parameters["parameters"] for i in g["items"]
                    if i["param"] == param)

    assert item("spectrogram", "show_axes")["showForImplementationVersion"] == []
    assert item("spectrogram", "noise_floor_db")["showForImplementationVersion"] == [3, 4]
    assert item("mfe", "win_size")["showForImplementationVersion"] == [1, 2]
    assert item("mfcc", "pre_shift")["showForImplementationVersion"] == [1, 2]
    assert item("mfe", "high_frequency")["optional"] is True
