"""The ordinal head: a grade (DR 0-4, ISUP 0-5, BI-RADS) learnt as CORAL (Cao, Mirjalili and Raschka 2020, "Rank
consistent ordinal regression for neural networks") from pooled encoder features.

One shared linear unit gives each image a score ``s``; K - 1 biases ``b_0 > b_1 > ... > b_{K-2}`` make the K - 1
logits ``s + b_k`` of ``P(y > k)``. CORAL learns independent biases and proves that the loss's optimum orders them;
here they are ordered by construction (the first bias, then positive softplus steps down), so that ``P(y > k)`` falls
with ``k`` for any weights, not only at the optimum, and the class probabilities
``p(0) = 1 - P(y > 0)``, ``p(k) = P(y > k - 1) - P(y > k)``, ``p(K - 1) = P(y > K - 2)`` are never negative and sum
to 1. The model's output is those K class probabilities, so that evaluation, serving, predict and Grad-CAM read an
ordinal head as they read a class head.
"""

import math

import keras
import numpy as np
from keras import ops

from mtunet.models.heads.base import HEADS, LossSettings
from mtunet.models.heads.classification import ClassificationHead
from mtunet.models.losses import OrdinalCrossEntropy
from mtunet.models.metrics import LabelledAUC, LabelledGradeAccuracy, ordinal_grades

CORAL_DECISION = "the number of thresholds k with P(y > k) > 0.5 (CORAL's rule)"


@keras.saving.register_keras_serializable(package="mtunet")
class OrdinalThresholds(keras.layers.Layer):
    """``score + b_k`` for K - 1 decreasing biases ``b_k`` (``b_0``, then ``b_k = b_{k-1} - softplus(step_k)``):
    ``(batch, 1)`` -> ``(batch, K - 1)`` logits of ``P(y > k)``. Initialised so that a score of 0 gives every class
    the probability 1 / K.

    Args:
        num_thresholds: K - 1, at least 1.
    """

    def __init__(self, num_thresholds, **kwargs):
        super().__init__(**kwargs)
        self.num_thresholds = int(num_thresholds)

    def build(self, input_shape):
        count = self.num_thresholds
        biases = [math.log((count - k) / (k + 1)) for k in range(count)]  # logit((K - 1 - k) / K)
        steps = [math.log(math.expm1(upper - lower)) for upper, lower in zip(biases, biases[1:])]  # softplus⁻¹
        self.first = self.add_weight(shape=(1,), initializer=keras.initializers.Constant(biases[0]), name="first")
        self.steps = self.add_weight(shape=(count - 1,), initializer=keras.initializers.Constant(steps or 0.0),
                                     name="steps")

    def thresholds(self):
        """The K - 1 biases, decreasing."""
        drops = ops.concatenate([ops.zeros((1,), self.steps.dtype), ops.softplus(self.steps)])
        return self.first - ops.cumsum(drops)

    def call(self, score):
        return score + ops.cast(self.thresholds(), score.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_thresholds)

    def get_config(self):
        return {**super().get_config(), "num_thresholds": self.num_thresholds}


@keras.saving.register_keras_serializable(package="mtunet")
class CumulativeToClassProbabilities(keras.layers.Layer):
    """Logits of ``P(y > k)`` ``(batch, K - 1)``, decreasing -> class probabilities ``(batch, K)``:
    ``p(k) = P(y > k - 1) - P(y > k)`` with ``P(y > -1) = 1`` and ``P(y > K - 1) = 0``."""

    def call(self, logits):
        exceeding = ops.sigmoid(ops.cast(logits, self.compute_dtype))
        ones, zeros = ops.ones_like(exceeding[:, :1]), ops.zeros_like(exceeding[:, :1])
        return ops.concatenate([ones, exceeding], axis=1) - ops.concatenate([exceeding, zeros], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] + 1)


def exceedance_numpy(probabilities) -> np.ndarray:
    """``P(y > k)`` for k = 0..K-2 from class probabilities ``(..., K)``: the sum of the probabilities above k."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return np.cumsum(probabilities[..., ::-1], axis=-1)[..., ::-1][..., 1:]


@HEADS.register("ordinal")
class OrdinalHead(ClassificationHead):
    """Pooled ``levels`` -> [dense ``hidden_units`` with ReLU, ``{name}_hidden``] -> dropout -> one shared linear
    unit (``{name}_score``) -> K - 1 ordered biases (``{name}_logits``, the logits of ``P(y > k)``) -> class
    probabilities (``{name}``, float32), ``(batch, num_classes)``; trained with CORAL's loss
    (``mtunet.models.losses.OrdinalCrossEntropy``, class-weighted). The predicted grade is the number of thresholds
    with ``P(y > k) > 0.5`` (it can differ from the most probable class). Label smoothing does not apply.

    Args:
        name: output name, also the key of its one-hot targets in the data; an all-zero target is a missing label.
        num_classes: K grades, at least 2, in their order.
        dropout, levels, hidden_units: as for the classification head.
    """

    type, loss_role = "ordinal", "classification"
    description = "ordered grades from pooled encoder levels: CORAL's shared score and K-1 ordered thresholds"
    decision = CORAL_DECISION

    def apply(self, features, decoded):
        score = keras.layers.Dense(1, use_bias=False, name=f"{self.name}_score")(self.pooled(features))
        logits = OrdinalThresholds(self.num_classes - 1, name=self.logits_layer)(score)
        return CumulativeToClassProbabilities(dtype="float32", name=self.name)(logits)

    def loss(self, settings: LossSettings):
        return OrdinalCrossEntropy(settings.class_weights.get(self.name))

    def metrics(self, prefix):
        return [LabelledGradeAccuracy(name=f"{prefix}accuracy"), LabelledAUC(name=f"{prefix}auc")]

    def probabilities(self, logits):
        return CumulativeToClassProbabilities(dtype="float32")(logits)

    def serving_outputs(self, output):
        probabilities = ops.cast(output, "float32")
        return {f"{self.name}_probabilities": probabilities, self.name: ordinal_grades(probabilities)}

    def predict_numpy(self, output, threshold=0.5):
        """The grade of each row of class probabilities: how many ``P(y > k)`` exceed 0.5 (``threshold`` is the
        mask's and unused)."""
        return (exceedance_numpy(output) > 0.5).sum(axis=-1)
