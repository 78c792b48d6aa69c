"""Encoders: the registry and its entries (importing this package registers every encoder)."""

from mtunet.models.encoders import applications  # noqa: F401  (registers the keras.applications encoders)
from mtunet.models.encoders.base import (
    ENCODERS, INPUT_SCALINGS, OUTPUT_STRIDE, PYRAMID_LEVELS, SCRATCH_BN_MOMENTUM, EncoderSpec, build_encoder,
    get_encoder,
)

__all__ = ["ENCODERS", "INPUT_SCALINGS", "OUTPUT_STRIDE", "PYRAMID_LEVELS", "SCRATCH_BN_MOMENTUM", "EncoderSpec",
           "build_encoder", "get_encoder"]
