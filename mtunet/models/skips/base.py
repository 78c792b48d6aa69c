"""The skip-module registry: what stands on each skip connection between an encoder level and the decoder."""

import dataclasses
from collections.abc import Callable

from mtunet.models.registry import Registry

SKIPS = Registry("skip module")


@dataclasses.dataclass(frozen=True)
class SkipSpec:
    """One skip module.

    Attributes:
        name: registry name, e.g. ``"identity"``.
        apply: ``apply(feature, name) -> tensor``, the encoder feature of one level as the decoder receives it; layers
            named with the prefix ``name`` (``skip_P1`` .. ``skip_P4``).
        description: one line for ``mtunet architectures``.
    """

    name: str
    apply: Callable
    description: str
