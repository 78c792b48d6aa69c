"""Heads: the registry and its head types (importing this package registers every head type)."""

from mtunet.models.heads import (  # noqa: F401  (register)
    binary_mask, classification, multiclass_mask, multilabel_mask, ordinal, regression,
)
from mtunet.models.heads.base import HEADS, Head, LossSettings, build_head

__all__ = ["HEADS", "Head", "LossSettings", "build_head"]
