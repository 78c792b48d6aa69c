import keras
import numpy as np
import pytest
import tensorflow as tf

from mtunet.deploy.folding import fold_batchnorm
from mtunet.training.batchnorm import batchnorm_layers, estimate_batchnorm_statistics


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


def _randomise_statistics(model, rng):
    for norm in batchnorm_layers(model):
        channels = norm.moving_mean.shape[0]
        norm.moving_mean.assign(rng.normal(0, 1, channels))
        norm.moving_variance.assign(rng.uniform(0.2, 3, channels))
        norm.gamma.assign(rng.uniform(0.5, 1.5, channels))
        norm.beta.assign(rng.normal(0, 0.5, channels))


def test_folding_merges_each_batchnorm_after_a_convolution_and_keeps_the_outputs():
    inputs = keras.Input((8, 8, 3))
    inner_inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inner_inputs)
    x = keras.layers.BatchNormalization()(x)  # folded: no bias before
    inner = keras.Model(inner_inputs, x, name="encoder")
    x = inner(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)  # folded: depthwise with bias, 8 channels
    y = keras.layers.Conv2D(8, 1)(x)
    shared = keras.layers.BatchNormalization()(y)  # not folded: the add reads the convolution's output too
    x = keras.layers.Add()([y, shared])
    raw = keras.layers.Conv2D(8, 1)(x)
    x = keras.layers.BatchNormalization()(raw)  # not folded: the convolution's output is also a model output
    float32_output = keras.layers.BatchNormalization()(x)  # not folded: follows a BatchNormalization
    x = keras.layers.Conv2D(2, 1, dtype="mixed_bfloat16")(float32_output)
    x = keras.layers.BatchNormalization(dtype="mixed_bfloat16")(x)  # not folded: would round differently
    model = keras.Model(inputs, [float32_output, x, raw])
    _randomise_statistics(model, np.random.default_rng(0))
    images = np.random.default_rng(1).normal(0, 1, (2, 8, 8, 3)).astype("float32")

    folded_model, folded = fold_batchnorm(model)

    assert folded == 2 and len(batchnorm_layers(folded_model)) == 4
    expected, outputs = model(images, training=False), folded_model(images, training=False)
    np.testing.assert_allclose(outputs[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(outputs[1], expected[1], atol=2e-2)  # bfloat16 keeps 8 bits of mantissa
    np.testing.assert_allclose(outputs[2], expected[2], atol=1e-5)
    assert len(batchnorm_layers(model)) == 6  # the original is left as it was
