"""Edge Impulse's Spectrogram block, implementation versions 1 to 4, numerically identical.

Per window: rectangular frames, power spectrum ``|rfft|**2 / fft_length`` and then

* versions 1 and 2: min-max normalisation over the whole spectrogram (silence gives zeros);
* version 3: audio outside [-1, 1] is first divided by 32768 (as float32, the int16 full
  scale); then dB relative to the noise floor (see `dsp.audio.framing.noise_floor_scale`), clipped
  to [0, 1];
* version 4: the same dB scaling without the rescale and without the upper clip, so int16
  audio gives values of about 1 to 2.5.

Features are frame-major: (frames, fft_length // 2 + 1) flattened row by row.
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
    single_axis_signals,
    stack_frames,
)
from dsp.core.block import Request, time_frequency_block

NAME = "spectrogram"
# Sample values are int16 audio when any lies outside [-1, 1]; this brings them to [-1, 1).
INT16_FULL_SCALE = 2**15


def spectrogram(raw: np.ndarray, sampling_freq: float, implementation_version: int, *,
                frame_length: float, frame_stride: float, fft_length: int,
                noise_floor_db: float) -> np.ndarray:
    """Spectrogram of each window, exactly as Edge Impulse computes it.

    Parameters
    ----------
    raw : numpy.ndarray
        Windows of shape (windows, samples, 1).
    sampling_freq : float
        In Hz.
    implementation_version : int
        1 to 4 (see the module docstring).
    frame_length, frame_stride : float
        In seconds.
    fft_length : int
        A power of 2; frames longer than it are truncated.
    noise_floor_db : float
        Versions 3 and 4: the level, in dB, that maps to 0.

    Returns
    -------
    numpy.ndarray
        float64 array of shape (windows, frames, fft_length // 2 + 1).

    Raises
    ------
    ConfigurationError
        See `dsp.audio.framing.single_axis_signals`, `check_fft_length` and `frame_layout`.
    """
    signals = single_axis_signals(raw, "Spectrogram")
    check_fft_length(fft_length)
    layout = frame_layout(signals.shape[1], sampling_freq, frame_length, frame_stride,
                          implementation_version)
    if implementation_version >= 3:
        check_noise_floor(noise_floor_db)

    if implementation_version == 3:
        signals = _rescale_int16_windows(signals)
    power = power_spectrum(stack_frames(signals, layout), fft_length)
    if implementation_version < 3:
        return min_max_normalize(power)
    return noise_floor_scale(power, noise_floor_db,
                             clip_max=1 if implementation_version == 3 else None)


def _rescale_int16_windows(signals: np.ndarray) -> np.ndarray:
    """Divide by 32768 (in float32, as upstream) the windows that have a sample outside [-1, 1]."""
    is_int16_scale = np.abs(signals).max(axis=-1) > 1
    if not is_int16_scale.any():
        return signals
    if is_int16_scale.all():
        return (signals / INT16_FULL_SCALE).astype(np.float32).astype(np.float64)
    signals = signals.copy()
    signals[is_int16_scale] = (signals[is_int16_scale] / INT16_FULL_SCALE).astype(np.float32)
    return signals


def _run(req: Request, raw: np.ndarray) -> np.ndarray:
    params = req.params
    return spectrogram(
        raw, req.sampling_freq, req.implementation_version,
        frame_length=params["frame_length"], frame_stride=params["frame_stride"],
        fft_length=params["fft_length"], noise_floor_db=params["noise_floor_db"],
    )


def _graphs(req: Request, result: np.ndarray) -> list[dict]:
    from dsp.graphs import image_graph

    return [image_graph("Spectrogram", result)]


BLOCK = time_frequency_block(NAME, _run, fft_used=lambda params: [params["fft_length"]],
                             graphs=_graphs)
