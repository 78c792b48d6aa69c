"""The softmax class head: the diagnosis from pooled encoder features (the bottleneck, or several pyramid levels)."""

import keras
import numpy as np
from keras import ops

from mtunet.errors import ConfigError
from mtunet.models.encoders.base import PYRAMID_LEVELS
from mtunet.models.heads.base import HEADS, Head, LossSettings
from mtunet.models.losses import WeightedCategoricalCrossentropy


@HEADS.register("classification")
class ClassificationHead(Head):
    """Global average pooling of each of ``levels`` (concatenated when several) -> [dense ``hidden_units`` with ReLU,
    ``{name}_hidden``] -> dropout -> dense logits (``{name}_logits``) -> softmax (``{name}``), ``(batch, num_classes)``.

    Args:
        name: output name (``"label"``, the data's class label).
        num_classes: at least 2.
        dropout: rate before the logits layer, in [0, 1).
        levels: pyramid levels pooled; ``("P5",)`` is the bottleneck (the paper's head), ``("P3", "P4")`` the
            ResFormer's multi-scale head.
        hidden_units: width of a hidden layer before the logits (the ResFormer's two fully connected layers), or
            None for the logits layer alone.
    """

    type, target, loss_role, needs_decoder, spatial = "classification", "label", "classification", False, False
    description = "softmax diagnosis from pooled encoder levels (the bottleneck by default); weighted cross-entropy"

    def __init__(self, name="label", *, num_classes, dropout=0.3, levels=("P5",), hidden_units=None):
        super().__init__(name)
        if num_classes is None or int(num_classes) < 2:
            raise ConfigError(f"num_classes must be at least 2 for the class head; received {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); received {dropout!r}")
        unknown = [level for level in levels if level not in PYRAMID_LEVELS]
        if unknown or not levels:
            raise ConfigError(f"class head levels {tuple(levels)}: expected some of {', '.join(PYRAMID_LEVELS)}")
        if hidden_units is not None and int(hidden_units) < 1:
            raise ConfigError(f"hidden_units must be a positive number of units or None; received {hidden_units!r}")
        self.num_classes, self.dropout, self.levels = int(num_classes), float(dropout), tuple(levels)
        self.hidden_units = None if hidden_units is None else int(hidden_units)

    def apply(self, features, decoded):
        if len(self.levels) == 1:
            x = keras.layers.GlobalAveragePooling2D(name=f"{self.name}_pool")(features[self.levels[0]])
        else:
            pooled = [keras.layers.GlobalAveragePooling2D(name=f"{self.name}_pool_{level}")(features[level])
                      for level in self.levels]
            x = keras.layers.Concatenate(name=f"{self.name}_pool")(pooled)
        if self.hidden_units is not None:
            x = keras.layers.Dense(self.hidden_units, activation="relu", name=f"{self.name}_hidden")(x)
        x = keras.layers.Dropout(self.dropout, name=f"{self.name}_dropout")(x)
        logits = keras.layers.Dense(self.num_classes, name=self.logits_layer)(x)
        return keras.layers.Activation("softmax", dtype="float32", name=self.name)(logits)

    def loss(self, settings: LossSettings):
        return WeightedCategoricalCrossentropy(settings.class_weights, settings.label_smoothing)

    def metrics(self, prefix):
        return [keras.metrics.CategoricalAccuracy(name=f"{prefix}accuracy"), keras.metrics.AUC(name=f"{prefix}auc")]

    def serving_outputs(self, output):
        probabilities = ops.cast(output, "float32")
        return {f"{self.name}_probabilities": probabilities, self.name: ops.argmax(probabilities, axis=1)}

    def class_index_outputs(self):
        return {self.name: "class_name" if self.name == "label" else f"{self.name}_class_name"}

    def predict_numpy(self, output, threshold=0.5):
        return np.asarray(output).argmax(axis=-1)

    def get_config(self):
        return {"type": self.type, "name": self.name, "num_classes": self.num_classes, "dropout": self.dropout,
                "levels": list(self.levels), "hidden_units": self.hidden_units}
