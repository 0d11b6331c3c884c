"""Edge Impulse's MFE (mel-filterbank energy) block, implementation versions 1 to 4, identical.

Per window: rectangular frames, power spectrum, energy in each triangular mel filter
(`dsp.audio.mel`; versions 1 to 3 use the upstream "old mels" bin mapping), and then

* versions 1 and 2: sliding-window mean normalisation (`dsp.audio.mel.cmvnw`, float32), followed by
  a min-max normalisation of the window unless its minimum or maximum is exactly 0;
* versions 3 and 4: the signal is first divided by 32768 (float32) and pre-emphasised
  (coefficient 0.98, shift 1, wrapping around); energies are turned into dB relative to the
  noise floor, clipped to [0, 1] and quantised to multiples of 1/256 as uint8 does it: a value
  that rounds to 256 wraps around to 0, as upstream.

Features are frame-major: (frames, num_filters) flattened row by row.
"""
from __future__ import annotations

import numpy as np

from dsp.audio.framing import (
    check_fft_length,
    check_noise_floor,
    frame_layout,
    min_max_normalize,
    noise_floor_scale,
    power_spectrum,
    preemphasis,
    single_axis_signals,
    stack_frames,
)
from dsp.audio.mel import cmvnw, mel_energies, mel_filterbank
from dsp.core.block import Request, time_frequency_block

NAME = "mfe"
INT16_FULL_SCALE = 2**15
# Fixed in versions 3 and 4 (not parameters).
PREEMPHASIS_COEFFICIENT = 0.98
PREEMPHASIS_SHIFT = 1
QUANTIZATION_LEVELS = 2**8


def mfe(raw: np.ndarray, sampling_freq: float, implementation_version: int, *,
        frame_length: float, frame_stride: float, num_filters: int, fft_length: int,
        low_frequency: float, high_frequency, win_size: int, noise_floor_db: float) -> np.ndarray:
    """Mel-filterbank energies of each window, exactly as Edge Impulse computes them.

    Parameters
    ----------
    raw : numpy.ndarray
        Windows of shape (windows, samples, 1), int16-valued audio.
    sampling_freq : float
        In Hz.
    implementation_version : int
        1 to 4 (see the module docstring).
    frame_length, frame_stride : float
        In seconds.
    num_filters : int
        Mel filters, at least 2.
    fft_length : int
        A power of 2.
    low_frequency, high_frequency : float
        Band edges of the filterbank in Hz; a high frequency of None or 0 means fs / 2.
    win_size : int
        Versions 1 and 2: frames in the normalisation window (odd).
    noise_floor_db : float
        Versions 3 and 4: the level, in dB, that maps to 0.

    Returns
    -------
    numpy.ndarray
        Array of shape (windows, frames, num_filters): float32 values (exact multiples of 1/256
        in versions 3 and 4).

    Raises
    ------
    ConfigurationError
        Invalid framing, FFT length, filterbank or normalisation window; see `dsp.audio.framing` and
        `dsp.audio.mel`.
    """
    signals = single_axis_signals(raw, "MFE")
    check_fft_length(fft_length)
    filterbank = mel_filterbank(num_filters, fft_length, sampling_freq, low_frequency,
                                high_frequency, old_mels=implementation_version <= 3)
    layout = frame_layout(signals.shape[1], sampling_freq, frame_length, frame_stride,
                          implementation_version)
    if implementation_version >= 3:
        check_noise_floor(noise_floor_db)
        scaled = (signals / INT16_FULL_SCALE).astype(np.float32)
        signals = preemphasis(scaled, PREEMPHASIS_COEFFICIENT, PREEMPHASIS_SHIFT).astype(np.float64)

    energies = mel_energies(power_spectrum(stack_frames(signals, layout), fft_length), filterbank)
    if implementation_version < 3:
        return _normalize_v1(cmvnw(energies, win_size, variance_normalization=False))
    return _quantize_like_uint8(noise_floor_scale(energies, noise_floor_db, clip_max=1))


def _normalize_v1(normalized: np.ndarray) -> np.ndarray:
    """Min-max scale each window, except those whose minimum or maximum is exactly 0."""
    scaled = min_max_normalize(normalized)
    reduce_axes = tuple(range(1, normalized.ndim))
    has_zero_extreme = ((normalized.min(axis=reduce_axes, keepdims=True) == 0)
                        | (normalized.max(axis=reduce_axes, keepdims=True) == 0))
    return np.where(has_zero_extreme, normalized, scaled)


def _quantize_like_uint8(values: np.ndarray) -> np.ndarray:
    """Round values in [0, 1] to k / 256 (half to even); 256 / 256 wraps to 0 like uint8 does."""
    levels = np.around(values * QUANTIZATION_LEVELS)
    levels = np.where(levels >= QUANTIZATION_LEVELS, 0, levels)
    return (levels / QUANTIZATION_LEVELS).astype(np.float32)


def _run(req: Request, raw: np.ndarray) -> np.ndarray:
    params = req.params
    return mfe(
        raw, req.sampling_freq, req.implementation_version,
        frame_length=params["frame_length"], frame_stride=params["frame_stride"],
        num_filters=params["num_filters"], fft_length=params["fft_length"],
        low_frequency=params["low_frequency"], high_frequency=params["high_frequency"],
        win_size=params["win_size"], noise_floor_db=params["noise_floor_db"],
    )


def _graphs(req: Request, result: np.ndarray) -> list[dict]:
    from dsp.graphs import image_graph

    params = req.params
    filterbank = mel_filterbank(params["num_filters"], params["fft_length"], req.sampling_freq,
                                params["low_frequency"], params["high_frequency"],
                                old_mels=req.implementation_version <= 3)
    return [image_graph("Mel Energies (DSP Output)", result, y_label="Mel filter"),
            image_graph("FFT Bin Weighting", filterbank, x_label="Mel filter", y_label="FFT bin")]


BLOCK = time_frequency_block(NAME, _run, fft_used=lambda params: [params["fft_length"]],
                             graphs=_graphs)
