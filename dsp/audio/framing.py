"""The front end the audio blocks share: window checks, framing, power spectrum, dB scaling.

This reproduces the parts of Edge Impulse's speechpy fork that the spectrogram, MFE and MFCC
blocks use, vectorised over windows and frames: every function takes a batch, shaped
(windows, ...), so one window is simply a batch of one.

Conventions
-----------
* Frame lengths and strides are given in seconds and turned into whole samples per
  `implementation_version` (see `frame_length_in_samples`).
* Frames are rectangular (no window function), not padded: samples after the last whole frame
  are dropped.
* A frame longer than the FFT is truncated to its first `fft_length` samples; a shorter one is
  zero-padded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from dsp.core.errors import ConfigurationError

__all__ = [
    "MIN_FRAME_SAMPLES",
    "MAX_FRAMES",
    "MAX_FFT_LENGTH",
    "FrameLayout",
    "single_axis_signals",
    "check_fft_length",
    "ceil_unless_nearly_whole",
    "frame_length_in_samples",
    "frame_stride_in_samples",
    "frame_count",
    "frame_layout",
    "stack_frames",
    "power_spectrum",
    "preemphasis",
    "noise_floor_scale",
    "check_noise_floor",
    "min_max_normalize",
]

# Edge Impulse's limits: shorter frames carry no usable spectrum, more frames overflow the
# devices' feature buffers.
MIN_FRAME_SAMPLES = 4
MAX_FRAMES = 500
# Upstream has no upper bound; this one keeps a typo from allocating gigabytes per request
# (500 frames of a 16384-point spectrum are 65 MB).
MAX_FFT_LENGTH = 16384

# speechpy rounds a fractional sample count up, unless it is this close above a whole number:
# 0.018 s * 16000 Hz is 288.00000000000006 in floating point and must stay 288.
_NEARLY_WHOLE = 0.001


@dataclass(frozen=True)
class FrameLayout:
    """How a window is cut into frames.

    Attributes
    ----------
    length : int
        Samples per frame.
    stride : int
        Samples between the starts of two consecutive frames.
    count : int
        Number of frames in the window.
    """

    length: int
    stride: int
    count: int


def single_axis_signals(raw: np.ndarray, block_title: str) -> np.ndarray:
    """The one input axis of a batch of windows, as float64.

    Parameters
    ----------
    raw : numpy.ndarray
        Windows of shape (windows, samples, axes).
    block_title : str
        The block's name for the error message, e.g. "Spectrogram".

    Returns
    -------
    numpy.ndarray
        float64 array of shape (windows, samples).

    Raises
    ------
    ConfigurationError
        If there is not exactly one axis, or no sample.
    """
    raw = np.asarray(raw)
    if raw.ndim != 3:
        raise ConfigurationError(
            f"Expected windows shaped (windows, samples, axes); got an array of shape {raw.shape}."
        )
    n_axes = raw.shape[2]
    if n_axes != 1:
        raise ConfigurationError(
            f"The {block_title} block takes exactly one axis, but this window has {n_axes}. "
            f"Add one {block_title} block per axis under Create impulse."
        )
    if raw.shape[1] == 0:
        raise ConfigurationError("The window is empty: it must hold at least one sample.")
    return np.asarray(raw[:, :, 0], dtype=np.float64)


def check_fft_length(fft_length: int) -> None:
    """Reject an FFT length that is not a power of 2 (1, 2, 4, ...).

    Raises
    ------
    ConfigurationError
        If `fft_length` is not a positive power of 2.
    """
    if fft_length < 1 or not math.log2(fft_length).is_integer():
        raise ConfigurationError(
            f"FFT length must be a power of 2 (for example 64, 128, 256 or 512); got {fft_length}."
        )
    if fft_length > MAX_FFT_LENGTH:
        raise ConfigurationError(
            f"FFT length must be at most {MAX_FFT_LENGTH}; got {fft_length}."
        )


def ceil_unless_nearly_whole(value: float) -> int:
    """Round up, except when `value` lies less than 0.001 above a whole number (round down then).

    This absorbs the floating-point error of seconds * Hz (0.018 * 16000 = 288.00000000000006).
    """
    whole = math.floor(value)
    if whole < value < whole + _NEARLY_WHOLE:
        return int(whole)
    return int(math.ceil(value))


def frame_length_in_samples(sampling_freq: float, frame_length: float,
                            implementation_version: int) -> int:
    """Samples per frame.

    Parameters
    ----------
    sampling_freq : float
        In Hz.
    frame_length : float
        In seconds.
    implementation_version : int
        Version 1 rounds to the nearest sample (half to even); later versions round up, see
        `ceil_unless_nearly_whole`.

    Returns
    -------
    int
    """
    samples = sampling_freq * frame_length
    if implementation_version == 1:
        return int(np.round(samples))
    return ceil_unless_nearly_whole(samples)


def frame_stride_in_samples(sampling_freq: float, frame_stride: float) -> int:
    """Samples between frame starts (`frame_stride` in seconds), rounded up in every version."""
    return ceil_unless_nearly_whole(sampling_freq * frame_stride)


def frame_count(n_samples: int, length: int, stride: int, implementation_version: int) -> int:
    """Number of whole frames in a window; may be zero or negative when the frame does not fit.

    Version 1 counts one frame fewer than fit (floor((N - L) / S)); later versions count every
    frame that fits (floor((N - L + S) / S)).
    """
    if implementation_version == 1:
        return math.floor((n_samples - length) / stride)
    return math.floor((n_samples - (length - stride)) / stride)


def frame_layout(n_samples: int, sampling_freq: float, frame_length: float, frame_stride: float,
                 implementation_version: int) -> FrameLayout:
    """Validate the framing parameters against the window and return the frame layout.

    Parameters
    ----------
    n_samples : int
        Samples in the window.
    sampling_freq : float
        In Hz.
    frame_length, frame_stride : float
        In seconds.
    implementation_version : int
        1 to 4; see `frame_length_in_samples` and `frame_count`.

    Returns
    -------
    FrameLayout

    Raises
    ------
    ConfigurationError
        If the frame length or stride is under 4 samples, if the frame is longer than the window
        (no frame fits) or if there would be more than 500 frames.
    """
    if not sampling_freq > 0:
        raise ConfigurationError(f"The sampling frequency must be positive; got {sampling_freq} Hz.")
    # Compared in seconds, as Edge Impulse does, so that the same configurations pass.
    shortest = MIN_FRAME_SAMPLES / sampling_freq
    if frame_length < shortest:
        raise ConfigurationError(
            f"Frame length must be at least {MIN_FRAME_SAMPLES} samples ({shortest:g} s at "
            f"{sampling_freq:g} Hz); got {frame_length:g} s."
        )
    if frame_stride < shortest:
        raise ConfigurationError(
            f"Frame stride must be at least {MIN_FRAME_SAMPLES} samples ({shortest:g} s at "
            f"{sampling_freq:g} Hz); got {frame_stride:g} s."
        )
    length = frame_length_in_samples(sampling_freq, frame_length, implementation_version)
    stride = frame_stride_in_samples(sampling_freq, frame_stride)
    # In exact arithmetic no version fits a frame longer than the window; checking it directly
    # also covers absurd strides, for which the frame count's float division rounds up to 1.
    count = frame_count(n_samples, length, stride, implementation_version) if length <= n_samples else 0
    if count < 1:
        raise ConfigurationError(
            f"Frame length is larger than your window size: a frame of {frame_length:g} s is "
            f"{length} samples but the window holds {n_samples} samples"
            + (f" (version 1 also needs room for one stride of {stride} samples)"
               if implementation_version == 1 else "")
            + ". Decrease the frame length or increase the window size."
        )
    if count > MAX_FRAMES:
        raise ConfigurationError(
            f"Number of frames is larger than {MAX_FRAMES} ({count}): increase your frame stride "
            f"or decrease your window size."
        )
    return FrameLayout(length=length, stride=stride, count=count)


def stack_frames(signals: np.ndarray, layout: FrameLayout) -> np.ndarray:
    """Cut each signal into frames, without copying.

    Parameters
    ----------
    signals : numpy.ndarray
        Shape (..., samples).
    layout : FrameLayout
        From `frame_layout`, for this number of samples.

    Returns
    -------
    numpy.ndarray
        Read-only strided view of shape (..., layout.count, layout.length).
    """
    windows = np.lib.stride_tricks.sliding_window_view(signals, layout.length, axis=-1)
    return windows[..., : (layout.count - 1) * layout.stride + 1 : layout.stride, :]


def power_spectrum(frames: np.ndarray, fft_length: int) -> np.ndarray:
    """Periodogram of each frame: |rfft(frame, fft_length)|**2 / fft_length.

    Parameters
    ----------
    frames : numpy.ndarray
        Shape (..., frame_samples). Frames longer than `fft_length` are truncated to their first
        `fft_length` samples, shorter ones zero-padded.
    fft_length : int

    Returns
    -------
    numpy.ndarray
        float64 array of shape (..., fft_length // 2 + 1).
    """
    # Slicing first avoids copying the samples rfft would throw away.
    spectrum = np.fft.rfft(frames[..., :fft_length], n=fft_length, axis=-1)
    # |X| then square (not re*re + im*im), in the same order as speechpy, for bit parity.
    return (1.0 / fft_length) * np.square(np.abs(spectrum))


def preemphasis(signals: np.ndarray, coefficient: float, shift: int = 1) -> np.ndarray:
    """y[n] = x[n] - coefficient * x[n - shift], with the signal wrapping around at its start.

    The wrap-around (np.roll: sample 0 uses the last samples) is Edge Impulse's behaviour and is
    kept for parity.

    Parameters
    ----------
    signals : numpy.ndarray
        Shape (..., samples); the dtype is kept (float32 stays float32).
    coefficient : float
        0 disables the filter.
    shift : int
        Delay in samples, at least 1.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    ConfigurationError
        If `shift` is not a whole number of at least 1.
    """
    if isinstance(shift, float):
        if not shift.is_integer():
            raise ConfigurationError(f"Pre-emphasis shift must be a whole number; got {shift}.")
        shift = int(shift)
    if shift < 1:
        raise ConfigurationError(
            f"Pre-emphasis shift must be at least 1 sample; got {shift}. "
            f"To disable pre-emphasis set its coefficient to 0."
        )
    return signals - coefficient * np.roll(signals, shift, axis=-1)


def check_noise_floor(noise_floor_db: float) -> None:
    """Reject the one noise floor the dB scaling cannot use (12 dB: division by zero)."""
    if noise_floor_db == 12:
        raise ConfigurationError(
            "Noise floor must not be 12 dB: the scale maps the noise floor to 0 and 12 dB above "
            "it to 1. Use a negative value such as -52 dB."
        )


def noise_floor_scale(power: np.ndarray, noise_floor_db: float,
                      clip_max: Optional[float]) -> np.ndarray:
    """Power in dB, scaled so that the noise floor is 0 and 12 dB above it 1.

    Computes ``(10 log10(max(power, 1e-30)) - floor) / (12 - floor)``, clipped to
    [0, clip_max] (no upper bound when `clip_max` is None).

    Parameters
    ----------
    power : numpy.ndarray
        Non-negative powers, any shape.
    noise_floor_db : float
        Everything quieter becomes 0; must not be 12 (see `check_noise_floor`).
    clip_max : float or None

    Returns
    -------
    numpy.ndarray
        float64, same shape as `power`.
    """
    decibels = 10 * np.log10(np.clip(power, 1e-30, None))
    scaled = (decibels - noise_floor_db) / ((-1 * noise_floor_db) + 12)
    return np.clip(scaled, 0, clip_max)


def min_max_normalize(values: np.ndarray) -> np.ndarray:
    """Scale each window (first axis) to [0, 1] by its own minimum and maximum.

    A window whose values are all equal (silence) becomes all zeros instead of NaN, as Edge
    Impulse's blocks do. The dtype is kept.

    Parameters
    ----------
    values : numpy.ndarray
        Shape (windows, ...).

    Returns
    -------
    numpy.ndarray
        Same shape and dtype.
    """
    reduce_axes = tuple(range(1, values.ndim))
    lowest = values.min(axis=reduce_axes, keepdims=True)
    span = values.max(axis=reduce_axes, keepdims=True) - lowest
    flat = span == 0
    # Divide by 1 where the window is flat: (x - min) is 0 there, so the result is 0 and no
    # 0/0 is ever evaluated.
    return (values - lowest) / np.where(flat, np.ones_like(span), span)
