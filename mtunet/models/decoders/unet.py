"""U-Net decoder: from the encoder's P1..P5 features back to the input resolution."""

import keras

from mtunet.models.decoders.base import DECODERS, DecoderSpec, apply_center_block, apply_conv_block
from mtunet.models.encoders.base import PYRAMID_LEVELS


def check_decoder_filters(decoder_filters):
    if len(decoder_filters) != len(PYRAMID_LEVELS):
        raise ValueError(
            f"decoder_filters needs {len(PYRAMID_LEVELS)} values, one per stage; received {tuple(decoder_filters)}"
        )


def decoder_stages(features, skips, decoder_filters):
    """``[(stage, filters, skip), ...]`` of the decoder on ``features``: stage ``i`` outputs stride ``2**(5 - i)``,
    so an encoder of depth 5 gets stages 1..5 and one of depth 4 (bottleneck at stride 16) stages 2..5, with the
    filters ``decoder_filters`` give those strides; the skip of each stage is the level of its output stride (the
    full-resolution stage has none)."""
    check_decoder_filters(decoder_filters)
    depth = len(features)
    first = len(PYRAMID_LEVELS) - depth + 1
    stage_skips = [skips.get(level) for level in reversed(PYRAMID_LEVELS[:depth - 1])] + [None]
    return list(zip(range(first, len(PYRAMID_LEVELS) + 1), decoder_filters[first - 1:], stage_skips))


def upsample(x, skip, name):
    """``x`` upsampled by 2 (nearest neighbour, as U-Net implementations such as smp do; its gradient is far cheaper
    than bilinear's on CPU), ``{name}_upsample``, concatenated with ``skip`` when given, ``{name}_concat``."""
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample")(x)
    if skip is None:
        return x
    return keras.layers.Concatenate(name=f"{name}_concat")([x, skip])


def apply_decoder_block(x, skip, filters, name):
    """``upsample`` then two conv blocks, ``{name}_conv1_*`` and ``{name}_conv2_*``."""
    x = upsample(x, skip, name)
    x = apply_conv_block(x, filters, name=f"{name}_conv1")
    return apply_conv_block(x, filters, name=f"{name}_conv2")


def apply_unet_decoder(features, skips, decoder_filters, center_block=False):
    """Decodes a feature pyramid to a map at the input resolution.

    Args:
        features: ``{"P1": ..., "P5": ...}``, P<n> 2**n times smaller than the input; the deepest is the bottleneck
            (P5, or P4 for an encoder of depth 4).
        skips: the other levels, ``{"P1": ..., "P4": ...}``, concatenated into stages 4..1 (stage 5, at full
            resolution, has no encoder feature of its scale); a value of None leaves that stage without skip (the
            paper's ablation).
        decoder_filters: filters of the 5 decoder stages, from the deepest (stride 16) to the finest (stride 1); an
            encoder of depth 4 has no stage 1 and leaves its value unused.
        center_block: two conv blocks on the bottleneck first, for encoders whose P5 is a bare pooling layer.

    Returns:
        The last stage's output, ``(batch, H, W, decoder_filters[-1])``; stage ``i`` is named ``decoder_stage{i}``.
    """
    bottleneck = features[max(features)]  # the deepest level
    x = apply_center_block(bottleneck) if center_block else bottleneck
    for stage, filters, skip in decoder_stages(features, skips, decoder_filters):
        x = apply_decoder_block(x, skip, filters, name=f"decoder_stage{stage}")
    return x


DECODERS.register("unet", DecoderSpec(
    "unet", apply_unet_decoder, gradcam_layer="decoder_stage4_conv2_relu",
    description="U-Net (Ronneberger et al. 2015): upsample, concatenate the skip, two 3x3 conv blocks per stage"))
