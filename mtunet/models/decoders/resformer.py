"""The ResFormer decoder (Bui et al., "Multi-scale Feature Enhancement in Multi-task Learning for Medical Image
Analysis"): at each level the (enhanced) skip is concatenated with the upsampled decoder feature, then one 3x3
convolution, BatchNorm and ReLU."""

from mtunet.models.decoders.base import DECODERS, DecoderSpec, apply_center_block, apply_conv_block
from mtunet.models.decoders.unet import decoder_stages, upsample


def apply_resformer_decoder(features, skips, decoder_filters, center_block=False):
    """Decodes a feature pyramid as the paper's text describes: per stage, upsample by 2, concatenate the skip (the
    DFE module's output in the preset), one conv block (``decoder_stage{i}_conv1_*``).

    Arguments and output as for ``mtunet.models.decoders.unet.apply_unet_decoder``; the final 1x1 convolution is the
    mask head's. Upsampling is nearest-neighbour as in mtunet's U-Net (the authors' code uses transposed
    convolutions; the paper says "upsample").
    """
    bottleneck = features[max(features)]  # the deepest level
    x = apply_center_block(bottleneck) if center_block else bottleneck
    for stage, filters, skip in decoder_stages(features, skips, decoder_filters):
        x = upsample(x, skip, name=f"decoder_stage{stage}")
        x = apply_conv_block(x, filters, name=f"decoder_stage{stage}_conv1")
    return x


DECODERS.register("resformer", DecoderSpec(
    "resformer", apply_resformer_decoder, gradcam_layer="decoder_stage4_conv1_relu",
    description="ResFormer (Bui et al.): upsample, concatenate the skip, one 3x3 conv block per stage"))
