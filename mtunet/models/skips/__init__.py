"""Skip modules: the registry and its entries (importing this package registers every skip module)."""

from mtunet.models.skips import identity, dfe  # noqa: F401, I001  (register the skip modules, the default first)
from mtunet.models.skips.base import SKIPS, SkipSpec

__all__ = ["SKIPS", "SkipSpec"]
