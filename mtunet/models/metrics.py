"""Training-time metrics of the mask heads (Dice, IoU of binary, multi-class and multi-label masks, averaged over
images or over present (image, lesion type) pairs) and of
the regression heads (mean absolute error over the values present), and the class and ordinal heads' accuracy and AUC
over the labelled examples.

Evaluation computes its metrics from saved predictions with numpy and scikit-learn; these only follow training.
"""

import keras
from keras import ops

from mtunet.models.losses import channels_present, exceedance, mask_present, nan_as_missing


def _overlap(y_true, y_pred, threshold, axes=None):
    """Intersection, true and predicted area of the thresholded masks, summed over ``axes`` (None: all but the
    batch's)."""
    y_true = ops.cast(y_true > 0.5, "float32")
    y_pred = ops.cast(ops.cast(y_pred, "float32") > threshold, "float32")
    axes = tuple(range(1, len(y_pred.shape))) if axes is None else axes
    intersection = ops.sum(y_true * y_pred, axis=axes)
    return intersection, ops.sum(y_true, axis=axes), ops.sum(y_pred, axis=axes)


def _dice(intersection, true_area, pred_area):
    total = true_area + pred_area
    return ops.where(total > 0, 2.0 * intersection / ops.maximum(total, 1.0), 1.0)


def _iou(intersection, true_area, pred_area):
    union = true_area + pred_area - intersection
    return ops.where(union > 0, intersection / ops.maximum(union, 1.0), 1.0)


def dice_per_image(y_true, y_pred, threshold=0.5):
    """Dice of the thresholded prediction for each image; 1 where both masks are empty. ``(batch,)``."""
    return _dice(*_overlap(y_true, y_pred, threshold))


def iou_per_image(y_true, y_pred, threshold=0.5):
    """IoU (Jaccard) of the thresholded prediction for each image; 1 where both masks are empty. ``(batch,)``."""
    return _iou(*_overlap(y_true, y_pred, threshold))


class _MeanOverImages(keras.metrics.Mean):
    """Mean over the images with a mask (``present``, by default ``mask_present``) of ``per_image(y_true, y_pred,
    threshold)``."""

    per_image = None
    present = staticmethod(mask_present)

    def __init__(self, threshold=0.5, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold

    def update_state(self, y_true, y_pred, sample_weight=None):
        present = ops.cast(self.present(y_true), "float32")
        weight = present if sample_weight is None else present * ops.cast(sample_weight, "float32")
        return super().update_state(self.per_image(y_true, y_pred, self.threshold), weight)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="mtunet")
class MeanDice(_MeanOverImages):
    """Mean over images of the Dice of the mask thresholded at ``threshold``."""

    per_image = staticmethod(dice_per_image)

    def __init__(self, threshold=0.5, name="dice", **kwargs):
        super().__init__(threshold=threshold, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="mtunet")
class MeanIoU(_MeanOverImages):
    """Mean over images of the IoU of the mask thresholded at ``threshold``."""

    per_image = staticmethod(iou_per_image)

    def __init__(self, threshold=0.5, name="iou", **kwargs):
        super().__init__(threshold=threshold, name=name, **kwargs)


def _class_overlap(y_true, y_pred):
    """Per image and foreground class: intersection, true area, predicted area, ``(batch, K)`` each; ``y_true``
    ``(batch, H, W, 1)`` class values, ``y_pred`` softmax ``(batch, H, W, K + 1)`` taken at its argmax."""
    num_channels = y_pred.shape[-1]
    true_maps = ops.one_hot(ops.cast(ops.squeeze(y_true, axis=-1), "int32"), num_channels, dtype="float32")[..., 1:]
    predicted_maps = ops.one_hot(ops.argmax(y_pred, axis=-1), num_channels, dtype="float32")[..., 1:]
    axes = tuple(range(1, len(true_maps.shape) - 1))
    return (ops.sum(true_maps * predicted_maps, axis=axes), ops.sum(true_maps, axis=axes),
            ops.sum(predicted_maps, axis=axes))


def class_dice_per_image(y_true, y_pred, threshold=None):
    """Mean over foreground classes of each image's Dice of the argmax map; a class absent from both counts as 1.
    ``(batch,)``; ``threshold`` is unused (the map is the argmax)."""
    intersection, true_area, pred_area = _class_overlap(y_true, y_pred)
    total = true_area + pred_area
    return ops.mean(ops.where(total > 0, 2.0 * intersection / ops.maximum(total, 1.0), 1.0), axis=-1)


def class_iou_per_image(y_true, y_pred, threshold=None):
    """Mean over foreground classes of each image's IoU of the argmax map; a class absent from both counts as 1."""
    intersection, true_area, pred_area = _class_overlap(y_true, y_pred)
    union = true_area + pred_area - intersection
    return ops.mean(ops.where(union > 0, intersection / ops.maximum(union, 1.0), 1.0), axis=-1)


@keras.saving.register_keras_serializable(package="mtunet")
class MeanClassDice(_MeanOverImages):
    """Mean over images of the mean Dice over foreground classes of a softmax mask's argmax map."""

    per_image = staticmethod(class_dice_per_image)

    def __init__(self, threshold=None, name="dice", **kwargs):
        super().__init__(threshold=threshold, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="mtunet")
class MeanClassIoU(_MeanOverImages):
    """Mean over images of the mean IoU over foreground classes of a softmax mask's argmax map."""

    per_image = staticmethod(class_iou_per_image)

    def __init__(self, threshold=None, name="iou", **kwargs):
        super().__init__(threshold=threshold, name=name, **kwargs)


def label_dice_per_pair(y_true, y_pred, threshold=0.5):
    """Dice of each image and lesion type of a multi-label mask thresholded at ``threshold``, ``(batch, L)``; 1 where
    both are empty."""
    return _dice(*_overlap(y_true, y_pred, threshold, axes=(1, 2)))


def label_iou_per_pair(y_true, y_pred, threshold=0.5):
    """IoU of each image and lesion type of a multi-label mask thresholded at ``threshold``, ``(batch, L)``; 1 where
    both are empty."""
    return _iou(*_overlap(y_true, y_pred, threshold, axes=(1, 2)))


@keras.saving.register_keras_serializable(package="mtunet")
class MeanLabelDice(_MeanOverImages):
    """Mean over the present (image, lesion type) pairs (``channels_present``) of a multi-label mask's Dice,
    thresholded at ``threshold``."""

    per_image = staticmethod(label_dice_per_pair)
    present = staticmethod(channels_present)

    def __init__(self, threshold=0.5, name="dice", **kwargs):
        super().__init__(threshold=threshold, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="mtunet")
class MeanLabelIoU(_MeanOverImages):
    """Mean over the present (image, lesion type) pairs of a multi-label mask's IoU, thresholded at ``threshold``."""

    per_image = staticmethod(label_iou_per_pair)
    present = staticmethod(channels_present)

    def __init__(self, threshold=0.5, name="iou", **kwargs):
        super().__init__(threshold=threshold, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="mtunet")
class PresentMeanAbsoluteError(keras.metrics.Mean):
    """Mean absolute error over the target values present; NaN targets are missing and ignored (Keras's
    ``MeanAbsoluteError`` would turn them into a NaN metric)."""

    def __init__(self, name="mae", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, present = nan_as_missing(ops.reshape(y_true, (-1,)))
        error = ops.abs(ops.reshape(ops.cast(y_pred, "float32"), (-1,)) - y_true)
        return super().update_state(ops.where(present, error, 0.0), ops.cast(present, "float32"))


def _labelled(y_true, sample_weight):
    """``sample_weight`` (1 if None) times whether each example has a label: all-zero one-hot rows are missing."""
    present = ops.cast(ops.sum(ops.cast(y_true, "float32"), axis=-1) > 0, "float32")
    return present if sample_weight is None else present * ops.cast(sample_weight, "float32")


@keras.saving.register_keras_serializable(package="mtunet")
class LabelledAccuracy(keras.metrics.CategoricalAccuracy):
    """Categorical accuracy over the examples with a label; all-zero one-hot targets (missing labels) are ignored
    (Keras's ``CategoricalAccuracy`` would count them as class 0)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred, _labelled(y_true, sample_weight))


@keras.saving.register_keras_serializable(package="mtunet")
class LabelledAUC(keras.metrics.AUC):
    """ROC AUC over the examples with a label; all-zero one-hot targets (missing labels) are ignored (Keras's ``AUC``
    would count their every class as a negative)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred, _labelled(y_true, sample_weight)[:, None])


def ordinal_grades(probabilities):
    """CORAL's decision: the number of thresholds k with ``P(y > k) > 0.5``, from class probabilities ``(batch, K)``;
    ``(batch,)`` int32, as ``ops.argmax`` gives the class head's."""
    return ops.sum(ops.cast(exceedance(ops.cast(probabilities, "float32")) > 0.5, "int32"), axis=-1)


@keras.saving.register_keras_serializable(package="mtunet")
class LabelledGradeAccuracy(keras.metrics.Mean):
    """Accuracy of the ordinal head's grades (``ordinal_grades``) over the examples with a label; all-zero one-hot
    targets (missing labels) are ignored."""

    def __init__(self, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        correct = ops.cast(ops.equal(ops.argmax(y_true, axis=-1), ordinal_grades(y_pred)), "float32")
        return super().update_state(correct, _labelled(y_true, sample_weight))
