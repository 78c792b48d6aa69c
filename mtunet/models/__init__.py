"""The model as an open assembly: an encoder, a skip module per pyramid level, a decoder and heads, each a registry
entry, described by a ``ModelSpec`` and named by presets.

Examples::

    from mtunet.models import build_model, make_spec, build_model_from_spec
    model = build_model("mobilenetv2", architecture="attention_unet", input_shape=(64, 64, 1), num_classes=2,
                        weights=None)
    spec = make_spec("unet", encoder="vgg16", num_classes=3, mask_classes=("rim", "core"))
    model = build_model_from_spec(spec, weights=None)
"""

from mtunet.models.assembly import (
    MIN_CAM_SIDE, MultiTaskModel, build_model, build_model_from_spec, explained_layers, gradcam_layer, load_model,
    model_heads, model_spec, set_encoder_trainable,
)
from mtunet.models.decoders import DECODERS, DecoderSpec
from mtunet.models.encoders import ENCODERS, INPUT_SCALINGS, PYRAMID_LEVELS, EncoderSpec, get_encoder
from mtunet.models.heads import HEADS, Head, LossSettings, build_head
from mtunet.models.presets import BINARY_MASK_CLASSES, PRESETS, TASKS, Preset, make_spec, mask_head_config
from mtunet.models.skips import SKIPS, SkipSpec
from mtunet.models.spec import ModelSpec, check_input_shape

__all__ = [
    "BINARY_MASK_CLASSES", "DECODERS", "ENCODERS", "HEADS", "INPUT_SCALINGS", "MIN_CAM_SIDE", "PRESETS",
    "PYRAMID_LEVELS", "SKIPS", "TASKS", "DecoderSpec", "EncoderSpec", "Head", "LossSettings", "ModelSpec",
    "MultiTaskModel", "Preset", "SkipSpec", "build_head", "build_model", "build_model_from_spec", "check_input_shape",
    "explained_layers", "get_encoder", "gradcam_layer", "load_model", "make_spec", "mask_head_config", "model_heads",
    "model_spec", "set_encoder_trainable",
]
