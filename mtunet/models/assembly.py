"""``build_model``: encoder + U-Net decoder + heads, as one functional Keras model."""

import keras

from mtunet.decoder import apply_unet_decoder
from mtunet.encoders import OUTPUT_STRIDE, build_encoder, get_encoder
from mtunet.errors import ConfigError
from mtunet.heads import apply_classification_head, apply_segmentation_head
from mtunet.layers import PixelPreprocessing

TASKS = ("multi", "segmentation", "classification")


def check_input_shape(input_shape) -> tuple[int, int, int]:
    """Returns ``input_shape`` as a tuple if the encoders can take it, else raises ``ConfigError``.

    Height and width must be multiples of the output stride (32) and at least 32; channels 1 or 3.
    """
    try:
        height, width, channels = (int(size) for size in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"input_shape must be (height, width, channels); received {input_shape!r}") from None
    for side in (height, width):
        if side < OUTPUT_STRIDE or side % OUTPUT_STRIDE:
            lower = max(OUTPUT_STRIDE, side // OUTPUT_STRIDE * OUTPUT_STRIDE)
            upper = max(OUTPUT_STRIDE, -(-side // OUTPUT_STRIDE) * OUTPUT_STRIDE)
            nearest = str(lower) if lower == upper else f"{lower} or {upper}"
            raise ConfigError(
                f"input_shape {tuple(input_shape)}: height and width must be multiples of {OUTPUT_STRIDE} "
                f"and at least {OUTPUT_STRIDE}; the nearest valid size to {side} is {nearest}"
            )
    if channels not in (1, 3):
        raise ConfigError(f"input_shape {tuple(input_shape)}: expected 1 (grayscale) or 3 (RGB) channels")
    return height, width, channels


def build_model(
    encoder: str,
    *,
    input_shape=(224, 224, 3),
    num_classes: int | None,
    weights: str | None = "imagenet",
    skip_connections: bool = True,
    decoder_filters=(256, 128, 64, 32, 16),
    dropout: float = 0.3,
    freeze_encoder: bool = False,
    task: str = "multi",
) -> keras.Model:
    """Builds a multi-task U-Net (or one of its single-task baselines).

    Args:
        encoder: a name from ``mtunet.ENCODERS``, e.g. ``"mobilenetv2"``.
        input_shape: ``(height, width, channels)``; height and width multiples of 32, channels 1 or 3.
        num_classes: number of diagnosis classes (at least 2); ignored, and may be None, for ``task="segmentation"``.
        weights: ``"imagenet"``, ``None`` (random initialisation) or the path of an encoder weights file.
        skip_connections: concatenate encoder features into the decoder (``False``: the paper's ablation).
        decoder_filters: filters of the 5 decoder stages, deepest first.
        dropout: dropout rate before the class head's dense layer.
        freeze_encoder: make the encoder's weights non-trainable (its BatchNormalization then runs in inference mode).
        task: ``"multi"`` (both heads), ``"segmentation"`` or ``"classification"`` (single-task baselines).

    Returns:
        A functional ``keras.Model`` taking raw 0-255 pixels ``(batch, H, W, C)`` and returning a dict with
        ``"label"`` (softmax, ``(batch, num_classes)``) and/or ``"mask"`` (sigmoid, ``(batch, H, W, 1)``).
        The encoder is the nested model ``"encoder"``; its deepest feature map is the layer ``"bottleneck"``.

    Examples::

        model = mtunet.build_model("mobilenetv2", input_shape=(224, 224, 3), num_classes=7, weights=None)
        model.output_shape  # [(None, 7), (None, 224, 224, 1)]
    """
    spec = get_encoder(encoder)
    height, width, channels = check_input_shape(input_shape)
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of: {', '.join(TASKS)}")
    if task != "segmentation" and (num_classes is None or int(num_classes) < 2):
        raise ConfigError(f"num_classes must be at least 2 for task {task!r}; received {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1); received {dropout!r}")

    # === Layers ===
    backbone = build_encoder(spec, (height, width, 3), weights)
    backbone.trainable = not freeze_encoder

    # === Functional Model ===
    images = keras.Input((height, width, channels), name="images")
    scaled = PixelPreprocessing(spec.input_scaling, name="preprocessing")(images)
    features = backbone(scaled)
    features["P5"] = keras.layers.Identity(name="bottleneck")(features["P5"])
    outputs = {}
    if task in ("multi", "classification"):
        outputs["label"] = apply_classification_head(features["P5"], int(num_classes), dropout)
    if task in ("multi", "segmentation"):
        decoded = apply_unet_decoder(features, decoder_filters, skip_connections, spec.needs_center_block)
        outputs["mask"] = apply_segmentation_head(decoded)
    return keras.Model(images, outputs, name=f"mtunet_{spec.name}_{task}")


def load_model(path) -> keras.Model:
    """Loads a ``.keras`` model saved by mtunet (``best.keras``), with its custom layers, losses, metrics and
    optimiser."""
    import mtunet.averaging  # noqa: F401  (registers the classes a compiled model refers to)
    import mtunet.losses  # noqa: F401
    import mtunet.metrics  # noqa: F401

    return keras.saving.load_model(path)
