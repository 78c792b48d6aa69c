"""``ModelSpec``: the one description of an architecture, stored in ``config.json`` and in the ``.keras`` file.

A spec names an encoder (or several, fused), the skip module on every pyramid level, a decoder (or none), an
optional residual shared layer and the heads, each a registry entry; ``mtunet.models.build_model_from_spec``
assembles it. Specs are plain JSON-ready data.
"""

import dataclasses

from mtunet.errors import ConfigError
from mtunet.models.decoders import DECODERS
from mtunet.models.encoders import ENCODERS, OUTPUT_STRIDE, PYRAMID_LEVELS
from mtunet.models.heads import build_head
from mtunet.models.heads.pooling import SHARED_LEVEL
from mtunet.models.shared import check_shared
from mtunet.models.skips import SKIPS
from mtunet.options import check_preprocessing

DEFAULT_DECODER_FILTERS = (256, 128, 64, 32, 16)


def encoder_names(encoder: str) -> tuple[str, ...]:
    """The encoders a spec's ``encoder`` names: one, or several joined by ``+`` (fused)."""
    return tuple(encoder.split("+"))


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


@dataclasses.dataclass
class ModelSpec:
    """An architecture.

    Attributes:
        encoder: a registered encoder (``mtunet.models.encoders.ENCODERS``), or several joined by ``+`` (e.g.
            ``"densenet161+efficientnetb7"``, Res-MTNet's): each reads the image with its own input scaling and
            their pyramids are concatenated level by level (so pooled features are the concatenation of each
            encoder's pooled features).
        input_shape: ``(height, width, channels)`` of the raw images.
        heads: head configs (``{"type": ..., "name": ..., **options}``), one per model output.
        decoder: a registered decoder, or None for models whose heads all read the encoder (classification only).
        skip: the skip module on every pyramid level P1..P4.
        skip_connections: False leaves the decoder without skips (the paper's ablation).
        decoder_filters: filters of the 5 decoder stages, deepest first.
        shared: the residual shared layer (``{"units": 256, "dropout": 0.3}``, ``mtunet.models.shared``) that heads
            with ``levels=["shared"]`` read, or None.
        preset: the preset the spec was made from, if any (``mtunet.models.PRESETS``).
        preprocessing: how images are prepared for the model, some of ``mtunet.options.PREPROCESSING``:
            ``"fov_crop"`` is applied to the images given to it (by the data, the serving graph, predict and
            Grad-CAM), ``"ben_graham"`` is the model's first layer.
    """

    encoder: str
    input_shape: tuple[int, int, int]
    heads: tuple[dict, ...]
    decoder: str | None = "unet"
    skip: str = "identity"
    skip_connections: bool = True
    decoder_filters: tuple[int, ...] = DEFAULT_DECODER_FILTERS
    shared: dict | None = None
    preset: str | None = None
    preprocessing: tuple[str, ...] = ()

    @property
    def encoders(self) -> tuple[str, ...]:
        """The names of its encoders, one unless fused."""
        return encoder_names(self.encoder)

    def __post_init__(self):
        self.input_shape = tuple(int(size) for size in self.input_shape)
        self.heads = tuple(dict(head) for head in self.heads)
        self.decoder_filters = tuple(int(filters) for filters in self.decoder_filters)
        self.preprocessing = check_preprocessing(self.preprocessing)

    def validate(self) -> "ModelSpec":
        """Returns the spec if every part exists and fits together, else raises ``ConfigError`` naming the first
        that does not."""
        encoders = [ENCODERS.get(name) for name in self.encoders]
        encoder = encoders[0]
        if len({entry.levels for entry in encoders}) > 1:
            raise ConfigError(f"encoders {', '.join(self.encoders)} cannot be fused: their pyramids differ in depth "
                              f"({', '.join(f'{entry.name} {len(entry.levels)}' for entry in encoders)} levels)")
        check_input_shape(self.input_shape)
        self.shared = check_shared(self.shared)
        SKIPS.get(self.skip)
        if self.decoder is not None:
            DECODERS.get(self.decoder)
            if len(self.decoder_filters) != len(PYRAMID_LEVELS):
                raise ConfigError(f"decoder_filters needs {len(PYRAMID_LEVELS)} values, one per stage; received "
                                  f"{self.decoder_filters}")
        if not self.heads:
            raise ConfigError("a model needs at least one head")
        heads = [build_head(config) for config in self.heads]
        names = [head.name for head in heads]
        if len(set(names)) < len(names):
            raise ConfigError(f"head names must differ; received {', '.join(names)}")
        for head in heads:
            if head.needs_decoder and self.decoder is None:
                raise ConfigError(f"head {head.name!r} ({head.type}) needs a decoder; the spec has none")
            if SHARED_LEVEL in getattr(head, "levels", ()) and self.shared is None:
                raise ConfigError(f"head {head.name!r} reads the shared layer; the spec has none (shared=None)")
            missing = [level for level in getattr(head, "levels", ())
                       if level not in (*encoder.levels, SHARED_LEVEL)]
            if missing:
                raise ConfigError(f"head {head.name!r} pools level(s) {', '.join(missing)}, which encoder "
                                  f"{self.encoder!r} does not have; expected some of {', '.join(encoder.levels)}")
        return self

    def to_dict(self) -> dict:
        """The spec as JSON values."""
        return {**dataclasses.asdict(self), "input_shape": list(self.input_shape),
                "decoder_filters": list(self.decoder_filters), "heads": [dict(head) for head in self.heads],
                "preprocessing": list(self.preprocessing)}

    @classmethod
    def from_dict(cls, values: dict) -> "ModelSpec":
        """The spec ``to_dict`` gave; ``ConfigError`` naming unknown fields."""
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ConfigError(f"unknown model spec field(s) {', '.join(unknown)}; expected: "
                              f"{', '.join(sorted(fields))}")
        return cls(**values)
