"""Presets: the published architectures by name, each a recipe for a ``ModelSpec``.

A preset fixes the decoder and skip module (and whatever else defines the published model); the encoder, the task and
the data's classes come from the caller, and any part can be overridden (``--decoder``, ``--skip`` ...).
"""

import dataclasses

from mtunet.errors import ConfigError
from mtunet.models.encoders import ENCODERS
from mtunet.models.heads import HEADS
from mtunet.models.heads.pooling import SHARED_LEVEL, PooledHead
from mtunet.models.registry import Registry
from mtunet.models.spec import DEFAULT_DECODER_FILTERS, ModelSpec, encoder_names
from mtunet.options import TASKS

PRESETS = Registry("architecture")
BINARY_MASK_CLASSES = ("lesion",)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A published architecture.

    Attributes:
        name: registry name, e.g. ``"unet"``.
        description: one line for ``mtunet architectures``, with the reference.
        decoder: the decoder of the multi-task and segmentation models.
        skip: the skip module on every pyramid level.
        encoder: the encoder used when the caller names none.
        decoder_filters: the decoder's filters per stage, deepest first.
        class_levels: how many of the encoder's deepest levels the class head pools (1: the bottleneck).
        class_hidden_units: width of the class head's hidden layer, or None for none.
        shared: the residual shared layer the class head reads (``ModelSpec.shared``), or None for none.
        recipe: the name of the training recipe it starts from (``mtunet.training.recipes.RECIPES``): its paper's
            where that gives one, else mtunet's defaults.
    """

    name: str
    description: str
    decoder: str = "unet"
    skip: str = "identity"
    encoder: str = "mobilenetv2"
    decoder_filters: tuple[int, ...] = DEFAULT_DECODER_FILTERS
    class_levels: int = 1
    class_hidden_units: int | None = None
    shared: dict | None = None
    recipe: str = "mtunet"


PRESETS.register("unet", Preset(
    "unet", "multi-task U-Net: class head on the bottleneck, U-Net decoder with plain skips (the paper's model)"))
PRESETS.register("attention_unet", Preset(
    "attention_unet", "Attention U-Net (Oktay et al. 2018): additive attention gates on the skips; the paper's "
                      "segmentation baseline with --task segmentation", decoder="attention_unet"))
PRESETS.register("resformer", Preset(
    "resformer", "ResFormer (Bui et al.): hybrid CNN-Transformer encoder, DFE modules on the skips, one conv block per "
                 "decoder stage, class head on the last two levels; trained with the paper's recipe",
    decoder="resformer", skip="dfe", encoder="resformer_sequential", decoder_filters=(512, 256, 128, 64, 32),
    class_levels=2, class_hidden_units=256, recipe="resformer"))
# the paper maps the fused vector "to a low-dimensional space" without its width: 256 here
PRESETS.register("res_mtnet", Preset(
    "res_mtnet", "Res-MTNet (Lin, Zhang et al.): two encoders fused (DenseNet-161 + EfficientNet-B7), a residual "
                 "shared layer that the heads read; a U-Net decoder on the fused pyramids for masks",
    encoder="densenet161+efficientnetb7", shared={"units": 256, "dropout": 0.3}, recipe="res_mtnet"))
# the MTL-DRNet paper names no backbone: EfficientNet-B0 is mtunet's reading (issue 25)
PRESETS.register("mtl_drnet", Preset(
    "mtl_drnet", "MTL-DRNet (multi-task DR grading and lesion segmentation): a shared backbone (EfficientNet-B0 here; "
                 "the paper names none), a grade head on the pooled bottleneck, a U-Net decoder for the lesion masks",
    encoder="efficientnetb0", recipe="mtl_drnet"))


def mask_head_config(mask_classes=BINARY_MASK_CLASSES, multilabel_masks: bool = False) -> dict:
    """The mask head for a dataset's mask classes: the sigmoid mask for one class, the softmax mask for several, the
    multi-label mask (a sigmoid channel per lesion type) when ``multilabel_masks``."""
    if multilabel_masks:
        return {"type": "multilabel_mask", "name": "mask", "mask_classes": list(mask_classes)}
    if len(mask_classes) == 1:
        return {"type": "binary_mask", "name": "mask"}
    return {"type": "multiclass_mask", "name": "mask", "mask_classes": list(mask_classes)}


def make_spec(architecture: str = "unet", *, encoder: str | None = None, input_shape=(224, 224, 3),
              num_classes: int | None = None, mask_classes=BINARY_MASK_CLASSES, multilabel_masks: bool = False,
              task: str = "multi",
              decoder: str | None = None, skip: str | None = None, skip_connections: bool = True,
              decoder_filters=None, dropout: float = 0.3, extra_heads=(),
              label_head: str = "classification", preprocessing=()) -> ModelSpec:
    """The ``ModelSpec`` of preset ``architecture`` for a dataset, with any part overridden.

    Args:
        architecture: a preset name (``mtunet.models.PRESETS``).
        encoder, decoder, skip: registry names overriding the preset's (None: the preset's).
        input_shape: ``(height, width, channels)`` of the raw images.
        num_classes: diagnosis classes (at least 2; may be None for ``task="segmentation"``).
        mask_classes: names of the mask's lesion classes: one for a binary mask, several for a softmax mask.
        multilabel_masks: the mask is multi-label, a sigmoid channel per lesion type of ``mask_classes``.
        task: ``"multi"`` (class head and mask), ``"segmentation"`` or ``"classification"`` (single-task baselines;
            a classification model has no decoder).
        skip_connections, dropout: as for ``build_model``.
        decoder_filters: the decoder's filters per stage (None: the preset's).
        label_head: the head type of the class label: ``"classification"`` (softmax) or ``"ordinal"`` (CORAL, for
            grades).
        preprocessing: how images are prepared for the model (``ModelSpec.preprocessing``).
        extra_heads: head configs added after the task's (e.g. the regression and further classification heads a
            dataset declares); those on pooled features without ``levels`` read the preset's shared layer if it
            has one, else the bottleneck.
    """
    preset = PRESETS.get(architecture)
    encoder = encoder or preset.encoder
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of: {', '.join(TASKS)}")
    if task != "segmentation" and (num_classes is None or int(num_classes) < 2):
        raise ConfigError(f"num_classes must be at least 2 for task {task!r}; received {num_classes!r}")
    heads = []
    if task in ("multi", "classification"):
        levels = [SHARED_LEVEL] if preset.shared else ENCODERS.get(encoder_names(encoder)[0]).levels[
            -preset.class_levels:]
        heads.append({"type": label_head, "name": "label", "num_classes": num_classes,
                      "dropout": float(dropout), "levels": list(levels), "hidden_units": preset.class_hidden_units})
    if task in ("multi", "segmentation"):
        heads.append(mask_head_config(tuple(mask_classes), multilabel_masks))
    for config in extra_heads:
        pooled = issubclass(HEADS.get(config.get("type")), PooledHead)
        heads.append(({"levels": [SHARED_LEVEL]} if pooled and preset.shared else {}) | dict(config))
    return ModelSpec(
        encoder=encoder, input_shape=input_shape, heads=tuple(heads),
        decoder=None if task == "classification" else (decoder or preset.decoder), skip=skip or preset.skip,
        skip_connections=skip_connections, decoder_filters=decoder_filters or preset.decoder_filters,
        shared=preset.shared, preset=preset.name, preprocessing=tuple(preprocessing)).validate()
