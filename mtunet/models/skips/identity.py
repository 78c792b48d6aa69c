"""The plain skip connection: the encoder feature as it is."""

from mtunet.models.skips.base import SKIPS, SkipSpec


def apply_identity(feature, name):
    """Returns ``feature`` unchanged (no layer)."""
    return feature


SKIPS.register("identity", SkipSpec("identity", apply_identity, "the encoder feature unchanged (U-Net)"))
