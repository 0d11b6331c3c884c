"""Request bodies for the benchmark: seeded 1 s windows of 16 kHz int16-valued audio.

Both servers get byte-identical bodies, encoded once, so the client does the same work for both.
"""
from __future__ import annotations

import json

import numpy as np

SAMPLING_FREQ = 16000
WINDOW_SECONDS = 1.0
# The sensor-fusion tutorial's spectrogram: 41 frames x 65 bins = 2665 features per window.
SPECTROGRAM_PARAMS = {
    "frame_length": 0.032,
    "frame_stride": 0.024,
    "fft_length": 128,
    "noise_floor_db": -85,
}
IMPLEMENTATION_VERSION = 4
FEATURES_PER_WINDOW = 41 * 65


def audio_window(seed: int) -> np.ndarray:
    """One second of noise plus a tone, as int16-valued int64 samples.

    Parameters
    ----------
    seed : int
        Seeds the noise and picks the tone (200 Hz + 37 Hz per seed), so windows differ.

    Returns
    -------
    numpy.ndarray
        Shape (16000,), values within the int16 range.
    """
    rng = np.random.default_rng(seed)
    samples = int(SAMPLING_FREQ * WINDOW_SECONDS)
    t = np.arange(samples) / SAMPLING_FREQ
    tone_hz = 200.0 + 37.0 * (seed % 100)
    signal = 6000.0 * np.sin(2 * np.pi * tone_hz * t) + rng.normal(0.0, 1500.0, samples)
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int64)


def _common_fields() -> dict:
    return {
        "axes": ["audio"],
        "sampling_freq": SAMPLING_FREQ,
        "implementation_version": IMPLEMENTATION_VERSION,
        "params": dict(SPECTROGRAM_PARAMS),
    }


def run_body(seed: int = 0) -> bytes:
    """JSON body for `POST /run`: one window, no graphs."""
    body = {"features": audio_window(seed).tolist(), "draw_graphs": False, **_common_fields()}
    return json.dumps(body).encode()


def batch_body(windows: int = 100) -> bytes:
    """JSON body for `POST /batch`: `windows` different windows (seeds 0..windows-1)."""
    body = {"features": [audio_window(seed).tolist() for seed in range(windows)],
            "state": "", **_common_fields()}
    return json.dumps(body).encode()
