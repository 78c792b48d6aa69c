"""Losses and mask metrics against hand-computed values."""

import math

import numpy as np
import pytest
import keras

from mtunet.models.losses import (
    MultiClassSegmentationLoss, SegmentationLoss, WeightedCategoricalCrossentropy, soft_dice_loss,
)
from mtunet.models.metrics import MeanDice, MeanIoU


def _value(tensor):
    return float(keras.ops.convert_to_numpy(tensor))


def test_weighted_cross_entropy_weights_each_example_by_its_class():
    y_true = np.array([[1, 0], [0, 1]], "float32")
    y_pred = np.array([[0.8, 0.2], [0.4, 0.6]], "float32")
    loss = WeightedCategoricalCrossentropy(class_weights=[0.5, 2.0])
    expected = (0.5 * -math.log(0.8) + 2.0 * -math.log(0.6)) / 2
    assert _value(loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)
    unweighted = WeightedCategoricalCrossentropy()
    assert _value(unweighted(y_true, y_pred)) == pytest.approx((-math.log(0.8) - math.log(0.6)) / 2, rel=1e-5)


def test_weighted_cross_entropy_with_label_smoothing():
    y_true = np.array([[1, 0, 0]], "float32")
    y_pred = np.array([[0.7, 0.2, 0.1]], "float32")
    # smoothing 0.3 over 3 classes: targets (0.8, 0.1, 0.1)
    expected = -(0.8 * math.log(0.7) + 0.1 * math.log(0.2) + 0.1 * math.log(0.1))
    loss = WeightedCategoricalCrossentropy(class_weights=[3.0, 1.0, 1.0], label_smoothing=0.3)
    assert _value(loss(y_true, y_pred)) == pytest.approx(3.0 * expected, rel=1e-5)


def test_pixel_bce_matches_the_formula():
    y_true = np.array([1, 0, 1, 0], "float32").reshape(1, 2, 2, 1)
    y_pred = np.array([0.9, 0.2, 0.6, 0.5], "float32").reshape(1, 2, 2, 1)
    expected = -np.mean([math.log(0.9), math.log(0.8), math.log(0.6), math.log(0.5)])
    assert _value(SegmentationLoss("bce")(y_true, y_pred)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "true_fill, pred_fill, expected",
    [
        (0.0, 0.0, 0.0),            # empty mask predicted empty: perfect, and no division by zero
        (1.0, 1.0, 0.0),            # full mask predicted full
        (1.0, 0.0, 1 - 1 / 17),     # 16 lesion pixels, none predicted: 1 - (0 + 1) / (16 + 0 + 1)
        (0.0, 0.5, 1 - 1 / 9),      # empty mask, 16 pixels at 0.5: 1 - 1 / (0 + 8 + 1)
    ],
)
def test_soft_dice_loss_including_empty_and_full_masks(true_fill, pred_fill, expected):
    y_true = np.full((1, 4, 4, 1), true_fill, "float32")
    y_pred = np.full((1, 4, 4, 1), pred_fill, "float32")
    assert _value(keras.ops.mean(soft_dice_loss(y_true, y_pred))) == pytest.approx(expected, rel=1e-5)


def test_soft_dice_is_float32_under_float16_predictions():
    y_true = np.ones((1, 64, 64, 1), "float32")
    y_pred = np.ones((1, 64, 64, 1), "float16")  # a float16 sum of 8192 would overflow nothing but lose precision
    assert keras.ops.convert_to_numpy(soft_dice_loss(y_true, y_pred)).dtype == np.float32


def test_bce_dice_is_the_sum_of_both():
    rng = np.random.default_rng(0)
    y_true = (rng.random((2, 8, 8, 1)) > 0.5).astype("float32")
    y_pred = rng.uniform(0.05, 0.95, (2, 8, 8, 1)).astype("float32")
    total = _value(SegmentationLoss("bce_dice")(y_true, y_pred))
    assert total == pytest.approx(_value(SegmentationLoss("bce")(y_true, y_pred))
                                  + _value(SegmentationLoss("dice")(y_true, y_pred)), rel=1e-5)


def _lesion_and_empty_batch():
    """Image 0: a 4-pixel lesion predicted at 0.5 on 2 of them; image 1: an empty mask with 8 pixels at 0.25."""
    y_true = np.zeros((2, 4, 4, 1), "float32")
    y_true[0, :2, :2] = 1
    y_pred = np.zeros((2, 4, 4, 1), "float32")
    y_pred[0, 0, :2] = 0.5
    y_pred[1, :2] = 0.25
    return y_true, y_pred


def test_dice_variants_on_a_batch_with_an_empty_mask():
    y_true, y_pred = _lesion_and_empty_batch()
    lesion_image = 1 - (2 * 1.0 + 1) / (4 + 1.0 + 1)  # |y p| = 1, |y| = 4, |p| = 1
    empty_image = 1 - 1 / (2.0 + 1)  # |p| = 8 x 0.25
    losses = {dice: keras.ops.convert_to_numpy(soft_dice_loss(y_true, y_pred, dice))
              for dice in ("image", "image_scaled", "batch", "lesion")}
    np.testing.assert_allclose(losses["image"], [lesion_image, empty_image], rtol=1e-5)
    smooth = 0.01 * 16
    np.testing.assert_allclose(losses["image_scaled"], [1 - (2 + smooth) / (5 + smooth), 1 - smooth / (2 + smooth)],
                               rtol=1e-5)
    batch = 1 - (2 * 1.0 + 1e-5) / (4 + 3.0 + 1e-5)  # the empty image adds its 2 predicted pixels to the sums
    np.testing.assert_allclose(losses["batch"], [batch, batch], rtol=1e-5)
    # the empty image leaves the Dice term; the batch mean (as Keras reduces it) is the lesion image's loss
    assert losses["lesion"].mean() == pytest.approx(lesion_image, rel=1e-5)
    no_lesion = soft_dice_loss(np.zeros_like(y_true), y_pred, "lesion")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(no_lesion), [0.0, 0.0])


def test_multiclass_lesion_dice_leaves_out_the_classes_an_image_lacks():
    values = np.zeros((1, 4, 4, 1), "int32")
    values[0, :2, :2] = 1  # class 1 present, class 2 absent
    probabilities = np.zeros((1, 4, 4, 3), "float32")
    probabilities[..., 0] = 1.0
    probabilities[0, :2, :2] = [0.0, 1.0, 0.0]
    probabilities[0, 3, 3] = [0.0, 0.0, 1.0]  # one false pixel of the absent class
    lesion = _value(MultiClassSegmentationLoss("dice", "lesion")(values, probabilities))
    image = _value(MultiClassSegmentationLoss("dice", "image")(values, probabilities))
    assert lesion == pytest.approx(1 - 9 / 9, abs=1e-6)  # class 1 perfect: (2 x 4 + 1) / (8 + 1)
    assert image == pytest.approx((0.0 + (1 - 1 / 2)) / 2, rel=1e-5)  # class 2: 1 - 1 / (1 + 1)


@pytest.mark.parametrize("loss_class", [SegmentationLoss, MultiClassSegmentationLoss])
def test_mask_losses_keep_their_dice_variant_through_their_config(loss_class):
    loss = loss_class("bce_dice", "batch")
    restored = loss_class.from_config(loss.get_config())
    assert (restored.kind, restored.dice) == ("bce_dice", "batch")
    with pytest.raises(ValueError, match=r"unknown Dice variant 'pixel'; expected one of: image, image_scaled, batch"):
        loss_class("dice", "pixel")


def test_unknown_segmentation_loss():
    with pytest.raises(ValueError, match=r"unknown segmentation loss 'focal'; expected one of: bce, dice, bce_dice"):
        SegmentationLoss("focal")


def test_dice_and_iou_metrics_average_over_images():
    y_true = np.zeros((2, 4, 4, 1), "float32")
    y_pred = np.zeros((2, 4, 4, 1), "float32")
    y_true[0, :2] = 1              # image 0: 8 lesion pixels
    y_pred[0, :1] = 0.9            # 4 predicted, all inside: Dice 8/12, IoU 4/8
    # image 1: both empty -> 1 for both metrics
    dice, iou = MeanDice(), MeanIoU()
    dice.update_state(y_true, y_pred)
    iou.update_state(y_true, y_pred)
    assert _value(dice.result()) == pytest.approx((8 / 12 + 1) / 2)
    assert _value(iou.result()) == pytest.approx((0.5 + 1) / 2)


def test_total_loss_is_five_times_segmentation_plus_classification():
    import mtunet
    from mtunet.training.config import TrainConfig
    from mtunet.training.loop import compile_model

    model = mtunet.build_model("mobilenetv2", input_shape=(32, 32, 3), num_classes=2, weights=None,
                               decoder_filters=(8, 8, 8, 8, 8))
    compile_model(model, TrainConfig(learning_rate=1e-3), class_weights=[0.75, 1.5])
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    targets = {"label": np.eye(2, dtype="float32")[[0, 1, 1, 0]],
               "mask": (rng.random((4, 32, 32, 1)) > 0.5).astype("float32")}
    results = model.evaluate(images, targets, return_dict=True, verbose=0)
    assert results["loss"] == pytest.approx(5 * results["mask_loss"] + results["label_loss"], rel=1e-4)
    predictions = model.predict(images, verbose=0)
    expected_label_loss = np.mean([-np.log(predictions["label"][i, c]) * [0.75, 1.5][c]
                                   for i, c in enumerate([0, 1, 1, 0])])
    assert results["label_loss"] == pytest.approx(expected_label_loss, rel=1e-4)
