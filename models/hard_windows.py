"""Windows that are hard for a float32 re-implementation of the audio front-ends.

A float32 front-end (such as the one inside `<name>.raw.tflite`) must agree with the server's
float64 numpy blocks on every window Studio may send, not only on typical audio. The hard
cases are those where float64 gives exact zeros that float32 rounding can turn into small
non-zero powers, which the dB scaling then lifts far above the noise floor:

* silence, 1-LSB noise and constant (DC) windows, up to full scale;
* full-scale tones at fs/2, fs/4, fs/8 and fs/16, which sit exactly on a DFT bin for every
  power-of-2 FFT length of at least 16 (so their other bins are exactly zero in float64);
* square waves (exactly periodic, full scale) and clipped noise (many samples at the rails);
* a chirp, realistic noise, an impulse train;
* float signals in [-1, 1], which take the other branch of spectrogram v3's int16 rescale.

Every window is int16-valued (integers in [-32768, 32767], as Studio sends audio) unless its
name starts with ``float_``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["INT16_MIN", "INT16_MAX", "hard_windows"]

INT16_MIN = -(2**15)
INT16_MAX = 2**15 - 1


def _int16(values: np.ndarray) -> np.ndarray:
    """Round and clip to int16 range, returned as float64 (what `/run` receives)."""
    return np.clip(np.round(values), INT16_MIN, INT16_MAX).astype(np.float64)


def hard_windows(window_samples: int, sampling_freq: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Named test windows, each a float64 array of `window_samples` samples.

    Parameters
    ----------
    window_samples : int
        Samples per window (one axis).
    sampling_freq : float
        In Hz; used for the chirp and the realistic signals, whose content is given in Hz.
    seed : int
        Seed of the noise generators; the same seed gives the same windows.

    Returns
    -------
    dict of str to numpy.ndarray
        Window name to 1-D float64 array. Names are stable, so results can be reported per
        window. Names starting with ``float_`` hold floats in [-1, 1]; all others hold
        int16 values.
    """
    n_samples = int(window_samples)
    if n_samples < 1:
        raise ValueError(f"window_samples must be at least 1; got {window_samples}.")
    rng = np.random.default_rng(seed)
    n = np.arange(n_samples)
    t = n / float(sampling_freq)
    nyquist = sampling_freq / 2

    windows: dict[str, np.ndarray] = {
        "zeros": np.zeros(n_samples),
        "lsb_noise": rng.integers(-1, 2, n_samples).astype(np.float64),
        # DC: 1 stays inside [-1, 1] (no v3 rescale), the others do not.
        "dc_1": np.full(n_samples, 1.0),
        "dc_100": np.full(n_samples, 100.0),
        "dc_minus_1000": np.full(n_samples, -1000.0),
        "dc_full_scale": np.full(n_samples, float(INT16_MAX)),
        "dc_negative_full_scale": np.full(n_samples, float(INT16_MIN)),
        # On-bin tones: their period divides every power-of-2 FFT of at least 16 points.
        "tone_nyquist_full_scale": INT16_MAX * np.where(n % 2 == 0, 1.0, -1.0),
        "tone_fs4_sine_full_scale": _int16(INT16_MAX * np.sin(np.pi / 2 * n)),
        "tone_fs4_cosine_full_scale": _int16(INT16_MAX * np.cos(np.pi / 2 * n)),
        "tone_fs8_full_scale": _int16(INT16_MAX * np.sin(np.pi / 4 * n)),
        "tone_fs16_full_scale": _int16(INT16_MAX * np.cos(np.pi / 8 * n)),
        "tone_fs4_quiet": _int16(3 * np.sin(np.pi / 2 * n)),
        # Square waves at the rails: periods 8 and 32 samples (on-bin), and 100 (off-bin).
        "square_period_8_full_scale": _square(n, 8),
        "square_period_32_full_scale": _square(n, 32),
        "square_period_100": np.where((n // 50) % 2 == 0, 20000.0, -20000.0),
        "clipped_noise": _int16(rng.normal(0, 30000, n_samples)),
        "chirp": _int16(16000 * np.sin(2 * np.pi * (20 * t + (0.9 * nyquist - 20)
                                                     / (2 * max(t[-1], 1e-9)) * t**2))),
        "impulse_train": np.where(n % 997 == 0, float(INT16_MAX), 0.0),
        "noise_realistic": _int16(_pink_noise(rng, n_samples) * 2000
                                  + 1500 * np.sin(2 * np.pi * min(440.0, 0.4 * nyquist) * t)),
        "noise_quiet": _int16(rng.normal(0, 20, n_samples)),
        # Floats in [-1, 1]: spectrogram v3 leaves them unscaled.
        "float_tone": 0.5 * np.sin(2 * np.pi * min(1000.0, 0.3 * nyquist) * t)
        + 0.01 * rng.standard_normal(n_samples),
        "float_noise_uniform": rng.uniform(-1, 1, n_samples),
        "float_tone_fs4_unit": np.round(np.sin(np.pi / 2 * n)),
        "float_dc_quarter": np.full(n_samples, 0.25),
    }
    windows["float_tone"] = np.clip(windows["float_tone"], -1, 1)
    return windows


def _square(n: np.ndarray, period: int) -> np.ndarray:
    """Full-scale square wave: half a period at +32767, half at -32768."""
    return np.where((n // (period // 2)) % 2 == 0, INT16_MAX, INT16_MIN).astype(np.float64)


def _pink_noise(rng: np.random.Generator, n_samples: int) -> np.ndarray:
    """Unit-variance noise with a 1/f power spectrum (shaped in the frequency domain)."""
    spectrum = np.fft.rfft(rng.standard_normal(n_samples))
    frequencies = np.arange(spectrum.size)
    spectrum[1:] /= np.sqrt(frequencies[1:])
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, n=n_samples)
    return noise / max(noise.std(), 1e-12)
