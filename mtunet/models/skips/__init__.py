"""Skip modules: the registry and its entries (importing this package registers every skip module)."""

from mtunet.models.skips import identity  # noqa: F401  (registers the skip modules)
from mtunet.models.skips.base import SKIPS, SkipSpec

__all__ = ["SKIPS", "SkipSpec"]
