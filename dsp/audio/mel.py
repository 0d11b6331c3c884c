"""Mel filterbanks and sliding-window normalisation, as Edge Impulse's MFE and MFCC blocks use them.

Mel scale: ``mel = 1127 ln(1 + f / 700)``. A bank of ``n`` triangular filters spans
``n + 2`` points equally spaced in mel between the low and high frequencies; each point is
mapped to an FFT bin with ``floor((K + 1) * f / fs)``.

Implementation versions 1 to 3 use ``K = fft_length // 2 + 1`` there ("old mels", an upstream
bug kept for compatibility: the filters only cover about 0 to fs / 4); version 4 uses
``K = fft_length``, so the filters reach fs / 2.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

import numpy as np

from dsp.audio.framing import MAX_FFT_LENGTH
from dsp.core.errors import ConfigurationError

__all__ = [
    "ZERO_ENERGY",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "mel_energies",
    "frame_energies",
    "cmvnw",
]

# Exact zeros are replaced by this before any logarithm, as speechpy does.
ZERO_ENERGY = 1e-10

# speechpy lowers the last band edge by this many Hz so that fs / 2 never lands one bin too
# high through rounding; Edge Impulse's C++ SDK does the same.
_TOP_EDGE_OFFSET_HZ = 0.001

# When suggesting a larger FFT for an empty filter, stop looking beyond this length.
_LARGEST_SUGGESTED_FFT = MAX_FFT_LENGTH
# Upstream sets no upper bounds; these keep one request from costing seconds or gigabytes
# (the filterbank is filters x bins; normalisation costs one pass per frame of its window, and a
# window holds at most 500 frames, so wider windows only repeat the mirrored frames).
MAX_FILTERS = 512
MAX_NORMALIZATION_WINDOW = 1001


def hz_to_mel(frequency):
    """Frequency in Hz to mel: 1127 ln(1 + f / 700)."""
    return 1127 * np.log(1 + frequency / 700.0)


def mel_to_hz(mel):
    """Mel to frequency in Hz, the inverse of `hz_to_mel`."""
    return 700 * (np.exp(mel / 1127.0) - 1)


def mel_filterbank(num_filters: int, fft_length: int, sampling_freq: float,
                   low_frequency: Optional[float] = 0, high_frequency: Optional[float] = None,
                   old_mels: bool = False) -> np.ndarray:
    """Triangular mel filters over the bins of an rfft.

    Parameters
    ----------
    num_filters : int
        Number of filters, at least 2.
    fft_length : int
        FFT length; the filters have fft_length // 2 + 1 taps.
    sampling_freq : float
        In Hz.
    low_frequency : float or None
        Lowest band edge in Hz (None means 0).
    high_frequency : float or None
        Highest band edge in Hz; None or 0 means sampling_freq / 2. At most sampling_freq / 2.
    old_mels : bool
        Map band edges to bins as implementation versions 1 to 3 do (see the module docstring).

    Returns
    -------
    numpy.ndarray
        Read-only float64 array of shape (num_filters, fft_length // 2 + 1); row i is filter i,
        peaking at 1.

    Raises
    ------
    ConfigurationError
        For fewer than 2 filters, a frequency range outside [0, sampling_freq / 2] or empty,
        or when a filter covers no FFT bin (the message says how many filters would fit and
        which FFT length would fit them all).
    """
    if not 2 <= num_filters <= MAX_FILTERS:
        raise ConfigurationError(
            f"Filter number must be from 2 to {MAX_FILTERS}; got {num_filters}."
        )
    low, high = _band_edges(sampling_freq, low_frequency, high_frequency)
    bank = _triangular_filters(num_filters, fft_length, float(sampling_freq), low, high, old_mels)
    empty = int(np.count_nonzero(~bank.any(axis=1)))
    if empty:
        raise ConfigurationError(
            _empty_filter_message(empty, num_filters, fft_length, sampling_freq, low, high, old_mels)
        )
    return bank


def _band_edges(sampling_freq: float, low_frequency: Optional[float],
                high_frequency: Optional[float]) -> tuple[float, float]:
    """Validated (low, high) band edges in Hz; unset values take 0 and the Nyquist frequency."""
    nyquist = sampling_freq / 2
    low = 0.0 if low_frequency is None else float(low_frequency)
    high = float(high_frequency) if high_frequency else nyquist
    if low < 0:
        raise ConfigurationError(f"Low frequency must be 0 Hz or more; got {low:g} Hz.")
    if high > nyquist:
        raise ConfigurationError(
            f"High frequency must be at most half the sampling frequency ({nyquist:g} Hz); "
            f"got {high:g} Hz. Set it to 0 to use {nyquist:g} Hz."
        )
    if low >= high:
        raise ConfigurationError(
            f"Low frequency ({low:g} Hz) must be below the high frequency ({high:g} Hz)."
        )
    return low, high


@lru_cache(maxsize=64)
def _triangular_filters(num_filters: int, fft_length: int, sampling_freq: float, low: float,
                        high: float, old_mels: bool) -> np.ndarray:
    """The filterbank matrix, without checks; cached because every window of a batch shares it."""
    n_bins = fft_length // 2 + 1
    edge_bins = _edge_bins(num_filters, fft_length, sampling_freq, low, high, old_mels)
    left = edge_bins[:-2, None]
    middle = edge_bins[1:-1, None]
    right = edge_bins[2:, None]
    k = np.arange(n_bins)[None, :]
    # Rising edge on (left, middle], falling edge on [middle, right): the falling edge wins at
    # the peak. np.divide with `where` never evaluates the degenerate (zero-width) edges.
    rising = np.divide(k - left, middle - left, out=np.zeros((num_filters, n_bins)),
                       where=(left < k) & (k <= middle))
    falling_part = (middle <= k) & (k < right)
    falling = np.divide(right - k, right - middle, out=np.zeros((num_filters, n_bins)),
                        where=falling_part)
    bank = np.where(falling_part, falling, rising)
    bank.setflags(write=False)
    return bank


def _edge_bins(num_filters: int, fft_length: int, sampling_freq: float, low: float, high: float,
               old_mels: bool) -> np.ndarray:
    """The FFT bins of the num_filters + 2 band edges, equally spaced in mel."""
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(low), hz_to_mel(high), num_filters + 2))
    edges_hz[-1] -= _TOP_EDGE_OFFSET_HZ
    bins_per_hz_scale = fft_length // 2 + 1 if old_mels else fft_length
    return np.floor((bins_per_hz_scale + 1) * edges_hz / sampling_freq).astype(int)


def _all_filters_cover_a_bin(num_filters: int, fft_length: int, sampling_freq: float, low: float,
                             high: float, old_mels: bool) -> bool:
    """Whether no filter row would be all zeros, from the band edges alone (no matrix).

    A filter is empty exactly when its three edges fall in one bin: otherwise its peak bin
    (or the bin after its left edge) gets a non-zero weight.
    """
    edges = _edge_bins(num_filters, fft_length, sampling_freq, low, high, old_mels)
    return not np.any((edges[:-2] == edges[1:-1]) & (edges[1:-1] == edges[2:]))


def _empty_filter_message(empty: int, num_filters: int, fft_length: int, sampling_freq: float,
                          low: float, high: float, old_mels: bool) -> str:
    fitting = next(
        (n for n in range(num_filters - 1, 1, -1)
         if _all_filters_cover_a_bin(n, fft_length, float(sampling_freq), low, high, old_mels)),
        None,
    )
    longer_fft = fft_length * 2
    while longer_fft <= _LARGEST_SUGGESTED_FFT and not _all_filters_cover_a_bin(
            num_filters, longer_fft, float(sampling_freq), low, high, old_mels):
        longer_fft *= 2
    fixes = []
    if fitting is not None:
        fixes.append(f"lower the filter number to {fitting} or less")
    if longer_fft <= _LARGEST_SUGGESTED_FFT:
        fixes.append(f"increase the FFT length to {longer_fft}")
    else:
        fixes.append("widen the frequency range")
    return (
        f"At least one row of the mel filterbank contains all zeros: {empty} of the "
        f"{num_filters} mel filters cover no FFT bin (FFT length {fft_length}, {low:g} to "
        f"{high:g} Hz). To fix it, " + " or ".join(fixes) + "."
    )


def mel_energies(power: np.ndarray, filterbank: np.ndarray) -> np.ndarray:
    """Energy of each frame in each mel filter, with exact zeros replaced by 1e-10.

    Parameters
    ----------
    power : numpy.ndarray
        Power spectra of shape (..., frames, fft_length // 2 + 1).
    filterbank : numpy.ndarray
        From `mel_filterbank`, shape (filters, fft_length // 2 + 1).

    Returns
    -------
    numpy.ndarray
        float64 array of shape (..., frames, filters).
    """
    energies = power @ filterbank.T
    return np.where(energies == 0, ZERO_ENERGY, energies)


def frame_energies(power: np.ndarray) -> np.ndarray:
    """Total power of each frame (sum over all bins), with exact zeros replaced by 1e-10.

    Parameters
    ----------
    power : numpy.ndarray
        Shape (..., frames, bins).

    Returns
    -------
    numpy.ndarray
        Shape (..., frames).
    """
    energies = np.sum(power, axis=-1)
    return np.where(energies == 0, ZERO_ENERGY, energies)


def cmvnw(features: np.ndarray, win_size: int, variance_normalization: bool = False) -> np.ndarray:
    """Cepstral mean (and variance) normalisation over a sliding window of frames.

    For each frame, the mean of the `win_size` frames centred on it is subtracted; with
    `variance_normalization`, the result is then divided by the standard deviation (ddof 0) of
    the mean-subtracted values over the same window, plus 1e-10. Near the ends the frames are
    mirrored (numpy 'symmetric' padding, repeated when the window is longer than the input).

    Parameters
    ----------
    features : numpy.ndarray
        Shape (windows, frames, coefficients).
    win_size : int
        Frames in the sliding window: odd and at least 1.
    variance_normalization : bool

    Returns
    -------
    numpy.ndarray
        float32 array, same shape (speechpy keeps its results in float32 buffers).

    Raises
    ------
    ConfigurationError
        If `win_size` is not a positive odd number.
    """
    if win_size < 1 or win_size % 2 != 1 or win_size > MAX_NORMALIZATION_WINDOW:
        raise ConfigurationError(
            f"Normalization window size (win_size) must be a positive odd number of frames up to "
            f"{MAX_NORMALIZATION_WINDOW}, for example 101; got {win_size}."
        )
    frames = features.shape[1]
    padded = _pad_frames(features, win_size)
    window_mean = _window_sums(padded, frames, win_size) / win_size
    mean_subtracted = (features - window_mean).astype(np.float32)
    if not variance_normalization:
        return mean_subtracted
    # Standard deviation in float32, as speechpy's float32 buffers give it.
    padded = _pad_frames(mean_subtracted, win_size)
    window_mean = _window_sums(padded, frames, win_size) / win_size
    squared_deviations = np.square(padded[:, :frames] - window_mean)
    for offset in range(1, win_size):
        squared_deviations += np.square(padded[:, offset:offset + frames] - window_mean)
    spread = np.sqrt(squared_deviations / win_size)
    return mean_subtracted / (spread + np.float32(1e-10))


def _pad_frames(values: np.ndarray, win_size: int) -> np.ndarray:
    """Mirror (win_size - 1) / 2 frames onto both ends of axis 1 (numpy 'symmetric' padding)."""
    pad = (win_size - 1) // 2
    return np.pad(values, ((0, 0), (pad, pad), (0, 0)), mode="symmetric")


def _window_sums(padded: np.ndarray, frames: int, win_size: int) -> np.ndarray:
    """Sum of each run of `win_size` consecutive frames (axis 1), in the padded array's dtype.

    One vectorised add per offset in the window, so frames are added first to last, the order
    in which numpy reduces one (win_size, coefficients) window along its first axis as speechpy
    does: the sums match speechpy's bit for bit, not just to rounding.
    """
    sums = padded[:, :frames].copy()
    for offset in range(1, win_size):
        sums += padded[:, offset:offset + frames]
    return sums
