"""Losses of the heads: the class head's weighted cross-entropy, the binary and the multi-class mask losses.

All are computed in float32, also under mixed precision, and are registered so compiled models save and reload.
"""

import keras
from keras import ops

from mtunet.options import SEGMENTATION_LOSSES


@keras.saving.register_keras_serializable(package="mtunet")
class WeightedCategoricalCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy with one weight per true class (e.g. sklearn's ``balanced`` weights).

    Keras's ``class_weight`` argument of ``fit`` does not work for models with two outputs, so the weighting lives
    here: each example's loss is multiplied by ``sum(y_true * class_weights)`` (the weight of its class; with label
    smoothing, the smoothed mixture of weights), then averaged over the batch as ``fit(class_weight=...)`` would.

    Args:
        class_weights: one non-negative weight per class, or None for all ones.
        label_smoothing: in [0, 1); mixes the one-hot target with the uniform distribution.

    Shapes: ``y_true`` one-hot ``(batch, num_classes)``, ``y_pred`` probabilities ``(batch, num_classes)``.
    """

    def __init__(self, class_weights=None, label_smoothing=0.0, name="weighted_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.clip(ops.cast(y_pred, "float32"), keras.config.epsilon(), 1.0 - keras.config.epsilon())
        num_classes = ops.shape(y_true)[-1]
        targets = y_true * (1.0 - self.label_smoothing) + self.label_smoothing / ops.cast(num_classes, "float32")
        per_example = -ops.sum(targets * ops.log(y_pred), axis=-1)
        if self.class_weights is None:
            return per_example
        weights = ops.convert_to_tensor(self.class_weights, dtype="float32")
        return per_example * ops.sum(y_true * weights, axis=-1)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights, "label_smoothing": self.label_smoothing}


def soft_dice_loss(y_true, y_pred, smooth=1.0):
    """Per-image ``1 - (2 |y p| + smooth) / (|y| + |p| + smooth)``; 0 for an empty mask predicted empty.

    Shapes: ``(batch, H, W, 1)`` -> ``(batch,)``.
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    axes = tuple(range(1, len(y_pred.shape)))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


def pixel_bce(y_true, y_pred):
    """Binary cross-entropy averaged over each image's pixels; ``(batch, H, W, 1)`` -> ``(batch,)``."""
    per_pixel = keras.losses.binary_crossentropy(ops.cast(y_true, "float32"), ops.cast(y_pred, "float32"))
    return ops.mean(per_pixel, axis=tuple(range(1, len(per_pixel.shape))))


@keras.saving.register_keras_serializable(package="mtunet")
class SegmentationLoss(keras.losses.Loss):
    """Mask loss: ``"bce"`` (the paper's), ``"dice"`` (soft Dice) or ``"bce_dice"`` (their sum)."""

    def __init__(self, kind="bce", name=None, **kwargs):
        if kind not in SEGMENTATION_LOSSES:
            raise ValueError(f"unknown segmentation loss {kind!r}; expected one of: {', '.join(SEGMENTATION_LOSSES)}")
        super().__init__(name=name or f"segmentation_{kind}", **kwargs)
        self.kind = kind

    def call(self, y_true, y_pred):
        if self.kind == "bce":
            return pixel_bce(y_true, y_pred)
        if self.kind == "dice":
            return soft_dice_loss(y_true, y_pred)
        return pixel_bce(y_true, y_pred) + soft_dice_loss(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


def multiclass_soft_dice_loss(y_true, y_pred, smooth=1.0):
    """Per image, the mean over foreground classes 1..K of ``1 - (2 |y_c p_c| + smooth) / (|y_c| + |p_c| + smooth)``;
    a class absent from the image and predicted absent contributes 0, as an empty binary mask does.

    Shapes: ``y_true`` one-hot ``(batch, H, W, K + 1)``, ``y_pred`` softmax ``(batch, H, W, K + 1)`` -> ``(batch,)``.
    """
    y_true = ops.cast(y_true, "float32")[..., 1:]
    y_pred = ops.cast(y_pred, "float32")[..., 1:]
    axes = tuple(range(1, len(y_pred.shape) - 1))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return ops.mean(1.0 - (2.0 * intersection + smooth) / (total + smooth), axis=-1)


def pixel_categorical_crossentropy(y_true, y_pred):
    """Categorical cross-entropy averaged over each image's pixels; one-hot and softmax ``(batch, H, W, K + 1)`` ->
    ``(batch,)``."""
    per_pixel = keras.losses.categorical_crossentropy(ops.cast(y_true, "float32"), ops.cast(y_pred, "float32"))
    return ops.mean(per_pixel, axis=tuple(range(1, len(per_pixel.shape))))


@keras.saving.register_keras_serializable(package="mtunet")
class MultiClassSegmentationLoss(keras.losses.Loss):
    """Loss of a softmax mask over background and K classes: ``"bce"`` (here the categorical cross-entropy, the
    multi-class form of the paper's loss), ``"dice"`` (multi-class soft Dice over the foreground classes) or
    ``"bce_dice"`` (their sum).

    Shapes: ``y_true`` ``(batch, H, W, 1)`` of class values 0..K, ``y_pred`` softmax ``(batch, H, W, K + 1)``.
    """

    def __init__(self, kind="bce", name=None, **kwargs):
        if kind not in SEGMENTATION_LOSSES:
            raise ValueError(f"unknown segmentation loss {kind!r}; expected one of: {', '.join(SEGMENTATION_LOSSES)}")
        super().__init__(name=name or f"multiclass_segmentation_{kind}", **kwargs)
        self.kind = kind

    def call(self, y_true, y_pred):
        num_channels = y_pred.shape[-1]
        y_true = ops.one_hot(ops.cast(ops.squeeze(y_true, axis=-1), "int32"), num_channels, dtype="float32")
        if self.kind == "bce":
            return pixel_categorical_crossentropy(y_true, y_pred)
        if self.kind == "dice":
            return multiclass_soft_dice_loss(y_true, y_pred)
        return pixel_categorical_crossentropy(y_true, y_pred) + multiclass_soft_dice_loss(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}
