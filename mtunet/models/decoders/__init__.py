"""Decoders: the registry and its entries (importing this package registers every decoder)."""

from mtunet.models.decoders import attention_unet, resformer, unet  # noqa: F401  (register the decoders)
from mtunet.models.decoders.base import DECODERS, DecoderSpec, apply_conv_block

__all__ = ["DECODERS", "DecoderSpec", "apply_conv_block"]
