"""Edge Impulse's "Spectral features" block (spectral-analysis), implementation versions 1 to 4.

Pipeline, per axis (all axes at once, as rows of an (axes, samples) array):

1. cast to float32 and multiply by ``scale-axes``;
2. v4 only: decimate by ``input-decimation-ratio`` (stages of 3 and 10, each a Chebyshev type I
   low-pass started at the first sample, then every r-th sample);
3. optional Butterworth low/high-pass (float32 second-order sections, zero initial state, so a
   DC offset such as gravity gives a start-up transient), then subtract the mean;
4. features:

   * v1: RMS, the highest spectral peaks (frequency, height) and mean power spectral density
     in user-given bands;
   * v2+ FFT: RMS, skewness and kurtosis of the signal, (v4) skewness and kurtosis of the
     spectrum, then the power of every FFT bin in the filter's pass band from a max-hold
     Welch spectrum, optionally as log10; v4 can append the same features of the window
     downsampled by 10 (``extra-low-freq``, suffix " LF") after all axes;
   * v3+ Wavelet: 14 statistics per wavelet band (see `dsp.spectral.wavelet_features`).

Features are laid out axis-major; labels name one axis' features (Studio's convention for this
block), with the LF labels appended once.

Numerics mirror the official block (github.com/edgeimpulse/processing-blocks,
``spectral_analysis/``) as run with numpy 1.x and scipy < 1.9: float32 where it works in float32
(input, filter, time-domain statistics), float64 where numpy 1.x promoted (FFTs, spectral
statistics), so results agree to float32 rounding. Skewness and kurtosis of a constant series are
0 and -3 (scipy < 1.9), never NaN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import scipy.fft
import scipy.signal

from dsp.core.block import Block, Features, Request, load_parameters
from dsp.core.errors import ConfigurationError
from dsp.graphs import line_graph
from dsp.spectral import wavelet_features as wavelets

__all__ = [
    "BLOCK",
    "compute",
    "parse_power_edges",
    "check_fft_length",
    "decimation_stages",
    "decimate",
    "butterworth_sos",
    "butterworth_is_stable",
    "max_hold_spectrum",
    "pass_band_bins",
    "fft_features",
    "peak_indexes",
    "spectral_peaks",
    "periodogram",
    "band_mean_powers",
]

SUPPORTED_VERSIONS = (1, 2, 3, 4)
FILTER_TYPES = ("low", "high", "none")
ANALYSIS_TYPES = ("FFT", "Wavelet")
FILTER_ORDERS = (2, 4, 6, 8)
# Upstream only asks for a power of 2 (Studio's form offers 16 to 4096); the cap stops a typo
# from allocating gigabytes.
MIN_FFT_LENGTH = 2
MAX_FFT_LENGTH = 65536
# Supported decimation ratios and the single-stage factors they are made of.
DECIMATION_STAGES = {1: (), 3: (3,), 10: (10,), 30: (3, 10), 100: (10, 10), 1000: (10, 10, 10)}
# With decimation, a filter cut-off must stay below this fraction of the decimated Nyquist.
DECIMATION_CUTOFF_FRACTION = 0.9
# Anti-aliasing filter of one decimation stage: Chebyshev I, order 8, 0.05 dB ripple,
# edge at 80 % of the decimated Nyquist frequency.
DECIMATION_FILTER_ORDER = 8
DECIMATION_FILTER_RIPPLE_DB = 0.05
DECIMATION_FILTER_EDGE = 0.8
EXTRA_LOW_FREQ_RATIO = 10
LOG_ZERO_REPLACEMENT = 1e-10
LABEL_DECIMALS = 2


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

def check_fft_length(fft_length: int) -> None:
    """Raise ConfigurationError unless `fft_length` is a power of 2 from 2 to 65536."""
    if isinstance(fft_length, bool) or not isinstance(fft_length, (int, np.integer)):
        raise ConfigurationError(f"FFT length must be a whole number; got {fft_length!r}")
    if fft_length <= 0 or fft_length & (fft_length - 1):
        raise ConfigurationError(
            f"FFT length must be a power of 2 (for example 16, 32, ..., 4096); got {fft_length}"
        )
    if not MIN_FFT_LENGTH <= fft_length <= MAX_FFT_LENGTH:
        raise ConfigurationError(
            f"FFT length must be between {MIN_FFT_LENGTH} and {MAX_FFT_LENGTH}; got {fft_length}"
        )


def parse_power_edges(text: str) -> list[float]:
    """The band edges (Hz) of a comma-separated ``spectral-power-edges`` string.

    Raises ConfigurationError if an item is not a finite number.
    """
    items = str(text).split(",")
    edges = []
    for item in items:
        try:
            edge = float(item.strip())
        except ValueError:
            raise ConfigurationError(
                "Power edges must be comma-separated numbers in Hz, e.g. '0.1, 0.5, 1.0, 2.0, "
                f"5.0'; could not read {item.strip()!r} in {text!r}"
            ) from None
        if not math.isfinite(edge):
            raise ConfigurationError(f"Power edges must be finite numbers in Hz; got {text!r}")
        edges.append(edge)
    return edges


def decimation_stages(ratio: int) -> tuple[int, ...]:
    """The single-stage factors (3 or 10) a supported decimation ratio is applied as."""
    if isinstance(ratio, bool) or ratio not in DECIMATION_STAGES:
        allowed = ", ".join(str(r) for r in DECIMATION_STAGES)
        raise ConfigurationError(f"Input decimation ratio must be one of {allowed}; got {ratio!r}")
    return DECIMATION_STAGES[ratio]


def _check_filter(filter_type: str, cutoff: float, order: int, sampling_freq: float,
                  ratio: int) -> None:
    """Raise ConfigurationError for a filter the official block rejects."""
    if filter_type not in FILTER_TYPES:
        raise ConfigurationError(
            f"Filter type must be one of {', '.join(FILTER_TYPES)}; got {filter_type!r}"
        )
    if filter_type == "none":
        return
    if ratio > 1:
        decimated_nyquist = sampling_freq / 2 / ratio
        if cutoff > decimated_nyquist * DECIMATION_CUTOFF_FRACTION:
            raise ConfigurationError(
                f"Input decimation ratio {ratio} is too high for a {cutoff:g} Hz cut-off: after "
                f"decimation the Nyquist frequency is {decimated_nyquist:g} Hz and the cut-off "
                f"must stay below {DECIMATION_CUTOFF_FRACTION:.0%} of it "
                f"({decimated_nyquist * DECIMATION_CUTOFF_FRACTION:g} Hz). Lower the ratio or "
                "the cut-off."
            )
    if order == 0:
        return  # no filter, the cut-off only masks FFT bins
    if order % 2 != 0:
        raise ConfigurationError(
            f"Filter order must be even (2, 4, 6 or 8, or 0 for no filtering); got {order}"
        )
    if order not in FILTER_ORDERS:
        raise ConfigurationError(
            f"Filter order must be 2, 4, 6 or 8 (or 0 for no filtering); got {order}"
        )
    filter_rate = sampling_freq / ratio
    if cutoff <= 0:
        raise ConfigurationError(f"Filter cut-off frequency must be above 0 Hz; got {cutoff:g} Hz")
    if cutoff * 2 / filter_rate >= 1.0:
        where = "" if ratio == 1 else f" after decimation by {ratio}"
        raise ConfigurationError(
            f"Filter cut-off frequency ({cutoff:g} Hz) must be below the Nyquist frequency, "
            f"half the sampling rate{where} ({filter_rate / 2:g} Hz). Choose a lower cut-off."
        )
    if not butterworth_is_stable(order, cutoff, filter_rate):
        raise ConfigurationError(
            f"The order-{order} {filter_type}-pass filter at {cutoff:g} Hz is numerically "
            f"unstable at {filter_rate:g} Hz sampling. Move the cut-off away from 0 and from "
            f"the Nyquist frequency ({filter_rate / 2:g} Hz), or lower the order."
        )


# --------------------------------------------------------------------------------------------
# Decimation and filtering
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _decimation_filter(factor: int) -> tuple[np.ndarray, np.ndarray]:
    sos = scipy.signal.cheby1(DECIMATION_FILTER_ORDER, DECIMATION_FILTER_RIPPLE_DB,
                              DECIMATION_FILTER_EDGE / factor, output="sos")
    return sos, scipy.signal.sosfilt_zi(sos)


def decimate(signals: np.ndarray, factor: int) -> np.ndarray:
    """Low-pass and keep every `factor`-th sample of each row.

    Parameters
    ----------
    signals : numpy.ndarray
        (axes, samples) array, at least one sample.
    factor : int
        Decimation factor (1 returns `signals` unchanged).

    Returns
    -------
    numpy.ndarray
        float64 (axes, ceil(samples / factor)). The filter (Chebyshev I, see module constants)
        starts in the steady state of each row's first sample, so a DC level passes without a
        transient; samples 0, factor, 2*factor, ... of its output are kept.
    """
    if factor == 1:
        return signals
    sos, zi = _decimation_filter(factor)
    initial = zi[:, None, :] * signals[:, 0][None, :, None]
    filtered, _ = scipy.signal.sosfilt(sos, signals, axis=-1, zi=initial)
    return np.ascontiguousarray(filtered[:, ::factor])


def butterworth_sos(filter_type: str, cutoff: float, order: int,
                    sampling_freq: float) -> np.ndarray:
    """Butterworth second-order sections, rounded to float32 as the official block does.

    Parameters
    ----------
    filter_type : {"low", "high"}
    cutoff : float
        Cut-off in Hz, 0 < cutoff < sampling_freq / 2.
    order : int
        2, 4, 6 or 8.
    sampling_freq : float
        In Hz.

    Returns
    -------
    numpy.ndarray
        float32 (order / 2, 6).
    """
    return _butterworth_design(filter_type, cutoff, order, sampling_freq).copy()


@lru_cache(maxsize=64)
def _butterworth_design(filter_type: str, cutoff: float, order: int,
                        sampling_freq: float) -> np.ndarray:
    return scipy.signal.butter(order, Wn=cutoff * 2 / sampling_freq, btype=filter_type,
                               output="sos").astype(np.float32)


@lru_cache(maxsize=64)
def butterworth_is_stable(order: int, cutoff: float, sampling_freq: float) -> bool:
    """Whether the device's float32 biquad design of this Butterworth filter is stable.

    The Edge Impulse SDK designs each biquad from ``a = tan(pi * cutoff / fs)`` with float32
    coefficients; near 0 Hz or the Nyquist frequency their rounding can put a pole on or
    outside the unit circle. This repeats that design and checks every pole (float32 roots, as
    the official check computes them).
    """
    # Intermediate sums in float64, coefficients stored in float32, as the check upstream.
    a = float(np.float32(np.tan(math.pi * cutoff / sampling_freq)))
    a2 = float(np.float32(a * a))
    largest_pole = 0.0
    for section in range(order // 2):
        r = float(np.sin(math.pi * ((2.0 * section) + 1.0) / (2.0 * order)))
        scale = a2 + (2.0 * a * r) + 1.0
        d1 = np.float32(2.0 * (1 - a2) / scale)
        d2 = np.float32(-(a2 - (2.0 * a * r) + 1.0) / scale)
        poles = np.roots(np.array([1.0, -d1, -d2], dtype=np.float32))
        if poles.size:
            largest_pole = max(largest_pole, float(np.max(np.abs(poles))))
    return largest_pole < 1


# --------------------------------------------------------------------------------------------
# v2+ FFT features
# --------------------------------------------------------------------------------------------

def max_hold_spectrum(signals: np.ndarray, sampling_freq: float, fft_length: int,
                      overlap: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin maximum over frames of the power spectrum (a "max-hold" Welch).

    Parameters
    ----------
    signals : numpy.ndarray
        (axes, samples) array.
    sampling_freq : float
        In Hz.
    fft_length : int
        Frame and FFT length.
    overlap : bool
        Frames start every fft_length / 2 samples if true, every fft_length otherwise.

    Returns
    -------
    freqs : numpy.ndarray
        The fft_length / 2 + 1 bin frequencies in Hz.
    powers : numpy.ndarray
        float64 (axes, fft_length / 2 + 1): max over frames of ``|rfft(frame)|**2 / fft_length``.
        Frames start at 0, 0 + step, ... up to and including the window length, have no window
        function, and are zero-padded past the end of the signal.
    """
    n_samples = signals.shape[-1]
    step = fft_length - (fft_length // 2 if overlap else 0)
    starts = np.arange(0, n_samples + 1, step)
    padded = np.zeros(signals.shape[:-1] + (starts[-1] + fft_length,), dtype=np.float64)
    # numpy < 2 (which the official block ran on) always transformed in float64.
    padded[..., :n_samples] = signals
    frames = np.lib.stride_tricks.sliding_window_view(padded, fft_length, axis=-1)[..., starts, :]
    magnitudes = np.abs(np.fft.rfft(frames, n=fft_length, axis=-1))
    powers = (magnitudes ** 2 / fft_length).max(axis=-2)
    return np.fft.rfftfreq(fft_length, 1 / sampling_freq), powers


def pass_band_bins(filter_type: str, cutoff: float, sampling_freq: float,
                   fft_length: int) -> range:
    """The FFT bins kept as features: DC never, then those in the filter's pass band.

    A bin is kept when any part of it (centre +- half a bin) lies in the pass band; the cut-off is
    first limited to the Nyquist frequency. This applies even with filter order 0.
    """
    last = fft_length // 2
    cutoff = min(cutoff, sampling_freq / 2)
    if filter_type == "low":
        return range(1, int(cutoff * fft_length / sampling_freq + 0.5) + 1)
    if filter_type == "high":
        return range(max(1, int(cutoff * fft_length / sampling_freq - 0.5) + 1), last + 1)
    return range(1, last + 1)


def _checked_pass_band(filter_type: str, cutoff: float, sampling_freq: float,
                       fft_length: int) -> range:
    bins = pass_band_bins(filter_type, cutoff, sampling_freq, fft_length)
    if len(bins) == 0:
        raise ConfigurationError(
            f"The {filter_type}-pass cut-off of {cutoff:g} Hz leaves no FFT bin to use "
            f"(bins are {sampling_freq / fft_length:g} Hz wide at {sampling_freq:g} Hz). Raise "
            "the cut-off or the FFT length."
        )
    return bins


def _band_label(centre: float, spacing: float) -> str:
    low = float(np.round(np.float64(centre - spacing / 2), LABEL_DECIMALS))
    high = float(np.round(np.float64(centre + spacing / 2), LABEL_DECIMALS))
    return f"Spectral Power {low!r} - {high!r} Hz"


def _rms(signals: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(np.square(signals), axis=-1))


def fft_features(signals: np.ndarray, sampling_freq: float, fft_length: int, filter_type: str,
                 cutoff: float, do_log: bool, overlap: bool, spectral_stats: bool,
                 suffix: str = "") -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """The v2+ FFT features of each row of `signals` (filtered, mean removed).

    Returns
    -------
    features : numpy.ndarray
        float64 (axes, k): RMS, skewness, kurtosis, [spectral skewness, spectral kurtosis of the
        linear spectrum, DC included,] then the power of each pass-band bin (log10 if
        `do_log`, zeros counted as 1e-10).
    labels : list of str
        The k labels: statistics end in `suffix`, bins read "Spectral Power <from> - <to> Hz".
    spectrum : numpy.ndarray
        (axes, fft_length / 2 + 1) spectrum as featured (log or linear), for graphs.
    freqs : numpy.ndarray
        Its bin frequencies in Hz.

    Raises
    ------
    ConfigurationError
        If the pass band keeps no bin.
    """
    bins = _checked_pass_band(filter_type, cutoff, sampling_freq, fft_length)
    columns = [_rms(signals)]
    labels = ["RMS" + suffix, "Skewness" + suffix, "Kurtosis" + suffix]
    columns.extend(wavelets.skewness_kurtosis(signals))

    freqs, powers = max_hold_spectrum(signals, sampling_freq, fft_length, overlap)
    if spectral_stats:
        columns.extend(wavelets.skewness_kurtosis(powers))
        labels += ["Spectral Skewness" + suffix, "Spectral Kurtosis" + suffix]
    if do_log:
        powers = np.log10(np.where(powers == 0, LOG_ZERO_REPLACEMENT, powers))

    selected = np.arange(bins.start, bins.stop)
    features = np.concatenate(
        [np.stack(columns, axis=-1).astype(np.float64), powers[:, selected]], axis=-1
    )
    labels += [_band_label(freqs[i], freqs[1]) for i in selected]
    return features, labels, powers, freqs


# --------------------------------------------------------------------------------------------
# v1 features
# --------------------------------------------------------------------------------------------

def peak_indexes(values: np.ndarray) -> np.ndarray:
    """Indexes of the local maxima of `values` that are above its minimum.

    Same rule as ``peakutils.indexes(values, thres=0, min_dist=1)``: a peak is where the first
    difference goes from positive to negative; flat runs take the slope of their neighbours
    (the left half of a run the slope before it, the right half and middle the slope after it;
    runs touching an end the slope on their inner side). End points are never peaks, and a
    completely flat series has none.
    """
    values = np.asarray(values)
    if values.size < 3:
        return np.zeros(0, dtype=np.intp)
    slopes = np.diff(values)
    flat = np.flatnonzero(slopes == 0)
    if flat.size == slopes.size:
        return np.zeros(0, dtype=np.intp)
    if flat.size:
        runs = np.split(flat, np.flatnonzero(np.diff(flat) != 1) + 1)
        if runs[0][0] == 0:
            slopes[runs[0]] = slopes[runs[0][-1] + 1]
            runs = runs[1:]
        if runs and runs[-1][-1] == slopes.size - 1:
            slopes[runs[-1]] = slopes[runs[-1][0] - 1]
            runs = runs[:-1]
        for run in runs:
            middle = np.median(run)
            before, after = slopes[run[0] - 1], slopes[run[-1] + 1]
            slopes[run[run < middle]] = before
            slopes[run[run >= middle]] = after
    rising_into = np.concatenate(([0.0], slopes)) > 0
    falling_out = np.concatenate((slopes, [0.0])) < 0
    return np.flatnonzero(rising_into & falling_out & (values > values.min()))


def spectral_peaks(signal: np.ndarray, sampling_freq: float, fft_length: int,
                   threshold: float, count: int) -> np.ndarray:
    """The `count` highest peaks of the single-sided amplitude spectrum (v1).

    Parameters
    ----------
    signal : numpy.ndarray
        One axis, filtered and mean removed (float32 keeps the single-precision FFT).
    sampling_freq : float
        In Hz.
    fft_length : int
        FFT length; the signal is truncated or zero-padded to it.
    threshold : float
        Peaks lower than this (in height units) are dropped.
    count : int
        Number of peaks reported.

    Returns
    -------
    numpy.ndarray
        float64 (count, 2) rows of (frequency in Hz, height), highest first (ties in frequency
        order), padded with (0, 0). Heights are ``2 / fft_length * |FFT|`` over the first
        fft_length / 2 bins, and bin k is placed at ``k * (fs / 2) / (fft_length / 2 - 1)``
        (a linspace from 0 to fs / 2 over those bins, as the official block does).
    """
    spectrum = scipy.fft.fft(signal, n=fft_length)
    half = fft_length // 2
    heights = (2.0 / fft_length) * np.abs(spectrum[:half])
    freq_axis = np.linspace(0.0, 1.0 / (2.0 * (1 / sampling_freq)), half)

    found = peak_indexes(heights)
    found = found[heights[found] >= threshold]
    found = found[np.argsort(-heights[found], kind="stable")][:count]

    peaks = np.zeros((count, 2), dtype=np.float64)
    peaks[: found.size, 0] = freq_axis[found]
    peaks[: found.size, 1] = heights[found]
    return peaks


def periodogram(signals: np.ndarray, sampling_freq: float,
                fft_length: int) -> tuple[np.ndarray, np.ndarray]:
    """One-sided power spectral density of the first `fft_length` samples of each row (v1).

    Like ``scipy.signal.periodogram(x, fs, nfft=fft_length)`` (boxcar window, mean removed,
    density scaling), computed as scipy < 1.9 did for float32 input: a single-precision FFT and
    the scale factor rounded to float32.

    Parameters
    ----------
    signals : numpy.ndarray
        (axes, samples). Samples past `fft_length` are ignored; fewer are zero-padded.
    sampling_freq : float
        In Hz.
    fft_length : int
        FFT length.

    Returns
    -------
    freqs : numpy.ndarray
        The fft_length / 2 + 1 bin frequencies in Hz.
    density : numpy.ndarray
        (axes, fft_length / 2 + 1) in units**2 / Hz, in the precision of `signals`.
    """
    segment = signals[:, :fft_length]
    segment = segment - segment.mean(axis=-1, keepdims=True)
    spectrum = scipy.fft.rfft(segment, n=fft_length, axis=-1)
    power = (np.conjugate(spectrum) * spectrum).real
    power *= power.dtype.type(1.0 / (sampling_freq * segment.shape[-1]))
    # Every bin but DC and Nyquist stands for a positive and a negative frequency.
    power[:, 1:-1] *= 2
    return np.fft.rfftfreq(fft_length, 1 / sampling_freq), power


def band_mean_powers(freqs: np.ndarray, density: np.ndarray, edges: list[float]) -> np.ndarray:
    """Mean of `density` over the bins in each band ``[edges[k], edges[k + 1])`` (v1).

    Returns
    -------
    numpy.ndarray
        float64 (axes, len(edges) - 1); 0 for a band that holds no bin.
    """
    n_bands = max(len(edges) - 1, 0)
    means = np.zeros((density.shape[0], n_bands), dtype=np.float64)
    for band in range(n_bands):
        inside = (freqs >= edges[band]) & (freqs < edges[band + 1])
        if inside.any():
            means[:, band] = density[:, inside].astype(np.float64).mean(axis=-1)
    return means


# --------------------------------------------------------------------------------------------
# The block
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Settings:
    """The request's parameters, checked and normalised."""

    version: int
    sampling_freq: float
    scale: float
    ratio: int
    filter_type: str
    cutoff: float
    order: int
    fft_length: int
    use_wavelet: bool
    wavelet: str
    wavelet_level: int
    do_log: bool
    overlap: bool
    extra_low_freq: bool
    peaks_count: int
    peaks_threshold: float
    power_edges: tuple[float, ...]

    @property
    def filtering(self) -> bool:
        return self.filter_type != "none" and self.order > 0


def _decimated_length(n_samples: int, factors) -> int:
    for factor in factors:
        n_samples = -(-n_samples // factor)  # every factor-th sample, starting with the first
    return n_samples


def _check_request(req: Request) -> _Settings:
    """Every check the official block makes (and a few it crashes on), before any computation."""
    p = req.params
    version = int(req.implementation_version)
    if version not in SUPPORTED_VERSIONS:
        raise ConfigurationError(f"Implementation version must be 1, 2, 3 or 4; got {version}")
    sampling_freq = float(req.sampling_freq)
    if not (math.isfinite(sampling_freq) and sampling_freq > 0):
        raise ConfigurationError(
            f"Sampling frequency must be a number above 0 Hz; got {req.sampling_freq!r}"
        )
    raw = np.asarray(req.raw)
    if raw.ndim != 2 or raw.shape[0] == 0 or raw.shape[1] == 0:
        raise ConfigurationError("The window is empty: spectral analysis needs at least one sample")
    if not np.isfinite(raw).all():
        raise ConfigurationError("The window contains NaN or infinite values")
    n_samples = raw.shape[0]

    fft_length = p["fft_length"]
    check_fft_length(fft_length)
    ratio = p["input_decimation_ratio"]
    if isinstance(ratio, str) and ratio.strip().isdigit():
        ratio = int(ratio)
    stages = decimation_stages(ratio)
    if ratio > 1 and version < 4:
        raise ConfigurationError(
            f"Input decimation (ratio {ratio}) needs implementation version 4; this block runs "
            f"version {version}. Set the input decimation ratio to 1."
        )
    filter_type, cutoff, order = p["filter_type"], float(p["filter_cutoff"]), p["filter_order"]
    _check_filter(filter_type, cutoff, order, sampling_freq, ratio)
    analysis = p["analysis_type"]
    if analysis not in ANALYSIS_TYPES:
        raise ConfigurationError(
            f"Analysis type must be one of {', '.join(ANALYSIS_TYPES)}; got {analysis!r}"
        )
    # v1 and v2 have no wavelet analysis and silently use their FFT features.
    use_wavelet = version >= 3 and analysis == "Wavelet"
    n_analysed = _decimated_length(n_samples, stages)
    rate = sampling_freq
    for factor in stages:
        rate /= factor
    if use_wavelet:
        wavelets.check_wavelet(p["wavelet"], p["wavelet_level"])
        wavelets.check_window_length(p["wavelet_level"], n_analysed, rate)

    if version >= 2 and not use_wavelet:
        _checked_pass_band(filter_type, cutoff, rate, fft_length)
    extra_low_freq = bool(p["extra_low_freq"]) and version >= 4 and not use_wavelet
    if extra_low_freq:
        needed = fft_length // 2
        if _decimated_length(n_analysed, (EXTRA_LOW_FREQ_RATIO,)) < needed:
            raise ConfigurationError(
                f"'Improve low frequency resolution' needs at least {needed} samples per axis "
                f"after downsampling by {EXTRA_LOW_FREQ_RATIO}, about "
                f"{needed * EXTRA_LOW_FREQ_RATIO} samples (FFT length {fft_length}); the window "
                f"has {n_analysed}. Use a longer window or a shorter FFT."
            )

    peaks_count, power_edges = 0, ()
    if version == 1:
        power_edges = tuple(parse_power_edges(p["spectral_power_edges"]))
        peaks_count = p["spectral_peaks_count"]
        if peaks_count < 0:
            raise ConfigurationError(f"No. of peaks must be 0 or more; got {peaks_count}")
    return _Settings(
        version=version, sampling_freq=sampling_freq, scale=float(p["scale_axes"]), ratio=ratio,
        filter_type=filter_type, cutoff=cutoff, order=order, fft_length=fft_length,
        use_wavelet=use_wavelet, wavelet=p["wavelet"], wavelet_level=p["wavelet_level"],
        do_log=bool(p["do_log"]), overlap=bool(p["do_fft_overlap"]),
        extra_low_freq=extra_low_freq, peaks_count=peaks_count,
        peaks_threshold=float(p["spectral_peaks_threshold"]), power_edges=power_edges,
    )


def filtered_signals(raw: np.ndarray,
                     settings: _Settings) -> tuple[np.ndarray, float, Optional[np.ndarray]]:
    """Steps 1 to 3 of the pipeline: scale, decimate, filter, remove the mean.

    Returns
    -------
    signals : numpy.ndarray
        (axes, samples): float32 without decimation, float64 after it.
    rate : float
        Their sampling frequency in Hz.
    sos : numpy.ndarray or None
        The float32 Butterworth sections applied, if any.
    """
    # Cast first, then scale in float32, as the official block does.
    signals = np.ascontiguousarray(raw.T, dtype=np.float32) * np.float32(settings.scale)
    rate = settings.sampling_freq
    for factor in DECIMATION_STAGES[settings.ratio]:
        signals = decimate(signals, factor)
        rate /= factor
    sos = None
    if settings.filtering:
        sos = butterworth_sos(settings.filter_type, settings.cutoff, settings.order,
                              settings.sampling_freq / settings.ratio)
        signals = np.ascontiguousarray(scipy.signal.sosfilt(sos, signals, axis=-1))
    return signals - signals.mean(axis=-1, keepdims=True), rate, sos


def compute(req: Request) -> Features:
    """Spectral features of one window; see the module docstring for the pipeline.

    Raises
    ------
    ConfigurationError
        For every configuration the official block rejects (FFT length, filter, decimation,
        wavelet level or name, power edges, extra-low-frequency window) and for an empty or
        non-finite window or a non-positive sampling frequency.
    """
    settings = _check_request(req)
    # Overflow of huge inputs in float32 is reported once, by the finiteness check at the end.
    with np.errstate(over="ignore", invalid="ignore"):
        features, labels, graphs = _features_and_graphs(req, settings)
    if not np.isfinite(features).all():
        raise ConfigurationError(
            "Some features are not finite numbers: the window's values are too large for "
            "single precision. Lower 'Scale axes'."
        )
    return Features(
        features=features,
        labels=labels,
        output_config={"type": "flat", "shape": {"width": int(features.size)}},
        fft_used=[int(settings.fft_length)],
        graphs=graphs,
    )


def _features_and_graphs(req: Request, settings: _Settings):
    signals, rate, sos = filtered_signals(np.asarray(req.raw, dtype=np.float64), settings)
    graphs: list[dict] = []
    if settings.use_wavelet:
        per_axis, labels, approximation = wavelets.wavelet_features(
            signals, settings.wavelet, settings.wavelet_level)
        features = per_axis.ravel()
        if req.draw_graphs:
            graphs = _wavelet_graphs(req.axes, signals, rate, settings, approximation)
    elif settings.version == 1:
        features, labels, periodogram_data = _v1_features(signals, rate, settings)
        if req.draw_graphs:
            graphs = _v1_graphs(req.axes, signals, rate, periodogram_data)
    else:
        per_axis, labels, spectrum, freqs = fft_features(
            signals, rate, settings.fft_length, settings.filter_type, settings.cutoff,
            settings.do_log, settings.overlap, spectral_stats=settings.version >= 4)
        features = per_axis.ravel()
        if settings.extra_low_freq:
            low_rate_features, low_rate_labels = _extra_low_freq_features(signals, rate, settings)
            features = np.concatenate([features, low_rate_features])
            labels = labels + low_rate_labels
        if req.draw_graphs:
            graphs = _fft_graphs(req.axes, signals, rate, spectrum, freqs, settings.do_log)
    if req.draw_graphs and sos is not None:
        graphs.insert(0, _filter_response_graph(sos, rate))
    return np.asarray(features, dtype=np.float64), labels, graphs


def _v1_features(signals: np.ndarray, rate: float, settings: _Settings):
    """v1, per axis: RMS, `peaks_count` (frequency, height) pairs, band powers / 10."""
    count = settings.peaks_count
    edges = settings.power_edges
    peaks = np.stack([
        spectral_peaks(row, rate, settings.fft_length, settings.peaks_threshold, count)
        for row in signals
    ])
    freqs, density = periodogram(signals, rate, settings.fft_length)
    bands = band_mean_powers(freqs, density, list(edges))
    per_axis = np.concatenate([_rms(signals)[:, None].astype(np.float64),
                               peaks.reshape(len(signals), -1), bands / 10], axis=1)
    labels = ["RMS"]
    for k in range(1, count + 1):
        labels += [f"Peak {k} Freq", f"Peak {k} Height"]
    labels += [f"Spectral Power {edges[k]!r} - {edges[k + 1]!r} Hz" for k in range(len(edges) - 1)]
    return per_axis.ravel(), labels, (freqs, density)


def _extra_low_freq_features(signals: np.ndarray, rate: float, settings: _Settings):
    """v4 ``extra-low-freq``: FFT features of the window decimated by 10, all axes, " LF"."""
    low_rate = decimate(signals, EXTRA_LOW_FREQ_RATIO)
    low_rate = low_rate - low_rate.mean(axis=-1, keepdims=True)
    per_axis, labels, _, _ = fft_features(
        low_rate, rate / EXTRA_LOW_FREQ_RATIO, settings.fft_length, settings.filter_type,
        settings.cutoff, settings.do_log, settings.overlap, spectral_stats=True, suffix=" LF")
    return per_axis.ravel(), labels


# --------------------------------------------------------------------------------------------
# Graphs
# --------------------------------------------------------------------------------------------

def _time_axis_ms(n_samples: int, rate: float) -> np.ndarray:
    return np.arange(n_samples) * (1000.0 / rate)


def _after_filter_graph(axes, signals, rate) -> dict:
    return line_graph(
        "After filter", dict(zip(axes, signals)), _time_axis_ms(signals.shape[-1], rate),
        suggested_y_min=-1, suggested_y_max=1,
        axis_labels={"X": "Value", "y": "Time (ms)"},
    )


def _filter_response_graph(sos: np.ndarray, rate: float) -> dict:
    freqs, response = scipy.signal.freqz_sos(sos, fs=rate)
    magnitude = np.abs(response)
    gain_db = 20 * np.log10(np.where(magnitude == 0, LOG_ZERO_REPLACEMENT, magnitude))
    return line_graph("Filter response", {"Gain": gain_db}, freqs,
                      axis_labels={"X": "Gain (dB)", "y": "Frequency (Hz)"})


def _fft_graphs(axes, signals, rate, spectrum, freqs, do_log) -> list[dict]:
    units = "log" if do_log else "linear"
    return [
        _after_filter_graph(axes, signals, rate),
        line_graph(
            f"Spectral power ({units})", dict(zip(axes, spectrum)), freqs,
            suggested_y_min=0, suggested_x_min=0, suggested_x_max=rate / 2, smoothing=False,
            axis_labels={"X": "Power (log10)" if do_log else "Power", "y": "Frequency (Hz)"},
        ),
    ]


def _v1_graphs(axes, signals, rate, graph_data) -> list[dict]:
    freqs, density = graph_data
    fft_length = 2 * (len(freqs) - 1)
    half = fft_length // 2
    amplitude = (2.0 / fft_length) * np.abs(scipy.fft.fft(signals, n=fft_length, axis=-1)[:, :half])
    return [
        _after_filter_graph(axes, signals, rate),
        line_graph(
            "Frequency domain", dict(zip(axes, amplitude)),
            np.linspace(0.0, rate / 2, half),
            suggested_y_min=0, suggested_x_min=0, suggested_x_max=rate / 2,
            axis_labels={"X": "Amplitude", "y": "Frequency (Hz)"},
        ),
        line_graph(
            "Spectral power", dict(zip(axes, density[:, 1:])), freqs[1:],
            graph_type="logarithmic", suggested_x_min=0, suggested_x_max=rate / 2,
            axis_labels={"X": "Power density", "y": "Frequency (Hz)"},
        ),
    ]


def _wavelet_graphs(axes, signals, rate, settings: _Settings, approximation) -> list[dict]:
    wavelet = settings.wavelet
    psi, positions = wavelets.wavelet_function(wavelet, settings.wavelet_level)
    duration_ms = signals.shape[-1] / rate * 1000
    approx_times = np.arange(approximation.shape[-1]) * (duration_ms / approximation.shape[-1])
    return [
        _after_filter_graph(axes, signals, rate),
        line_graph("Wavelet function", {wavelet: psi}, positions,
                   axis_labels={"X": "Value", "y": "Time"}),
        line_graph("Wavelet Approximation", dict(zip(axes, approximation)), approx_times,
                   axis_labels={"X": "Approximation coefficient", "y": "Time (ms)"}),
    ]


BLOCK = Block(name="spectral-analysis", parameters=load_parameters("spectral-analysis"),
              compute=compute)
