"""Evaluation metrics against scikit-learn, the ISIC challenge's scoring package and hand-made cases; the report's
and the plots' multi-class mask parts."""

import json
import types

import numpy as np
import pytest
from isic_challenge_scoring.segmentation import SegmentationScore
from sklearn import metrics as sk_metrics

from mtunet.errors import ConfigError, DataError
from mtunet.evaluation.metrics import (MACRO_AVERAGE, bootstrap_intervals, bootstrap_statistics, calibration_metrics,
                                      classification_metrics, compute_metrics, load_predictions, mask_class_names,
                                      metrics_from_predictions, overlap_per_class, overlap_per_image,
                                      reliability_bins, resample_counts, save_predictions, segmentation_metrics,
                                      thresholded_jaccard)
from mtunet.evaluation.plots import (class_colours, class_map_overlay, confusion_matrix_figure, figure_png,
                                    gallery_figure, training_curves_figure)
from mtunet.evaluation.report import render_report
from mtunet.rundir import best_history_row, read_history

# 6 images, 3 classes; class 2 is never predicted
LABELS = np.array([0, 0, 1, 1, 2, 2])
PROBABILITIES = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1],
                          [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.1, 0.5, 0.4]])


def _masks_with_overlaps(seed=0, count=12, size=24):
    """True and predicted square lesions shifted by 0-5 px (IoU from about 0.3 to 1), plus empty-mask cases."""
    rng = np.random.default_rng(seed)
    true, predicted = np.zeros((count, size, size), bool), np.zeros((count, size, size), bool)
    for index in range(count - 3):
        y, x = rng.integers(2, 8, size=2)
        shift = rng.integers(0, 6)
        true[index, y:y + 10, x:x + 10] = True
        predicted[index, y + shift:y + shift + 10, x:x + 10] = True
    true[count - 2, 3:9, 3:9] = True        # lesion missed entirely
    predicted[count - 1, 0:2, 0:2] = True   # false positive on an empty image; image count - 3 is empty in both
    return true, predicted


def test_overlap_matches_sklearn_f1_and_jaccard_per_image():
    rng = np.random.default_rng(0)
    true_masks = rng.random((5, 8, 8)) > 0.6
    predicted = rng.random((5, 8, 8)) > 0.5
    dice, iou = overlap_per_image(true_masks, predicted)
    for index in range(5):
        y_true, y_pred = true_masks[index].ravel(), predicted[index].ravel()
        assert dice[index] == pytest.approx(sk_metrics.f1_score(y_true, y_pred))
        assert iou[index] == pytest.approx(sk_metrics.jaccard_score(y_true, y_pred))


def test_both_empty_masks_count_as_one_or_are_skipped():
    true_masks = np.zeros((3, 4, 4), bool)
    predicted = np.zeros((3, 4, 4), bool)
    true_masks[1, :2] = True                     # image 1: lesion missed entirely -> 0
    predicted[2, 0, 0] = True                    # image 2: false positive on an empty image -> 0
    dice, iou = overlap_per_image(true_masks, predicted, empty="one")
    np.testing.assert_array_equal(dice, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(iou, [1.0, 0.0, 0.0])
    dice, _ = overlap_per_image(true_masks, predicted, empty="skip")
    assert np.isnan(dice[0]) and list(dice[1:]) == [0.0, 0.0]
    skipped, _, _ = segmentation_metrics(true_masks, predicted.astype(float), empty="skip")
    assert skipped["dice_mean"] == 0.0 and skipped["images_scored"] == 2 and skipped["images_both_empty"] == 1
    assert "left out" in skipped["empty_mask_rule_description"]
    counted, _, _ = segmentation_metrics(true_masks, predicted.astype(float), empty="one")
    assert counted["dice_mean"] == pytest.approx(1 / 3) and counted["images_scored"] == 3
    with pytest.raises(ConfigError, match=r"unknown empty-mask rule 'zero'; expected one of: one, skip"):
        overlap_per_image(true_masks, predicted, empty="zero")


def test_thresholded_jaccard_zeroes_scores_below_065():
    assert thresholded_jaccard([0.9, 0.64, 0.65, 0.1]) == pytest.approx((0.9 + 0.65) / 4)


def test_thresholded_jaccard_dice_and_iou_match_the_isic_challenge_scoring_package():
    true, predicted = _masks_with_overlaps()
    pairs = [types.SimpleNamespace(truth_image=true[index].astype(np.uint8) * 255,
                                   prediction_image=predicted[index].astype(np.uint8) * 255,
                                   image_id=f"ISIC_{index:07d}")
             for index in range(len(true))]
    isic = SegmentationScore(pairs).macro_average
    ours, dice, iou = segmentation_metrics(true, predicted.astype(np.float32), empty="one")
    assert 0 < isic["threshold_jaccard"] < isic["jaccard"] < 1  # some images above 0.65, some below
    assert ours["thresholded_jaccard"] == pytest.approx(isic["threshold_jaccard"])
    assert ours["iou_mean"] == pytest.approx(isic["jaccard"])
    assert ours["dice_mean"] == pytest.approx(isic["dice"])


def test_segmentation_pooled_and_pixel_metrics_match_sklearn_on_all_pixels():
    true, predicted = _masks_with_overlaps(seed=1)
    probabilities = np.where(predicted, 0.8, 0.2)
    labels = np.array([0, 1] * 6)
    ours, dice, _ = segmentation_metrics(true[..., None], probabilities[..., None], threshold=0.5, labels=labels,
                                         class_names=["a", "b"])
    y_true, y_pred = true.ravel(), predicted.ravel()
    assert ours["dice_pooled"] == pytest.approx(sk_metrics.f1_score(y_true, y_pred))
    assert ours["iou_pooled"] == pytest.approx(sk_metrics.jaccard_score(y_true, y_pred))
    assert ours["pixel_sensitivity"] == pytest.approx(sk_metrics.recall_score(y_true, y_pred))
    assert ours["pixel_specificity"] == pytest.approx(sk_metrics.recall_score(~y_true, ~y_pred))
    assert ours["dice_std"] == pytest.approx(np.std(dice)) and ours["dice_median"] == pytest.approx(np.median(dice))
    assert ours["dice_per_class"]["b"]["mean"] == pytest.approx(dice[1::2].mean())
    assert ours["dice_per_class"]["a"]["n"] == 6
    # a threshold above every probability predicts nothing: Dice 0, except the 2 images without a lesion (1)
    nothing, _, _ = segmentation_metrics(true, probabilities, threshold=0.9)
    assert nothing["dice_mean"] == pytest.approx(2 / 12) and nothing["pixel_sensitivity"] == 0.0


def test_classification_metrics_match_sklearn_including_a_class_never_predicted():
    result = classification_metrics(LABELS, PROBABILITIES, ["a", "b", "c"])
    predicted = PROBABILITIES.argmax(1)
    assert result["accuracy"] == pytest.approx(3 / 6)
    assert result["balanced_accuracy"] == pytest.approx(sk_metrics.balanced_accuracy_score(LABELS, predicted))
    assert result["auc"] == pytest.approx(sk_metrics.roc_auc_score(LABELS, PROBABILITIES, multi_class="ovr"))
    precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(LABELS, predicted, zero_division=0)
    for index, name in enumerate("abc"):
        row = result["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (precision[index], recall[index], f1[index], support[index]))
        assert row["auc"] == pytest.approx(sk_metrics.roc_auc_score(LABELS == index, PROBABILITIES[:, index]))
    assert result["per_class"]["c"]["recall"] == 0.0 and result["per_class"]["c"]["precision"] == 0.0
    # specificity = true negatives / negatives: a is predicted for 1 of the 4 images of b and c
    assert [result["per_class"][name]["specificity"] for name in "abc"] == pytest.approx([3 / 4, 2 / 4, 4 / 4])
    assert result["macro_f1"] == pytest.approx(sk_metrics.f1_score(LABELS, predicted, average="macro"))
    assert result["weighted_f1"] == pytest.approx(sk_metrics.f1_score(LABELS, predicted, average="weighted"))
    assert result["quadratic_weighted_kappa"] == pytest.approx(
        sk_metrics.cohen_kappa_score(LABELS, predicted, weights="quadratic"))
    # micro average over 6 x 3 one-vs-rest decisions: 3 hits, 3 misses (each one false positive + one false negative)
    assert result["micro_average"] == pytest.approx({"accuracy": 12 / 18, "sensitivity": 3 / 6,
                                                     "specificity": 9 / 12})
    assert result["confusion_matrix"] == [[2, 0, 0], [1, 1, 0], [0, 2, 0]]
    np.testing.assert_allclose(result["confusion_matrix_normalized"],
                               sk_metrics.confusion_matrix(LABELS, predicted, normalize="true"))


def test_binary_auc_uses_the_positive_class_probability():
    labels = np.array([0, 1, 1, 0])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    result = classification_metrics(labels, probabilities, ["benign", "malignant"])
    assert result["auc"] == pytest.approx(sk_metrics.roc_auc_score(labels, probabilities[:, 1]))


def test_class_absent_from_the_labels_has_no_auc_and_is_left_out_of_the_macro_auc():
    labels = np.array([0, 0, 1, 1])   # class 2 has no example
    probabilities = np.array([[0.5, 0.3, 0.2], [0.3, 0.5, 0.2], [0.2, 0.6, 0.2], [0.6, 0.2, 0.2]])
    result = classification_metrics(labels, probabilities, ["a", "b", "c"])
    present = [sk_metrics.roc_auc_score(labels == index, probabilities[:, index]) for index in (0, 1)]
    assert result["auc"] == pytest.approx(np.mean(present))
    assert np.isnan(result["per_class"]["c"]["auc"]) and result["per_class"]["c"]["support"] == 0
    assert result["confusion_matrix_normalized"][2] == [0.0, 0.0, 0.0]


def _predictions(size, seed=0):
    """Seeded predictions of ``size`` images: 3 classes, informative probabilities (with ties), Dice in (0, 1)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size)
    logits = rng.normal(size=(size, 3)).round(1) + 1.5 * np.eye(3)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return {"labels": labels, "label_probabilities": probabilities}, rng.beta(5, 2, size)


def test_vectorised_bootstrap_statistics_equal_the_metrics_on_the_original_sample():
    predictions, dice = _predictions(60)
    dice[[3, 7]] = np.nan  # images the "skip" rule leaves out
    statistics = bootstrap_statistics({**predictions, "class_names": ["a", "b", "c"]}, dice)
    identity = np.ones((1, 60))
    expected = classification_metrics(predictions["labels"], predictions["label_probabilities"], ["a", "b", "c"])
    for name in ("accuracy", "balanced_accuracy", "auc", "macro_f1"):
        assert statistics[name](identity)[0] == pytest.approx(expected[name]), name
    for class_name, figures in expected["per_class"].items():
        for name in ("precision", "recall", "specificity", "npv", "f1", "auc"):
            assert statistics[f"per_class/{class_name}/{name}"](identity)[0] == pytest.approx(figures[name]), name
    assert statistics["dice_mean"](identity)[0] == pytest.approx(np.nanmean(dice))
    # a resample with only class 0 has no AUC
    assert np.isnan(statistics["auc"](resample_counts(np.flatnonzero(predictions["labels"] == 0)[None], 60))[0])


def test_a_resample_weighted_by_counts_gives_the_metrics_of_the_repeated_images():
    # the statistics take each image's count in a resample: they must equal scikit-learn on the images repeated
    predictions, dice = _predictions(50, seed=3)
    labels, probabilities = predictions["labels"], predictions["label_probabilities"]
    statistics = bootstrap_statistics(predictions, dice)
    indices = np.random.default_rng(4).integers(0, 50, size=(3, 50))
    counts = resample_counts(indices, 50)
    assert counts.sum(axis=1).tolist() == [50, 50, 50]
    for row, resample in enumerate(indices):
        resampled_labels, predicted = labels[resample], probabilities[resample].argmax(axis=1)
        assert statistics["accuracy"](counts)[row] == pytest.approx(np.mean(resampled_labels == predicted))
        assert statistics["balanced_accuracy"](counts)[row] == pytest.approx(
            sk_metrics.balanced_accuracy_score(resampled_labels, predicted))
        for index in range(3):
            assert statistics[f"per_class/{index}/auc"](counts)[row] == pytest.approx(
                sk_metrics.roc_auc_score(resampled_labels == index, probabilities[resample, index]))
            assert statistics[f"per_class/{index}/f1"](counts)[row] == pytest.approx(
                sk_metrics.f1_score(resampled_labels == index, predicted == index))
        assert statistics["dice_mean"](counts)[row] == pytest.approx(np.mean(dice[resample]))


def test_every_headline_figure_of_a_resample_equals_the_metrics_of_the_repeated_images():
    # weighted F1, kappa, medians, standard deviations, the thresholded Jaccard and the pooled pixel figures too
    predictions = _one_image_per_patient(40, seed=11)
    predictions["true_masks"][::7] = 0  # some empty masks, some images the "one" rule scores 1
    metrics, dice, iou = compute_metrics(predictions, bootstrap_resamples=1)
    statistics = bootstrap_statistics(predictions, dice, iou, threshold=0.5)
    indices = np.random.default_rng(12).integers(0, 40, size=(4, 40))
    counts = resample_counts(indices, 40)
    names = ("weighted_f1", "quadratic_weighted_kappa", "dice_median", "dice_std", "iou_median", "iou_std",
             "thresholded_jaccard", "dice_pooled", "iou_pooled", "pixel_sensitivity", "pixel_specificity")
    assert metrics["dice_median"] == pytest.approx(statistics["dice_median"](np.ones((1, 40)))[0])
    for row, resample in enumerate(indices):
        repeated = {**{key: value[resample] for key, value in predictions.items() if key != "class_names"},
                    "class_names": predictions["class_names"]}
        expected, _, _ = compute_metrics(repeated, bootstrap_resamples=1)
        for name in names:
            assert statistics[name](counts)[row] == pytest.approx(expected[name]), name
        labels, predicted = repeated["labels"], repeated["label_probabilities"].argmax(axis=1)
        assert statistics["quadratic_weighted_kappa"](counts)[row] == pytest.approx(
            sk_metrics.cohen_kappa_score(labels, predicted, weights="quadratic"))
        assert statistics["dice_median"](counts)[row] == pytest.approx(np.median(dice[resample]))
    intervals = compute_metrics(predictions, bootstrap_resamples=100)[0]["confidence_intervals"]
    for name in names:
        assert intervals[name]["low"] <= metrics[name] <= intervals[name]["high"], name


def test_bootstrap_intervals_contain_the_estimate_narrow_with_more_images_and_follow_the_seed():
    widths = {}
    for size in (40, 640):
        predictions, dice = _predictions(size, seed=size)
        statistics = bootstrap_statistics(predictions, dice)
        intervals = bootstrap_intervals(statistics, size, resamples=400, seed=1)
        identity = np.ones((1, size))
        for name, interval in intervals.items():
            estimate = statistics[name](identity)[0]
            assert interval["low"] <= estimate <= interval["high"], (name, size, interval, estimate)
            assert interval["resamples"] == 400
        widths[size] = {name: interval["high"] - interval["low"] for name, interval in intervals.items()}
        assert bootstrap_intervals(statistics, size, resamples=400, seed=1) == intervals
        assert bootstrap_intervals(statistics, size, resamples=400, seed=2) != intervals
    for name in widths[40]:
        # the width shrinks like 1 / sqrt(n): 4 times narrower for 16 times the images, give or take
        assert widths[640][name] < widths[40][name] / 2, (name, widths)


def _one_image_per_patient(patients=30, seed=5):
    """Predictions of ``patients`` images with masks, one per patient: 2 classes, Dice spread over (0, 1)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(patients) % 2
    probabilities = np.clip(0.5 + 0.3 * (2 * labels - 1) + rng.normal(0, 0.3, patients), 0.01, 0.99)
    true = np.zeros((patients, 8, 8), np.uint8)
    true[:, 2:6, 2:6] = 1
    predicted = np.zeros((patients, 8, 8), np.float32)
    for index, width in enumerate(rng.integers(1, 8, patients)):
        predicted[index, 2:6, 2:2 + width] = 0.9
    return {"ids": np.array([f"p{i}" for i in range(patients)]), "labels": labels,
            "class_names": np.array(["benign", "malignant"]),
            "label_probabilities": np.stack([1 - probabilities, probabilities], axis=1),
            "true_masks": true, "mask_probabilities": predicted}


def test_patient_bootstrap_counts_a_patient_once_however_many_images_it_has():
    single = _one_image_per_patient()
    copies = 3  # every patient imaged three times, identically
    repeated = {name: np.repeat(values, copies, axis=0) if name not in ("class_names",) else values
                for name, values in single.items()}
    repeated["groups"] = np.repeat([f"patient{i}" for i in range(30)], copies)
    one_per_patient, _, _ = compute_metrics(single, bootstrap_resamples=300)
    by_patient, _, _ = compute_metrics(repeated, bootstrap_resamples=300)
    by_image, _, _ = compute_metrics({name: values for name, values in repeated.items() if name != "groups"},
                                     bootstrap_resamples=300)
    assert by_patient["dice_mean"] == pytest.approx(one_per_patient["dice_mean"])
    for name in ("accuracy", "balanced_accuracy", "auc", "dice_mean", "iou_mean"):
        patient, alone = by_patient["confidence_intervals"][name], one_per_patient["confidence_intervals"][name]
        assert (patient["low"], patient["high"]) == pytest.approx((alone["low"], alone["high"]))
        image = by_image["confidence_intervals"][name]
        # resampling the copies as independent images gives an interval too narrow, about 1 / sqrt(3) as wide
        assert image["high"] - image["low"] < 0.8 * (patient["high"] - patient["low"]), name
    assert by_patient["confidence_intervals"]["unit"] == "patient" and by_patient["confidence_intervals"]["units"] == 30
    assert "over patients (30 patients, 90 images)" in by_patient["confidence_intervals"]["method"]
    assert by_image["confidence_intervals"]["unit"] == "image" and by_image["confidence_intervals"]["units"] == 90


def test_every_per_class_figure_has_an_interval_around_its_value():
    predictions, dice = _predictions(120, seed=8)
    masks = _one_image_per_patient(120)
    predictions = {**masks, **predictions, "class_names": np.array(["a", "b", "c"])}
    metrics, _, _ = compute_metrics(predictions, bootstrap_resamples=200)
    intervals = metrics["confidence_intervals"]
    for name in ("a", "b", "c"):
        for figure in ("precision", "recall", "specificity", "npv", "f1", "auc"):
            interval = intervals["per_class"][name][figure]
            assert interval["low"] <= metrics["per_class"][name][figure] <= interval["high"], (name, figure)
            assert interval["resamples"] == 200
        dice_interval = intervals["dice_per_class"][name]["mean"]
        assert dice_interval["low"] <= metrics["dice_per_class"][name]["mean"] <= dice_interval["high"]
    for name in ("accuracy", "balanced_accuracy", "auc", "macro_f1", "dice_mean", "iou_mean"):
        assert intervals[name]["low"] <= metrics[name] <= intervals[name]["high"], name
    assert metrics["auc_averaging"] == "macro mean of the one-vs-rest AUC of each class present"
    # NPV checked by hand on a 2x2 case: 3 true negatives and 1 false negative of class b
    two = classification_metrics(np.array([0, 0, 0, 1, 1]), np.eye(2)[[0, 0, 0, 0, 1]], ["a", "b"])
    assert two["per_class"]["b"]["npv"] == pytest.approx(3 / 4) and two["per_class"]["a"]["npv"] == 1.0


def test_calibration_bins_agree_with_scikit_learn_and_the_brier_score_is_checked_by_hand():
    from sklearn.calibration import calibration_curve

    predictions, _ = _predictions(200, seed=9)
    labels, probabilities = predictions["labels"], predictions["label_probabilities"]
    calibration = calibration_metrics(labels, probabilities, ["a", "b", "c"])
    for index, name in enumerate("abc"):
        figures = calibration["per_class"][name]
        fraction, mean = calibration_curve(labels == index, probabilities[:, index], n_bins=10, strategy="uniform")
        assert figures["fraction_positive"] == pytest.approx(fraction)
        assert figures["mean_probability"] == pytest.approx(mean)
        assert sum(figures["count"]) == 200
        assert figures["brier"] == pytest.approx(np.mean((probabilities[:, index] - (labels == index)) ** 2))
    assert calibration["brier_score"] == pytest.approx(np.mean(np.sum((probabilities - np.eye(3)[labels]) ** 2, 1)))
    # a hand-made case: four images at 0.9 of which two are the class, four at 0.1 of which none is
    binary = reliability_bins(np.array([1, 1, 0, 0, 0, 0, 0, 0], bool), np.array([0.9] * 4 + [0.1] * 4))
    assert binary["count"] == [4, 4] and binary["fraction_positive"] == [0.0, 0.5]
    assert binary["expected_calibration_error"] == pytest.approx((4 * 0.1 + 4 * 0.4) / 8)
    assert "above 0.5" in calibration_metrics(labels % 2, probabilities[:, :2], ["x", "y"])["decision"]


def test_metrics_are_recomputed_from_the_predictions_file_alone(tmp_path):
    true, predicted = _masks_with_overlaps()
    predictions = {"ids": np.array([f"case{i}" for i in range(12)]), "labels": np.array([0, 1, 2] * 4),
                   "class_names": np.array(["a", "b", "c"]), "threshold": np.float64(0.3),
                   "label_probabilities": np.tile(PROBABILITIES[:3], (4, 1)),
                   "mask_probabilities": np.where(predicted, 0.4, 0.1).astype(np.float32), "true_masks": true}
    save_predictions(tmp_path / "predictions.npz", predictions)
    expected, _, _ = compute_metrics(predictions, threshold=0.3, bootstrap_resamples=50)
    recomputed = metrics_from_predictions(tmp_path, bootstrap_resamples=50)  # the folder, and the saved threshold
    assert recomputed == expected and recomputed["threshold"] == 0.3
    assert recomputed["dice_mean"] > 0.5 and recomputed["confidence_intervals"]["dice_mean"]["resamples"] == 50
    at_half = metrics_from_predictions(tmp_path / "predictions.npz", threshold=0.5, empty="skip",
                                       bootstrap_resamples=50)
    # nothing is predicted above 0.5, and the 2 images without a lesion are left out
    assert at_half["pixel_sensitivity"] == 0.0 and at_half["images_scored"] == 10 and at_half["dice_mean"] == 0.0

    (tmp_path / "broken.npz").write_text("not an archive")
    with pytest.raises(DataError, match=r"broken.npz cannot be read as predictions"):
        load_predictions(tmp_path / "broken.npz")
    np.savez(tmp_path / "partial.npz", ids=predictions["ids"])
    with pytest.raises(DataError, match=r"partial.npz lacks the array\(s\) labels, class_names"):
        load_predictions(tmp_path / "partial.npz")


MASK_CLASSES = ["a", "b", "c"]


def _hand_made_class_maps():
    """2 images of 4 x 4 pixels, 3 mask classes, with known Dice per image and class (columns a, b, c)::

        image 0: a: 4 true pixels, 2 of them predicted -> 2/3; b: 2 true, exactly predicted -> 1; c: in neither map
        image 1: a: 2 true, exactly predicted -> 1; b: in neither map; c: 2 predicted, none true -> 0
    """
    true, predicted = np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.uint8)
    true[0, 0, :4] = 1
    predicted[0, 0, :2] = 1
    true[0, 3, :2] = predicted[0, 3, :2] = 2
    true[1, 1, 1:3] = predicted[1, 1, 1:3] = 1
    predicted[1, 2, :2] = 3
    # softmax-like probabilities over background, a, b, c: 0.7 for the predicted class, 0.1 for the others
    probabilities = (0.1 + 0.6 * np.eye(4)[predicted]).astype(np.float32)
    return true, predicted, probabilities


def _class_map_predictions(size=40, seed=0):
    """Seeded multi-class predictions of ``size`` 16 x 16 images: class a in every image, b in half, c never true
    but sometimes predicted; informative softmax probabilities."""
    rng = np.random.default_rng(seed)
    true = np.zeros((size, 16, 16), np.uint8)
    for index in range(size):
        y, x = rng.integers(0, 8, size=2)
        true[index, y:y + 6, x:x + 6] = 1
        if index % 2:
            true[index, 12:, 12:] = 2
    logits = rng.normal(size=(size, 16, 16, 4)) + 4.0 * np.eye(4)[true]
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return {"ids": np.array([f"case{i}" for i in range(size)]), "labels": np.arange(size) % 2,
            "class_names": np.array(["benign", "malignant"]), "threshold": np.float64(0.5),
            "true_masks": true, "mask_probabilities": probabilities.astype(np.float32),
            "mask_classes": np.array(MASK_CLASSES)}


def test_overlap_per_class_matches_sklearn_f1_and_jaccard_of_each_class():
    rng = np.random.default_rng(0)
    true_maps, predicted = rng.integers(0, 4, (6, 8, 8)), rng.integers(0, 3, (6, 8, 8))  # class 3 never predicted
    true_maps[0][true_maps[0] == 2] = 0                                                   # image 0 has no true b
    dice, iou = overlap_per_class(true_maps, predicted, 3)
    assert dice.shape == iou.shape == (6, 3)
    for index in range(6):
        y_true, y_pred = true_maps[index].ravel(), predicted[index].ravel()
        for value in (1, 2, 3):
            assert dice[index, value - 1] == pytest.approx(
                sk_metrics.f1_score(y_true, y_pred, labels=[value], average=None)[0]), (index, value)
            assert iou[index, value - 1] == pytest.approx(
                sk_metrics.jaccard_score(y_true, y_pred, labels=[value], average=None)[0]), (index, value)
    with pytest.raises(ValueError, match=r"true maps of shape \(6, 8, 8\) and predicted maps of shape \(6, 8\)"):
        overlap_per_class(true_maps, predicted[..., 0], 3)


def test_overlap_per_class_applies_the_empty_rule_class_by_class():
    true, predicted, _ = _hand_made_class_maps()
    dice, iou = overlap_per_class(true, predicted, 3, empty="one")
    np.testing.assert_allclose(dice, [[2 / 3, 1, 1], [1, 1, 0]])
    np.testing.assert_allclose(iou, [[1 / 2, 1, 1], [1, 1, 0]])
    dice, _ = overlap_per_class(true, predicted, 3, empty="skip")
    np.testing.assert_allclose(dice, [[2 / 3, 1, np.nan], [1, np.nan, 0]])


@pytest.mark.parametrize("empty, per_class", [
    ("one", {"a": 5 / 6, "b": 1.0, "c": 1 / 2}),    # c: (1 + 0) / 2
    ("skip", {"a": 5 / 6, "b": 1.0, "c": 0.0}),    # b and c each scored on one image
])
def test_multiclass_dice_mean_is_the_macro_mean_of_the_per_class_means(empty, per_class):
    true, _, probabilities = _hand_made_class_maps()
    metrics, image_dice, _ = segmentation_metrics(true, probabilities, empty=empty, mask_classes=MASK_CLASSES)
    assert {name: row["dice_mean"] for name, row in metrics["mask_per_class"].items()} == pytest.approx(per_class)
    assert metrics["dice_mean"] == pytest.approx(np.mean(list(per_class.values())))
    assert metrics["mask_classes"] == MASK_CLASSES and metrics["mask_averaging"] == MACRO_AVERAGE
    assert "threshold" not in metrics and "dice_std" not in metrics
    assert [metrics["mask_per_class"][name]["pixels_true"] for name in MASK_CLASSES] == [6, 2, 0]
    assert [metrics["mask_per_class"][name]["pixels_predicted"] for name in MASK_CLASSES] == [4, 2, 2]
    # c has no true pixel: no sensitivity, left out of the macro mean (a: 4 / 6, b: 1)
    assert np.isnan(metrics["mask_per_class"]["c"]["pixel_sensitivity"])
    assert metrics["pixel_sensitivity"] == pytest.approx((4 / 6 + 1) / 2)
    expected_image_dice = [(2 / 3 + 1 + 1) / 3, (1 + 1 + 0) / 3] if empty == "one" else [(2 / 3 + 1) / 2, 1 / 2]
    np.testing.assert_allclose(image_dice, expected_image_dice)


def test_multiclass_pooled_pixel_metrics_and_confusion_match_sklearn_on_all_pixels():
    predictions = _class_map_predictions()
    true, probabilities = predictions["true_masks"], predictions["mask_probabilities"]
    metrics, _, _ = segmentation_metrics(true, probabilities, mask_classes=MASK_CLASSES, empty="skip")
    y_true, y_pred = true.ravel(), probabilities.argmax(-1).ravel()
    np.testing.assert_array_equal(metrics["mask_confusion_matrix"],
                                  sk_metrics.confusion_matrix(y_true, y_pred, labels=[0, 1, 2, 3]))
    dice, iou = overlap_per_class(true, probabilities.argmax(-1), 3, empty="skip")
    for value, name in enumerate(MASK_CLASSES, start=1):
        row = metrics["mask_per_class"][name]
        assert row["dice_pooled"] == pytest.approx(sk_metrics.f1_score(y_true, y_pred, labels=[value], average=None)[0])
        assert row["iou_pooled"] == pytest.approx(
            sk_metrics.jaccard_score(y_true, y_pred, labels=[value], average=None)[0])
        assert row["pixel_specificity"] == pytest.approx(sk_metrics.recall_score(y_true != value, y_pred != value))
        assert row["dice_median"] == pytest.approx(np.nanmedian(dice[:, value - 1]))
        assert row["thresholded_jaccard"] == pytest.approx(thresholded_jaccard(iou[:, value - 1]))
    assert metrics["mask_per_class"]["b"]["images_with_class"] == 20
    assert metrics["mask_per_class"]["c"]["images_with_class"] == 0
    assert metrics["mask_per_class"]["c"]["images_scored"] == 40 - metrics["mask_per_class"]["c"]["images_both_empty"]
    assert metrics["iou_pooled"] == pytest.approx(np.mean([metrics["mask_per_class"][n]["iou_pooled"]
                                                           for n in MASK_CLASSES]))


def test_multiclass_bootstrap_recomputes_the_macro_mean_of_each_resample():
    predictions = _class_map_predictions()
    metrics, image_dice, _ = compute_metrics(predictions, empty="skip", bootstrap_resamples=200)
    dice, _ = overlap_per_class(predictions["true_masks"], predictions["mask_probabilities"].argmax(-1), 3,
                                empty="skip")
    statistics = bootstrap_statistics(predictions, dice)
    assert statistics["dice_mean"](np.ones((1, 40)))[0] == pytest.approx(metrics["dice_mean"])
    # the macro mean of a resample is not the mean of the per-image means when "skip" leaves classes out
    resample = np.array([[0, 0, 1, 2, 3, 5, 8, 13, 21, 34]])
    expected = np.mean([np.nanmean(dice[resample[0], index]) for index in range(3)])
    assert statistics["dice_mean"](resample_counts(resample, 40))[0] == pytest.approx(expected)
    assert expected != pytest.approx(np.nanmean(image_dice[resample[0]]))
    interval = metrics["confidence_intervals"]["dice_mean"]
    assert interval["low"] <= metrics["dice_mean"] <= interval["high"] and interval["resamples"] == 200
    assert metrics["confidence_intervals"]["dice_mean"] == bootstrap_intervals(
        {"dice_mean": statistics["dice_mean"]}, 40, resamples=200)["dice_mean"]
    assert image_dice.shape == (40,) and metrics["images_scored"] == 40


def test_multiclass_predictions_round_trip_and_the_metrics_are_recomputed_from_the_file(tmp_path):
    predictions = _class_map_predictions()
    save_predictions(tmp_path / "predictions.npz", predictions)
    loaded = load_predictions(tmp_path)
    assert loaded.keys() == predictions.keys() and mask_class_names(loaded) == MASK_CLASSES
    for name, values in predictions.items():
        np.testing.assert_array_equal(loaded[name], values)
        assert loaded[name].dtype == np.asarray(values).dtype, name
    expected, _, _ = compute_metrics(predictions, bootstrap_resamples=50)
    recomputed = metrics_from_predictions(tmp_path / "predictions.npz", bootstrap_resamples=50)
    assert json.dumps(recomputed) == json.dumps(expected)  # NaN-aware equality
    assert 0.5 < recomputed["dice_mean"] < 1 and recomputed["mask_classes"] == MASK_CLASSES

    three_columns = predictions["mask_probabilities"][..., :3]
    np.savez(tmp_path / "wrong.npz", **{**predictions, "mask_probabilities": three_columns})
    with pytest.raises(DataError, match=r"wrong.npz has true_masks of shape \(40, 16, 16\) and mask_probabilities of "
                                        r"shape \(40, 16, 16, 3\) for the 3 mask classes"):
        load_predictions(tmp_path / "wrong.npz")
    with pytest.raises(DataError, match=r"true class maps hold values 0..4; expected 0 \(background\) to 3"):
        segmentation_metrics(predictions["true_masks"] * 2, predictions["mask_probabilities"],
                             mask_classes=MASK_CLASSES)


def test_a_single_mask_class_name_keeps_the_binary_metrics():
    true, predicted = _masks_with_overlaps()
    predictions = {"ids": np.arange(12).astype(str), "labels": np.zeros(12, int), "class_names": np.array(["a"]),
                   "true_masks": true, "mask_probabilities": predicted.astype(np.float32)}
    binary, dice, _ = compute_metrics(predictions, bootstrap_resamples=20)
    named, named_dice, _ = compute_metrics({**predictions, "mask_classes": np.array(["lesion"])},
                                           bootstrap_resamples=20)
    assert mask_class_names({"mask_classes": np.array(["lesion"])}) is None
    assert json.dumps(named) == json.dumps(binary) and "mask_per_class" not in binary
    np.testing.assert_array_equal(named_dice, dice)


def test_report_shows_the_per_class_table_and_names_the_macro_mean():
    metrics, _, _ = compute_metrics(_class_map_predictions(), bootstrap_resamples=20)
    metrics = json.loads(json.dumps(metrics).replace("NaN", "null"))  # as metrics.json holds it
    page = render_report(metrics=metrics, run={"run": "r"}, config={}, figures={})
    assert "Per mask class" in page and "macro mean over the foreground classes" in page
    assert "Dice, mean per image, macro mean over foreground classes" in page
    assert "<td>a</td>" in page and "<td>macro mean</td>" in page and "predicted background" in page
    assert f"<td>{metrics['mask_per_class']['b']['dice_mean']:.4f}</td>" in page
    assert "Mask threshold" not in page

    true, predicted = _masks_with_overlaps()
    binary, _, _ = compute_metrics({"ids": np.arange(12).astype(str), "labels": np.zeros(12, int),
                                    "class_names": np.array(["a"]), "true_masks": true,
                                    "mask_probabilities": predicted.astype(np.float32)}, bootstrap_resamples=20)
    page = render_report(metrics=binary, run={"run": "r"}, config={}, figures={})
    assert "Mask threshold 0.5" in page and "Per mask class" not in page and "macro mean" not in page


def test_class_map_overlay_gives_each_class_its_colour_and_the_gallery_draws_class_maps():
    colours = class_colours(3)
    assert colours.shape == (3, 3) and len({tuple(colour) for colour in colours}) == 3
    assert len({tuple(colour) for colour in class_colours(25)}) == 25
    image = np.full((4, 4), 100, np.uint8)
    class_map = np.array([[0, 1, 2, 3]] * 4)
    overlay = class_map_overlay(image, class_map, 3, alpha=0.5)
    assert overlay.shape == (4, 4, 3) and overlay.dtype == np.uint8
    np.testing.assert_array_equal(overlay[:, 0], 100)                                  # background unchanged
    np.testing.assert_array_equal(overlay[0, 1:], np.round(0.5 * 100 + 0.5 * colours.astype(float)))
    np.testing.assert_array_equal(class_map_overlay(image, class_map, 3, alpha=1.0)[0, 1:], colours)
    with pytest.raises(ValueError, match=r"class map values 0..3; expected 0 to 2"):
        class_map_overlay(image, class_map, 2)

    true, predicted, _ = _hand_made_class_maps()
    cases = [{"image": np.zeros((4, 4, 3)), "true_mask": true[index], "predicted_mask": predicted[index],
              "title": f"case {index}"} for index in range(2)]
    figure = gallery_figure({"best": cases, "worst": cases[::-1]}, mask_classes=MASK_CLASSES)
    assert [text.get_text() for text in figure.legends[0].get_texts()] == MASK_CLASSES
    assert figure_png(figure).startswith(b"\x89PNG")


def test_history_is_read_with_epochs_from_1_whichever_numbering_wrote_it(tmp_path):
    rows = "epoch,loss,val_loss\n{},0.9,0.8\n{},0.7,0.6\n"
    (tmp_path / "now.csv").write_text(rows.format(1, 2))
    (tmp_path / "older.csv").write_text(rows.format(0, 1))  # Keras's CSVLogger, as mtunet wrote it before
    for name in ("now.csv", "older.csv"):
        history = read_history(tmp_path / name)
        assert history == [{"epoch": 1, "loss": 0.9, "val_loss": 0.8}, {"epoch": 2, "loss": 0.7, "val_loss": 0.6}]
        assert best_history_row(history)["epoch"] == 2
    assert read_history(tmp_path / "missing.csv") == []


def test_confusion_matrix_cells_hold_count_and_row_share_and_curves_mark_the_kept_epoch():
    counts = np.array([[8, 2], [1, 3]])
    figure = confusion_matrix_figure(counts, counts / counts.sum(axis=1, keepdims=True), ["benign", "malignant"])
    cells = sorted(text.get_text() for text in figure.axes[0].texts)
    assert cells == sorted(["8\n(80%)", "2\n(20%)", "1\n(25%)", "3\n(75%)"])
    assert "14 images" in figure.axes[0].get_title()

    history = [{"epoch": epoch, "loss": 1.0 - 0.1 * epoch, "val_loss": value, "label_accuracy": 0.5,
                "val_label_accuracy": 0.5} for epoch, value in enumerate([0.9, 0.4, 0.5], start=1)]
    figure = training_curves_figure(history)
    for axis in figure.axes:
        # three epochs: matplotlib alone would tick 1.25, 1.5, ...
        ticks = [tick for tick in axis.get_xticks() if 1 <= tick <= 3]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
        kept = [line for line in axis.get_lines() if line.get_label() == "kept: epoch 2"]
        assert len(kept) == 1 and list(kept[0].get_xdata()) == [2, 2]
