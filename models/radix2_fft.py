"""The power spectrum of real frames as a radix-2 FFT written in elementwise ops, for TFLM.

TFLM has no complex types and no RFFT2D (and Edge Impulse's TFLM fork computes RFFT2D wrongly),
so the raw-window model cannot use an FFT op. A dense float32 DFT matrix runs everywhere but is
large (1.05 MB for 512 points) and not exact where float64 is: bins that are exactly zero in the
server's numpy FFT (all but bin 0 for a DC offset, the missing harmonics of an on-bin tone or a
square wave) come out at eps x the signal, which for full-scale audio is above a -85 dB noise
floor.

Here the FFT is decimation in frequency, one stage per halving of the block length L:

    a[j] = x[j] + x[j + L/2],    b[j] = (x[j] - x[j + L/2]) * W_L^j,    j < L/2

on [frames, blocks, L] tensors, with the complex values as two real tensors. A signal whose period
divides L/2 gives x[j] - x[j + L/2] = 0 exactly (sums of int16 values stay below 2^24, so they
are exact), and the zero stays zero through every later stage, as in numpy's FFT; the twiddle
factors on the axes (1, -i, ...) are exact. After log2(N) stages bin k sits at position
bitreverse(k), and one GATHER takes bins 0..N/2 in order. Constants: N - 1 complex twiddles and
N/2 + 1 indices, about 4.4 KB for 512 points.

The same code runs on numpy arrays (the reference the tests compare with numpy's float64 FFT)
and builds the TF graph of `models.raw_window_model`: only slicing, +, -, * and the `Backend`'s
four functions are used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["Backend", "NUMPY", "check_length", "twiddles", "bit_reversed_bins", "power_spectrum",
           "constant_bytes"]


@dataclass(frozen=True)
class Backend:
    concat: Callable[[list, int], Any]
    reshape: Callable[[Any, list], Any]
    gather: Callable[[Any, np.ndarray, int], Any]
    constant: Callable[[np.ndarray], Any]


NUMPY = Backend(
    concat=lambda parts, axis: np.concatenate(parts, axis=axis),
    reshape=lambda x, shape: np.reshape(x, shape),
    gather=lambda x, indices, axis: np.take(x, indices, axis=axis),
    constant=lambda values: values,
)


def check_length(fft_length: int) -> None:
    if fft_length < 2 or fft_length & (fft_length - 1):
        raise ValueError(f"The radix-2 FFT needs a power-of-two length >= 2; got {fft_length}.")


def twiddles(length: int) -> tuple[np.ndarray, np.ndarray]:
    """W_L^j = exp(-2 pi i j / L) for j < L/2, float32, exact on the axes (cos(pi/2) is 6e-17
    in float64; an exact 0 keeps exact-zero bins zero)."""
    j = np.arange(length // 2)
    angle = -2.0 * np.pi * j / length
    real, imag = np.cos(angle), np.sin(angle)
    on_axis = (4 * j) % length == 0
    quadrant = (4 * j // length) % 4  # j = 0 -> 1, j = L/4 -> -i
    real = np.where(on_axis, np.choose(quadrant, [1.0, 0.0, -1.0, 0.0]), real)
    imag = np.where(on_axis, np.choose(quadrant, [0.0, -1.0, 0.0, 1.0]), imag)
    return real.astype(np.float32), imag.astype(np.float32)


def bit_reversed_bins(fft_length: int) -> np.ndarray:
    """Positions of bins 0..N/2 in the decimation-in-frequency output (int32)."""
    bits = fft_length.bit_length() - 1
    bins = np.arange(fft_length // 2 + 1)
    reversed_ = np.zeros_like(bins)
    for bit in range(bits):
        reversed_ |= ((bins >> bit) & 1) << (bits - 1 - bit)
    return reversed_.astype(np.int32)


def constant_bytes(fft_length: int) -> int:
    """Bytes of the FFT's constants: the twiddles of every stage and the gather indices."""
    check_length(fft_length)
    twiddle_count = sum(length // 2 for length in _stage_lengths(fft_length))
    return 4 * (2 * twiddle_count + fft_length // 2 + 1)


def _stage_lengths(fft_length: int) -> list[int]:
    return [fft_length >> stage for stage in range(fft_length.bit_length() - 1)]


def power_spectrum(frames, frame_count: int, fft_length: int, backend: Backend = NUMPY):
    """|rfft(frames)|^2 / N, float32 arithmetic.

    Parameters
    ----------
    frames : array or tensor
        float32 [frame_count, fft_length] (already zero-padded).
    backend : Backend
        `NUMPY`, or TF's functions to build a graph.

    Returns
    -------
    array or tensor
        float32 [frame_count, N/2 + 1].
    """
    check_length(fft_length)
    real = backend.reshape(frames, [frame_count, 1, fft_length])
    imag = None  # real input: the first stage has no imaginary part
    blocks = 1
    for length in _stage_lengths(fft_length):
        half = length // 2
        twiddle_re, twiddle_im = (backend.constant(part) for part in twiddles(length))
        top_re, bottom_re = real[:, :, :half], real[:, :, half:]
        difference_re = top_re - bottom_re
        if imag is None:
            sum_re, sum_im = top_re + bottom_re, None
            rotated_re, rotated_im = difference_re * twiddle_re, difference_re * twiddle_im
        else:
            top_im, bottom_im = imag[:, :, :half], imag[:, :, half:]
            difference_im = top_im - bottom_im
            sum_re, sum_im = top_re + bottom_re, top_im + bottom_im
            if length == 2:  # W_2^0 = 1
                rotated_re, rotated_im = difference_re, difference_im
            else:
                rotated_re = difference_re * twiddle_re - difference_im * twiddle_im
                rotated_im = difference_re * twiddle_im + difference_im * twiddle_re
        blocks *= 2
        real = backend.reshape(backend.concat([sum_re, rotated_re], 2), [frame_count, blocks, half])
        if sum_im is None:
            # The sums of real values are real. Their zero imaginary part is rotated_im * 0, a
            # MUL both TFLM trees run; a zeros constant would cost frames x L/2 floats of flash.
            imag = backend.reshape(backend.concat([rotated_im * 0.0, rotated_im], 2),
                                   [frame_count, blocks, half])
        else:
            imag = backend.reshape(backend.concat([sum_im, rotated_im], 2), [frame_count, blocks, half])
    power = backend.reshape(real * real + imag * imag, [frame_count, fft_length])
    return backend.gather(power, bit_reversed_bins(fft_length), 1) * np.float32(1.0 / fft_length)
