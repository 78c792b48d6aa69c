"""The decoder registry, what a decoder entry declares, and the convolution blocks decoders share."""

import dataclasses
from collections.abc import Callable

import keras

from mtunet.models.registry import Registry

DECODERS = Registry("decoder")


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
    """One decoder.

    Attributes:
        name: registry name, e.g. ``"unet"``.
        apply: ``apply(features, skips, decoder_filters, center_block) -> tensor`` at the input resolution;
            ``features`` the P1..P5 pyramid, ``skips`` the P1..P4 features after their skip modules (None where the
            model has no skip connections).
        gradcam_layer: the layer Seg-Grad-CAM explains by default (detail arrives through the skips, not the
            bottleneck, where Seg-Grad-CAM is all zero): the last stage at stride 2.
        description: one line for ``mtunet architectures``.
        explained_layers: name patterns of further maps worth showing (e.g. attention coefficients), ``{stage}``
            standing for the stage number 1..4.
    """

    name: str
    apply: Callable
    gradcam_layer: str
    description: str
    explained_layers: tuple[str, ...] = ()


def apply_conv_block(x, filters, name):
    """3x3 convolution -> batch normalisation -> ReLU, layers named ``{name}_conv``, ``_bn``, ``_relu``."""
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def apply_center_block(x, name="decoder_center"):
    """Two conv blocks at the bottleneck's width, for encoders whose P5 is a bare pooling layer."""
    bottleneck_channels = x.shape[-1]
    x = apply_conv_block(x, bottleneck_channels, name=f"{name}1")
    return apply_conv_block(x, bottleneck_channels, name=f"{name}2")
