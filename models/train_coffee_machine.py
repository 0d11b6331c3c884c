"""Train the default embedding model, `models/coffee-machine.*`, on the simulated coffee machines.

The seed tutorial's step 1, reproducible: the tutorial's spectrogram front-end (this project's
own block, the features Studio's X_train.npy would hold), a small CNN (`models.cnn`) trained to
tell the four stages apart, cut before its classifier and converted by
`models.convert_embeddings`. Machines are split three ways (`split_by_machine`): training,
validation (early stopping) and test, and every quality figure is measured on the test machines,
which the model never saw:

* audio-only stage accuracy of the classifier fed by the float32 and by the int8 embedder;
* the fusion check the product exists for: logistic regression on the int8 embedding alone,
  on accelerometer features alone (`coffee_dataset.vibration_features`: RMS and band powers
  of the vibration), and on both concatenated;
* speed: the int8 model's invoke time (ai-edge-litert, one thread) and the front-end's time per
  window, hence the embeddings block's windows per second in one process.

Usage::

    python -m models.train_coffee_machine [--seed S] [--epochs E] --out-dir models

The Keras model and `input.npy` go to `--build-dir` (default `build/coffee-machine`, ignored by
git); the shipped files to `--out-dir`: `coffee-machine.tflite`, `.float32.tflite`, `.json`,
and `.raw.tflite` (the raw-window model of `models.raw_window_model`, recorded in the JSON).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from models.cnn import TrainConfig

MODEL_NAME = "coffee-machine"
SAMPLING_FREQ = 16000
WINDOW_SAMPLES = 16000
# The seed tutorial's spectrogram settings (docs/ei-protocol.md section 6.1), version 4.
SPECTROGRAM_VERSION = 4
SPECTROGRAM_PARAMS = {"frame_length": 0.032, "frame_stride": 0.024, "fft_length": 128,
                      "noise_floor_db": -85}
FRONTEND = {"block": "spectrogram", "implementation_version": SPECTROGRAM_VERSION,
            "params": SPECTROGRAM_PARAMS, "sampling_freq": SAMPLING_FREQ,
            "window_samples": WINDOW_SAMPLES, "axes": 1}
FRAMES, BINS = 41, 65  # what those settings give for one second at 16 kHz
TEST_FRACTION = 0.25  # of the machines, for the quality figures
VALIDATION_FRACTION = 0.2  # of the remaining machines, for early stopping
GAIN_AUGMENT_DB = 10  # largest random gain applied to a training window, in dB
DESCRIPTION = ("Audio embeddings ({size} values) of one second of coffee-machine sound, from a "
               "small CNN trained to tell grind, idle, pump and extract apart, for fusion with "
               "accelerometer features.")


def spectrogram_features(audio: np.ndarray) -> np.ndarray:
    """The front-end: the project's spectrogram block, flat rows as Studio's X_train.npy.

    Parameters
    ----------
    audio : numpy.ndarray
        (windows, 16000) int16-valued audio at 16 kHz.

    Returns
    -------
    numpy.ndarray
        (windows, 41 * 65) float32, frame-major.
    """
    from dsp.audio.spectrogram import spectrogram

    spectra = spectrogram(audio[:, :, None], SAMPLING_FREQ, SPECTROGRAM_VERSION,
                          **SPECTROGRAM_PARAMS)
    return spectra.reshape(len(audio), -1).astype(np.float32)


def fusion_check(train: tuple[np.ndarray, np.ndarray, np.ndarray],
                 test: tuple[np.ndarray, np.ndarray, np.ndarray], stages: Sequence[str],
                 accelerometer_features: str = "accelerometer features") -> dict:
    """Held-out accuracy of logistic regression on embedding, accelerometer, and both.

    Parameters
    ----------
    train, test : tuple of numpy.ndarray
        (embeddings (rows, e), accelerometer features (rows, a), labels (rows,)).
    stages : sequence of str
        Class names, for the per-stage recall.
    accelerometer_features : str
        What the accelerometer features are, for the record.

    Returns
    -------
    dict
        Per feature set: accuracy and per-stage recall on the test rows; plus how.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feature_sets = {
        "embedding": lambda emb, acc: emb,
        "accelerometer": lambda emb, acc: acc,
        "embedding_and_accelerometer": lambda emb, acc: np.concatenate([emb, acc], axis=1),
    }
    result = {}
    for name, select in feature_sets.items():
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
        classifier.fit(select(train[0], train[1]), train[2])
        predicted = classifier.predict(select(test[0], test[1]))
        result[name] = {
            "accuracy": _round(np.mean(predicted == test[2])),
            "recall": {stage: _round(np.mean(predicted[test[2] == index] == index))
                       for index, stage in enumerate(stages) if np.any(test[2] == index)},
        }
    result["how"] = (
        f"scikit-learn logistic regression (C=1, standardised inputs) fitted on the training and "
        f"validation machines, accuracy and per-stage recall on the test machines; embedding = "
        f"the int8 model's output ({train[0].shape[1]} values); accelerometer = "
        f"{accelerometer_features} ({train[1].shape[1]} values)")
    return result


def measure_speed(int8_model: bytes, audio: np.ndarray, repeats: int = 5) -> dict:
    """Time the embeddings block's work in one process: front-end, then the int8 model per row.

    Timed in CPU time of the measuring thread (both steps run on it: numpy's FFT and the
    one-thread interpreter), which is what one core can do whatever else the machine runs;
    wall-clock figures are kept beside them.

    Parameters
    ----------
    int8_model : bytes
        The int8 embedder.
    audio : numpy.ndarray
        (windows, 16000) windows to time on (a few hundred).
    repeats : int
        Best of this many runs.

    Returns
    -------
    dict
        frontend_us_per_window, int8_invoke_us, windows_per_second (CPU time), the same three
        in wall-clock time under "wall_clock", and how.
    """
    from dsp.embeddings.model import make_interpreter

    interpreter = make_interpreter(int8_model)  # the server's configuration
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    features = spectrogram_features(audio)
    for row in features[:50]:  # warm-up
        interpreter.set_tensor(input_index, row[np.newaxis])
        interpreter.invoke()

    clocks = {"cpu": time.thread_time, "wall": time.perf_counter}
    frontend_s = {name: [] for name in clocks}
    invoke_s = {name: [] for name in clocks}
    for _ in range(repeats):
        started = {name: clock() for name, clock in clocks.items()}
        features = spectrogram_features(audio)
        computed = {name: clock() for name, clock in clocks.items()}
        for row in features:
            interpreter.set_tensor(input_index, row[np.newaxis])
            interpreter.invoke()
            interpreter.get_tensor(output_index)
        for name, clock in clocks.items():
            invoke_s[name].append(clock() - computed[name])
            frontend_s[name].append(computed[name] - started[name])

    windows = len(audio)

    def figures(name: str) -> dict:
        frontend_us = min(frontend_s[name]) / windows * 1e6
        invoke_us = min(invoke_s[name]) / windows * 1e6
        return {"frontend_us_per_window": _round(frontend_us), "int8_invoke_us": _round(invoke_us),
                "windows_per_second": _round(1e6 / (frontend_us + invoke_us))}

    return {
        **figures("cpu"),
        "wall_clock": figures("wall"),
        "how": (f"best of {repeats} runs over {windows} one-second windows in one process: the "
                f"spectrogram block on the whole batch, then set_tensor/invoke/get_tensor of the "
                f"int8 model per window (ai-edge-litert Interpreter, num_threads=1, builtin "
                f"kernels without the XNNPACK delegate, as the server runs it); CPU time of the measuring thread (one "
                f"core), and wall-clock time, which other jobs on the machine inflate"),
    }


def measure_speed_in_fresh_process(int8_model: bytes, audio: np.ndarray) -> dict:
    """`measure_speed` in a new process, as in a server worker: no TensorFlow beside it.

    After training, TensorFlow's idle thread pools and the dataset in memory slow the
    front-end down by a third to a half in this process, which a server worker never sees.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure_speed, int8_model, audio).result()


@dataclass
class MachineSplit:
    """The dataset split by machine, with each part's front-end features.

    fit trains the CNN, validation stops it early, test measures it; fit and validation
    together are the "development" machines (Studio's training set: input.npy, and what the
    fusion check's logistic regressions are fitted on).
    """

    fit: object  # models.coffee_dataset.CoffeeDataset
    validation: object
    test: object
    x_fit: np.ndarray
    x_validation: np.ndarray
    x_test: np.ndarray

    @property
    def x_development(self) -> np.ndarray:
        return np.concatenate([self.x_fit, self.x_validation])

    @property
    def y_development(self) -> np.ndarray:
        return np.concatenate([self.fit.labels, self.validation.labels])

    @property
    def accel_development(self) -> np.ndarray:
        return np.concatenate([self.fit.accel, self.validation.accel])

    def machines(self) -> dict[str, list[int]]:
        return {name: sorted(int(m) for m in np.unique(part.machines))
                for name, part in (("training", self.fit), ("validation", self.validation),
                                   ("test", self.test))}


def split_dataset(machines: int, windows_per_stage: int, data_seed: int,
                  seed: int) -> MachineSplit:
    """Generate the dataset and split it by machine: test (data seed), then validation (seed)."""
    from models import coffee_dataset

    dataset = coffee_dataset.generate(machines, windows_per_stage, data_seed)
    development, test = coffee_dataset.split_by_machine(dataset, TEST_FRACTION, data_seed)
    fit, validation = coffee_dataset.split_by_machine(development, VALIDATION_FRACTION, seed)
    return MachineSplit(fit, validation, test, *(spectrogram_features(part.audio)
                                                 for part in (fit, validation, test)))


def train_model(split: MachineSplit, classes: int, epochs: int, seed: int):
    """Build and train the CNN on the fit machines, stopping early on the validation machines.

    Returns
    -------
    (models.cnn.TrainResult, models.cnn.CnnConfig, models.cnn.TrainConfig)
    """
    from models.cnn import (
        CnnConfig,
        build_model,
        compose,
        gain_shift,
        time_frequency_masks,
        train_classifier,
    )

    config = CnnConfig(frames=FRAMES, bins=BINS, classes=classes)
    train_config = TrainConfig(epochs=epochs, seed=seed)
    # Machines differ in microphone gain (+-8 dB) and in what masks what: during development,
    # gain shifts plus time/frequency masks generalised best to unseen machines (3-fold
    # cross-validation by machine on the development machines).
    augment = compose([gain_shift(GAIN_AUGMENT_DB, 12 - SPECTROGRAM_PARAMS["noise_floor_db"]),
                       time_frequency_masks(config)])
    model = build_model(config, seed=seed)
    trained = train_classifier(model, (split.x_fit, split.fit.labels),
                               (split.x_validation, split.validation.labels), train_config,
                               augment=augment)
    return trained, config, train_config


def measure_quality(embedder, split: MachineSplit, stages: Sequence[str]) -> dict:
    """The metadata's quality figures, all on the test machines (see the module docstring)."""
    from models import coffee_dataset
    from models.convert_embeddings import run_tflite

    test = split.test
    head = embedder.cut.head
    test_machines = split.machines()["test"]
    held_out = (f"the {len(test)} windows of the {len(test_machines)} test machines "
                f"{test_machines}, never used for training or early stopping")

    def accuracy(model: bytes, kind: str) -> dict:
        embeddings = run_tflite(model, split.x_test)
        return {"value": _round(np.mean(np.argmax(head(embeddings), 1) == test.labels)),
                "how": f"stage accuracy of the trained classifier layer fed by the {kind} "
                       f"embedder, on {held_out}"}

    vibration = coffee_dataset.vibration_features
    # The dataset's own summary of the accelerometer features, so the record cannot drift.
    vibration_summary = (vibration.__doc__ or "").strip().splitlines()[0].rstrip(".")
    fusion = fusion_check(
        (run_tflite(embedder.int8_model, split.x_development), vibration(split.accel_development),
         split.y_development),
        (run_tflite(embedder.int8_model, split.x_test), vibration(test.accel), test.labels),
        stages, f"models.coffee_dataset.vibration_features: {vibration_summary}")
    return {
        "audio_accuracy_float32": accuracy(embedder.float32_model, "float32"),
        "audio_accuracy_int8": accuracy(embedder.int8_model, "int8"),
        "fusion": fusion,
        "speed": measure_speed_in_fresh_process(embedder.int8_model, test.audio[:400]),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Train, convert, measure and write the model files; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    from models.tf_setup import configure_tensorflow

    tf = configure_tensorflow(args.threads)
    import keras

    from models import coffee_dataset, raw_window_model
    from models.convert_embeddings import (
        ConversionError,
        check_frontend,
        make_embedder,
        save_embedder,
    )

    command = " ".join(shlex.quote(a) for a in ["python", "-m", "models.train_coffee_machine",
                                                 *argv])
    started = time.perf_counter()
    # Same seed, same weights and the same ops order: the run can be reproduced bit for bit.
    tf.config.experimental.enable_op_determinism()
    stages = list(coffee_dataset.STAGES)

    _log(f"generating {args.machines} machines x {len(stages)} stages x "
         f"{args.windows_per_stage} windows (data seed {args.data_seed})")
    split = split_dataset(args.machines, args.windows_per_stage, args.data_seed, args.seed)
    machines = split.machines()
    _log(f"training on {len(split.fit)} windows of {len(machines['training'])} machines, "
         f"validating on {len(split.validation)} of {len(machines['validation'])}")
    trained, config, train_config = train_model(split, len(stages), args.epochs, args.seed)
    model, best = trained.model, trained.best_epoch - 1
    _log(f"trained {trained.epochs_run} epochs in {trained.seconds:.0f} s; best epoch "
         f"{trained.best_epoch}: validation accuracy {trained.history['val_accuracy'][best]:.3f}")

    build_dir = Path(args.build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    keras_path, input_path = build_dir / f"{MODEL_NAME}.keras", build_dir / "input.npy"
    model.save(keras_path)
    # What Studio would let you download as X_train.npy: the development machines' features.
    np.save(input_path, split.x_development)

    try:
        frontend = check_frontend(FRONTEND, "coffee-machine front-end")
        embedder = make_embedder(keras_path, split.x_development, frontend=frontend,
                                 command=command, classes=stages, seed=args.seed)
        _log("measuring on the test machines")
        quality = measure_quality(embedder, split, stages)
        training = {
            "command": command,
            "seed": args.seed,
            "data_seed": args.data_seed,
            "dataset": {
                "generator": f"models.coffee_dataset.generate(n_machines={args.machines}, "
                             f"windows_per_stage={args.windows_per_stage}, seed={args.data_seed})",
                "windows": {"training": len(split.fit), "validation": len(split.validation),
                            "test": len(split.test)},
                "machines": machines,
                "split": "models.coffee_dataset.split_by_machine: test machines with the data "
                         "seed, then validation machines with the training seed"},
            "architecture": config.as_dict(),
            "augmentation": f"gain shift up to +-{GAIN_AUGMENT_DB} dB, then 2 time masks (up to "
                            f"4 frames) and 2 frequency masks (up to 6 bins) per training window",
            "parameters": int(model.count_params()),
            "training": {**train_config.__dict__, "epochs_run": trained.epochs_run,
                         "best_epoch": trained.best_epoch,
                         "validation_accuracy": _round(trained.history["val_accuracy"][best]),
                         "seconds": _round(trained.seconds)},
            "model_size_bytes": {"int8": len(embedder.int8_model),
                                 "float32": len(embedder.float32_model)},
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "build_files": {"keras": str(keras_path), "input_npy": str(input_path)},
            "seconds_total": _round(time.perf_counter() - started),
        }
        metadata, paths = save_embedder(
            embedder, out_dir=args.out_dir, name=MODEL_NAME, frontend=frontend,
            data=_data_provenance(args, len(stages), command), quality=quality,
            description=DESCRIPTION.format(size=config.embedding_size),
            extra={"training": training})
        # The raw-window model for /tflite-impl, as `python -m models.raw_window_model` makes it.
        raw_window_model.build_and_record(
            paths["metadata"], log=lambda line: _log(line) if line.startswith("wrote") else None)
    except (ConversionError, ValueError) as exc:  # ValueError: the raw-window model's checks
        print(f"train_coffee_machine: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    metadata = json.loads(paths["metadata"].read_text(encoding="utf-8"))
    paths["raw"] = paths["metadata"].parent / metadata["files"]["raw"]
    _print_summary(metadata, paths)
    return 0


def _data_provenance(args: argparse.Namespace, stage_count: int, command: str) -> dict:
    return {
        "dataset": (f"simulated coffee-machine stages (models/coffee_dataset.py, modelled on Edge "
                    f"Impulse's Coffee Machine Stages tutorial): {args.machines} machines x "
                    f"{stage_count} stages x {args.windows_per_stage} one-second windows, data "
                    f"seed {args.data_seed}"),
        "licence": "generated by this repository's code; no recorded or third-party data",
        "attribution": "none needed (simulated)",
        "made_by": command,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models.train_coffee_machine",
                                     description="Train and ship the coffee-machine embedder.")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed: weights, shuffling, validation machines (default 0)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs,
                        help="most epochs (early stopping usually ends sooner)")
    parser.add_argument("--out-dir", default="models", help="where the shipped files go")
    parser.add_argument("--build-dir", default="build/coffee-machine",
                        help="where the .keras model and input.npy go")
    parser.add_argument("--machines", type=int, default=12, help="simulated machines")
    parser.add_argument("--windows-per-stage", type=int, default=40,
                        help="one-second windows per machine and stage")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="dataset seed, also picks the test machines (default 0)")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow threads (default 2)")
    return parser


def _print_summary(metadata: dict, paths: dict) -> None:
    quality, conversion = metadata["quality"], metadata["conversion"]
    for path in paths.values():
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    fusion = quality["fusion"]
    print(f"test machines: audio accuracy float32 {quality['audio_accuracy_float32']['value']:.3f}"
          f", int8 {quality['audio_accuracy_int8']['value']:.3f}; fusion (logistic regression): "
          f"embedding {fusion['embedding']['accuracy']:.3f}, accelerometer "
          f"{fusion['accelerometer']['accuracy']:.3f}, both "
          f"{fusion['embedding_and_accelerometer']['accuracy']:.3f}")
    agreement = conversion["int8_vs_float32"]
    print(f"int8 vs float32: relative L2 mean {agreement['relative_l2']['mean']:.4f}, p95 "
          f"{agreement['relative_l2']['p95']:.4f}; argmax agreement "
          f"{agreement['argmax_agreement']['value']:.4f}")
    speed = quality["speed"]
    print(f"speed (CPU time, one core): front-end {speed['frontend_us_per_window']:.1f} us + int8 "
          f"invoke {speed['int8_invoke_us']:.1f} us per window: {speed['windows_per_second']:.0f} "
          f"windows/s (wall clock: {speed['wall_clock']['windows_per_second']:.0f}); "
          f"{metadata['training']['parameters']} parameters")


def _log(message: str) -> None:
    print(f"[train_coffee_machine] {message}", file=sys.stderr, flush=True)


def _round(value: float) -> float:
    return float(f"{float(value):.6g}")


if __name__ == "__main__":
    sys.exit(main())
