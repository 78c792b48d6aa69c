"""Encoders: the registry and its entries (importing this package registers every encoder)."""

from mtunet.models.encoders import applications, resformer  # noqa: F401  (register the encoders)
from mtunet.models.encoders.base import (
    ENCODERS, INPUT_SCALINGS, OUTPUT_STRIDE, PYRAMID_LEVELS, SCRATCH_BN_MOMENTUM, EncoderSpec, build_encoder,
    get_encoder,
)

__all__ = ["ENCODERS", "INPUT_SCALINGS", "OUTPUT_STRIDE", "PYRAMID_LEVELS", "SCRATCH_BN_MOMENTUM", "EncoderSpec",
           "build_encoder", "get_encoder"]
