"""The residual shared layer of Res-MTNet (Lin, Zhang et al.): the pooled bottleneck mapped to a low-dimensional
vector that every head on it reads, ``y = F(x) + P x`` with ``F`` = dense -> ReLU -> dropout and ``P`` a linear
projection (the identity where the widths are equal)."""

import keras

from mtunet.errors import ConfigError


def check_shared(shared: dict | None) -> dict | None:
    """``shared`` (``{"units": int, "dropout": float}``) with its defaults, if valid; else ``ConfigError``."""
    if shared is None:
        return None
    unknown = sorted(set(shared) - {"units", "dropout"})
    if unknown:
        raise ConfigError(f"unknown shared layer option(s) {', '.join(unknown)}; expected units, dropout")
    units, dropout = shared.get("units", 256), shared.get("dropout", 0.3)
    if not isinstance(units, int) or units < 1:
        raise ConfigError(f"shared layer units must be a positive integer; received {units!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"shared layer dropout must be in [0, 1); received {dropout!r}")
    return {"units": units, "dropout": float(dropout)}


def residual_shared_layer(bottleneck, units: int, dropout: float):
    """The shared vector ``(batch, units)`` (layer ``"shared"``) from the bottleneck's feature map."""
    x = keras.layers.GlobalAveragePooling2D(name="shared_pool")(bottleneck)
    transformed = keras.layers.Dense(units, activation="relu", name="shared_dense")(x)
    transformed = keras.layers.Dropout(dropout, name="shared_dropout")(transformed)
    residual = x if x.shape[-1] == units else keras.layers.Dense(units, use_bias=False, name="shared_projection")(x)
    return keras.layers.Add(name="shared")([transformed, residual])
