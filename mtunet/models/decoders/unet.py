"""U-Net decoder: from the encoder's P1..P5 features back to the input resolution."""

import keras

from mtunet.encoders import PYRAMID_LEVELS


def apply_conv_block(x, filters, name):
    """3x3 convolution -> batch normalisation -> ReLU, layers named ``{name}_conv``, ``_bn``, ``_relu``."""
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def apply_decoder_block(x, skip, filters, name):
    """Upsamples ``x`` by 2 (nearest neighbour, as U-Net implementations such as smp do; its gradient is far cheaper
    than bilinear's on CPU), concatenates ``skip`` when given, then two conv blocks.

    Layers are named ``{name}_upsample``, ``{name}_concat`` (only with a skip), ``{name}_conv1_*``, ``{name}_conv2_*``.
    """
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample")(x)
    if skip is not None:
        x = keras.layers.Concatenate(name=f"{name}_concat")([x, skip])
    x = apply_conv_block(x, filters, name=f"{name}_conv1")
    return apply_conv_block(x, filters, name=f"{name}_conv2")


def apply_unet_decoder(features, decoder_filters, skip_connections=True, center_block=False):
    """Decodes a feature pyramid to a map at the input resolution.

    Args:
        features: ``{"P1": ..., "P5": ...}``, P<n> 2**n times smaller than the input; P5 is the bottleneck.
        decoder_filters: filters of the 5 decoder stages, from the deepest (stride 16) to the finest (stride 1).
        skip_connections: concatenate P4..P1 into stages 1..4 (stage 5, at full resolution, has no encoder
            feature of its scale); ``False`` is the paper's ablation.
        center_block: two conv blocks on the bottleneck first, for encoders whose P5 is a bare pooling layer.

    Returns:
        The last stage's output, ``(batch, H, W, decoder_filters[-1])``; stage ``i`` is named ``decoder_stage{i}``.
    """
    if len(decoder_filters) != len(PYRAMID_LEVELS):
        raise ValueError(
            f"decoder_filters needs {len(PYRAMID_LEVELS)} values, one per stage; received {tuple(decoder_filters)}"
        )
    x = features["P5"]
    if center_block:
        bottleneck_channels = x.shape[-1]
        x = apply_conv_block(x, bottleneck_channels, name="decoder_center1")
        x = apply_conv_block(x, bottleneck_channels, name="decoder_center2")
    skips = [features[level] for level in reversed(PYRAMID_LEVELS[:-1])] + [None]
    for stage, (filters, skip) in enumerate(zip(decoder_filters, skips), start=1):
        x = apply_decoder_block(x, skip if skip_connections else None, filters, name=f"decoder_stage{stage}")
    return x
