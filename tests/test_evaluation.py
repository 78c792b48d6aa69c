"""Evaluation metrics against scikit-learn and hand-made masks."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from mtunet.errors import ConfigError
from mtunet.evaluation import (classification_metrics, overlap_per_image, segmentation_metrics,
                               thresholded_jaccard)


def test_overlap_matches_sklearn_f1_and_jaccard_per_image():
    rng = np.random.default_rng(0)
    true_masks = rng.random((5, 8, 8)) > 0.6
    predicted = rng.random((5, 8, 8)) > 0.5
    dice, iou = overlap_per_image(true_masks, predicted)
    for index in range(5):
        y_true, y_pred = true_masks[index].ravel(), predicted[index].ravel()
        assert dice[index] == pytest.approx(sk_metrics.f1_score(y_true, y_pred))
        assert iou[index] == pytest.approx(sk_metrics.jaccard_score(y_true, y_pred))


def test_both_empty_masks_count_as_one_or_are_excluded():
    true_masks = np.zeros((3, 4, 4), bool)
    predicted = np.zeros((3, 4, 4), bool)
    true_masks[1, :2] = True                     # image 1: lesion missed entirely -> 0
    predicted[2, 0, 0] = True                    # image 2: false positive on an empty image -> 0
    dice, iou = overlap_per_image(true_masks, predicted, empty="one")
    np.testing.assert_array_equal(dice, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(iou, [1.0, 0.0, 0.0])
    dice, _ = overlap_per_image(true_masks, predicted, empty="exclude")
    assert np.isnan(dice[0]) and list(dice[1:]) == [0.0, 0.0]
    assert segmentation_metrics(true_masks, predicted.astype(float), empty="exclude")["dice_mean"] == 0.0
    with pytest.raises(ConfigError, match=r"unknown empty-mask rule 'zero'"):
        overlap_per_image(true_masks, predicted, empty="zero")


def test_thresholded_jaccard_zeroes_scores_below_065():
    assert thresholded_jaccard([0.9, 0.64, 0.65, 0.1]) == pytest.approx((0.9 + 0.65) / 4)


def test_classification_metrics_match_sklearn_including_a_class_never_predicted():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1],
                              [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.1, 0.5, 0.4]])  # class 2 never predicted
    result = classification_metrics(labels, probabilities, ["a", "b", "c"])
    predicted = probabilities.argmax(1)
    assert result["accuracy"] == pytest.approx(3 / 6)
    assert result["balanced_accuracy"] == pytest.approx(sk_metrics.balanced_accuracy_score(labels, predicted))
    assert result["auc"] == pytest.approx(sk_metrics.roc_auc_score(labels, probabilities, multi_class="ovr"))
    assert result["per_class"]["c"]["recall"] == 0.0 and result["per_class"]["c"]["precision"] == 0.0
    assert result["confusion_matrix"] == [[2, 0, 0], [1, 1, 0], [0, 2, 0]]


def test_binary_auc_uses_the_positive_class_probability():
    labels = np.array([0, 1, 1, 0])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    result = classification_metrics(labels, probabilities, ["benign", "malignant"])
    assert result["auc"] == pytest.approx(sk_metrics.roc_auc_score(labels, probabilities[:, 1]))
