"""The ResFormer encoder (Bui et al., "Multi-scale Feature Enhancement in Multi-task Learning for Medical Image
Analysis"): a hybrid CNN-Transformer of four levels, each a ResNet-34 basic block and a Swin block pair.

As the paper describes it: a stem (convolution, max-pooling) to ``H/2 x W/2 x 64``; levels at 1/2, 1/4, 1/8 and 1/16
of the input, 64 / 128 / 256 / 512 wide, a 3x3 stride-2 convolution (PatchMerging) between them; Swin heads 2 / 4 /
8 / 16. ``sequential`` runs the Swin pair on the ResNet block's output, ``parallel`` sums the two branches of the
level's input. The stem's kernel (7x7, stride 1) follows the authors' code, the paper does not give it. The pyramid is
P1..P4 (depth 4): the bottleneck is P4, at stride 16.
"""

import dataclasses

import keras

from mtunet.errors import ConfigError
from mtunet.models.encoders.base import ENCODERS, EncoderSpec
from mtunet.models.encoders.swin import SwinBlock

VARIANTS = ("sequential", "parallel")


def apply_resnet_block(x, name):
    """ResNet-34's basic block at the input's width: ``ReLU(F + BN(Conv3x3(ReLU(BN(Conv3x3(F))))))``."""
    channels = x.shape[-1]
    y = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn1")(y)
    y = keras.layers.Activation("relu", name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn2")(y)
    y = keras.layers.Add(name=f"{name}_add")([x, y])
    return keras.layers.Activation("relu", name=f"{name}_relu")(y)


def apply_swin_pair(x, num_heads, window_size, name):
    """A Swin block (W-MSA) then a shifted one (SW-MSA), named ``{name}_wmsa`` and ``{name}_swmsa``."""
    x = SwinBlock(num_heads, window_size, shifted=False, name=f"{name}_wmsa")(x)
    return SwinBlock(num_heads, window_size, shifted=True, name=f"{name}_swmsa")(x)


def apply_resformer_block(x, num_heads, window_size, variant, resnet_blocks, name):
    """One level: ``resnet_blocks`` basic blocks and a Swin pair, in series (``sequential``) or summed
    (``parallel``), then a LayerNorm, the layer ``{name}_output``: Swin's feature-pyramid backbone normalises each
    output it hands on, and without it the residual stream reaches a standard deviation near 5 at level 4 (224 px,
    random weights), which saturates a softmax class head after one Adam step."""
    residual = x
    for block in range(1, resnet_blocks + 1):
        residual = apply_resnet_block(residual, name=f"{name}_resnet{block}")
    if variant == "sequential":
        output = apply_swin_pair(residual, num_heads, window_size, name=f"{name}_swin")
    else:
        swin = apply_swin_pair(x, num_heads, window_size, name=f"{name}_swin")
        output = keras.layers.Add(name=f"{name}_sum")([residual, swin])
    return keras.layers.LayerNormalization(epsilon=1e-5, name=f"{name}_output")(output)


@dataclasses.dataclass(frozen=True)
class ResFormerEncoder(EncoderSpec):
    """The ResFormer's encoder, randomly initialised (the paper trains it from scratch; a weights file of the same
    architecture loads with ``weights=PATH``).

    Attributes:
        variant: ``"sequential"`` or ``"parallel"``.
        widths: channels of levels 1-4.
        num_heads: Swin heads of levels 1-4.
        resnet_blocks: basic blocks per level (the paper's text: one; the authors' code: 3, 4, 6, 3).
        window_size: Swin window side (Swin's 7; the paper gives none).
    """

    variant: str = "sequential"
    widths: tuple[int, ...] = (64, 128, 256, 512)
    num_heads: tuple[int, ...] = (2, 4, 8, 16)
    resnet_blocks: tuple[int, ...] = (1, 1, 1, 1)
    window_size: int = 7

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown ResFormer variant {self.variant!r}; expected one of: {', '.join(VARIANTS)}")

    def build_backbone(self, input_shape, weights):
        """The four-level functional model; its pyramid layers ``level1_output`` .. ``level4_output``."""
        inputs = keras.Input(input_shape, name="scaled_images")
        x = keras.layers.Conv2D(self.widths[0], 7, padding="same", use_bias=False, name="stem_conv")(inputs)
        x = keras.layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
        x = keras.layers.Activation("relu", name="stem_relu")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
        for level, (width, heads, blocks) in enumerate(zip(self.widths, self.num_heads, self.resnet_blocks),
                                                       start=1):
            if level > 1:
                x = keras.layers.Conv2D(width, 3, strides=2, padding="same", name=f"level{level}_merge")(x)
            x = apply_resformer_block(x, heads, self.window_size, self.variant, blocks, name=f"level{level}")
        backbone = keras.Model(inputs, x, name=self.name)
        if weights is not None:
            backbone.load_weights(weights)
        return backbone, tuple(f"level{level}_output" for level in range(1, len(self.widths) + 1))


for _variant in VARIANTS:
    ENCODERS.register(f"resformer_{_variant}", ResFormerEncoder(
        f"resformer_{_variant}", "torch", imagenet_weights=False, depth=4, variant=_variant))
