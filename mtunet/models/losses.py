"""Losses of the heads: the class head's weighted cross-entropy, the ordinal head's CORAL loss, the regression head's
standardised error, the binary, multi-class and multi-label mask losses.

All are computed in float32, also under mixed precision, and are registered so compiled models save and reload.
"""

import keras
from keras import ops

from mtunet.options import DICE_VARIANTS, REGRESSION_LOSSES, SEGMENTATION_LOSSES


@keras.saving.register_keras_serializable(package="mtunet")
class WeightedCategoricalCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy with one weight per true class (e.g. sklearn's ``balanced`` weights).

    Keras's ``class_weight`` argument of ``fit`` does not work for models with two outputs, so the weighting lives
    here: each example's loss is multiplied by ``sum(y_true * class_weights)`` (the weight of its class; with label
    smoothing, the smoothed mixture of weights), then averaged over the batch as ``fit(class_weight=...)`` would.
    An all-zero ``y_true`` row is a missing label: it adds nothing, and the batch's loss is the mean over the
    labelled examples.

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
        if self.class_weights is not None:
            weights = ops.convert_to_tensor(self.class_weights, dtype="float32")
            per_example = per_example * ops.sum(y_true * weights, axis=-1)
        return mean_over_present(per_example[:, None], ops.sum(y_true, axis=-1, keepdims=True) > 0)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights, "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="mtunet")
class OrdinalCrossEntropy(keras.losses.Loss):
    """CORAL's loss (Cao, Mirjalili and Raschka 2020) of ordered grades: the sum over the K - 1 thresholds k of the
    binary cross-entropy of ``P(y > k)`` against ``y > k``, each example's sum weighted by the weight of its grade.
    An all-zero ``y_true`` row is a missing label: it adds nothing, and the batch's loss is the mean over the
    labelled examples.

    ``y_pred`` holds the ordinal head's class probabilities; ``P(y > k)`` is recovered as the sum of those above
    k and clipped to ``[epsilon, 1 - epsilon]``, as the class head's cross-entropy clips its probabilities.

    Args:
        class_weights: one non-negative weight per grade, or None for all ones.

    Shapes: ``y_true`` one-hot ``(batch, K)``, ``y_pred`` class probabilities ``(batch, K)``.
    """

    def __init__(self, class_weights=None, name="ordinal_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        epsilon = keras.config.epsilon()
        exceeding = ops.clip(exceedance(ops.cast(y_pred, "float32")), epsilon, 1.0 - epsilon)
        above = exceedance(y_true)  # 1 where the true grade is above the threshold
        per_example = -ops.sum(above * ops.log(exceeding) + (1.0 - above) * ops.log(1.0 - exceeding), axis=-1)
        if self.class_weights is not None:
            weights = ops.convert_to_tensor(self.class_weights, dtype="float32")
            per_example = per_example * ops.sum(y_true * weights, axis=-1)
        return mean_over_present(per_example[:, None], ops.sum(y_true, axis=-1, keepdims=True) > 0)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights}


def exceedance(probabilities):
    """``P(y > k)`` for k = 0..K-2 from class probabilities (or one-hot grades) ``(batch, K)``: the sum of the
    probabilities above k, ``(batch, K - 1)``."""
    return ops.flip(ops.cumsum(ops.flip(probabilities, axis=-1), axis=-1), axis=-1)[:, 1:]


def mean_over_present(values, present):
    """One value per example from ``values`` ``(batch, k)`` such that their batch mean, as Keras reduces a loss, is
    the mean of the values where ``present`` (a boolean of the same shape) holds, 0 where none does: missing
    targets (an unlabelled example, a NaN regression value, an absent mask class) add nothing."""
    present = ops.cast(present, "float32")
    batch = ops.cast(ops.shape(values)[0], "float32")
    return ops.sum(ops.where(present > 0, values, 0.0), axis=-1) * batch / ops.maximum(ops.sum(present), 1.0)


def nan_as_missing(y_true):
    """``(y_true with its NaN values 0, where it is present)``: NaN marks a missing regression target."""
    y_true = ops.cast(y_true, "float32")
    present = ops.logical_not(ops.isnan(y_true))
    return ops.where(present, y_true, 0.0), present


@keras.saving.register_keras_serializable(package="mtunet")
class StandardisedRegressionLoss(keras.losses.Loss):
    """MSE or Huber loss (delta 1) of regression targets on the standardised scale, ``(value - mean) / std``, so that
    targets of any unit weigh alike; NaN targets are missing and add nothing (the batch's loss is the mean over the
    values present).

    Args:
        mean, std: one value per target, from the training split.
        kind: ``"mse"`` or ``"huber"``.

    Shapes: ``y_true`` and ``y_pred`` ``(batch, num_targets)`` on the original scale.
    """

    def __init__(self, mean, std, kind="mse", name="standardised_regression", **kwargs):
        super().__init__(name=name, **kwargs)
        if kind not in REGRESSION_LOSSES:
            raise ValueError(f"unknown regression loss {kind!r}; expected one of: {', '.join(REGRESSION_LOSSES)}")
        self.mean, self.std, self.kind = [float(m) for m in mean], [float(s) for s in std], kind

    def call(self, y_true, y_pred):
        y_true, present = nan_as_missing(y_true)
        std = ops.convert_to_tensor(self.std, dtype="float32")
        error = (ops.cast(y_pred, "float32") - y_true) / std
        if self.kind == "mse":
            per_value = ops.square(error)
        else:
            per_value = ops.where(ops.abs(error) <= 1.0, 0.5 * ops.square(error), ops.abs(error) - 0.5)
        return mean_over_present(per_value, present)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std, "kind": self.kind}


SCALED_SMOOTHING = 0.01  # of an image's pixels, for dice="image_scaled"
BATCH_SMOOTHING = 1e-5  # nnU-Net's SoftDiceLoss


def soft_dice_loss(y_true, y_pred, dice="image"):
    """Soft Dice loss of foreground channels ``(batch, H, W, C)`` (C = 1 for a binary mask), one value per image.

    ``dice`` (``mtunet.options.DICE_VARIANTS``) says over what Dice is computed, ``1 - (2 |y p| + s) / (|y| + |p| + s)``
    for each channel, averaged over channels:

    - ``"image"``: each image alone, s = 1. An empty mask scores ``|p| / (|p| + 1)``, so a few predicted pixels cost
      nearly as much as a missed lesion: every empty image pushes the output towards all zeros (on BUS-BRA with a
      third of the images empty it still scored best: BENCHMARKS.md, "Mask losses on empty masks").
    - ``"image_scaled"``: each image alone, s = ``SCALED_SMOOTHING`` of its pixels: predicting 1% of an empty image
      costs 0.5, and the push on empty images is a hundred times gentler per pixel at 128 px.
    - ``"batch"``: as nnU-Net's batch Dice, the sums run over the whole batch (s = 1e-5), so empty images only add
      their false positives to the batch's; every image gets the batch's value.
    - ``"lesion"``: each image alone (s = 1), only over the (image, channel) pairs whose mask has the class; the
      cross-entropy alone learns empty masks. Each image's value is scaled so that the batch mean is the mean over
      those pairs (0 for a batch without any lesion).

    The returned ``(batch,)`` values average to the batch's loss, as Keras reduces them.
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    if dice == "batch":
        return ops.zeros_like(y_true[:, 0, 0, 0]) + ops.mean(batch_dice_per_channel(y_true, y_pred))
    per_channel = image_dice_per_channel(y_true, y_pred, dice)
    if dice != "lesion":
        return ops.mean(per_channel, axis=-1)
    return mean_over_present(per_channel, ops.sum(y_true, axis=(1, 2)) > 0)


def batch_dice_per_channel(y_true, y_pred):
    """``(C,)`` soft Dice loss of each channel of float32 ``(batch, H, W, C)`` over the whole batch (``"batch"`` of
    ``soft_dice_loss``)."""
    axes = (0, 1, 2)
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return 1.0 - (2.0 * intersection + BATCH_SMOOTHING) / (total + BATCH_SMOOTHING)


def image_dice_per_channel(y_true, y_pred, dice="image"):
    """``(batch, C)`` soft Dice loss of each image and channel of float32 ``(batch, H, W, C)``, smoothed as
    ``soft_dice_loss``'s ``dice`` (``"image"`` and ``"lesion"``: 1, ``"image_scaled"``: ``SCALED_SMOOTHING`` of the
    pixels)."""
    pixel_axes = (1, 2)
    intersection = ops.sum(y_true * y_pred, axis=pixel_axes)
    total = ops.sum(y_true, axis=pixel_axes) + ops.sum(y_pred, axis=pixel_axes)
    smooth = 1.0
    if dice == "image_scaled":
        smooth = SCALED_SMOOTHING * ops.cast(ops.shape(y_pred)[1] * ops.shape(y_pred)[2], "float32")
    return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


def pixel_bce(y_true, y_pred):
    """Binary cross-entropy averaged over each image's pixels; ``(batch, H, W, 1)`` -> ``(batch,)``."""
    per_pixel = keras.losses.binary_crossentropy(ops.cast(y_true, "float32"), ops.cast(y_pred, "float32"))
    return ops.mean(per_pixel, axis=tuple(range(1, len(per_pixel.shape))))


def mask_present(y_true):
    """``(batch,)`` whether each image of the mask targets ``(batch, H, W, 1)`` has a mask: the pipeline serves a
    missing one as all -1 (``mtunet.data.images.MISSING_MASK_TARGET``), so its first pixel tells."""
    return ops.cast(y_true, "float32")[:, 0, 0, 0] >= 0


def channels_present(y_true):
    """``(batch, C)`` whether each channel of the multi-label mask targets ``(batch, H, W, C)`` is present: a missing
    one is all -1, as ``mask_present`` reads a missing mask."""
    return ops.cast(y_true, "float32")[:, 0, 0, :] >= 0


class _MaskLoss(keras.losses.Loss):
    """A mask loss of kind ``"bce"`` (cross-entropy), ``"dice"`` (soft Dice over ``dice``, see ``soft_dice_loss``) or
    ``"bce_dice"`` (their sum); subclasses give the cross-entropy and the Dice's foreground channels (or, as the
    multi-label loss does, their own ``call``).

    An image without a mask (``mask_present``) adds nothing and gets no gradient: the batch's loss is the mean over
    the images with one (0 for a batch without any)."""

    def __init__(self, kind="bce", dice="image", name=None, **kwargs):
        if kind not in SEGMENTATION_LOSSES:
            raise ValueError(f"unknown segmentation loss {kind!r}; expected one of: {', '.join(SEGMENTATION_LOSSES)}")
        if dice not in DICE_VARIANTS:
            raise ValueError(f"unknown Dice variant {dice!r}; expected one of: {', '.join(DICE_VARIANTS)}")
        super().__init__(name=name or f"{self.name_prefix}_{kind}", **kwargs)
        self.kind = kind
        self.dice = dice

    def call(self, y_true, y_pred):
        present = mask_present(y_true)
        keep = ops.cast(present, "float32")[:, None, None, None]
        # zeroed, a missing mask and its prediction add nothing to the batch Dice's sums either
        y_true, y_pred = self.targets(ops.maximum(ops.cast(y_true, "float32"), 0.0) * keep,
                                      ops.cast(y_pred, "float32") * keep)
        loss = 0.0
        if self.kind in ("bce", "bce_dice"):
            loss = mean_over_present(self.cross_entropy(y_true, y_pred)[:, None], present[:, None])
        if self.kind in ("dice", "bce_dice"):
            dice = soft_dice_loss(*self.foreground(y_true, y_pred), self.dice)
            # the lesion Dice is a mean over the images with a lesion already, which a missing mask has none of
            loss = loss + (dice if self.dice == "lesion" else mean_over_present(dice[:, None], present[:, None]))
        return loss

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "dice": self.dice}


@keras.saving.register_keras_serializable(package="mtunet")
class SegmentationLoss(_MaskLoss):
    """Loss of a sigmoid mask ``(batch, H, W, 1)``: ``"bce"`` (the paper's), ``"dice"`` or ``"bce_dice"``."""

    name_prefix = "segmentation"

    def targets(self, y_true, y_pred):
        return ops.cast(y_true, "float32"), y_pred

    def cross_entropy(self, y_true, y_pred):
        return pixel_bce(y_true, y_pred)

    def foreground(self, y_true, y_pred):
        return y_true, y_pred


def pixel_categorical_crossentropy(y_true, y_pred):
    """Categorical cross-entropy averaged over each image's pixels; one-hot and softmax ``(batch, H, W, K + 1)`` ->
    ``(batch,)``."""
    per_pixel = keras.losses.categorical_crossentropy(ops.cast(y_true, "float32"), ops.cast(y_pred, "float32"))
    return ops.mean(per_pixel, axis=tuple(range(1, len(per_pixel.shape))))


@keras.saving.register_keras_serializable(package="mtunet")
class MultiClassSegmentationLoss(_MaskLoss):
    """Loss of a softmax mask over background and K classes: ``"bce"`` (here the categorical cross-entropy, the
    multi-class form of the paper's loss), ``"dice"`` (soft Dice over the foreground classes 1..K; a class absent
    from an image and predicted absent contributes 0, as an empty binary mask does) or ``"bce_dice"``.

    Shapes: ``y_true`` ``(batch, H, W, 1)`` of class values 0..K, ``y_pred`` softmax ``(batch, H, W, K + 1)``.
    """

    name_prefix = "multiclass_segmentation"

    def targets(self, y_true, y_pred):
        one_hot = ops.one_hot(ops.cast(ops.squeeze(y_true, axis=-1), "int32"), y_pred.shape[-1], dtype="float32")
        return one_hot, y_pred

    def cross_entropy(self, y_true, y_pred):
        return pixel_categorical_crossentropy(y_true, y_pred)

    def foreground(self, y_true, y_pred):
        return y_true[..., 1:], y_pred[..., 1:]


def pixel_bce_per_channel(y_true, y_pred):
    """Binary cross-entropy of each channel averaged over each image's pixels; ``(batch, H, W, C)`` ->
    ``(batch, C)``."""
    per_pixel = keras.losses.binary_crossentropy(y_true[..., None], y_pred[..., None])
    return ops.mean(per_pixel, axis=(1, 2))


@keras.saving.register_keras_serializable(package="mtunet")
class MultiLabelSegmentationLoss(_MaskLoss):
    """Loss of a multi-label mask, one sigmoid channel per lesion type: ``"bce"`` (binary cross-entropy per pixel and
    channel), ``"dice"`` (soft Dice per channel over ``dice``, see ``soft_dice_loss``) or ``"bce_dice"`` (their sum).

    Every term is the mean over the (image, channel) pairs whose target is present (``channels_present``): a missing
    channel adds nothing and gets no gradient (0 for a batch without any). ``dice="batch"`` sums each channel over
    the batch's images that have it, then averages over the channels some image has; ``dice="lesion"`` averages over
    the present pairs with a lesion.

    Shapes: ``y_true`` ``(batch, H, W, L)`` of 0/1, -1 in a missing channel; ``y_pred`` sigmoid ``(batch, H, W, L)``.
    With L = 1 it is ``SegmentationLoss``.
    """

    name_prefix = "multilabel_segmentation"

    def call(self, y_true, y_pred):
        present = channels_present(y_true)
        keep = ops.cast(present, "float32")[:, None, None, :]
        # zeroed, a missing channel and its prediction add nothing to the batch Dice's sums either
        y_true = ops.maximum(ops.cast(y_true, "float32"), 0.0) * keep
        y_pred = ops.cast(y_pred, "float32") * keep
        loss = 0.0
        if self.kind in ("bce", "bce_dice"):
            loss = mean_over_present(pixel_bce_per_channel(y_true, y_pred), present)
        if self.kind in ("dice", "bce_dice"):
            if self.dice == "batch":
                channel_has = ops.cast(ops.any(present, axis=0), "float32")
                per_channel = batch_dice_per_channel(y_true, y_pred)
                loss = loss + ops.zeros_like(y_true[:, 0, 0, 0]) + (
                    ops.sum(per_channel * channel_has) / ops.maximum(ops.sum(channel_has), 1.0))
            else:
                scored = present if self.dice != "lesion" else ops.sum(y_true, axis=(1, 2)) > 0
                loss = loss + mean_over_present(image_dice_per_channel(y_true, y_pred, self.dice), scored)
        return loss
