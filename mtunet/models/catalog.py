"""Tables of what can be assembled: every encoder with its parameter count, and the presets and registered parts
(``mtunet encoders``, ``mtunet architectures``)."""

import keras

from mtunet.models.assembly import build_model
from mtunet.models.decoders import DECODERS
from mtunet.models.encoders import ENCODERS, INPUT_SCALINGS
from mtunet.models.heads import HEADS
from mtunet.models.presets import PRESETS
from mtunet.models.skips import SKIPS


def encoder_table(num_classes: int = 2, image_size: int = 224) -> list[dict]:
    """One row per registered encoder: name, parameters of the multi-task model, ImageNet weights, input scaling."""
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


def architecture_table() -> dict[str, list[dict]]:
    """``{"presets": [...], "encoders": [...], "skips": [...], "decoders": [...], "heads": [...]}``, one row (name,
    description) per registry entry; a preset's row also names its decoder and skip module."""
    return {
        "presets": [{"name": preset.name, "decoder": preset.decoder, "skip": preset.skip,
                     "description": preset.description} for preset in PRESETS.values()],
        "encoders": [{"name": spec.name,
                      "description": f"input {INPUT_SCALINGS[spec.input_scaling]}"
                                     f"{'' if spec.imagenet_weights else ', no ImageNet weights'}"}
                     for spec in ENCODERS.values()],
        "skips": [{"name": spec.name, "description": spec.description} for spec in SKIPS.values()],
        "decoders": [{"name": spec.name, "description": spec.description} for spec in DECODERS.values()],
        "heads": [{"name": name, "description": head.description} for name, head in HEADS.items()],
    }
