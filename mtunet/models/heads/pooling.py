"""The heads on the encoder: what they read (pooled pyramid levels, or the residual shared layer's vector) and the
layers they share before their own output."""

import keras

from mtunet.errors import ConfigError
from mtunet.models.encoders.base import PYRAMID_LEVELS
from mtunet.models.heads.base import Head

# The feature name of the residual shared layer (``ModelSpec.shared``): a vector, read as it is.
SHARED_LEVEL = "shared"


def check_levels(levels, head_name: str) -> tuple[str, ...]:
    """``levels`` as a tuple if each is a pyramid level or ``SHARED_LEVEL``, else ``ConfigError``."""
    levels = (levels,) if isinstance(levels, str) else tuple(levels)
    valid = (*PYRAMID_LEVELS, SHARED_LEVEL)
    if not levels or any(level not in valid for level in levels):
        raise ConfigError(f"head {head_name!r} levels {levels}: expected some of {', '.join(valid)}")
    return levels


def pool_levels(features: dict, levels: tuple[str, ...], head_name: str):
    """Global average pooling of each of ``levels`` (a vector is taken as it is), concatenated when several:
    ``{head_name}_pool``."""
    if levels == (SHARED_LEVEL,):
        return features[SHARED_LEVEL]
    if len(levels) == 1:
        return keras.layers.GlobalAveragePooling2D(name=f"{head_name}_pool")(features[levels[0]])
    pooled = [features[level] if level == SHARED_LEVEL else
              keras.layers.GlobalAveragePooling2D(name=f"{head_name}_pool_{level}")(features[level])
              for level in levels]
    return keras.layers.Concatenate(name=f"{head_name}_pool")(pooled)


class PooledHead(Head):
    """A head on pooled encoder features: pooled ``levels`` -> [dense ``hidden_units`` with ReLU, ``{name}_hidden``]
    -> dropout (``{name}_dropout``), then its own output layers. Its target in the data is keyed by its name.

    Args:
        name: output name.
        dropout: rate before the output layer, in [0, 1).
        levels: pyramid levels pooled (``check_levels``).
        hidden_units: width of a hidden layer, or None for none.
    """

    needs_decoder, spatial = False, False

    def __init__(self, name, *, dropout, levels, hidden_units):
        super().__init__(name)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); received {dropout!r}")
        if hidden_units is not None and int(hidden_units) < 1:
            raise ConfigError(f"hidden_units must be a positive number of units or None; received {hidden_units!r}")
        self.dropout, self.levels = float(dropout), check_levels(levels, name)
        self.hidden_units = None if hidden_units is None else int(hidden_units)

    @property
    def target(self):
        return self.name

    def pooled(self, features):
        """The features its output layer reads."""
        x = pool_levels(features, self.levels, self.name)
        if self.hidden_units is not None:
            x = keras.layers.Dense(self.hidden_units, activation="relu", name=f"{self.name}_hidden")(x)
        return keras.layers.Dropout(self.dropout, name=f"{self.name}_dropout")(x)

    def pooling_config(self) -> dict:
        return {"dropout": self.dropout, "levels": list(self.levels), "hidden_units": self.hidden_units}
