"""Wavelet statistics of the spectral-analysis block (implementation versions 3 and 4).

Each axis is decomposed with `pywt.wavedec` (default "symmetric" extension) into the bands
``[cA_L, cD_L, ..., cD_1]``, labelled ``L0`` to ``L<level>``. Every band gives 14 numbers, in this
order: entropy, zcross, mcross, n5, n25, n75, n95, median, mean, std, var, rms, skew, kurtosis.

Numerics follow Edge Impulse's block so that features match it to float32 rounding:

* coefficients stay in the input's precision (float32 for an undecimated window);
* entropy, zero and mean crossings come from the band in decomposition order, every other
  statistic from the band sorted ascending (the upstream code sorts in place first, and the
  order changes how float32 sums round);
* percentiles are the sorted element at ``int((n - 1) * p / 100 + 0.5)``, no interpolation;
* ``var`` has ddof 1 and ``std`` ddof 0; skew and kurtosis are 0 when the band's RMS is 0, and
  follow scipy < 1.9 (0 and -3, never NaN) for a band whose variance vanishes.
"""
from __future__ import annotations

import warnings

import numpy as np
import pywt

from dsp.core.errors import ConfigurationError

__all__ = [
    "WAVELETS",
    "BAND_STATISTICS",
    "min_window_samples",
    "check_wavelet",
    "check_window_length",
    "skewness_kurtosis",
    "band_statistics",
    "wavelet_features",
    "wavelet_function",
]

# The mother wavelets Studio offers (all PyWavelets discrete wavelets of these families).
WAVELETS = (
    "bior1.3", "bior1.5", "bior2.2", "bior2.4", "bior2.6", "bior2.8", "bior3.1", "bior3.3",
    "bior3.5", "bior3.7", "bior3.9", "bior4.4", "bior5.5", "bior6.8",
    "coif1", "coif2", "coif3",
    "db2", "db3", "db4", "db5", "db6", "db7", "db8", "db9", "db10",
    "haar",
    "rbio1.3", "rbio1.5", "rbio2.2", "rbio2.4", "rbio2.6", "rbio2.8", "rbio3.1", "rbio3.3",
    "rbio3.5", "rbio3.7", "rbio3.9", "rbio4.4", "rbio5.5", "rbio6.8",
    "sym2", "sym3", "sym4", "sym5", "sym6", "sym7", "sym8", "sym9", "sym10",
)

BAND_STATISTICS = (
    "entropy", "zcross", "mcross", "n5", "n25", "n75", "n95", "median",
    "mean", "std", "var", "rms", "skew", "kurtosis",
)

# A level-L decomposition needs 32 * 2**L samples (32 per band at the coarsest level).
SAMPLES_PER_COARSEST_BAND = 32
ENTROPY_BINS = 100
PERCENTILES = (("n5", 5), ("n25", 25), ("n75", 75), ("n95", 95), ("median", 50))


def min_window_samples(level: int) -> int:
    """Fewest samples a `level`-level decomposition accepts: ``32 * 2**level``."""
    return SAMPLES_PER_COARSEST_BAND * 2 ** int(level)


def check_wavelet(wavelet: str, level: int) -> None:
    """Raise ConfigurationError unless `wavelet` is one of `WAVELETS` and `level` is 0 or more."""
    if wavelet not in WAVELETS:
        raise ConfigurationError(
            f"Unknown wavelet {wavelet!r}; choose one of: {', '.join(WAVELETS)}"
        )
    if isinstance(level, bool) or int(level) != level or level < 0:
        raise ConfigurationError(
            f"Wavelet decomposition level must be a whole number, 0 or more; got {level!r}"
        )


def check_window_length(level: int, n_samples: int, sampling_freq: float) -> None:
    """Raise ConfigurationError if `n_samples` is too short for a `level`-level decomposition.

    Parameters
    ----------
    level : int
        Decomposition level, 0 or more.
    n_samples : int
        Samples per axis of the window being decomposed (after any decimation).
    sampling_freq : float
        Their sampling frequency in Hz, to state the minimum window in milliseconds.
    """
    needed = min_window_samples(level)
    if n_samples < needed:
        needed_ms = int(np.ceil(needed / sampling_freq * 1000))
        raise ConfigurationError(
            f"Wavelet decomposition level {level} needs at least {needed} samples per axis "
            f"(a window of at least {needed_ms} ms at {sampling_freq:g} Hz); the window has "
            f"{n_samples}. Increase the window size or reduce the level."
        )


def _central_moment(deviations: np.ndarray, order: int) -> np.ndarray:
    """Mean of ``deviations**order`` along the last axis, powers formed as scipy forms them.

    scipy builds integer powers by repeated squaring (d*d, then (d*d)**2, or (d*d)*d); doing the
    same keeps float32 rounding identical.
    """
    if order == 2:
        powered = deviations ** 2
    elif order == 3:
        powered = deviations ** 2 * deviations
    elif order == 4:
        powered = (deviations ** 2) ** 2
    else:
        raise ValueError(f"order must be 2, 3 or 4, got {order}")
    return powered.mean(axis=-1)


def skewness_kurtosis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample skewness and Fisher kurtosis (biased) along the last axis, never NaN.

    Parameters
    ----------
    x : numpy.ndarray
        Float array; moments are taken in its precision (float32 stays float32), and the final
        ratio in float64.

    Returns
    -------
    skewness, kurtosis : numpy.ndarray
        float64 arrays of ``x.shape[:-1]``. Where the second moment is no larger than
        ``(resolution * mean)**2`` (a constant series, up to rounding) they are 0 and -3, the
        values scipy < 1.9 returns and Edge Impulse's blocks were built with.
    """
    x = np.asarray(x)
    mean = x.mean(axis=-1, keepdims=True)
    deviations = x - mean
    m2 = _central_moment(deviations, 2)
    m3 = _central_moment(deviations, 3)
    m4 = _central_moment(deviations, 4)
    resolution = np.finfo(x.dtype).resolution
    constant = m2 <= (resolution * mean[..., 0]) ** 2
    m2_64 = m2.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        skewness = np.where(constant, 0.0, m3 / m2_64 ** 1.5)
        kurtosis = np.where(constant, 0.0, m4 / m2_64 ** 2.0) - 3.0
    return skewness, kurtosis


def _entropy(band: np.ndarray) -> float:
    """Shannon entropy (nats) of a 100-bin density histogram of one band.

    The bin edges are spaced in float64 and then rounded to the band's precision, as numpy 1.x
    did for float32 data (numpy 2 spaces them in float32), so bin counts and widths match the
    official block's.
    """
    low, high = float(band.min()), float(band.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, ENTROPY_BINS + 1).astype(band.dtype)
    counts, _ = np.histogram(band, bins=edges)
    widths = np.diff(edges).astype(np.float64)
    if (widths > 0).all():
        density = counts / widths / counts.sum()
    else:
        # A range narrower than 100 float32 steps collapses some bins; weigh by counts alone
        # instead of dividing by a zero width.
        density = counts.astype(np.float64)
    probabilities = density / density.sum()
    terms = np.zeros_like(probabilities)
    occupied = probabilities > 0
    terms[occupied] = -probabilities[occupied] * np.log(probabilities[occupied])
    return float(terms.sum())


def band_statistics(bands: np.ndarray) -> np.ndarray:
    """The 14 `BAND_STATISTICS` of each row of `bands`.

    Parameters
    ----------
    bands : numpy.ndarray
        (axes, coefficients) float array: one wavelet band per axis.

    Returns
    -------
    numpy.ndarray
        float64 array of shape (axes, 14), columns in `BAND_STATISTICS` order.
    """
    bands = np.asarray(bands)
    n_axes, length = bands.shape
    out = np.empty((n_axes, len(BAND_STATISTICS)), dtype=np.float64)

    out[:, 0] = [_entropy(row) for row in bands]
    # Crossings are counted as sign changes of (x > level), divided by the band length.
    out[:, 1] = np.count_nonzero(np.diff(bands > 0, axis=-1), axis=-1) / length
    band_mean = np.nanmean(bands, axis=-1, keepdims=True)
    out[:, 2] = np.count_nonzero(np.diff(bands > band_mean, axis=-1), axis=-1) / length

    ordered = np.sort(bands, axis=-1)
    for column, (_, percent) in enumerate(PERCENTILES, start=3):
        out[:, column] = ordered[:, int((length - 1) * percent / 100 + 0.5)]
    out[:, 8] = ordered.mean(axis=-1)
    out[:, 9] = ordered.std(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # ddof=1 on a single coefficient is undefined; report 0 rather than NaN.
        out[:, 10] = ordered.var(axis=-1, ddof=1) if length > 1 else 0.0
    rms = np.sqrt(np.mean(ordered ** 2, axis=-1))
    out[:, 11] = rms
    skewness, kurtosis = skewness_kurtosis(ordered)
    silent = rms == 0
    out[:, 12] = np.where(silent, 0.0, skewness)
    out[:, 13] = np.where(silent, 0.0, kurtosis)
    return out


def wavelet_features(signals: np.ndarray, wavelet: str,
                     level: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Statistics of every band of a `level`-level wavelet decomposition of each axis.

    Parameters
    ----------
    signals : numpy.ndarray
        (axes, samples) float array, filtered and mean-removed; float32 keeps float32 numerics.
    wavelet : str
        One of `WAVELETS`.
    level : int
        Decomposition level (0 gives the statistics of the signal itself).

    Returns
    -------
    features : numpy.ndarray
        (axes, 14 * (level + 1)) float64: per axis, bands L0 (approximation) to L<level>, each
        the 14 `BAND_STATISTICS`.
    labels : list of str
        ``"L<band>-<statistic>"`` for one axis.
    approximation : numpy.ndarray
        (axes, n) coarsest approximation coefficients, in time order.
    """
    signals = np.asarray(signals)
    with warnings.catch_warnings():
        # Deep levels with long filters warn about boundary effects; the result is still defined.
        warnings.simplefilter("ignore", UserWarning)
        bands = pywt.wavedec(signals, wavelet, level=int(level), axis=-1)
    features = np.concatenate([band_statistics(band) for band in bands], axis=1)
    labels = [f"L{index}-{name}" for index in range(len(bands)) for name in BAND_STATISTICS]
    return features, labels, np.array(bands[0], copy=True)


def wavelet_function(wavelet: str, level: int) -> tuple[np.ndarray, np.ndarray]:
    """The wavelet function psi sampled at `level` refinements, and its x positions.

    For biorthogonal wavelets this is the decomposition wavelet. Level 0 is drawn at level 1
    (PyWavelets needs at least one refinement).
    """
    outputs = pywt.Wavelet(wavelet).wavefun(level=max(1, int(level)))
    return outputs[1], outputs[-1]
