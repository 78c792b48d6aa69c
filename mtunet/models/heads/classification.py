"""The softmax class head: the diagnosis from pooled encoder features (the bottleneck, or several pyramid levels)."""

import keras
import numpy as np
from keras import ops

from mtunet.errors import ConfigError
from mtunet.models.heads.base import HEADS, LossSettings
from mtunet.models.heads.pooling import PooledHead
from mtunet.models.losses import WeightedCategoricalCrossentropy
from mtunet.models.metrics import LabelledAccuracy, LabelledAUC


@HEADS.register("classification")
class ClassificationHead(PooledHead):
    """Global average pooling of each of ``levels`` (concatenated when several) -> [dense ``hidden_units`` with ReLU,
    ``{name}_hidden``] -> dropout -> dense logits (``{name}_logits``) -> softmax (``{name}``), ``(batch, num_classes)``.

    Args:
        name: output name, also the key of its one-hot targets in the data (``"label"``, the diagnosis); an
            all-zero target is a missing label.
        num_classes: at least 2.
        dropout: rate before the logits layer, in [0, 1).
        levels: pyramid levels pooled; ``("P5",)`` is the bottleneck (the paper's head), ``("P3", "P4")`` the
            ResFormer's multi-scale head, ``("shared",)`` the residual shared layer (``ModelSpec.shared``).
        hidden_units: width of a hidden layer before the logits (the ResFormer's two fully connected layers), or
            None for the logits layer alone.

    Its predicted class (``predict_numpy``, the serving output ``{name}``) follows ``decision``: the most probable.
    """

    type, loss_role = "classification", "classification"
    description = "softmax diagnosis from pooled encoder levels (the bottleneck by default); weighted cross-entropy"
    decision = "the class of highest probability"

    def __init__(self, name="label", *, num_classes, dropout=0.3, levels=("P5",), hidden_units=None):
        super().__init__(name, dropout=dropout, levels=levels, hidden_units=hidden_units)
        if num_classes is None or int(num_classes) < 2:
            raise ConfigError(f"num_classes must be at least 2 for the class head; received {num_classes!r}")
        self.num_classes = int(num_classes)

    def apply(self, features, decoded):
        logits = keras.layers.Dense(self.num_classes, name=self.logits_layer)(self.pooled(features))
        return keras.layers.Activation("softmax", dtype="float32", name=self.name)(logits)

    def loss(self, settings: LossSettings):
        return WeightedCategoricalCrossentropy(settings.class_weights.get(self.name), settings.label_smoothing)

    def metrics(self, prefix):
        return [LabelledAccuracy(name=f"{prefix}accuracy"), LabelledAUC(name=f"{prefix}auc")]

    def serving_outputs(self, output):
        probabilities = ops.cast(output, "float32")
        return {f"{self.name}_probabilities": probabilities, self.name: ops.argmax(probabilities, axis=1)}

    def class_index_outputs(self):
        return {self.name: "class_name" if self.name == "label" else f"{self.name}_class_name"}

    def probabilities(self, logits):
        """The class probabilities from the ``{name}_logits`` layer's output (what Grad-CAM differentiates)."""
        return ops.softmax(ops.cast(logits, "float32"), axis=-1)

    def predict_numpy(self, output, threshold=0.5):
        return np.asarray(output).argmax(axis=-1)

    def get_config(self):
        return {"type": self.type, "name": self.name, "num_classes": self.num_classes, **self.pooling_config()}
