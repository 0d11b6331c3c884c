"""Train the ESC-10 embedder, `models/esc10.*`, and measure it by 5-fold cross-validation.

The project's pipeline (`models.cnn` trained on the front-end block's features of 1 s windows,
cut before its classifier and converted by `models.convert_embeddings`) on real audio: ESC-10
(Piczak 2015), 400 five-second clips of 10 environmental sound classes in 5 given folds
(`/work/shared/data/README.md`). The audio is read from the shared `.npz`; it is never copied
into the repository.

Data handling
-------------
* Every clip is cut into 1 s windows with a hop of `HOP_SAMPLES` (0.25 s: 17 windows per clip;
  a hop of 0.5 s gave 3.7 points less on folds 1 and 2).
* A window is *near-silent* when its RMS is below `SILENCE_DBFS` (-60 dBFS, full scale =
  32768). ESC-10 pads short sounds with digital zeros; these windows carry no sound of the
  class (11 % of all windows, half of the sneeze windows). Near-silent windows are left out of
  training, out of calibration and out of the clip vote. A clip whose windows are all
  near-silent would keep its loudest one (no ESC-10 clip needs it at -60 dBFS).
* Cross-validation uses the folds as given. For each test fold the CNN trains on the other
  four, with early stopping on a validation set carved from them: whole source recordings
  (Freesound clip ids), about `VALIDATION_FRACTION` of each class's clips, drawn with the seed.
  The test fold is never seen by training, early stopping, int8 calibration or the classifier.
* "A classifier on the embeddings": the fold's CNN is cut and converted to int8 with
  `models.convert_embeddings.make_embedder` (calibrated on training windows); scikit-learn's
  logistic regression (standardised inputs, C=1) is fitted on the int8 embeddings of all the
  training folds' kept windows and scores each test clip by the mean of its kept windows'
  class probabilities. Reported beside it: the CNN's own softmax (float32 Keras model, and its
  classifier layer on the int8 embeddings), with the same clip vote, and logistic regression on
  clip-mean int8 embeddings.

The shipped model is then trained on all five folds (validation: `SHIP_VALIDATION_FRACTION` of
the source recordings), converted into `esc10.tflite` / `esc10.float32.tflite` / `esc10.json`,
and given its raw-window model (`python -m models.raw_window_model models/esc10.json`, run in
process). Its metadata records the cross-validation figures per fold and seed.

Usage::

    python -m models.train_esc10 --data ../shared/data/esc10/esc10_16k.npz --seeds 0 1 \\
        --out-dir models [--cv-only | --ship-only]

`--cv-only` writes the cross-validation results to `--cv-json` (default
`build/esc10/cv.json`, ignored by git); `--ship-only` trains the shipped model and reads the
cross-validation figures it records from there.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

MODEL_NAME = "esc10"
DEFAULT_DATA = "../shared/data/esc10/esc10_16k.npz"
SAMPLING_FREQ = 16000
WINDOW_SAMPLES = 16000  # 1 s
HOP_SAMPLES = 4000  # 0.25 s: 17 windows per 5 s clip
SILENCE_DBFS = -60.0  # window RMS below this (re 32768) is near-silent
FULL_SCALE = 32768.0
VALIDATION_FRACTION = 0.15  # of each class's training clips, by source recording (CV)
SHIP_VALIDATION_FRACTION = 0.1  # the same for the shipped model
BAR = 0.90  # mean over two seeds of the 5-fold accuracy
MAX_INT8_BYTES = 100 * 1024
CV_JSON = "build/esc10/cv.json"

# The front-end: the project's MFE block (Edge Impulse's MFE), version 4: 41 frames of 32 ms
# every 24 ms x 64 mel bands (2624 features), a 72 dB range above the noise floor. It beat the
# tutorial's spectrogram by 5 points on folds 1 and 2 (models/esc10_report.md).
FRONTEND_BLOCK = "mfe"
FRONTEND_VERSION = 4
FRONTEND_PARAMS = {"frame_length": 0.032, "frame_stride": 0.024, "num_filters": 64,
                   "fft_length": 512, "low_frequency": 0, "high_frequency": 0,
                   "noise_floor_db": -72}

DATASET = "ESC-10 (Piczak 2015)"
LICENCE = ("CC BY 3.0 (Creative Commons Attribution 3.0); two Rooster clips (1-40730-A, "
           "2-96460-A) are CC Sampling+")
ATTRIBUTION = ("ESC-10 (Piczak 2015), CC BY 3.0, per-clip attribution in "
               "ESC-10_README_attributions.txt; two Rooster clips CC Sampling+. K. J. Piczak, "
               "'ESC: Dataset for Environmental Sound Classification', Proc. ACM Multimedia 2015, "
               "doi:10.1145/2733373.2806390; clips from Freesound.org "
               "(github.com/karolpiczak/ESC-10 @553c8f1)")


@dataclass(frozen=True)
class Recipe:
    """Every choice that shapes a model, with the shipped values as defaults.

    Attributes
    ----------
    frontend : dict
        block, implementation_version and params of the front-end block.
    hop_samples : int
        Hop between the 1 s windows of a clip.
    silence_dbfs : float or None
        Near-silent threshold of the window RMS (dBFS); None keeps every window.
    cnn : dict
        `models.cnn.CnnConfig` fields other than frames, bins and classes.
    train : dict
        `models.cnn.TrainConfig` fields other than the seed.
    gain_db : float
        Random gain of up to +-gain_db per training window (0: none).
    masks : dict or None
        `models.cnn.time_frequency_masks` arguments (None: no masking).
    validation_fraction : float
        Of each class's training clips, whole source recordings, for early stopping.
    """

    frontend: dict = field(default_factory=lambda: {
        "block": FRONTEND_BLOCK, "implementation_version": FRONTEND_VERSION,
        "params": dict(FRONTEND_PARAMS)})
    hop_samples: int = HOP_SAMPLES
    silence_dbfs: Optional[float] = SILENCE_DBFS
    cnn: dict = field(default_factory=lambda: {
        "conv_filters": (16, 32, 64, 64), "kernel_size": 3, "conv_strides": 1, "pool_size": 2,
        "embedding_size": 64, "dropout": 0.3, "batch_norm": True, "global_pooling": True})
    train: dict = field(default_factory=lambda: {
        "epochs": 60, "batch_size": 32, "learning_rate": 3e-3, "patience": 10})
    gain_db: float = 6.0
    masks: Optional[dict] = field(default_factory=lambda: {
        "time_masks": 2, "max_frames": 6, "frequency_masks": 2, "max_bins": 8})
    validation_fraction: float = VALIDATION_FRACTION

    def as_dict(self) -> dict:
        value = asdict(self)
        value["cnn"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.cnn.items()}
        return value

    def frontend_description(self) -> dict:
        """The front-end as `models.convert_embeddings.check_frontend` takes it."""
        return {**self.frontend, "sampling_freq": SAMPLING_FREQ,
                "window_samples": WINDOW_SAMPLES, "axes": 1}


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class Esc10:
    """The clips of the shared `.npz` (audio stays in memory only)."""

    audio: np.ndarray  # (clips, 80000) int16
    labels: np.ndarray  # (clips,) int
    folds: np.ndarray  # (clips,) 1..5
    sources: np.ndarray  # (clips,) Freesound clip id of the source recording
    class_names: list[str]
    path: str


@dataclass
class Windows:
    """The 1 s windows of every clip, and the front-end features of the kept ones.

    Attributes
    ----------
    clip : numpy.ndarray
        (windows,) clip index of each window.
    level_dbfs : numpy.ndarray
        (windows,) RMS of each window in dBFS.
    kept : numpy.ndarray
        (windows,) bool: not near-silent (see `kept_windows`).
    features : numpy.ndarray
        (windows, width) float32 front-end features; rows of near-silent windows are zeros
        (never used).
    frames, bins : int
        The front-end's layout.
    """

    clip: np.ndarray
    level_dbfs: np.ndarray
    kept: np.ndarray
    features: np.ndarray
    frames: int
    bins: int


def load_esc10(path: "str | Path") -> Esc10:
    """Read the shared ESC-10 `.npz` (see /work/shared/data/README.md)."""
    with np.load(path, allow_pickle=False) as data:
        if int(data["sr"]) != SAMPLING_FREQ:
            raise ValueError(f"{path}: sampled at {int(data['sr'])} Hz, expected {SAMPLING_FREQ}")
        return Esc10(audio=np.asarray(data["audio"]), labels=data["labels"].astype(np.int64),
                     folds=data["folds"].astype(np.int64),
                     sources=data["freesound_clip_ids"].astype(np.int64),
                     class_names=[str(name) for name in data["class_names"]], path=str(path))


def cut_windows(audio: np.ndarray, window: int = WINDOW_SAMPLES,
                hop: int = HOP_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """Cut clips into windows.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        (clips * per_clip, window) windows, clip-major, and the clip index of each.
    """
    starts = np.arange(0, audio.shape[1] - window + 1, hop)
    windows = np.stack([audio[:, s:s + window] for s in starts], axis=1)
    clip = np.repeat(np.arange(len(audio)), len(starts))
    return windows.reshape(-1, window), clip


def window_level_dbfs(windows: np.ndarray) -> np.ndarray:
    """RMS of each window in dB relative to int16 full scale (digital silence: -inf)."""
    rms = np.sqrt(np.mean(np.square(windows.astype(np.float64)), axis=1))
    with np.errstate(divide="ignore"):
        return 20 * np.log10(rms / FULL_SCALE)


def kept_windows(level_dbfs: np.ndarray, clip: np.ndarray,
                 threshold_dbfs: Optional[float]) -> np.ndarray:
    """Windows that are not near-silent; every clip keeps at least its loudest window."""
    if threshold_dbfs is None:
        return np.ones(len(level_dbfs), dtype=bool)
    kept = level_dbfs >= threshold_dbfs
    for index in np.unique(clip[~kept]):
        rows = np.flatnonzero(clip == index)
        if not kept[rows].any():
            kept[rows[np.argmax(level_dbfs[rows])]] = True
    return kept


def frontend_features(windows: np.ndarray, frontend: dict, chunk: int = 400) -> np.ndarray:
    """The front-end block on int16-valued windows: (windows, frames, bins) float32."""
    from dsp.audio.mfe import mfe
    from dsp.audio.spectrogram import spectrogram

    block, version, params = frontend["block"], frontend["implementation_version"], \
        frontend["params"]
    if block == "mfe":
        def compute(raw):
            return mfe(raw, SAMPLING_FREQ, version, win_size=params.get("win_size", 101),
                       **{k: v for k, v in params.items() if k != "win_size"})
    elif block == "spectrogram":
        def compute(raw):
            return spectrogram(raw, SAMPLING_FREQ, version, **params)
    else:
        raise ValueError(f"front-end block {block!r}: only spectrogram and mfe are supported")
    parts = [compute(windows[i:i + chunk, :, None].astype(np.float64))
             for i in range(0, len(windows), chunk)]
    return np.concatenate(parts).astype(np.float32)


def make_windows(data: Esc10, recipe: Recipe) -> Windows:
    """Windows, levels, kept mask and features of every clip under a recipe."""
    audio_windows, clip = cut_windows(data.audio, WINDOW_SAMPLES, recipe.hop_samples)
    level = window_level_dbfs(audio_windows)
    kept = kept_windows(level, clip, recipe.silence_dbfs)
    kept_features = frontend_features(audio_windows[kept], recipe.frontend)
    frames, bins = kept_features.shape[1:]
    features = np.zeros((len(audio_windows), frames * bins), dtype=np.float32)
    features[kept] = kept_features.reshape(len(kept_features), -1)
    return Windows(clip=clip, level_dbfs=level, kept=kept, features=features, frames=frames,
                   bins=bins)


def validation_clips(clips: np.ndarray, labels: np.ndarray, sources: np.ndarray,
                     fraction: float, seed: int) -> np.ndarray:
    """Clips held out for early stopping: whole source recordings, per class, seeded.

    Parameters
    ----------
    clips : numpy.ndarray
        Indices of the training clips.
    labels, sources : numpy.ndarray
        Per clip of the whole dataset.
    fraction : float
        Of each class's clips (whole recordings are taken until it is reached).

    Returns
    -------
    numpy.ndarray
        Sorted indices, a subset of `clips`.
    """
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels[clips]):
        of_class = clips[labels[clips] == label]
        recordings = np.unique(sources[of_class])
        target = max(1, int(round(fraction * len(of_class))))
        taken = []
        for recording in rng.permutation(recordings):
            if len(taken) >= target:
                break
            taken.extend(of_class[sources[of_class] == recording])
        chosen.extend(taken)
    return np.sort(np.asarray(chosen, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# Training and measuring


def augmentation(recipe: Recipe, config):
    """The training batches' augmentation: random gain, then time and frequency masks."""
    from models.cnn import compose, gain_shift, time_frequency_masks

    steps = []
    if recipe.gain_db > 0:
        noise_floor = float(recipe.frontend["params"]["noise_floor_db"])
        steps.append(gain_shift(recipe.gain_db, 12 - noise_floor))
        if recipe.frontend["block"] == "mfe":
            # MFE v3/v4 features never exceed 255/256 (the block clips and quantises to uint8).
            steps.append(lambda batch, rng: np.minimum(batch, 255 / 256))
    if recipe.masks:
        steps.append(time_frequency_masks(config, **recipe.masks))
    return compose(steps) if steps else None


def train_cnn(windows: Windows, labels: np.ndarray, fit_clips: np.ndarray,
              validation_clips_: np.ndarray, recipe: Recipe, seed: int, classes: int):
    """Build and train the CNN on the kept windows of `fit_clips`.

    Returns
    -------
    (models.cnn.TrainResult, models.cnn.CnnConfig)
    """
    from models.cnn import CnnConfig, TrainConfig, build_model, train_classifier

    config = CnnConfig(frames=windows.frames, bins=windows.bins, classes=classes,
                       **{k: tuple(v) if isinstance(v, list) else v
                          for k, v in recipe.cnn.items()})
    fit_rows = _rows_of(windows, fit_clips)
    validation_rows = _rows_of(windows, validation_clips_)
    window_labels = labels[windows.clip]
    model = build_model(config, seed=seed)  # the seed draws the initial weights too
    result = train_classifier(
        model, (windows.features[fit_rows], window_labels[fit_rows]),
        (windows.features[validation_rows], window_labels[validation_rows]),
        TrainConfig(seed=seed, **recipe.train), augment=augmentation(recipe, config))
    return result, config


def _rows_of(windows: Windows, clips: np.ndarray) -> np.ndarray:
    """Kept windows of the given clips."""
    return np.flatnonzero(np.isin(windows.clip, clips) & windows.kept)


def clip_vote(window_scores: np.ndarray, window_clip: np.ndarray,
              clips: np.ndarray) -> np.ndarray:
    """Mean of window scores (probabilities or embeddings) per clip, in the order of `clips`."""
    return np.stack([window_scores[window_clip == index].mean(axis=0) for index in clips])


def evaluate_fold(data: Esc10, windows: Windows, recipe: Recipe, test_fold: int, seed: int,
                  log: Callable[[str], None]) -> dict:
    """Train on the other folds, measure on `test_fold` (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from models.convert_embeddings import check_frontend, make_embedder, run_tflite

    started = time.perf_counter()
    clips = np.arange(len(data.labels))
    train_clips = clips[data.folds != test_fold]
    test_clips = clips[data.folds == test_fold]
    held = validation_clips(train_clips, data.labels, data.sources,
                            recipe.validation_fraction, seed)
    fit_clips = np.setdiff1d(train_clips, held)
    trained, config = train_cnn(windows, data.labels, fit_clips, held, recipe, seed,
                                len(data.class_names))
    model = trained.model

    train_rows = _rows_of(windows, train_clips)
    test_rows = _rows_of(windows, test_clips)
    window_labels = data.labels[windows.clip]
    test_labels = data.labels[test_clips]

    def accuracy(window_scores: np.ndarray) -> float:
        votes = clip_vote(window_scores, windows.clip[test_rows], test_clips)
        return float(np.mean(np.argmax(votes, axis=1) == test_labels))

    float_probabilities = np.asarray(model.predict(windows.features[test_rows], verbose=0,
                                                   batch_size=256))
    frontend = check_frontend(recipe.frontend_description(), "ESC-10 front-end")
    embedder = make_embedder(model, windows.features[train_rows], frontend=frontend,
                             command="models.train_esc10 cross-validation", seed=seed,
                             classes=data.class_names)
    train_embeddings = run_tflite(embedder.int8_model, windows.features[train_rows])
    test_embeddings = run_tflite(embedder.int8_model, windows.features[test_rows])

    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    classifier.fit(train_embeddings, window_labels[train_rows])
    clip_classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    clip_classifier.fit(clip_vote(train_embeddings, windows.clip[train_rows], train_clips),
                        data.labels[train_clips])
    clip_mean_test = clip_vote(test_embeddings, windows.clip[test_rows], test_clips)
    best = trained.best_epoch - 1
    logreg_votes = clip_vote(classifier.predict_proba(test_embeddings), windows.clip[test_rows],
                             test_clips)
    confusion = np.zeros((len(data.class_names),) * 2, dtype=int)
    np.add.at(confusion, (test_labels, np.argmax(logreg_votes, axis=1)), 1)
    result = {
        "logreg_int8": float(np.mean(np.argmax(logreg_votes, axis=1) == test_labels)),
        "softmax_float32": accuracy(float_probabilities),
        "softmax_int8": accuracy(embedder.cut.head(test_embeddings)),
        "logreg_int8_clip_mean_embedding": float(np.mean(
            clip_classifier.predict(clip_mean_test) == test_labels)),
        "test_clips": int(len(test_clips)),
        "test_windows": int(len(test_rows)),
        "training_windows": int(len(_rows_of(windows, fit_clips))),
        "validation_windows": int(len(_rows_of(windows, held))),
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "validation_accuracy": _round(trained.history["val_accuracy"][best]),
        "training_seconds": _round(trained.seconds),
        "seconds": _round(time.perf_counter() - started),
        "int8_bytes": len(embedder.int8_model),
        "parameters": int(model.count_params()),
        "confusion_logreg_int8": confusion.tolist(),
    }
    log(f"seed {seed} fold {test_fold}: logreg(int8) {result['logreg_int8']:.4f}, softmax "
        f"float32 {result['softmax_float32']:.4f}, int8 {result['softmax_int8']:.4f}, clip-mean "
        f"logreg {result['logreg_int8_clip_mean_embedding']:.4f}; {trained.epochs_run} epochs "
        f"(best {trained.best_epoch}) in {trained.seconds:.0f} s, fold {result['seconds']:.0f} s")
    return result


MEASURES = ("logreg_int8", "softmax_float32", "softmax_int8", "logreg_int8_clip_mean_embedding")


def cross_validate(data: Esc10, recipe: Recipe, seeds: Sequence[int],
                   folds: Optional[Sequence[int]] = None,
                   log: Callable[[str], None] = None) -> dict:
    """5-fold cross-validation (the given folds) for each seed; see the module docstring."""
    log = log or _log
    started = time.perf_counter()
    folds = [int(f) for f in (folds or sorted(np.unique(data.folds)))]
    windows = make_windows(data, recipe)
    log(f"{len(windows.clip)} windows, {int(windows.kept.sum())} kept (RMS >= "
        f"{recipe.silence_dbfs} dBFS); features {windows.frames} x {windows.bins} "
        f"({time.perf_counter() - started:.0f} s)")
    runs = {}
    for seed in seeds:
        per_fold = {str(fold): evaluate_fold(data, windows, recipe, fold, seed, log)
                    for fold in folds}
        runs[str(seed)] = {"folds": per_fold, "mean": {
            measure: _round(np.mean([per_fold[str(f)][measure] for f in folds]))
            for measure in MEASURES}}
        log(f"seed {seed}: mean " + ", ".join(f"{m} {runs[str(seed)]['mean'][m]:.4f}"
                                              for m in MEASURES))
    mean_of_seeds = {measure: _round(np.mean([runs[str(s)]["mean"][measure] for s in seeds]))
                     for measure in MEASURES}
    return {
        "recipe": recipe.as_dict(),
        "folds": folds,
        "seeds": [int(s) for s in seeds],
        "runs": runs,
        "mean_of_seeds": mean_of_seeds,
        "windows": {"total": int(len(windows.clip)), "kept": int(windows.kept.sum()),
                    "per_clip": int(len(windows.clip) // len(data.labels))},
        "seconds": _round(time.perf_counter() - started),
    }


def cv_table(cv: dict, measure: str = "logreg_int8") -> str:
    """Markdown table: one row per seed, one column per fold, then the mean."""
    folds = cv["folds"]
    lines = ["| seed | " + " | ".join(f"fold {f}" for f in folds) + " | mean |",
             "|---|" + "---|" * (len(folds) + 1)]
    for seed, run in cv["runs"].items():
        cells = [f"{100 * run['folds'][str(f)][measure]:.2f}" for f in folds]
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {100 * run['mean'][measure]:.2f} |")
    lines.append("| mean of seeds | " + " | ".join(
        f"{100 * np.mean([run['folds'][str(f)][measure] for run in cv['runs'].values()]):.2f}"
        for f in folds) + f" | **{100 * cv['mean_of_seeds'][measure]:.2f}** |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The shipped model


def measure_speed(int8_model: bytes, audio_windows: np.ndarray, frontend: dict,
                  repeats: int = 3) -> dict:
    """The embeddings block's work per window in one process: front-end, then the int8 model."""
    from dsp.embeddings.model import make_interpreter

    interpreter = make_interpreter(int8_model)  # the server's configuration
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    frontend_s, invoke_s = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        features = frontend_features(audio_windows, frontend).reshape(len(audio_windows), -1)
        computed = time.perf_counter()
        for row in features:
            interpreter.set_tensor(input_index, row[np.newaxis])
            interpreter.invoke()
            interpreter.get_tensor(output_index)
        frontend_s.append(computed - started)
        invoke_s.append(time.perf_counter() - computed)
    windows = len(audio_windows)
    frontend_us = min(frontend_s) / windows * 1e6
    invoke_us = min(invoke_s) / windows * 1e6
    return {
        "frontend_us_per_window": _round(frontend_us),
        "int8_invoke_us": _round(invoke_us),
        "windows_per_second": _round(1e6 / (frontend_us + invoke_us)),
        "how": (f"best of {repeats} runs over {windows} one-second ESC-10 windows, one process "
                f"on a shared 2-core machine: the {frontend['block']} block on the whole batch, "
                f"then set_tensor/invoke/get_tensor of the int8 model per window (ai-edge-litert "
                f"Interpreter, num_threads=1, builtin kernels without the XNNPACK delegate, as the "
                f"server runs it)"),
    }


def quality_from_cv(cv: dict) -> dict:
    """The metadata's `quality` section from the cross-validation results."""
    recipe = cv["recipe"]
    per_seed = {seed: {"per_fold": {fold: run["folds"][fold]["logreg_int8"]
                                    for fold in run["folds"]},
                       "mean": run["mean"]["logreg_int8"]}
                for seed, run in cv["runs"].items()}
    softmax = {seed: {"per_fold": {fold: run["folds"][fold]["softmax_float32"]
                                   for fold in run["folds"]},
                      "mean": run["mean"]["softmax_float32"]}
               for seed, run in cv["runs"].items()}
    mean = cv["mean_of_seeds"]["logreg_int8"]
    return {
        "esc10_5fold_accuracy": {
            "per_seed": per_seed,
            "mean": mean,
            "bar": BAR,
            "meets_bar": bool(mean >= BAR),
            "how": (
                f"5-fold cross-validation on ESC-10 with the dataset's folds, for seeds "
                f"{', '.join(cv['runs'])}: per test fold, the CNN (this recipe) trained on the other "
                f"four folds (early stopping on {recipe['validation_fraction']:.0%} of each "
                f"class's training clips, whole source recordings), cut and converted to int8 "
                f"(calibrated on training windows); logistic regression (scikit-learn, standardised"
                f", C=1) fitted on the int8 embeddings of the training folds' windows; a test clip "
                f"is classified by the mean class probability over its windows (1 s, hop "
                f"{recipe['hop_samples'] / SAMPLING_FREQ:g} s) that are not near-silent (RMS >= "
                f"{recipe['silence_dbfs']} dBFS); accuracy over the fold's 80 clips. The mean is "
                f"over folds and seeds. The shipped model is a separate run on all five folds, "
                f"not one of these."),
        },
        "esc10_5fold_accuracy_cnn_softmax": {
            "per_seed": softmax,
            "mean": cv["mean_of_seeds"]["softmax_float32"],
            "how": "as esc10_5fold_accuracy, but the CNN's own float32 softmax instead of "
                   "logistic regression on the int8 embeddings (same clip vote)",
        },
        "esc10_5fold_other_measures": {
            "mean_of_seeds": cv["mean_of_seeds"],
            "how": "softmax_int8: the CNN's classifier layer on the int8 embeddings; "
                   "logreg_int8_clip_mean_embedding: logistic regression on each clip's mean int8 "
                   "embedding (fitted on the training clips' means)",
        },
        "references": {
            "how": "published 5-fold figures on ESC-10, for comparison",
            "random_forest_mfcc_piczak_2015": 0.727,
            "cnn_log_mel_piczak_2015": 0.80,
            "human_listeners_piczak_2015": 0.957,
        },
    }


def ship(data: Esc10, recipe: Recipe, seed: int, cv: Optional[dict], out_dir: "str | Path",
         build_dir: "str | Path", command: str, log: Callable[[str], None] = None) -> dict:
    """Train on all five folds, convert, write `esc10.*` and the raw-window model."""
    import keras

    from models import raw_window_model
    from models.convert_embeddings import check_frontend, make_embedder, save_embedder
    from models.tf_setup import configure_tensorflow

    log = log or _log
    tf = configure_tensorflow()
    started = time.perf_counter()
    windows = make_windows(data, recipe)
    clips = np.arange(len(data.labels))
    held = validation_clips(clips, data.labels, data.sources, SHIP_VALIDATION_FRACTION, seed)
    fit_clips = np.setdiff1d(clips, held)
    log(f"shipped model: training on {len(fit_clips)} clips, validating on {len(held)}")
    trained, config = train_cnn(windows, data.labels, fit_clips, held, recipe, seed,
                                len(data.class_names))
    model = trained.model
    best = trained.best_epoch - 1
    log(f"trained {trained.epochs_run} epochs in {trained.seconds:.0f} s; best epoch "
        f"{trained.best_epoch}: validation accuracy {trained.history['val_accuracy'][best]:.3f}")

    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    keras_path = build_dir / f"{MODEL_NAME}.keras"
    model.save(keras_path)
    all_rows = np.flatnonzero(windows.kept)
    np.save(build_dir / "input.npy", windows.features[all_rows])
    frontend = check_frontend(recipe.frontend_description(), "ESC-10 front-end")
    embedder = make_embedder(keras_path, windows.features[all_rows], frontend=frontend,
                             command=command, classes=data.class_names, seed=seed)
    if len(embedder.int8_model) >= MAX_INT8_BYTES:
        raise ValueError(f"the int8 model has {len(embedder.int8_model)} bytes; the bar is "
                         f"under {MAX_INT8_BYTES}")

    audio_windows, _ = cut_windows(data.audio[::4], WINDOW_SAMPLES, recipe.hop_samples)
    quality = quality_from_cv(cv) if cv else {}
    if cv:
        quality["esc10_5fold_accuracy"]["model_size_bytes_int8"] = len(embedder.int8_model)
    quality["speed"] = measure_speed(embedder.int8_model, audio_windows[:300], recipe.frontend)
    data_section = {
        "dataset": (f"{DATASET}: 400 five-second clips, 10 classes x 40, 5 folds "
                    f"(github.com/karolpiczak/ESC-10 @553c8f1), as 16 kHz int16 in the shared "
                    f"esc10_16k.npz; the audio is not in this repository"),
        "licence": LICENCE,
        "attribution": ATTRIBUTION,
        "made_by": command,
    }
    training = {
        "command": command,
        "seed": seed,
        "recipe": recipe.as_dict(),
        "windows": {"window_s": WINDOW_SAMPLES / SAMPLING_FREQ,
                    "hop_s": recipe.hop_samples / SAMPLING_FREQ,
                    "near_silent": f"window RMS below {recipe.silence_dbfs} dBFS (re 32768): "
                                   f"left out of training, calibration and the clip vote",
                    "kept": int(windows.kept.sum()), "total": int(len(windows.clip)),
                    "training": int(len(_rows_of(windows, fit_clips))),
                    "validation": int(len(_rows_of(windows, held)))},
        "split": (f"all five folds; validation (early stopping): {SHIP_VALIDATION_FRACTION:.0%} "
                  f"of each class's clips, whole source recordings, seed {seed}"),
        "architecture": config.as_dict(),
        "parameters": int(model.count_params()),
        "training": {**{k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in recipe.train.items()},
                     "epochs_run": trained.epochs_run, "best_epoch": trained.best_epoch,
                     "validation_accuracy": _round(trained.history["val_accuracy"][best]),
                     "seconds": _round(trained.seconds)},
        "model_size_bytes": {"int8": len(embedder.int8_model),
                             "float32": len(embedder.float32_model)},
        "cross_validation_seconds": cv.get("seconds") if cv else None,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "build_files": {"keras": str(keras_path), "input_npy": str(build_dir / "input.npy")},
        "seconds_total": _round(time.perf_counter() - started),
    }
    description = (f"Audio embeddings ({config.embedding_size} values) of one second of "
                   f"environmental sound, from a small CNN on MFE features trained on ESC-10 "
                   f"(dog bark, rain, sea waves, baby cry, clock tick, sneeze, helicopter, "
                   f"chainsaw, rooster, fire crackling).")
    metadata, paths = save_embedder(embedder, out_dir=out_dir, name=MODEL_NAME,
                                    frontend=frontend, data=data_section, quality=quality,
                                    description=description, extra={"training": training})
    for path in paths.values():
        log(f"wrote {path} ({path.stat().st_size} bytes)")
    # The raw-window model: what `python -m models.raw_window_model models/esc10.json` does.
    status = raw_window_model.main([str(paths["metadata"])])
    if status != 0:
        raise ValueError(f"python -m models.raw_window_model {paths['metadata']} failed")
    return json.loads(paths["metadata"].read_text())


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    from models.tf_setup import configure_tensorflow

    tf = configure_tensorflow(args.threads)
    # Same seed, same weights and the same ops order: a run can be reproduced bit for bit.
    tf.config.experimental.enable_op_determinism()
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "models.train_esc10", *argv])
    data = load_esc10(args.data)
    recipe = Recipe()
    if args.epochs is not None:
        recipe = replace(recipe, train={**recipe.train, "epochs": args.epochs})
    cv_path = Path(args.cv_json)

    cv = None
    if not args.ship_only:
        cv = cross_validate(data, recipe, args.seeds, args.folds)
        cv["command"] = command
        cv_path.parent.mkdir(parents=True, exist_ok=True)
        cv_path.write_text(json.dumps(cv, indent=2) + "\n")
        _log(f"wrote {cv_path}")
        for measure in MEASURES:
            print(f"\n{measure} (clip accuracy, %):\n{cv_table(cv, measure)}")
        print(f"\ncross-validation: {cv['seconds']:.0f} s")
    if args.cv_only:
        return 0
    if cv is None:
        if not cv_path.is_file():
            print(f"train_esc10: error: {cv_path}: no cross-validation results (run without "
                  f"--ship-only first)", file=sys.stderr)
            return 1
        cv = json.loads(cv_path.read_text())
    try:
        metadata = ship(data, recipe, args.seeds[0], cv, args.out_dir, args.build_dir, command)
    except Exception as exc:  # ConversionError, the size bar, the raw model's checks
        print(f"train_esc10: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    accuracy = metadata["quality"].get("esc10_5fold_accuracy", {})
    print(f"shipped {metadata['name']}: int8 {metadata['conversion']['sizes_bytes']['int8']} "
          f"bytes; cross-validated accuracy {accuracy.get('mean')}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models.train_esc10",
                                     description="Cross-validate and ship the ESC-10 embedder.")
    parser.add_argument("--data", default=DEFAULT_DATA, help="the shared esc10_16k.npz")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="training seeds of the cross-validation; the first also trains "
                             "the shipped model (default 0 1)")
    parser.add_argument("--folds", type=int, nargs="+", default=None,
                        help="test folds to run (default: all five)")
    parser.add_argument("--epochs", type=int, default=None, help="most epochs (default: recipe)")
    parser.add_argument("--out-dir", default="models", help="where the shipped files go")
    parser.add_argument("--build-dir", default="build/esc10",
                        help="where the .keras model and input.npy go")
    parser.add_argument("--cv-json", default=CV_JSON, help="cross-validation results file")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cv-only", action="store_true", help="cross-validate only")
    mode.add_argument("--ship-only", action="store_true",
                      help="train and write the shipped model only (reads --cv-json)")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow threads (default 2)")
    return parser


def _log(message: str) -> None:
    print(f"[train_esc10 {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _round(value: float) -> float:
    return float(f"{float(value):.6g}")


if __name__ == "__main__":
    sys.exit(main())
