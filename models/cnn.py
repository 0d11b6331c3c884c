"""A small audio CNN with an embedding layer, and its training loop.

The model takes front-end features as Studio exports them (one flat row of frames x bins per
window, frame-major), reshapes them to an image, and ends with a Dense layer named
``embedding`` followed by the ``classifier`` (Dense, softmax). `models.convert_embeddings` cuts
it between the two, so the embedding is what the embeddings block serves.

Sized for throughput: the embeddings block has to run front-end and model at more than 10,000
windows per second in one process, so the convolutions are few, narrow and strided (a strided
convolution costs a quarter of the same convolution followed by pooling).

Training is seeded and takes a separate validation set (split by machine, device or recording
by the caller, so that early stopping measures generalisation to new sources, not to new
windows of the sources it trained on). Data-side choices stay with the caller: which windows to
keep (for example dropping near-silent ones before computing features) and how to split. Batch
augmentations plug in as functions (`Augmentation`); `time_frequency_masks` and `gain_shift`
are provided.

Usage::

    config = CnnConfig(frames=41, bins=65, classes=4)
    model = build_model(config, seed=0)
    result = train_classifier(model, (x_train, y_train), (x_val, y_val), TrainConfig(seed=0),
                              augment=time_frequency_masks(config))
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np

EMBEDDING_LAYER = "embedding"
CLASSIFIER_LAYER = "classifier"

# (batch of features (rows, frames * bins), random generator) -> augmented batch, same shape.
Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class CnnConfig:
    """The architecture.

    Attributes
    ----------
    frames, bins : int
        The front-end's output: frames per window and values per frame (FFT bins, mel bands).
    classes : int
        Outputs of the classifier.
    conv_filters : tuple of int
        Filters of each convolution block, in order.
    kernel_size : int
        Square kernel of every convolution.
    conv_strides : int
        Stride of every convolution, in both directions.
    pool_size : int
        Max pooling after each convolution (1: none).
    embedding_size : int
        Values of the embedding (the served features): at most 64 keeps the fusion model small.
    dropout : float
        Dropout rate before the embedding layer (training only).
    batch_norm : bool
        Batch normalisation between each convolution and its ReLU (folded into the convolution
        when the model is converted). Off by default.
    global_pooling : bool
        Average each convolution filter over the whole image instead of flattening it before
        the embedding: the embedding layer then has filters x embedding_size weights whatever
        the image size. Off by default (flatten).
    """

    frames: int
    bins: int
    classes: int
    conv_filters: tuple[int, ...] = (16, 32)
    kernel_size: int = 5
    conv_strides: int = 2
    pool_size: int = 2
    embedding_size: int = 32
    dropout: float = 0.25
    batch_norm: bool = False
    global_pooling: bool = False

    @property
    def input_width(self) -> int:
        return self.frames * self.bins

    def as_dict(self) -> dict:
        return {**asdict(self), "conv_filters": list(self.conv_filters)}


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes
    ----------
    epochs : int
        Upper bound; early stopping usually ends sooner.
    batch_size : int
    learning_rate : float
        Adam's initial learning rate; halved when the validation loss stalls.
    patience : int
        Epochs without a better validation loss before stopping (the best weights are kept).
    seed : int
        Seeds weights, shuffling, dropout and augmentation.
    """

    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 3e-3
    patience: int = 10
    seed: int = 0


@dataclass
class TrainResult:
    """What `train_classifier` returns.

    Attributes
    ----------
    model : keras.Model
        Trained, with the weights of the best validation loss.
    history : dict of str to list of float
        Per epoch: loss, accuracy, val_loss, val_accuracy (and learning_rate).
    best_epoch : int
        1-based epoch whose weights were kept.
    epochs_run : int
    seconds : float
        Wall-clock training time.
    """

    model: object
    history: dict
    best_epoch: int
    epochs_run: int
    seconds: float


def build_model(config: CnnConfig, seed: Optional[int] = 0):
    """The CNN: flat features -> image -> strided convolutions -> embedding -> classifier.

    Parameters
    ----------
    config : CnnConfig
    seed : int or None
        Seeds the initial weights (through `keras.utils.set_random_seed`, which also seeds
        Python's and numpy's global generators); None leaves the global random state alone.

    Returns
    -------
    keras.Model
        Input "features" of shape (frames * bins,); output class probabilities. The layer named
        `EMBEDDING_LAYER` is the embedding; `CLASSIFIER_LAYER` the softmax classifier after it.
    """
    import keras
    from keras import layers

    if seed is not None:
        keras.utils.set_random_seed(seed)
    features = keras.Input((config.input_width,), name="features")
    hidden = layers.Reshape((config.frames, config.bins, 1), name="as_image")(features)
    for block, filters in enumerate(config.conv_filters, start=1):
        if config.batch_norm:
            hidden = layers.Conv2D(filters, config.kernel_size, strides=config.conv_strides,
                                   padding="same", use_bias=False, name=f"conv{block}")(hidden)
            hidden = layers.BatchNormalization(name=f"bn{block}")(hidden)
            hidden = layers.ReLU(name=f"relu{block}")(hidden)
        else:
            hidden = layers.Conv2D(filters, config.kernel_size, strides=config.conv_strides,
                                   padding="same", activation="relu", name=f"conv{block}")(hidden)
        if config.pool_size > 1:
            hidden = layers.MaxPooling2D(config.pool_size, padding="same",
                                         name=f"pool{block}")(hidden)
    if config.global_pooling:
        # An average pool over the whole map, not GlobalAveragePooling2D: that converts to int8
        # MEAN, which Edge Impulse's TFLM fork rounds differently from upstream TFLM and LiteRT
        # (embeddings up to relative L2 0.029 apart); AVERAGE_POOL_2D is computed alike by both.
        hidden = layers.AveragePooling2D(pool_size=tuple(hidden.shape[1:3]), name="global_pool")(hidden)
        hidden = layers.Flatten(name="pooled")(hidden)
    else:
        hidden = layers.Flatten(name="flatten")(hidden)
    hidden = layers.Dropout(config.dropout, name="dropout")(hidden)
    embedding = layers.Dense(config.embedding_size, activation="relu",
                             name=EMBEDDING_LAYER)(hidden)
    scores = layers.Dense(config.classes, activation="softmax", name=CLASSIFIER_LAYER)(embedding)
    return keras.Model(features, scores, name="audio_cnn")


def train_classifier(model, train: tuple[np.ndarray, np.ndarray],
                     validation: tuple[np.ndarray, np.ndarray], config: TrainConfig,
                     augment: Optional[Augmentation] = None,
                     class_weight: Optional[dict[int, float]] = None,
                     verbose: int = 0) -> TrainResult:
    """Train with Adam and early stopping on the validation loss; keep the best weights.

    Parameters
    ----------
    model : keras.Model
        From `build_model` (any single-input softmax classifier works).
    train, validation : tuple of numpy.ndarray
        (features (rows, width) float32, labels (rows,) int).
    config : TrainConfig
    augment : Augmentation, optional
        Applied to every training batch (never to validation).
    class_weight : dict, optional
        Passed to Keras, for unbalanced classes.
    verbose : int
        Keras verbosity.

    Returns
    -------
    TrainResult
    """
    import time

    import keras

    keras.utils.set_random_seed(config.seed)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    batches = _shuffled_batches_class()(train[0], train[1], config.batch_size, config.seed,
                                        augment)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                      restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                          patience=max(2, config.patience // 3), min_lr=1e-5),
    ]
    started = time.perf_counter()
    history = model.fit(batches, validation_data=(validation[0], validation[1]),
                        epochs=config.epochs, callbacks=callbacks, class_weight=class_weight,
                        verbose=verbose)
    seconds = time.perf_counter() - started
    values = {key: [float(v) for v in series] for key, series in history.history.items()}
    best_epoch = int(np.argmin(values["val_loss"])) + 1
    return TrainResult(model=model, history=values, best_epoch=best_epoch,
                       epochs_run=len(values["val_loss"]), seconds=seconds)


@functools.cache
def _shuffled_batches_class():
    # Defined on first use: a keras subclass at import time would import keras with the module.
    import keras

    class ShuffledBatches(keras.utils.PyDataset):
        """Seeded shuffling per epoch and optional augmentation, on in-memory arrays."""

        def __init__(self, features, labels, batch_size, seed, augment):
            super().__init__()
            self.features = np.asarray(features, dtype=np.float32)
            self.labels = np.asarray(labels)
            self.batch_size = batch_size
            self.augment = augment
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(self.labels))

        def __len__(self):
            return math.ceil(len(self.labels) / self.batch_size)

        def __getitem__(self, index):
            rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
            batch = self.features[rows]
            if self.augment is not None:
                batch = self.augment(batch.copy(), self.rng).astype(np.float32)
            return batch, self.labels[rows]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(self.labels))

    return ShuffledBatches


# --------------------------------------------------------------------------------------------
# Augmentations


def time_frequency_masks(config: CnnConfig, time_masks: int = 2, max_frames: int = 4,
                         frequency_masks: int = 2, max_bins: int = 6) -> Augmentation:
    """SpecAugment-style masking: random runs of frames and of bins set to the row's minimum.

    Parameters
    ----------
    config : CnnConfig
        For the frames x bins layout of a row.
    time_masks, frequency_masks : int
        Masks per window along each axis.
    max_frames, max_bins : int
        Widest mask along each axis (each mask's width is drawn in [0, max]).
    """

    def augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        images = batch.reshape(len(batch), config.frames, config.bins)
        floor = images.min(axis=(1, 2))
        for row, image in enumerate(images):
            for _ in range(time_masks):
                width = rng.integers(0, max_frames + 1)
                start = rng.integers(0, max(1, config.frames - width + 1))
                image[start:start + width, :] = floor[row]
            for _ in range(frequency_masks):
                width = rng.integers(0, max_bins + 1)
                start = rng.integers(0, max(1, config.bins - width + 1))
                image[:, start:start + width] = floor[row]
        return images.reshape(batch.shape)

    return augment


def gain_shift(max_db: float, db_per_unit: float) -> Augmentation:
    """A random loudness change per window, for dB-scaled front-ends.

    Spectrogram and MFE (versions 3 and 4) map dB linearly to features, ``db_per_unit`` dB per
    unit (``12 - noise_floor_db``), so a gain of g dB adds ``g / db_per_unit`` to every value
    above the noise floor. Values stay at or above 0, where the front-end clips.

    Parameters
    ----------
    max_db : float
        Gains are drawn uniformly in [-max_db, max_db].
    db_per_unit : float
        dB per feature unit of the front-end.
    """

    def augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        shift = rng.uniform(-max_db, max_db, (len(batch), 1)) / db_per_unit
        above_floor = batch > 0
        return np.where(above_floor, np.maximum(batch + shift, 0), batch)

    return augment


def compose(augmentations: Sequence[Augmentation]) -> Augmentation:
    """Apply several augmentations in order."""

    def augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for step in augmentations:
            batch = step(batch, rng)
        return batch

    return augment
