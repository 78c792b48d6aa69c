"""Heads: the registry and its head types (importing this package registers every head type)."""

from mtunet.models.heads import binary_mask, classification, multiclass_mask, regression  # noqa: F401  (register)
from mtunet.models.heads.base import HEADS, Head, LossSettings, build_head

__all__ = ["HEADS", "Head", "LossSettings", "build_head"]
