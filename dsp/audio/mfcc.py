"""Edge Impulse's MFCC block, implementation versions 1 to 4, numerically identical.

Per window: pre-emphasis of the raw (int16-valued) signal with wrap-around, rectangular
frames, power spectrum, mel filter energies (`dsp.audio.mel`; versions 1 to 3 use the upstream "old
mels" bin mapping), natural log, orthonormal DCT-II keeping the first `num_cepstral`
coefficients, coefficient 0 replaced by the log of the frame's total power, and finally
sliding-window mean and variance normalisation (`dsp.audio.mel.cmvnw`, float32) unless the window
size is 0.

Features are frame-major: (frames, num_cepstral) flattened row by row. Unlike upstream, whose
output width is a float (features / num_cepstral), the width here is the integer frame count.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from dsp.audio.framing import (
    check_fft_length,
    frame_layout,
    power_spectrum,
    preemphasis,
    single_axis_signals,
    stack_frames,
)
from dsp.audio.mel import cmvnw, frame_energies, mel_energies, mel_filterbank
from dsp.core.block import Request, time_frequency_block
from dsp.core.errors import ConfigurationError

NAME = "mfcc"


def mfcc(raw: np.ndarray, sampling_freq: float, implementation_version: int, *,
         num_cepstral: int, frame_length: float, frame_stride: float, num_filters: int,
         fft_length: int, win_size: int, low_frequency: float, high_frequency,
         pre_cof: float, pre_shift: int) -> np.ndarray:
    """Mel-frequency cepstral coefficients of each window, exactly as Edge Impulse computes them.

    Parameters
    ----------
    raw : numpy.ndarray
        Windows of shape (windows, samples, 1), int16-valued audio.
    sampling_freq : float
        In Hz.
    implementation_version : int
        1 to 4; versions 1 to 3 use the old mel bin mapping.
    num_cepstral : int
        Coefficients kept per frame, 1 to `num_filters`.
    frame_length, frame_stride : float
        In seconds.
    num_filters : int
        Mel filters, at least 2.
    fft_length : int
        A power of 2.
    win_size : int
        Frames in the normalisation window (odd), or 0 for no normalisation.
    low_frequency, high_frequency : float
        Band edges of the filterbank in Hz; a high frequency of None or 0 means fs / 2.
    pre_cof : float
        Pre-emphasis coefficient (0 disables it).
    pre_shift : int
        Pre-emphasis delay in samples, at least 1.

    Returns
    -------
    numpy.ndarray
        Shape (windows, frames, num_cepstral); float32 when normalised, float64 otherwise.

    Raises
    ------
    ConfigurationError
        Invalid framing, FFT length, filterbank, coefficient count, pre-emphasis shift or
        normalisation window; see `dsp.audio.framing` and `dsp.audio.mel`.
    """
    signals = single_axis_signals(raw, "MFCC")
    check_fft_length(fft_length)
    filterbank = mel_filterbank(num_filters, fft_length, sampling_freq, low_frequency,
                                high_frequency, old_mels=implementation_version <= 3)
    if not 1 <= num_cepstral <= num_filters:
        raise ConfigurationError(
            f"Number of coefficients must be between 1 and the filter number ({num_filters}); "
            f"got {num_cepstral}."
        )
    if win_size < 0:
        raise ConfigurationError(
            f"Normalization window size must be 0 (no normalization) or a positive odd number "
            f"of frames; got {win_size}."
        )
    layout = frame_layout(signals.shape[1], sampling_freq, frame_length, frame_stride,
                          implementation_version)

    emphasized = preemphasis(signals, pre_cof, pre_shift)
    power = power_spectrum(stack_frames(emphasized, layout), fft_length)
    cepstra = cepstral_coefficients(mel_energies(power, filterbank), frame_energies(power),
                                    num_cepstral)
    if win_size == 0:
        return cepstra
    return cmvnw(cepstra, win_size, variance_normalization=True)


def cepstral_coefficients(energies: np.ndarray, total_energies: np.ndarray,
                          num_cepstral: int) -> np.ndarray:
    """First `num_cepstral` orthonormal DCT-II coefficients of the log mel energies.

    Coefficient 0 is replaced by the log of the frame's total power, which removes the DC
    component as speechpy does.

    Parameters
    ----------
    energies : numpy.ndarray
        Mel energies of shape (..., frames, filters), no zeros.
    total_energies : numpy.ndarray
        Total power of each frame, shape (..., frames), no zeros.
    num_cepstral : int

    Returns
    -------
    numpy.ndarray
        float64 array of shape (..., frames, num_cepstral).
    """
    cepstra = scipy.fft.dct(np.log(energies), type=2, axis=-1, norm="ortho")[..., :num_cepstral]
    cepstra[..., 0] = np.log(total_energies)
    return cepstra


def _run(req: Request, raw: np.ndarray) -> np.ndarray:
    params = req.params
    return mfcc(
        raw, req.sampling_freq, req.implementation_version,
        num_cepstral=params["num_cepstral"], frame_length=params["frame_length"],
        frame_stride=params["frame_stride"], num_filters=params["num_filters"],
        fft_length=params["fft_length"], win_size=params["win_size"],
        low_frequency=params["low_frequency"], high_frequency=params["high_frequency"],
        pre_cof=params["pre_cof"], pre_shift=params["pre_shift"],
    )


def _fft_used(params: dict) -> list[int]:
    # Upstream lists the filter number too (its DCT size on device).
    return [params["num_filters"], params["fft_length"]]


def _graphs(req: Request, result: np.ndarray) -> list[dict]:
    from dsp.graphs import image_graph

    return [image_graph("Cepstral Coefficients", result, y_label="Coefficient")]


BLOCK = time_frequency_block(NAME, _run, fft_used=_fft_used, graphs=_graphs)
