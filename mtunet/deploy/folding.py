"""Folding BatchNormalization layers into the convolutions before them, for a faster exported model."""

import keras
import numpy as np

from mtunet.training.batchnorm import batchnorm_layers


class _Passthrough(keras.layers.Layer):
    """Returns its input: stands where a folded BatchNormalization was, so the cloned graph keeps its connections."""

    def call(self, inputs, mask=None, training=None):
        return inputs


_FOLDABLE_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _model_outputs(model: keras.Model) -> set[int]:
    """``id`` of every output tensor of ``model`` and of the models nested in it."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return {id(tensor) for tensor in model.outputs}.union(*(_model_outputs(inner) for inner in nested))


def _foldable_pairs(model: keras.Model) -> dict:
    """``{id(convolution): batchnorm}`` for each BatchNormalization (nested models included) whose one input is the
    output of a 2-D convolution called once, read by nothing else and not a model output, over the last axis, both
    computing in float32: the pairs ``fold_batchnorm`` can merge. (Under mixed precision the folded kernel would
    round differently.) Keras has no public API for a functional graph's edges, hence its nodes' attributes."""
    outputs, pairs = _model_outputs(model), {}
    for norm in batchnorm_layers(model):
        if len(norm._inbound_nodes) != 1 or norm.axis not in (-1, 3) or norm.compute_dtype != "float32":
            continue
        tensor = norm._inbound_nodes[0].input_tensors[0]
        producer = tensor._keras_history.operation
        if (isinstance(producer, _FOLDABLE_CONVOLUTIONS) and producer.compute_dtype == "float32"
                and len(producer._inbound_nodes) == 1 and len(producer._outbound_nodes) == 1
                and id(tensor) not in outputs):
            pairs[id(producer)] = norm
    return pairs


def _folded_weights(convolution, norm) -> list[np.ndarray]:
    """Kernel and bias of ``convolution`` followed by ``norm`` in inference mode, as one convolution."""
    mean, variance = norm.moving_mean.numpy(), norm.moving_variance.numpy()
    gamma = norm.gamma.numpy() if norm.scale else np.ones_like(mean)
    beta = norm.beta.numpy() if norm.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + norm.epsilon)
    kernel = convolution.kernel.numpy()
    bias = convolution.bias.numpy() if convolution.use_bias else np.zeros_like(mean)
    if isinstance(convolution, keras.layers.DepthwiseConv2D):
        scale_of_kernel = scale.reshape(kernel.shape[2:])  # (in, multiplier): output channel c * multiplier + m
    else:
        scale_of_kernel = scale  # the last axis of (height, width, in, out)
    kernel = kernel * scale_of_kernel
    return [kernel, (bias - mean) * scale + beta]


def fold_batchnorm(model: keras.Model) -> tuple[keras.Model, int]:
    """A copy of ``model`` for inference with every BatchNormalization that follows a convolution merged into it.

    In inference mode such a BatchNormalization is a per-channel affine map, so the convolution before it can apply
    it through its kernel and bias. TensorFlow's graph optimiser does not do this for Keras 3 models (their
    BatchNormalization is a multiply and an add, not the fused op that oneDNN's fusions match, and a SavedModel's
    weights are variables, not constants), so an exported model would pay two passes over every activation tensor
    per convolution. Outputs agree with ``model(..., training=False)`` up to float rounding; the copy is for
    inference and export only (training it would train a different network).

    Returns:
        ``(folded copy, number of BatchNormalization layers folded)``.
    """
    pairs = _foldable_pairs(model)
    folded = {id(norm) for norm in pairs.values()}

    def clone_layer(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone_layer)
        if id(layer) in folded:
            return _Passthrough(name=layer.name)
        config = layer.get_config()
        if id(layer) in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone_layer)
    _copy_weights(model, copy, pairs)
    return copy, len(pairs)


def _copy_weights(source: keras.Model, target: keras.Model, pairs: dict) -> None:
    """Sets every layer of ``target`` (nested models included) to the weights of its namesake in ``source``, folded
    for the convolutions in ``pairs``."""
    for layer in source.layers:
        if not layer.weights:  # input layers among them, which cloning renames
            continue
        clone = target.get_layer(layer.name)
        if isinstance(layer, keras.Model):
            _copy_weights(layer, clone, pairs)
        elif id(layer) in pairs:
            clone.set_weights(_folded_weights(layer, pairs[id(layer)]))
        elif not isinstance(clone, _Passthrough):
            clone.set_weights(layer.get_weights())
