"""The dilated feature enhancement (DFE) skip module of the ResFormer (Bui et al., "Multi-scale Feature Enhancement
in Multi-task Learning for Medical Image Analysis"): parallel dilated convolutions summed, then spatial attention."""

import keras
from keras import ops

from mtunet.models.skips.base import SKIPS, SkipSpec

DILATION_RATES = (6, 12, 18)


@keras.saving.register_keras_serializable(package="mtunet")
class ChannelPooling(keras.layers.Layer):
    """The mean and the maximum over channels, concatenated: ``(batch, H, W, C)`` -> ``(batch, H, W, 2)`` (CBAM's
    spatial-attention input; Keras has no layer that pools over the channel axis)."""

    def call(self, x):
        return ops.concatenate([ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2)


def apply_spatial_attention(x, name):
    """CBAM's spatial attention (Woo et al. 2018): ``x * sigmoid(Conv7x7([mean_c(x), max_c(x)]))``; the map is the
    layer ``{name}_map``, ``(batch, H, W, 1)``."""
    pooled = ChannelPooling(name=f"{name}_pool")(x)
    attention = keras.layers.Conv2D(1, 7, padding="same", activation="sigmoid", name=f"{name}_map")(pooled)
    return keras.layers.Multiply(name=f"{name}_apply")([x, attention])


def apply_dfe(feature, name, dilation_rates=DILATION_RATES):
    """``SA(ReLU(sum_d BN(Conv1x1(BN(DilatedConv3x3_d(F))))))``, the paper's form, at the feature's width.

    Args:
        feature: ``(batch, H, W, C)`` encoder feature.
        name: prefix of the layers (``{name}_d6_conv``, ..., ``{name}_sum``, ``{name}_attention_map``).
        dilation_rates: one branch per rate.

    Returns:
        ``(batch, H, W, C)``.
    """
    channels = feature.shape[-1]
    branches = []
    for rate in dilation_rates:
        branch = f"{name}_d{rate}"
        x = keras.layers.Conv2D(channels, 3, padding="same", dilation_rate=rate, use_bias=False,
                                name=f"{branch}_conv")(feature)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{branch}_bn")(x)
        x = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{branch}_project")(x)
        branches.append(keras.layers.BatchNormalization(momentum=0.9, name=f"{branch}_project_bn")(x))
    x = keras.layers.Add(name=f"{name}_sum")(branches)
    x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
    return apply_spatial_attention(x, name=f"{name}_attention")


SKIPS.register("dfe", SkipSpec(
    "dfe", apply_dfe, "dilated feature enhancement (ResFormer, Bui et al.): 3x3 convolutions dilated 6, 12, 18 "
                      "summed, then CBAM spatial attention"))
