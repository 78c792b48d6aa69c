"""What every encoder declares, the encoder registry, and the P1..P5 feature pyramid an encoder returns.

An encoder is a functional model from the scaled 3-channel image to ``{"P1": ..., "P5": ...}``, P<n> the feature map
2**n times smaller than the input; its deepest level (P5, or P4 for an encoder of depth 4 such as the ResFormer's) is
the bottleneck. Entries declare their properties (input scaling, ImageNet
weights, centre block) so that no other module decides anything from an encoder's name. ``applications.py`` holds
the ``keras.applications`` entries; an in-house encoder subclasses ``EncoderSpec`` and registers the same way.
"""

import abc
import dataclasses
import os

import keras

from mtunet.errors import ConfigError, WeightsUnavailableError
from mtunet.models.registry import Registry
from mtunet.options import spell

# Pyramid level names: P<n> is the feature map 2**n times smaller than the input (P5 is the bottleneck).
PYRAMID_LEVELS = ("P1", "P2", "P3", "P4", "P5")
OUTPUT_STRIDE = 2 ** len(PYRAMID_LEVELS)

# BatchNormalization momentum for randomly initialised encoders. keras.applications builds MobileNetV2 and
# EfficientNet with momentum 0.99-0.999, so a model trained from scratch for a few hundred steps still carries moving
# statistics near their initial values and collapses in inference mode (an empty mask, a single class).
SCRATCH_BN_MOMENTUM = 0.9

INPUT_SCALINGS = {
    "caffe": "BGR, ImageNet mean subtracted",
    "tf": "scaled to [-1, 1]",
    "torch": "scaled to [0, 1], ImageNet mean/std",
    "none": "raw 0-255 (rescaled inside the encoder)",
}

ENCODERS = Registry("encoder")


@dataclasses.dataclass(frozen=True)
class EncoderSpec(abc.ABC):
    """What the model builder needs to know about one encoder (subclasses say how to build it).

    Attributes:
        name: registry name, e.g. ``"mobilenetv2"``.
        input_scaling: how raw 0-255 pixels are scaled for the encoder, a key of ``INPUT_SCALINGS``.
        imagenet_weights: whether ``weights="imagenet"`` exists for this encoder.
        needs_center_block: whether the bottleneck is a bare pooling layer that needs convolutions before decoding.
        depth: the pyramid levels it returns, P1..P<depth> (4 or 5); the deepest is the bottleneck.
    """

    name: str
    input_scaling: str
    imagenet_weights: bool = True
    needs_center_block: bool = False
    depth: int = len(PYRAMID_LEVELS)

    @property
    def levels(self) -> tuple[str, ...]:
        """The pyramid levels it returns, shallowest first."""
        return PYRAMID_LEVELS[:self.depth]

    @abc.abstractmethod
    def build_backbone(self, input_shape: tuple[int, int, int], weights: str | None) -> tuple[keras.Model, tuple]:
        """``(backbone, the names of its ``depth`` pyramid layers)`` for ``weights``: ``"imagenet"``, None or a
        file path."""


def get_encoder(name: str) -> EncoderSpec:
    """Returns the registry entry for ``name``; raises ``ConfigError`` listing the valid names otherwise."""
    return ENCODERS.get(name)


def build_encoder(spec: EncoderSpec, input_shape: tuple[int, int, int], weights: str | None,
                  name: str = "encoder") -> keras.Model:
    """Builds ``spec``'s backbone as a functional model from a 3-channel input to a dict of P1..P5 features.

    Args:
        spec: the encoder's registry entry.
        input_shape: ``(height, width, 3)`` of the already scaled input.
        weights: ``"imagenet"``, ``None`` (random initialisation) or the path of a weights file of the backbone.

    Returns:
        A ``keras.Model`` named ``name`` whose outputs are ``{"P1": ..., "P<depth>": ...}``.
    """
    if weights == "imagenet" and not spec.imagenet_weights:
        raise WeightsUnavailableError(
            f"Keras has no ImageNet weights for encoder {spec.name!r}; use {spell('weights', None)} or a local "
            "weights file"
        )
    if weights not in ("imagenet", None) and not os.path.isfile(weights):
        raise ConfigError(f"encoder weights file {weights!r} not found; expected 'imagenet', None or a file path")
    backbone, pyramid_layers = spec.build_backbone(input_shape, weights)
    if weights is None:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = SCRATCH_BN_MOMENTUM
    features = {
        level: backbone.get_layer(layer_name).output
        for level, layer_name in zip(spec.levels, pyramid_layers, strict=True)
    }
    return keras.Model(backbone.inputs, features, name=name)
