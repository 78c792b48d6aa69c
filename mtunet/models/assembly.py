"""``build_model``: a ``ModelSpec``'s encoder, skip modules, decoder and heads as one functional Keras model."""

import json
import pathlib
import re
import zipfile

import keras

import mtunet.training.averaging  # noqa: F401  (registers the optimiser a compiled model refers to)
from mtunet.errors import ConfigError
from mtunet.models.decoders import DECODERS
from mtunet.models.encoders import build_encoder, get_encoder
from mtunet.models.heads import Head, build_head
from mtunet.models.heads.binary_mask import BinaryMaskHead
from mtunet.models.heads.classification import ClassificationHead
from mtunet.models.heads.pooling import SHARED_LEVEL
from mtunet.models.layers import BenGrahamNormalisation, PixelPreprocessing
from mtunet.models.presets import BINARY_MASK_CLASSES, make_spec
from mtunet.models.shared import residual_shared_layer
from mtunet.models.skips import SKIPS
from mtunet.models.spec import ModelSpec


def _model_name(spec: ModelSpec) -> str:
    roles = {build_head(config).loss_role for config in spec.heads}
    task = "multi" if len(roles) > 1 else ("segmentation" if "segmentation" in roles else "classification")
    prefix = "mtunet" if spec.preset in (None, "unet") else spec.preset
    return f"{prefix}_{'_'.join(spec.encoders)}_{task}"


def _numbered(name: str, index: int) -> str:
    """``name`` for the first encoder, ``name_2``, ``name_3`` ... for the others of a fusion."""
    return name if index == 0 else f"{name}_{index + 1}"


def _encoder_weights(spec: ModelSpec, weights) -> list:
    """One weights argument per encoder: ``"imagenet"`` and None apply to all; a list, or a string of entries joined
    by ``+`` as the encoders are (``"a.weights.h5+none"``, as ``--weights`` takes it), gives one per encoder, each
    a file path, ``"imagenet"`` or None (``"none"``)."""
    names = spec.encoders
    if weights in ("imagenet", None):
        return [weights] * len(names)
    if isinstance(weights, str) and len(names) > 1 and "+" in weights and not pathlib.Path(weights).exists():
        weights = [None if entry == "none" else entry for entry in weights.split("+")]
    weights = [weights] if isinstance(weights, str | pathlib.Path) else list(weights)
    if len(weights) != len(names):
        raise ConfigError(f"the fused encoders {', '.join(names)} need one weights entry each (joined by +, e.g. "
                          f"a.weights.h5+none); received {len(weights)}")
    return [None if entry is None else str(entry) for entry in weights]


def _assemble(spec: ModelSpec, weights, freeze_encoder):
    """``(inputs, {head name: output})`` of ``spec``."""
    encoders = [get_encoder(name) for name in spec.encoders]
    height, width, channels = spec.input_shape

    # === Layers ===
    backbones = [build_encoder(encoder, (height, width, 3), encoder_weights, name=_numbered("encoder", index))
                 for index, (encoder, encoder_weights) in enumerate(zip(encoders, _encoder_weights(spec, weights)))]
    for backbone in backbones:
        backbone.trainable = not freeze_encoder
    skip_module = SKIPS.get(spec.skip)
    heads = [build_head(config) for config in spec.heads]

    # === Functional Model ===
    images = keras.Input((height, width, channels), name="images")
    pixels = BenGrahamNormalisation(name="ben_graham")(images) if "ben_graham" in spec.preprocessing else images
    pyramids = [dict(backbone(PixelPreprocessing(encoder.input_scaling, name=_numbered("preprocessing", index))(
        pixels))) for index, (encoder, backbone) in enumerate(zip(encoders, backbones))]
    levels = encoders[0].levels
    features = pyramids[0] if len(pyramids) == 1 else {
        level: keras.layers.Concatenate(name=f"fusion_{level}")([pyramid[level] for pyramid in pyramids])
        for level in levels}
    bottleneck = levels[-1]
    features[bottleneck] = keras.layers.Identity(name="bottleneck")(features[bottleneck])
    head_features = dict(features)  # the pyramid, and the shared layer's vector: the decoder reads the pyramid only
    if spec.shared is not None:
        head_features[SHARED_LEVEL] = residual_shared_layer(features[bottleneck], **spec.shared)
    # the heads on the encoder first, then the decoder and its heads: layers are created (and their weights drawn
    # from the seeded generator) in the order of the models trained before specs existed
    outputs = {head.name: head.apply(head_features, None) for head in heads if not head.needs_decoder}
    if any(head.needs_decoder for head in heads):
        skips = {level: skip_module.apply(features[level], name=f"skip_{level}") if spec.skip_connections else None
                 for level in levels[:-1]}
        decoded = DECODERS.get(spec.decoder).apply(features, skips, spec.decoder_filters,
                                                   any(encoder.needs_center_block for encoder in encoders))
        outputs.update({head.name: head.apply(head_features, decoded) for head in heads if head.needs_decoder})
    return images, {head.name: outputs[head.name] for head in heads}


@keras.saving.register_keras_serializable(package="mtunet")
class MultiTaskModel(keras.Model):
    """The functional model of a ``ModelSpec``; ``get_config()`` returns the spec, so a ``.keras`` file reloads to
    the same architecture.

    Args:
        spec: the architecture (a ``ModelSpec`` or its ``to_dict()``).
        weights: the encoder's, ``"imagenet"``, None (random) or a weights file path (for fused encoders, a list
            of one per encoder); not part of the config (a reloaded model takes its weights from the file).
        freeze_encoder: make the encoder's weights non-trainable.
    """

    def __init__(self, spec, *, weights=None, freeze_encoder=False, **kwargs):
        spec = (ModelSpec.from_dict(spec) if isinstance(spec, dict) else spec).validate()
        inputs, outputs = _assemble(spec, weights, freeze_encoder)
        super().__init__(inputs, outputs, **{"name": _model_name(spec), **kwargs})
        self.spec = spec

    def get_config(self):
        return {"spec": self.spec.to_dict(), "name": self.name,
                "freeze_encoder": not self.get_layer("encoder").trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_model_from_spec(spec: ModelSpec, *, weights: str | None = "imagenet",
                          freeze_encoder: bool = False) -> MultiTaskModel:
    """The model of ``spec``, its encoder's weights from ``weights`` (``"imagenet"``, None or a file path)."""
    return MultiTaskModel(spec, weights=weights, freeze_encoder=freeze_encoder)


def build_model(
    encoder: str | None = None,
    *,
    architecture: str = "unet",
    input_shape=(224, 224, 3),
    num_classes: int | None,
    weights: str | None = "imagenet",
    skip_connections: bool = True,
    decoder_filters=None,
    dropout: float = 0.3,
    freeze_encoder: bool = False,
    task: str = "multi",
    decoder: str | None = None,
    skip: str | None = None,
    mask_classes=BINARY_MASK_CLASSES,
    multilabel_masks: bool = False,
) -> MultiTaskModel:
    """Builds a multi-task U-Net (or one of its single-task baselines) from a preset and overrides.

    Args:
        encoder: a name from ``mtunet.ENCODERS``, e.g. ``"mobilenetv2"`` (None: the preset's).
        architecture: a preset from ``mtunet.PRESETS`` (``"unet"``, ``"attention_unet"``, ``"resformer"``).
        input_shape: ``(height, width, channels)``; height and width multiples of 32, channels 1 or 3.
        num_classes: number of diagnosis classes (at least 2); ignored, and may be None, for ``task="segmentation"``.
        weights: ``"imagenet"``, ``None`` (random initialisation) or the path of an encoder weights file.
        skip_connections: concatenate encoder features into the decoder (``False``: the paper's ablation).
        decoder_filters: filters of the 5 decoder stages, deepest first (None: the preset's).
        dropout: dropout rate before the class head's dense layer.
        freeze_encoder: make the encoder's weights non-trainable (its BatchNormalization then runs in inference mode).
        task: ``"multi"`` (both heads), ``"segmentation"`` or ``"classification"`` (single-task baselines).
        decoder, skip: registry names overriding the preset's decoder and skip module.
        mask_classes: names of the mask's lesion classes: one (a sigmoid mask) or several (a softmax mask over
            background and these classes).
        multilabel_masks: a multi-label mask instead: one sigmoid channel per lesion type of ``mask_classes``.

    Returns:
        A functional ``keras.Model`` taking raw 0-255 pixels ``(batch, H, W, C)`` and returning a dict with
        ``"label"`` (softmax, ``(batch, num_classes)``) and/or ``"mask"`` (sigmoid ``(batch, H, W, 1)``, or softmax
        ``(batch, H, W, K + 1)`` for K mask classes, or sigmoid ``(batch, H, W, K)`` for K lesion types of a
        multi-label mask). The encoder is the nested model ``"encoder"``; its deepest
        feature map is the layer ``"bottleneck"``. ``model.spec`` is its ``ModelSpec``.

    Examples::

        model = mtunet.build_model("mobilenetv2", input_shape=(224, 224, 3), num_classes=7, weights=None)
        model.output_shape  # [(None, 7), (None, 224, 224, 1)]
    """
    spec = make_spec(architecture, encoder=encoder, input_shape=input_shape, num_classes=num_classes,
                     mask_classes=mask_classes, multilabel_masks=multilabel_masks, task=task, decoder=decoder,
                     skip=skip, skip_connections=skip_connections, decoder_filters=decoder_filters, dropout=dropout)
    return build_model_from_spec(spec, weights=weights, freeze_encoder=freeze_encoder)


def model_spec(model) -> ModelSpec:
    """The ``ModelSpec`` of an mtunet model; for a model saved before specs existed (a plain functional model with
    outputs ``label`` and/or ``mask``), the U-Net spec it was built from."""
    spec = getattr(model, "spec", None)
    if isinstance(spec, ModelSpec):
        return spec
    shapes = {name: tensor.shape for name, tensor in zip(model.output_names, model.outputs)}
    heads = []
    if "label" in shapes:
        heads.append(ClassificationHead("label", num_classes=int(shapes["label"][-1])).get_config())
    if "mask" in shapes:
        channels = int(shapes["mask"][-1])
        heads.append(BinaryMaskHead("mask").get_config() if channels == 1 else
                     {"type": "multiclass_mask", "name": "mask",
                      "mask_classes": [f"class_{index}" for index in range(1, channels)]})
    encoder = next((layer for layer in model.layers if layer.name == "encoder"), None)
    return ModelSpec(encoder=model.name.split("_")[1] if model.name.startswith("mtunet_") else "unknown",
                     input_shape=model.input_shape[1:], heads=tuple(heads),
                     decoder="unet" if "mask" in shapes else None, preset="unet" if encoder is not None else None)


def model_heads(model) -> dict[str, Head]:
    """``{output name: Head}`` of an mtunet model, in output order."""
    return {config["name"]: build_head(config) for config in model_spec(model).heads}


def set_encoder_trainable(model, trainable: bool) -> None:
    """Freezes (``False``) or unfreezes the encoder of an mtunet model; a frozen encoder's BatchNormalization runs in
    inference mode."""
    for layer in encoder_layers(model):
        layer.trainable = trainable


def encoder_layers(model) -> list:
    """The encoder models of an mtunet model: ``"encoder"``, then ``"encoder_2"`` ... of fused encoders."""
    return [layer for layer in model.layers if re.fullmatch(r"encoder(_\d+)?", layer.name)]


# Grad-CAM is commonly taken at the last block of a CNN at 224 px, a 7 x 7 map (ResNet, MobileNetV2); a coarser map
# cannot point at a lesion (upsampled, a 2 x 2 map peaks on a 16 x 16 corner block at 64 px). When the bottleneck is
# under this many cells a side, the class head's Grad-CAM goes down to the deepest encoder feature (pyramid level)
# that is at least this size: stride 16 at 128 px, stride 8 at 64 px, the bottleneck itself from 224 px. Measured on
# the first 20-epoch demo model (README, Grad-CAM): the 4 x 4 stride-16 map at 64 px peaked in the lesion half as
# often as stride 8.
MIN_CAM_SIDE = 7


def gradcam_layer(model, head_name: str) -> str:
    """The layer Grad-CAM of head ``head_name`` explains by default: for a mask head its decoder's (the last stage
    at stride 2); for a class head the bottleneck, or the deepest encoder level at least ``MIN_CAM_SIDE`` cells a
    side when the bottleneck is smaller (for fused encoders, always the bottleneck)."""
    spec = model_spec(model)
    if model_heads(model)[head_name].needs_decoder:
        return DECODERS.get(spec.decoder).gradcam_layer
    # fused encoders meet only at the bottleneck on the class head's path: a shallower level of one encoder would
    # explain that encoder alone
    if len(encoder_layers(model)) != 1:
        return "bottleneck"
    levels = sorted(model.get_layer("encoder").output)
    side = min(size or MIN_CAM_SIDE for size in spec.input_shape[:2])
    for level in reversed(levels):
        if side // 2 ** int(level[1:]) >= MIN_CAM_SIDE:
            return "bottleneck" if level == levels[-1] else pyramid_layer(model, level)
    return "bottleneck"


def explained_layers(model) -> list[str]:
    """The layers of the model that its decoder declares worth showing beside Grad-CAM (``DecoderSpec``'s
    ``explained_layers``: e.g. the attention coefficients of the Attention U-Net's gates), shallowest stage last."""
    spec = model_spec(model)
    if spec.decoder is None:
        return []
    names = {layer.name for layer in model.layers}
    patterns = DECODERS.get(spec.decoder).explained_layers
    return [name for pattern in patterns for stage in range(1, len(spec.decoder_filters) + 1)
            if (name := pattern.format(stage=stage)) in names]


def pyramid_layer(model, level: str) -> str:
    """The name of the encoder layer whose output is pyramid level ``level`` (``"P1"`` .. ``"P5"``)."""
    encoder = model.get_layer("encoder")
    feature = encoder.output[level]
    for layer in encoder.layers:
        try:
            if layer.output is feature:
                return layer.name
        except (AttributeError, ValueError):  # a layer called more than once
            continue
    raise ValueError(f"no layer of the encoder outputs pyramid level {level}")


def _saved_keras_version(path: pathlib.Path) -> str | None:
    """The Keras version a ``.keras`` archive records in its metadata.json; None if it records none."""
    with zipfile.ZipFile(path) as archive:
        if "metadata.json" not in archive.namelist():
            return None
        return json.loads(archive.read("metadata.json")).get("keras_version")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def load_model(path) -> keras.Model:
    """Loads a ``.keras`` model saved by mtunet (``best.keras``), with its custom layers, losses, metrics and
    optimiser, in Keras's safe mode (never ``safe_mode=False``).

    Raises ``ConfigError``, one line naming the file and why, when it does not exist, is not a ``.keras`` archive,
    was written by a newer Keras that cannot be read, holds Python code (a ``Lambda`` layer: refused, as loading it
    would run that code) or is a Keras model without mtunet's heads.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"model {path} not found; expected a .keras file saved by mtunet")
    if not zipfile.is_zipfile(path) or "config.json" not in zipfile.ZipFile(path).namelist():
        raise ConfigError(f"model {path} is not a .keras archive (a zip file with config.json and the weights); "
                          "expected a .keras file saved by mtunet")
    saved_version = _saved_keras_version(path)
    try:
        model = keras.saving.load_model(path)
    except Exception as error:  # Keras raises ValueError, TypeError, KeyError, ... for an unreadable model
        message = str(error)
        if "safe_mode" in message or "arbitrary code execution" in message:
            raise ConfigError(f"model {path} holds Python code (a Lambda layer or a pickled function) and is refused: "
                              "loading it would run that code; mtunet models have none") from None
        if saved_version and _version_tuple(saved_version) > _version_tuple(keras.__version__):
            raise ConfigError(f"model {path} was written by Keras {saved_version}, newer than the installed "
                              f"{keras.__version__}, and cannot be read by it ({type(error).__name__}); upgrade Keras "
                              "(pip install -U keras)") from None
        first_line = message.strip().splitlines()[0] if message.strip() else ""
        raise ConfigError(f"model {path} cannot be loaded as a Keras model ({type(error).__name__}: {first_line}); "
                          "expected a .keras file saved by mtunet") from None
    try:
        heads = model_heads(model)
    except (ValueError, KeyError, TypeError, ConfigError):
        heads = {}
    if not heads:
        raise ConfigError(f"model {path} is a Keras model without mtunet's outputs (it has "
                          f"{', '.join(model.output_names)}); expected one saved by mtunet, with a label and/or mask "
                          "output") from None
    return model
