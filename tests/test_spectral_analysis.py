"""Spectral analysis block: behaviour a Studio user relies on (parity is in test_golden.py)."""
import json

import numpy as np
import pytest
import pywt
import scipy.stats

from dsp.core.block import Request
from dsp.core.errors import ConfigurationError
from dsp.core.params import parameter_specs, resolve_params
from dsp.spectral import spectral_analysis as sa
from dsp.spectral import wavelet_features as wf

SPECS = parameter_specs(sa.BLOCK.parameters)
AXES = ["accX", "accY", "accZ"]


def make_request(raw, *, version=4, fs=100.0, draw_graphs=False, axes=None, **params):
    """A request as the server builds it: params resolved against the block's parameters.json."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 1:
        raw = raw[:, None]
    return Request(raw=raw, axes=axes or AXES[: raw.shape[1]], sampling_freq=fs,
                   implementation_version=version, params=resolve_params(SPECS, params),
                   draw_graphs=draw_graphs)


def run(raw, **kwargs):
    return sa.compute(make_request(raw, **kwargs))


def motion(n=200, fs=100.0, seed=0):
    """Three axes of accelerometer-like motion: sines, noise and gravity on Z."""
    t = np.arange(n) / fs
    rng = np.random.default_rng(seed)
    return np.stack([
        np.sin(2 * np.pi * 2.0 * t) + 0.1 * rng.standard_normal(n),
        0.5 * np.sin(2 * np.pi * 7.0 * t) + 0.1 * rng.standard_normal(n),
        9.81 + 0.3 * np.sin(2 * np.pi * 1.0 * t) + 0.1 * rng.standard_normal(n),
    ], axis=1)


# ---------------------------------------------------------------------------------------------
# parameters.json
# ---------------------------------------------------------------------------------------------

def test_parameters_declare_the_official_names_types_and_defaults():
    assert sa.BLOCK.name == "spectral-analysis"
    assert sa.BLOCK.latest_version == 4
    assert sa.BLOCK.info["cppType"] == "spectral_analysis"
    expected = {
        "scale_axes": ("float", 1), "input_decimation_ratio": ("select", "1"),
        "filter_type": ("select", "none"), "filter_cutoff": ("float", 3),
        "filter_order": ("int", 6), "analysis_type": ("select", "FFT"),
        "fft_length": ("int", 16), "spectral_peaks_count": ("int", 3),
        "spectral_peaks_threshold": ("float", 0.1),
        "spectral_power_edges": ("string", "0.1, 0.5, 1.0, 2.0, 5.0"),
        "do_log": ("boolean", True), "do_fft_overlap": ("boolean", True),
        "wavelet_level": ("int", 1), "wavelet": ("select", "db4"),
        "extra_low_freq": ("boolean", False),
    }
    assert list(SPECS) == list(expected)  # order matters for the C++ config struct
    for key, (kind, default) in expected.items():
        assert (SPECS[key].type, SPECS[key].default) == (kind, default), key
    assert SPECS["input_decimation_ratio"].config_type == "int"
    assert SPECS["input_decimation_ratio"].options == ("1", "3", "10", "30", "100", "1000")


def test_every_offered_wavelet_exists_in_pywavelets():
    offered = SPECS["wavelet"].options
    assert offered == wf.WAVELETS
    assert set(offered) <= set(pywt.wavelist(kind="discrete"))


def test_decimation_ratio_arrives_as_int():
    params = resolve_params(SPECS, {"input_decimation_ratio": "30"})
    assert params["input_decimation_ratio"] == 30


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_block_defaults_work_for_every_version(version):
    out = run(motion(), version=version)
    assert out.features.dtype == np.float64 and np.isfinite(out.features).all()
    assert out.fft_used == [16]
    assert out.output_config == {"type": "flat", "shape": {"width": out.features.size}}


# ---------------------------------------------------------------------------------------------
# Feature layout and labels
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, per_axis", [(1, 1 + 2 * 3 + 4), (2, 3 + 8), (3, 3 + 8),
                                               (4, 5 + 8)])
def test_labels_name_one_axis_and_features_are_axis_major(version, per_axis):
    out = run(motion(), version=version)
    assert len(out.labels) == per_axis
    assert out.features.size == 3 * per_axis
    # Each axis' block of features is that axis computed on its own.
    single = run(motion()[:, 1], version=version)
    np.testing.assert_array_equal(out.features[per_axis: 2 * per_axis], single.features)


def test_v1_labels():
    out = run(motion(), version=1, spectral_peaks_count=2, spectral_power_edges="0, 2, 5.5")
    assert out.labels == ["RMS", "Peak 1 Freq", "Peak 1 Height", "Peak 2 Freq", "Peak 2 Height",
                          "Spectral Power 0.0 - 2.0 Hz", "Spectral Power 2.0 - 5.5 Hz"]


def test_v4_fft_labels_name_bin_ranges():
    out = run(motion(), version=4, fft_length=16)
    assert out.labels[:5] == ["RMS", "Skewness", "Kurtosis", "Spectral Skewness",
                              "Spectral Kurtosis"]
    # 100 Hz / 16 = 6.25 Hz bins; DC is skipped and the Nyquist bin kept.
    assert out.labels[5] == "Spectral Power 3.12 - 9.38 Hz"
    assert out.labels[-1] == "Spectral Power 46.88 - 53.12 Hz"


def test_extra_low_freq_features_follow_all_axes():
    base = run(motion(600), version=4, fft_length=32)
    out = run(motion(600), version=4, fft_length=32, extra_low_freq=True)
    n_axes, per_axis = 3, len(base.labels)
    np.testing.assert_array_equal(out.features[: n_axes * per_axis], base.features)
    low_labels = out.labels[per_axis:]
    assert out.labels[:per_axis] == base.labels
    assert low_labels[:5] == ["RMS LF", "Skewness LF", "Kurtosis LF", "Spectral Skewness LF",
                              "Spectral Kurtosis LF"]
    assert out.features.size == n_axes * (per_axis + len(low_labels))
    # 10 Hz after decimation by 10: 32-point bins are 0.3125 Hz wide.
    assert low_labels[5] == "Spectral Power 0.16 - 0.47 Hz"


def test_extra_low_freq_is_ignored_before_v4_and_for_wavelets():
    assert len(run(motion(600), version=3, extra_low_freq=True).labels) == 3 + 8
    wavelet = run(motion(600), version=4, extra_low_freq=True, analysis_type="Wavelet")
    assert all(not label.endswith(" LF") for label in wavelet.labels)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_wavelet_features_are_14_per_band(level):
    out = run(motion(256), version=3, analysis_type="Wavelet", wavelet_level=level)
    assert len(out.labels) == 14 * (level + 1)
    assert out.labels[:3] == ["L0-entropy", "L0-zcross", "L0-mcross"]
    assert out.labels[-1] == f"L{level}-kurtosis"
    assert out.features.size == 3 * len(out.labels)


@pytest.mark.parametrize("version", [1, 2])
def test_wavelet_before_v3_falls_back_to_fft(version):
    wavelet = run(motion(), version=version, analysis_type="Wavelet")
    fft = run(motion(), version=version, analysis_type="FFT")
    assert wavelet.labels == fft.labels
    np.testing.assert_array_equal(wavelet.features, fft.features)


# ---------------------------------------------------------------------------------------------
# Filtering and bin masking
# ---------------------------------------------------------------------------------------------

def band_labels(out):
    return [label for label in out.labels if label.startswith("Spectral Power")]


def test_low_pass_keeps_bins_up_to_the_cutoff():
    # 100 Hz, 64 points: 1.5625 Hz bins; bin k covers (k - 0.5, k + 0.5) * 1.5625 Hz.
    out = run(motion(), fft_length=64, filter_type="low", filter_cutoff=10, filter_order=4)
    labels = band_labels(out)
    assert len(labels) == 6  # bin 6 starts at 8.59 Hz < 10 Hz, bin 7 at 10.16 Hz
    assert labels[-1] == "Spectral Power 8.59 - 10.16 Hz"


def test_high_pass_keeps_bins_from_the_cutoff_to_nyquist():
    out = run(motion(), fft_length=64, filter_type="high", filter_cutoff=10, filter_order=4)
    labels = band_labels(out)
    assert labels[0] == "Spectral Power 8.59 - 10.16 Hz"
    assert labels[-1] == "Spectral Power 49.22 - 50.78 Hz"
    assert len(labels) == 32 - 6 + 1


def test_order_zero_masks_bins_without_filtering():
    unfiltered = run(motion(), fft_length=64)
    masked = run(motion(), fft_length=64, filter_type="low", filter_cutoff=10, filter_order=0)
    assert len(band_labels(masked)) == 6
    # Same signal, so the time-domain and spectral statistics and the kept bins are equal.
    np.testing.assert_array_equal(masked.features[:5 + 6], unfiltered.features[:5 + 6])


def test_low_pass_filter_attenuates_high_frequencies():
    t = np.arange(400) / 100.0
    fast = np.sin(2 * np.pi * 30 * t)
    unfiltered = run(fast, fft_length=64, do_log=False)
    filtered = run(fast, fft_length=64, do_log=False, filter_type="low", filter_cutoff=40,
                   filter_order=8)
    attenuated = run(fast, fft_length=64, do_log=False, filter_type="low", filter_cutoff=5,
                     filter_order=8)
    assert filtered.features[0] > 0.5 * unfiltered.features[0]  # RMS mostly kept
    assert attenuated.features[0] < 0.05 * unfiltered.features[0]


def test_cutoff_clipped_to_nyquist_for_masking():
    # Order 0 does not design a filter, so a cut-off above Nyquist only masks (keeps all bins).
    out = run(motion(), fft_length=16, filter_type="low", filter_cutoff=80, filter_order=0)
    assert len(band_labels(out)) == 8


def test_scale_axes_scales_the_signal():
    once = run(motion(), version=4)
    twice = run(motion(), version=4, scale_axes=2)
    np.testing.assert_allclose(twice.features[0], 2 * once.features[0], rtol=1e-6)
    np.testing.assert_allclose(twice.features[1:3], once.features[1:3], rtol=1e-4, atol=1e-6)


def test_decimation_changes_the_analysed_rate():
    out = run(motion(3000, fs=1000), fs=1000, input_decimation_ratio="10", fft_length=16)
    # 100 Hz after decimation: 6.25 Hz bins.
    assert band_labels(out)[0] == "Spectral Power 3.12 - 9.38 Hz"


# ---------------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------------

def test_max_hold_spectrum_peaks_at_the_sine_bin():
    t = np.arange(200) / 100.0
    out = run(np.sin(2 * np.pi * 12.5 * t), fft_length=16, do_log=False)
    bins = np.asarray(out.features[5:])
    assert np.argmax(bins) == 1  # bin 2 (12.5 Hz); bin 1 is the first feature
    assert out.features[0] == pytest.approx(np.sqrt(0.5), rel=1e-3)  # RMS of a unit sine


def test_max_hold_keeps_the_loudest_frame():
    signal = np.zeros(64)
    signal[40:48] = [1, -1, 1, -1, 1, -1, 1, -1]  # a Nyquist burst in one 16-sample frame only
    freqs, powers = sa.max_hold_spectrum(signal[None, :], 100.0, 16, overlap=False)
    assert freqs[-1] == 50.0
    assert powers[0, -1] == pytest.approx(64 / 16)  # |sum of 8 alternating ones|**2 / 16


def test_v1_reports_the_strongest_peak_first():
    t = np.arange(256) / 100.0
    signal = np.sin(2 * np.pi * 20 * t) + 0.3 * np.sin(2 * np.pi * 35 * t)
    out = run(signal, version=1, fft_length=64, spectral_peaks_threshold=0.05)
    peak1_freq, peak1_height, peak2_freq = out.features[1:4]
    half = 32
    freq_axis = np.linspace(0, 50, half)  # the official peak frequency axis
    assert peak1_freq == pytest.approx(freq_axis[round(20 / 100 * 64)])
    assert peak2_freq == pytest.approx(freq_axis[round(35 / 100 * 64)])
    assert peak1_height > 0.5


def test_v1_threshold_drops_small_peaks_and_pads_with_zeros():
    t = np.arange(256) / 100.0
    signal = np.sin(2 * np.pi * 20 * t) + 0.3 * np.sin(2 * np.pi * 35 * t)
    out = run(signal, version=1, fft_length=64, spectral_peaks_threshold=0.5,
              spectral_peaks_count=3)
    assert out.features[1] > 0 and out.features[2] > 0.5
    np.testing.assert_array_equal(out.features[3:7], 0.0)


def test_peak_indexes_follow_peakutils_rules():
    # End points are never peaks; a plateau peak is reported at its middle-right index.
    assert sa.peak_indexes(np.array([5.0, 1, 3, 1, 2, 2, 2, 0, 7])).tolist() == [2, 5]
    assert sa.peak_indexes(np.ones(8)).size == 0
    # A peak must lie above the minimum.
    assert sa.peak_indexes(np.array([0.0, 0, 1, 0, 0])).tolist() == [2]


def test_skewness_kurtosis_match_scipy_and_never_nan():
    x = np.random.default_rng(3).standard_normal((2, 500))
    skew, kurt = wf.skewness_kurtosis(x)
    np.testing.assert_allclose(skew, scipy.stats.skew(x, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(kurt, scipy.stats.kurtosis(x, axis=-1), rtol=1e-12)
    skew, kurt = wf.skewness_kurtosis(np.full((1, 50), 9.81, dtype=np.float32))
    assert (skew[0], kurt[0]) == (0.0, -3.0)


@pytest.mark.parametrize("value", [0.0, 9.81])
@pytest.mark.parametrize("version", [1, 2, 3, 4])
@pytest.mark.parametrize("analysis", ["FFT", "Wavelet"])
def test_constant_input_gives_finite_features(value, version, analysis):
    out = run(np.full((256, 3), value), version=version, analysis_type=analysis,
              filter_type="high", filter_cutoff=2, filter_order=0)
    assert np.isfinite(out.features).all()
    if version >= 2 and analysis == "FFT":
        assert out.features[1] == 0.0 and out.features[2] == -3.0  # scipy < 1.9 convention


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params, version, message", [
    ({"fft_length": 100}, 4, "power of 2"),
    ({"fft_length": 1}, 4, "between 2 and 65536"),
    ({"fft_length": 131072}, 2, "between 2 and 65536"),
    ({"filter_type": "low", "filter_cutoff": 50, "filter_order": 4}, 4, "Nyquist"),
    ({"filter_type": "high", "filter_cutoff": 60, "filter_order": 4}, 1, "Nyquist"),
    ({"filter_type": "low", "filter_cutoff": 5, "filter_order": 3}, 4, "even"),
    ({"filter_type": "low", "filter_cutoff": 5, "filter_order": 10}, 4, "2, 4, 6 or 8"),
    ({"filter_type": "low", "filter_cutoff": 0.001, "filter_order": 2}, 4, "unstable"),
    ({"filter_type": "low", "filter_cutoff": 0, "filter_order": 2}, 4, "above 0 Hz"),
    ({"input_decimation_ratio": "3"}, 3, "version 4"),
    ({"input_decimation_ratio": "10", "filter_type": "low", "filter_cutoff": 5}, 4,
     "decimation ratio 10 is too high"),
    ({"analysis_type": "Wavelet", "wavelet_level": 3}, 4, "at least 256 samples"),
    ({"analysis_type": "Wavelet", "wavelet_level": -1}, 3, "0 or more"),
    ({"spectral_power_edges": "0.1, half, 2"}, 1, "'half'"),
    ({"spectral_power_edges": ""}, 1, "comma-separated numbers"),
    ({"spectral_peaks_count": -1}, 1, "0 or more"),
    ({"extra_low_freq": True, "fft_length": 64}, 4, "at least 32 samples"),
    ({"filter_type": "low", "filter_cutoff": 2, "filter_order": 0}, 4, "no FFT bin"),
])
def test_configuration_errors(params, version, message):
    with pytest.raises(ConfigurationError, match=message):
        run(motion(200), version=version, **params)


def test_unknown_wavelet_is_rejected():
    request = make_request(motion(), analysis_type="Wavelet")
    request.params["wavelet"] = "morl"  # a continuous wavelet, not offered
    with pytest.raises(ConfigurationError, match="Unknown wavelet 'morl'"):
        sa.compute(request)
    with pytest.raises(ConfigurationError, match="must be one of"):
        resolve_params(SPECS, {"wavelet": "morl"})


def test_wavelet_window_message_names_the_minimum_duration():
    with pytest.raises(ConfigurationError, match=r"at least 2560 ms at 100 Hz"):
        run(motion(200), analysis_type="Wavelet", wavelet_level=3)


def test_hidden_parameters_of_other_versions_are_not_validated():
    # Studio sends every parameter: v4 must accept v1's power edges, FFT must accept any level.
    out = run(motion(), version=4, spectral_power_edges="0", wavelet_level=9)
    assert np.isfinite(out.features).all()


def test_empty_window_and_bad_rate_are_rejected():
    with pytest.raises(ConfigurationError, match="empty"):
        run(np.zeros((0, 3)))
    with pytest.raises(ConfigurationError, match="Sampling frequency"):
        run(motion(), fs=0)


def test_overflowing_input_is_an_error_not_nan():
    with pytest.raises(ConfigurationError, match="Scale axes"):
        run(motion() * 1e30)


# ---------------------------------------------------------------------------------------------
# Graphs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, params, names", [
    (1, {}, ["After filter", "Frequency domain", "Spectral power"]),
    (4, {"filter_type": "low", "filter_cutoff": 5},
     ["Filter response", "After filter", "Spectral power (log)"]),
    (4, {"do_log": False}, ["After filter", "Spectral power (linear)"]),
    (3, {"analysis_type": "Wavelet"},
     ["After filter", "Wavelet function", "Wavelet Approximation"]),
])
def test_graphs(version, params, names):
    out = run(motion(256), version=version, draw_graphs=True, **params)
    assert [g["name"] for g in out.graphs] == names
    json.dumps(out.graphs, allow_nan=False)  # plain, finite JSON values only
    for graph in out.graphs:
        assert graph["type"] in ("linear", "logarithmic")
        for series in graph["X"].values():
            assert len(series) == len(graph["y"])
            assert all(type(v) is float for v in series)
    after = out.graphs[names.index("After filter")]
    assert list(after["X"]) == AXES
    assert after["y"][1] == pytest.approx(10.0)  # ms between samples at 100 Hz


def test_no_graphs_unless_asked():
    assert run(motion(), draw_graphs=False).graphs == []
