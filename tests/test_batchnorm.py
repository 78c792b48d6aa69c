import keras
import numpy as np
import pytest
import tensorflow as tf

from mtunet.batchnorm import batchnorm_layers, estimate_batchnorm_statistics


def _batches(arrays):
    return iter([(tf.constant(array), None) for array in arrays])


def test_statistics_are_the_mean_of_the_batch_means_and_variances():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(loc, scale, (8, 3)).astype("float32") for loc, scale in [(1, 1), (5, 2), (-3, 0.5)]]
    inputs = keras.Input((3,))
    norm = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, norm(inputs))

    used = estimate_batchnorm_statistics(model, _batches(arrays))

    assert used == 24
    np.testing.assert_allclose(norm.moving_mean.numpy(), np.mean([a.mean(0) for a in arrays], 0), rtol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), np.mean([a.var(0) for a in arrays], 0), rtol=1e-4)
    assert norm.momentum == 0.99


def test_image_limit_frozen_layers_and_nested_models():
    inputs = keras.Input((2,))
    inner_norm = keras.layers.BatchNormalization(name="inner")
    inner = keras.Model(inputs, inner_norm(inputs), name="encoder")
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    outer_inputs = keras.Input((2,))
    model = keras.Model(outer_inputs, frozen(inner(outer_inputs)))
    assert [layer.name for layer in batchnorm_layers(model)] == ["inner", "frozen"]

    arrays = [np.full((4, 2), value, "float32") for value in (2.0, 4.0, 100.0)]
    used = estimate_batchnorm_statistics(model, _batches(arrays), max_images=8)

    assert used == 8  # the third batch is not read
    np.testing.assert_allclose(inner_norm.moving_mean.numpy(), [3.0, 3.0])
    np.testing.assert_allclose(frozen.moving_mean.numpy(), [0.0, 0.0])


@pytest.mark.parametrize("momentum", [0.9, 0.999])
def test_after_estimation_inference_matches_training_mode_on_the_same_batch(momentum):
    images = np.random.default_rng(1).uniform(0, 255, (16, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=momentum)(x))
    before = np.abs(model(images, training=False) - model(images, training=True)).max()

    estimate_batchnorm_statistics(model, _batches([images]))

    after = np.abs(model(images, training=False) - model(images, training=True)).max()
    assert before > 1.0 and after < 1e-2

