"""The audio CNN and its training loop (`models/cnn.py`), on tiny inputs."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")
# Keras itself trips this numpy 2 warning; nothing to fix here.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

from models.cnn import (  # noqa: E402
    EMBEDDING_LAYER,
    CnnConfig,
    TrainConfig,
    build_model,
    compose,
    gain_shift,
    time_frequency_masks,
    train_classifier,
)

CONFIG = CnnConfig(frames=12, bins=10, classes=3, conv_filters=(4, 8), kernel_size=3,
                   embedding_size=6)


def separable_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each class lights up its own band of bins."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CONFIG.classes, rows)
    images = rng.uniform(0, 0.2, (rows, CONFIG.frames, CONFIG.bins))
    for row, label in enumerate(labels):
        images[row, :, 3 * label:3 * label + 3] += 1
    return images.reshape(rows, -1).astype(np.float32), labels


def test_model_ends_with_embedding_then_classifier():
    model = build_model(CONFIG)
    assert model.input.shape[1:] == (CONFIG.input_width,)
    assert model.get_layer(EMBEDDING_LAYER).output.shape[1:] == (CONFIG.embedding_size,)
    assert model.layers[-1].name == "classifier"
    assert model.output.shape[1:] == (CONFIG.classes,)


def test_same_seed_same_initial_weights():
    first, second = build_model(CONFIG, seed=3), build_model(CONFIG, seed=3)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("options", [{"batch_norm": True}, {"global_pooling": True}])
def test_variants_convert_to_pure_int8(options):
    from models.convert_embeddings import convert_int8, cut_embedding_model, float_ops_inside

    config = CnnConfig(**{**CONFIG.__dict__, **options})
    cut = cut_embedding_model(build_model(config))
    assert cut.cut_layer == EMBEDDING_LAYER
    model = convert_int8(cut, separable_data(20, 0)[0])
    assert float_ops_inside(model) == []


def test_training_learns_and_keeps_the_best_epoch():
    x, y = separable_data(240, 0)
    x_val, y_val = separable_data(60, 1)
    result = train_classifier(build_model(CONFIG), (x, y), (x_val, y_val),
                              TrainConfig(epochs=8, batch_size=16, patience=3, seed=0),
                              augment=time_frequency_masks(CONFIG, max_frames=2, max_bins=1))
    accuracy = np.mean(np.argmax(result.model.predict(x_val, verbose=0), 1) == y_val)
    assert accuracy > 0.9
    assert 1 <= result.best_epoch <= result.epochs_run <= 8
    assert set(result.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_augmentations_keep_shape_and_the_noise_floor():
    rng = np.random.default_rng(0)
    batch = separable_data(8, 0)[0]
    batch[:, :5] = 0  # bins at the noise floor
    augmented = compose([gain_shift(10, 97), time_frequency_masks(CONFIG)])(batch.copy(), rng)
    assert augmented.shape == batch.shape
    assert np.all(augmented[:, :5] == 0)
    assert augmented.min() >= 0
