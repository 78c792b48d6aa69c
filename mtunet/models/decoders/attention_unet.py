"""Attention U-Net decoder (Oktay et al. 2018, "Attention U-Net: Learning Where to Look for the Pancreas"): the U-Net
decoder with an additive attention gate on every skip."""

import keras

from mtunet.models.decoders.base import DECODERS, DecoderSpec, apply_center_block
from mtunet.models.decoders.unet import apply_decoder_block, decoder_stages


def apply_attention_gate(skip, gating, name):
    """Additive attention gate: the skip multiplied by coefficients in (0, 1) computed from it and the gating signal.

    ``alpha = sigmoid(psi(ReLU(theta(skip) + phi(gating))))``: ``theta`` a 2x2 convolution with stride 2 taking the
    skip to the gating signal's grid, ``phi`` a 1x1 convolution, both to half the skip's channels, ``psi`` a 1x1
    convolution to one channel; ``alpha`` is resampled bilinearly to the skip's resolution and multiplied in, as in
    the authors' implementation.

    Args:
        skip: ``(batch, h, w, c)`` encoder feature.
        gating: ``(batch, h / 2, w / 2, c_g)`` the coarser decoder stage's output.
        name: prefix of the layers; the coefficients are the layer ``{name}_attention``, ``(batch, h / 2, w / 2, 1)``.

    Returns:
        The gated skip, ``(batch, h, w, c)``.
    """
    channels = max(1, skip.shape[-1] // 2)
    theta = keras.layers.Conv2D(channels, 2, strides=2, use_bias=False, name=f"{name}_theta")(skip)
    phi = keras.layers.Conv2D(channels, 1, name=f"{name}_phi")(gating)
    joined = keras.layers.Activation("relu", name=f"{name}_relu")(keras.layers.Add(name=f"{name}_add")([theta, phi]))
    coefficients = keras.layers.Conv2D(1, 1, name=f"{name}_psi")(joined)
    coefficients = keras.layers.Activation("sigmoid", name=f"{name}_attention")(coefficients)
    coefficients = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_resample")(coefficients)
    return keras.layers.Multiply(name=f"{name}_gated")([skip, coefficients])


def apply_attention_unet_decoder(features, skips, decoder_filters, center_block=False):
    """The U-Net decoder (``mtunet.models.decoders.unet``) with each stage's skip gated by the stage's input.

    Arguments and output as for ``apply_unet_decoder``; stage ``i``'s gate is named ``decoder_stage{i}_gate`` and its
    coefficients ``decoder_stage{i}_gate_attention``. A stage without skip has no gate.
    """
    bottleneck = features[max(features)]  # the deepest level
    x = apply_center_block(bottleneck) if center_block else bottleneck
    for stage, filters, skip in decoder_stages(features, skips, decoder_filters):
        name = f"decoder_stage{stage}"
        if skip is not None:
            skip = apply_attention_gate(skip, x, name=f"{name}_gate")
        x = apply_decoder_block(x, skip, filters, name=name)
    return x


DECODERS.register("attention_unet", DecoderSpec(
    "attention_unet", apply_attention_unet_decoder, gradcam_layer="decoder_stage4_conv2_relu",
    description="Attention U-Net (Oktay et al. 2018): the U-Net decoder with an additive attention gate on each skip",
    explained_layers=("decoder_stage{stage}_gate_attention",)))
