"""The regression head: real values (a lesion's size, a position, an area fraction) from pooled encoder features."""

import keras
import numpy as np
from keras import ops

from mtunet.errors import ConfigError
from mtunet.models.heads.base import HEADS, LossSettings
from mtunet.models.heads.pooling import PooledHead
from mtunet.models.losses import StandardisedRegressionLoss
from mtunet.models.metrics import PresentMeanAbsoluteError
from mtunet.options import REGRESSION_LOSSES


@HEADS.register("regression")
class RegressionHead(PooledHead):
    """Pooled ``levels`` -> [dense ``hidden_units`` with ReLU] -> dropout -> dense standardised values
    (``{name}_logits``) -> ``value * std + mean`` (``{name}``, float32), ``(batch, len(targets))`` on the targets'
    own scale. The loss is computed on the standardised scale; NaN targets are missing.

    Args:
        name: output name, also the key of its targets in the data (``{name: (batch, len(targets))}``).
        targets: names of the values it predicts, e.g. ``["x", "y"]``.
        mean, std: per target, from the training split (default 0 and 1: no standardisation).
        loss: ``"mse"`` or ``"huber"`` (on the standardised scale).
        dropout, levels, hidden_units: as for the classification head; ``levels=("shared",)`` reads the residual
            shared layer.
    """

    type, loss_role = "regression", "regression"
    description = "real values (size, position, area) from pooled encoder levels; standardised MSE or Huber loss"

    def __init__(self, name, *, targets, mean=None, std=None, loss="mse", dropout=0.3, levels=("P5",),
                 hidden_units=None):
        super().__init__(name, dropout=dropout, levels=levels, hidden_units=hidden_units)
        self.targets = tuple(str(target) for target in ([targets] if isinstance(targets, str) else targets))
        if not self.targets:
            raise ConfigError(f"regression head {name!r} needs at least one target")
        self.mean = tuple(float(value) for value in (mean if mean is not None else [0.0] * len(self.targets)))
        self.std = tuple(float(value) for value in (std if std is not None else [1.0] * len(self.targets)))
        if len(self.mean) != len(self.targets) or len(self.std) != len(self.targets):
            raise ConfigError(f"regression head {name!r}: mean and std need one value per target "
                              f"({', '.join(self.targets)})")
        if not all(value > 0 and np.isfinite(value) for value in self.std):
            raise ConfigError(f"regression head {name!r}: std must be positive and finite; received {self.std}")
        if loss not in REGRESSION_LOSSES:
            raise ConfigError(f"unknown regression loss {loss!r}; expected one of: {', '.join(REGRESSION_LOSSES)}")
        self.loss_kind = loss

    def apply(self, features, decoded):
        standardised = keras.layers.Dense(len(self.targets), name=self.logits_layer)(self.pooled(features))
        return keras.layers.Rescaling(list(self.std), list(self.mean), dtype="float32", name=self.name)(standardised)

    def loss(self, settings: LossSettings):
        return StandardisedRegressionLoss(self.mean, self.std, self.loss_kind)

    def metrics(self, prefix):
        return [PresentMeanAbsoluteError(name=f"{prefix}mae")]

    def serving_outputs(self, output):
        return {self.name: ops.cast(output, "float32")}

    def predict_numpy(self, output, threshold=0.5):
        return np.asarray(output, dtype="float32")

    def get_config(self):
        return {"type": self.type, "name": self.name, "targets": list(self.targets), "mean": list(self.mean),
                "std": list(self.std), "loss": self.loss_kind, **self.pooling_config()}
