"""Encoder registry: every backbone a multi-task U-Net can be built on, and what the decoder needs to know of it.

Each entry declares its properties (feature layers, input scaling, ImageNet weights, centre block) so that no other
module ever decides anything from an encoder's name.
"""

import dataclasses
import os
import urllib.error
from collections.abc import Callable

import keras

from mtunet.errors import ConfigError, WeightsUnavailableError

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


def _densenet161(**kwargs):
    # Keras exports DenseNet121/169/201 only, but its DenseNet constructor takes any dense-block configuration;
    # 6-12-36-24 is DenseNet-161's (with Keras's growth rate 32 rather than the original 48).
    from keras.src.applications.densenet import DenseNet

    return DenseNet(blocks=[6, 12, 36, 24], name="densenet161", **kwargs)


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """What the model builder needs to know about one encoder.

    Attributes:
        name: registry name, e.g. ``"mobilenetv2"``.
        constructor: ``keras.applications`` function taking ``include_top``, ``weights``, ``input_shape``.
        pyramid_layers: names of the layers whose outputs are P1..P5 (strides 2, 4, 8, 16, 32).
        input_scaling: how raw 0-255 pixels are scaled for the encoder, a key of ``INPUT_SCALINGS``.
        imagenet_weights: whether ``weights="imagenet"`` exists for this encoder.
        needs_center_block: whether the bottleneck is a bare pooling layer that needs convolutions before decoding.
    """

    name: str
    constructor: Callable[..., keras.Model]
    pyramid_layers: tuple[str, str, str, str, str]
    input_scaling: str
    imagenet_weights: bool = True
    needs_center_block: bool = False


_VGG16_LAYERS = ("block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3", "block5_pool")
# The block outputs (16, 24, 32, 96 channels), as segmentation_models_pytorch takes them, rather than the wider
# expanded activations (96, 144, 192, 576) of Keras's pix2pix tutorial: the decoder then does a quarter less arithmetic.
_MOBILENETV2_LAYERS = ("expanded_conv_project_BN", "block_2_add", "block_5_add", "block_12_add", "out_relu")
_DENSENET_LAYERS = ("conv1_relu", "pool2_relu", "pool3_relu", "pool4_relu", "relu")
_EFFICIENTNET_LAYERS = (
    "block2a_expand_activation", "block3a_expand_activation", "block4a_expand_activation",
    "block6a_expand_activation", "top_activation",
)

ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in [
        EncoderSpec("vgg16", keras.applications.VGG16, _VGG16_LAYERS, "caffe", needs_center_block=True),
        EncoderSpec("mobilenetv2", keras.applications.MobileNetV2, _MOBILENETV2_LAYERS, "tf"),
        EncoderSpec("densenet121", keras.applications.DenseNet121, _DENSENET_LAYERS, "torch"),
        EncoderSpec("densenet169", keras.applications.DenseNet169, _DENSENET_LAYERS, "torch"),
        EncoderSpec("densenet201", keras.applications.DenseNet201, _DENSENET_LAYERS, "torch"),
        EncoderSpec("densenet161", _densenet161, _DENSENET_LAYERS, "torch", imagenet_weights=False),
        *[
            EncoderSpec(f"efficientnetb{i}", getattr(keras.applications, f"EfficientNetB{i}"),
                        _EFFICIENTNET_LAYERS, "none")
            for i in range(8)
        ],
    ]
}


def get_encoder(name: str) -> EncoderSpec:
    """Returns the registry entry for ``name``; raises ``ConfigError`` listing the valid names otherwise."""
    try:
        return ENCODERS[name]
    except KeyError:
        raise ConfigError(f"unknown encoder {name!r}; expected one of: {', '.join(ENCODERS)}") from None


def _is_download_failure(error: Exception) -> bool:
    # keras.utils.get_file turns HTTP and URL errors into a bare Exception("URL fetch failure on ...").
    return type(error) is Exception or isinstance(error, (OSError, urllib.error.URLError))


def build_encoder(spec: EncoderSpec, input_shape: tuple[int, int, int], weights: str | None) -> keras.Model:
    """Builds ``spec``'s backbone as a functional model from a 3-channel input to a dict of P1..P5 features.

    Args:
        spec: the encoder's registry entry.
        input_shape: ``(height, width, 3)`` of the already scaled input.
        weights: ``"imagenet"``, ``None`` (random initialisation) or the path of a weights file saved from the
            ``keras.applications`` model (``include_top=False``).

    Returns:
        A ``keras.Model`` named ``"encoder"`` whose outputs are ``{"P1": ..., "P5": ...}``.
    """
    if weights == "imagenet" and not spec.imagenet_weights:
        raise WeightsUnavailableError(
            f"Keras has no ImageNet weights for encoder {spec.name!r}; use weights=None or a local weights file"
        )
    if weights not in ("imagenet", None) and not os.path.isfile(weights):
        raise ConfigError(f"encoder weights file {weights!r} not found; expected 'imagenet', None or a file path")
    try:
        backbone = spec.constructor(include_top=False, weights=weights, input_shape=input_shape)
    except Exception as error:
        if weights == "imagenet" and _is_download_failure(error):
            raise WeightsUnavailableError(
                f"could not download the ImageNet weights of {spec.name!r} ({error}); "
                "train from scratch with weights=None or pass the path of a local weights file"
            ) from error
        raise
    if weights is None:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = SCRATCH_BN_MOMENTUM
    features = {
        level: backbone.get_layer(layer_name).output
        for level, layer_name in zip(PYRAMID_LEVELS, spec.pyramid_layers)
    }
    return keras.Model(backbone.inputs, features, name="encoder")


def encoder_table(num_classes: int = 2, image_size: int = 224) -> list[dict]:
    """One row per registered encoder: name, parameters of the multi-task model, ImageNet weights, input scaling."""
    from mtunet.model import build_model

    rows = []
    for spec in ENCODERS.values():
        model = build_model(spec.name, input_shape=(image_size, image_size, 3), num_classes=num_classes,
                            weights=None)
        rows.append({
            "encoder": spec.name,
            "parameters": model.count_params(),
            "imagenet_weights": spec.imagenet_weights,
            "input_scaling": INPUT_SCALINGS[spec.input_scaling],
        })
        keras.backend.clear_session()
    return rows
