"""Evaluation metrics computed in numpy and scikit-learn from saved predictions, so they need no model.

``compute_metrics`` turns the arrays of a ``predictions.npz`` (see ``save_predictions``) into everything
``metrics.json`` holds; ``metrics_from_predictions`` does the same from the file alone.

Masks are binary (a lesion probability per pixel, thresholded) or, when the predictions name their
``mask_classes``, multi-class (a softmax over background and the classes per pixel, argmax): see
``segmentation_metrics``; when they name their ``mask_labels``, multi-label (a probability per pixel and lesion
type, each thresholded): see ``multilabel_metrics``.
"""

import math
import pathlib
import warnings

import numpy as np
from sklearn import metrics as sk_metrics

from mtunet.errors import ConfigError, DataError

EMPTY_MASK_RULES = {
    "one": "images whose true and predicted masks are both empty count as Dice = IoU = 1 (ISIC's rule)",
    "skip": "images whose true and predicted masks are both empty are left out of the per-image Dice and IoU "
            "(nnU-Net's rule)",
}
ISIC_JACCARD_THRESHOLD = 0.65
PREDICTIONS_FILE = "predictions.npz"
BACKGROUND = "background"  # class 0 of a multi-class mask
MACRO_AVERAGE = ("macro mean over the foreground classes: the mean over the classes of each class's value (its mean "
                 "or median over images, or its pooled value), classes without a defined value left out")
# the headline segmentation numbers of a multi-class mask, each the macro mean of the same key of mask_per_class
MACRO_KEYS = ("dice_mean", "dice_median", "iou_mean", "iou_median", "dice_pooled", "iou_pooled",
              "thresholded_jaccard", "pixel_sensitivity", "pixel_specificity")


def check_empty_rule(empty: str) -> None:
    if empty not in EMPTY_MASK_RULES:
        raise ConfigError(f"unknown empty-mask rule {empty!r}; expected one of: {', '.join(EMPTY_MASK_RULES)}")


def overlap_per_image(true_masks, predicted_masks, empty="one"):
    """Dice and IoU of each image's binary masks, ``(n, H, W[, 1])`` each.

    ``empty`` decides images whose true and predicted masks are both empty: ``"one"`` counts them as perfect (1),
    ``"skip"`` returns NaN for them (nnU-Net's rule), to be left out of means.
    """
    check_empty_rule(empty)
    true_masks = np.asarray(true_masks, bool).reshape(len(true_masks), -1)
    predicted_masks = np.asarray(predicted_masks, bool).reshape(len(predicted_masks), -1)
    intersection = (true_masks & predicted_masks).sum(axis=1)
    true_area, predicted_area = true_masks.sum(axis=1), predicted_masks.sum(axis=1)
    union = true_area + predicted_area - intersection
    both_empty = union == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(both_empty, np.nan, 2 * intersection / (true_area + predicted_area))
        iou = np.where(both_empty, np.nan, intersection / union)
    if empty == "one":
        dice[both_empty], iou[both_empty] = 1.0, 1.0
    return dice, iou


def overlap_per_class(true_maps, predicted_maps, num_classes, empty="one"):
    """Dice and IoU of each image and foreground class of class maps, ``(n, num_classes)`` each.

    Args:
        true_maps, predicted_maps: ``(n, H, W)`` integer class maps: 0 is background, 1..num_classes the classes.
        num_classes: K, the number of foreground classes; column ``c - 1`` of the results is class ``c``.
        empty: ``"one"`` or ``"skip"``, as in ``overlap_per_image``, for each class of each image: where the class
            is in neither map of an image, its Dice and IoU are 1, or NaN (to be left out of means).
    """
    check_empty_rule(empty)
    true_maps, predicted_maps = np.asarray(true_maps), np.asarray(predicted_maps)
    if true_maps.shape != predicted_maps.shape:
        raise ValueError(f"true maps of shape {true_maps.shape} and predicted maps of shape {predicted_maps.shape}; "
                         "expected the same shape")
    dice, iou = np.empty((len(true_maps), num_classes)), np.empty((len(true_maps), num_classes))
    for index in range(num_classes):
        dice[:, index], iou[:, index] = overlap_per_image(true_maps == index + 1, predicted_maps == index + 1, empty)
    return dice, iou


def thresholded_jaccard(iou):
    """The ISIC 2018 challenge score: per-image Jaccard, counted as 0 below 0.65, averaged (NaNs left out)."""
    iou = np.asarray(iou, float)
    iou = iou[~np.isnan(iou)]
    return float(np.mean(np.where(iou < ISIC_JACCARD_THRESHOLD, 0.0, iou))) if iou.size else math.nan


def _divide(numerator, denominator) -> float:
    return float(numerator / denominator) if denominator else math.nan


def _roc_auc(labels, probabilities, num_classes):
    """``(macro AUC, per-class one-vs-rest AUC)``: binary AUC of the positive class for 2 classes.

    A class with no example (or every example) in ``labels`` has no AUC (NaN) and is left out of the macro mean,
    where scikit-learn's multi-class ``roc_auc_score`` would raise; with every class present, the macro mean is
    scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``.
    """
    per_class = []
    for index in range(num_classes):
        positives = labels == index
        per_class.append(float(sk_metrics.roc_auc_score(positives, probabilities[:, index]))
                         if 0 < positives.sum() < len(labels) else math.nan)
    if num_classes == 2:
        return per_class[1], per_class
    defined = [value for value in per_class if not math.isnan(value)]
    return (float(np.mean(defined)) if defined else math.nan), per_class


def classification_metrics(labels, probabilities, class_names) -> dict:
    """Accuracy, balanced accuracy, ROC AUC, F1, kappa, micro averages, per-class tables, confusion matrix.

    Args:
        labels: ``(n,)`` true class indices.
        probabilities: ``(n, num_classes)`` predicted class probabilities; the predicted class is the argmax.
        class_names: name of each class index.

    Returns keys ``accuracy``, ``balanced_accuracy``, ``auc`` (binary: of class 1; else macro one-vs-rest over the
    classes present), ``macro_f1``, ``weighted_f1``, ``quadratic_weighted_kappa``, ``micro_average`` (accuracy,
    sensitivity and specificity over all one-vs-rest decisions), ``per_class`` (``{name: {precision, recall,
    specificity, npv, f1, support, auc}}``; recall is sensitivity, npv the negative predictive value),
    ``auc_averaging`` (how ``auc`` is averaged, in words), ``confusion_matrix`` (counts, rows true, columns
    predicted) and ``confusion_matrix_normalized`` (each row divided by its total; 0 for a class with no example).
    """
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, float)
    predicted = probabilities.argmax(axis=1)
    indices = list(range(len(class_names)))
    auc, per_class_auc = _roc_auc(labels, probabilities, len(class_names))
    precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0)
    # one 2x2 matrix [[tn, fp], [fn, tp]] per class, one class against the rest
    per_class_matrices = sk_metrics.multilabel_confusion_matrix(labels, predicted, labels=indices)
    tn, fp, fn, tp = per_class_matrices.reshape(-1, 4).T
    micro_tn, micro_fp, micro_fn, micro_tp = per_class_matrices.reshape(-1, 4).sum(axis=0)
    counts = sk_metrics.confusion_matrix(labels, predicted, labels=indices)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balanced accuracy and kappa warn when a class is absent or never predicted
        balanced_accuracy = sk_metrics.balanced_accuracy_score(labels, predicted)
        kappa = sk_metrics.cohen_kappa_score(labels, predicted, labels=indices, weights="quadratic")
    return {
        "accuracy": float(sk_metrics.accuracy_score(labels, predicted)),
        "balanced_accuracy": float(balanced_accuracy),
        "auc": auc,
        "auc_averaging": (f"binary: the AUC of {class_names[1]} against {class_names[0]}" if len(class_names) == 2
                          else "macro mean of the one-vs-rest AUC of each class present"),
        "macro_f1": float(sk_metrics.f1_score(labels, predicted, labels=indices, average="macro", zero_division=0)),
        "weighted_f1": float(sk_metrics.f1_score(labels, predicted, labels=indices, average="weighted",
                                                 zero_division=0)),
        "quadratic_weighted_kappa": float(kappa),
        "micro_average": {
            "accuracy": _divide(micro_tp + micro_tn, micro_tp + micro_tn + micro_fp + micro_fn),
            "sensitivity": _divide(micro_tp, micro_tp + micro_fn),
            "specificity": _divide(micro_tn, micro_tn + micro_fp),
        },
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "specificity": _divide(tn[i], tn[i] + fp[i]), "npv": _divide(tn[i], tn[i] + fn[i]),
                   "f1": float(f1[i]), "support": int(support[i]),
                   "auc": per_class_auc[i]}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": counts.tolist(),
        "confusion_matrix_normalized": (counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)).tolist(),
    }


CALIBRATION_BINS = 10


def reliability_bins(positives, probabilities, bins: int = CALIBRATION_BINS) -> dict:
    """The reliability table of one class: ``probabilities`` (n,) cut into ``bins`` equal-width bins of [0, 1],
    each with its ``count``, ``mean_probability`` and ``fraction_positive`` (of ``positives``, booleans), empty bins
    left out, as ``sklearn.calibration.calibration_curve(strategy="uniform")`` bins them; and the expected
    calibration error, the count-weighted mean gap between the two (Guo et al. 2017), which scikit-learn lacks."""
    positives, probabilities = np.asarray(positives, bool), np.asarray(probabilities, float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], probabilities)
    count = np.bincount(which, minlength=bins)
    filled = count > 0
    mean_probability = np.bincount(which, probabilities, bins)[filled] / count[filled]
    fraction_positive = np.bincount(which, positives.astype(float), bins)[filled] / count[filled]
    error = float(np.sum(count[filled] * np.abs(fraction_positive - mean_probability)) / max(len(positives), 1))
    return {"count": count[filled].tolist(), "mean_probability": mean_probability.tolist(),
            "fraction_positive": fraction_positive.tolist(), "expected_calibration_error": error}


def calibration_metrics(labels, probabilities, class_names, bins: int = CALIBRATION_BINS) -> dict:
    """How far the class probabilities can be trusted: the Brier score over all classes (the mean over images of
    the squared distance between the probability vector and the one-hot truth) and, per class against the rest, its
    Brier score (``sklearn.metrics.brier_score_loss``), expected calibration error and reliability table
    (``reliability_bins``)."""
    labels, probabilities = np.asarray(labels).astype(int), np.asarray(probabilities, float)
    one_hot = np.eye(probabilities.shape[1])[labels]
    per_class = {}
    for index, name in enumerate(class_names):
        positives = labels == index
        per_class[name] = {"brier": float(sk_metrics.brier_score_loss(positives, probabilities[:, index],
                                                                      pos_label=True)),
                           **reliability_bins(positives, probabilities[:, index], bins)}
    return {"brier_score": float(np.mean(np.sum((probabilities - one_hot) ** 2, axis=1))), "bins": bins,
            "decision": ("the predicted class is the one of highest probability"
                         + (f" (for two classes: {class_names[1]} when its probability is above 0.5)"
                            if len(class_names) == 2 else "")
                         + "; sensitivity, specificity, PPV and NPV follow from that decision"),
            "per_class": per_class}


def _summary(values) -> dict:
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if not values.size:
        return {"mean": math.nan, "std": math.nan, "median": math.nan, "n": 0}
    return {"mean": float(values.mean()), "std": float(values.std()), "median": float(np.median(values)),
            "n": int(values.size)}


def mask_class_names(predictions: dict) -> "list[str] | None":
    """The foreground class names of a multi-class predictions dict, from its ``mask_classes``; None for binary
    masks (no ``mask_classes``, or a single name)."""
    if "mask_classes" not in predictions:
        return None
    names = [str(name) for name in np.atleast_1d(predictions["mask_classes"])]
    return names if len(names) > 1 else None


def _pixel_confusion(true_maps, predicted_maps, size, chunk=64):
    """``(size, size)`` pixel counts, rows true class, columns predicted, over ``chunk`` images at a time (bounds
    the memory of the int64 codes)."""
    counts = np.zeros(size * size, np.int64)
    for start in range(0, len(true_maps), chunk):
        codes = true_maps[start:start + chunk].astype(np.int64) * size + predicted_maps[start:start + chunk]
        counts += np.bincount(codes.reshape(-1), minlength=size * size)
    return counts.reshape(size, size)


def _macro(values) -> float:
    defined = [value for value in values if not math.isnan(value)]
    return float(np.mean(defined)) if defined else math.nan


def _class_map_metrics(true_maps, mask_probabilities, mask_classes, empty, labels=None, class_names=None):
    """``(metrics, Dice (n, K), IoU (n, K))`` of multi-class masks; see ``segmentation_metrics``."""
    num_classes = len(mask_classes)
    true_maps, probabilities = np.asarray(true_maps), np.asarray(mask_probabilities)
    if true_maps.ndim == 4 and true_maps.shape[-1] == 1:
        true_maps = true_maps[..., 0]
    if probabilities.shape != (*true_maps.shape, num_classes + 1) or true_maps.ndim != 3:
        raise ValueError(f"true class maps of shape {true_maps.shape} and mask probabilities of shape "
                         f"{probabilities.shape} for {num_classes} mask classes; expected (n, H, W) and "
                         f"(n, H, W, {num_classes + 1}) (background and {', '.join(mask_classes)})")
    if true_maps.size and (true_maps.min() < 0 or true_maps.max() > num_classes):
        raise DataError(f"true class maps hold values {true_maps.min()}..{true_maps.max()}; expected 0 (background) "
                        f"to {num_classes} ({', '.join(mask_classes)})")
    true_maps = true_maps.astype(np.uint8 if num_classes < 256 else np.int64)
    predicted = probabilities.argmax(axis=-1).astype(true_maps.dtype)
    dice, iou = overlap_per_class(true_maps, predicted, num_classes, empty)
    counts = _pixel_confusion(true_maps, predicted, num_classes + 1)
    true_flat, predicted_flat = true_maps.reshape(len(true_maps), -1), predicted.reshape(len(predicted), -1)
    per_class = {}
    for index, name in enumerate(mask_classes):
        value = index + 1
        tp = int(counts[value, value])
        fn, fp = int(counts[value].sum()) - tp, int(counts[:, value].sum()) - tp
        tn = int(counts.sum()) - tp - fn - fp
        dice_summary, iou_summary = _summary(dice[:, index]), _summary(iou[:, index])
        per_class[name] = {
            "dice_mean": dice_summary["mean"], "dice_std": dice_summary["std"], "dice_median": dice_summary["median"],
            "iou_mean": iou_summary["mean"], "iou_std": iou_summary["std"], "iou_median": iou_summary["median"],
            "dice_pooled": _divide(2 * tp, 2 * tp + fp + fn), "iou_pooled": _divide(tp, tp + fp + fn),
            "thresholded_jaccard": thresholded_jaccard(iou[:, index]),
            "pixel_sensitivity": _divide(tp, tp + fn), "pixel_specificity": _divide(tn, tn + fp),
            "pixels_true": tp + fn, "pixels_predicted": tp + fp,
            "images_with_class": int((true_flat == value).any(axis=1).sum()),
            "images_both_empty": int(np.count_nonzero(~(true_flat == value).any(axis=1)
                                                      & ~(predicted_flat == value).any(axis=1))),
            "images_scored": dice_summary["n"],
        }
    image_dice = _nanmean_rows(dice)
    results = {key: _macro([row[key] for row in per_class.values()]) for key in MACRO_KEYS}
    results.update({
        "mask_classes": list(mask_classes), "mask_averaging": MACRO_AVERAGE,
        "mask_decision": f"argmax over {BACKGROUND} and the {num_classes} mask classes",
        "images_both_empty": int(np.count_nonzero(~true_flat.any(axis=1) & ~predicted_flat.any(axis=1))),
        "images_scored": int(np.count_nonzero(~np.isnan(image_dice))),
        "empty_mask_rule": empty,
        "empty_mask_rule_description": f"{EMPTY_MASK_RULES[empty]}; applied class by class: an image whose true and "
                                       "predicted maps both lack a class has both masks of that class empty",
        "mask_per_class": per_class,
        "mask_confusion_matrix": counts.tolist(),
    })
    if labels is not None and class_names is not None:
        labels = np.asarray(labels)
        results["dice_per_class"] = {name: _summary(image_dice[labels == index])
                                     for index, name in enumerate(class_names)}
    return results, dice, iou


# pixels of one lesion type that its AUPR ranks at most: above, a seeded sample of them (IDRiD's 81 test images at
# 512 px are 21 million)
AUPR_MAX_PIXELS = 4_000_000
LABEL_AVERAGE = ("macro mean over the lesion types: the mean over the types of each type's value (its mean over the "
                 "images that have its mask, or its pooled value), types without a defined value left out")


def pixel_aupr(true, probabilities, max_pixels: int = AUPR_MAX_PIXELS, seed: int = 0) -> tuple[float, int]:
    """``(average precision, pixels ranked)`` of one lesion type's pixels (``sklearn.metrics.
    average_precision_score``, the area under the precision-recall curve that IDRiD's segmentation challenge ranks
    by); over a sample of ``max_pixels`` of them drawn with ``seed`` when there are more. NaN without a lesion
    pixel."""
    true, probabilities = np.asarray(true, bool).reshape(-1), np.asarray(probabilities, float).reshape(-1)
    if true.size > max_pixels:
        chosen = np.sort(np.random.default_rng(seed).choice(true.size, max_pixels, replace=False))
        true, probabilities = true[chosen], probabilities[chosen]
    if not true.any():
        return math.nan, int(true.size)
    return float(sk_metrics.average_precision_score(true, probabilities)), int(true.size)


def overlap_per_label(true_masks, predicted_masks, channels_present, empty="one"):
    """Dice and IoU of each image and lesion type of multi-label masks ``(n, H, W, L)`` (non-zero is lesion),
    ``(n, L)`` each: NaN where ``channels_present`` ``(n, L)`` says the lesion type's true mask is missing, and as
    ``overlap_per_image`` decides ``empty`` masks."""
    true_masks, predicted_masks = np.asarray(true_masks) > 0, np.asarray(predicted_masks) > 0
    present = np.asarray(channels_present, bool)
    dice, iou = np.full(present.shape, np.nan), np.full(present.shape, np.nan)
    for index in range(present.shape[1]):
        have = present[:, index]
        dice[have, index], iou[have, index] = overlap_per_image(true_masks[have, ..., index],
                                                                predicted_masks[have, ..., index], empty)
    return dice, iou


def multilabel_metrics(true_masks, mask_probabilities, channels_present, mask_labels, *, threshold=0.5, empty="one",
                       labels=None, class_names=None,
                       max_aupr_pixels: int = AUPR_MAX_PIXELS) -> tuple[dict, np.ndarray, np.ndarray]:
    """Per lesion type of multi-label masks: Dice and IoU per image (over the images that have that type's mask),
    pooled, and the pixel-level AUPR; and their macro means over the lesion types.

    Args:
        true_masks: ``(n, H, W, L)`` true masks (non-zero is lesion), one channel per lesion type.
        mask_probabilities: ``(n, H, W, L)`` predicted probabilities; above ``threshold`` is lesion.
        channels_present: ``(n, L)`` whether each image has the mask of each lesion type; the others are left out.
        mask_labels: the L lesion type names.
        threshold: probability above which a pixel is lesion, for Dice and IoU (AUPR needs none).
        empty: ``"one"`` or ``"skip"`` (``EMPTY_MASK_RULES``), for each lesion type of each image.
        labels, class_names: the true class of each image and the class names, for ``dice_per_class``.
        max_aupr_pixels: see ``pixel_aupr``.

    Returns ``(metrics, Dice (n, L), IoU (n, L))``, NaN where a lesion type's mask is missing (or left out by
    ``empty="skip"``). The metrics: ``mask_labels``, ``mask_per_label`` (``{lesion type: {dice_mean, dice_std,
    dice_median, iou_mean, iou_median, dice_pooled, iou_pooled, aupr, aupr_pixels, pixels_true, pixels_predicted,
    images (with its mask), images_both_empty, images_scored}}``), their macro means ``dice_mean``,
    ``dice_median``, ``iou_mean``, ``iou_median``, ``dice_pooled``, ``iou_pooled`` and ``aupr_mean``,
    ``mask_averaging``, ``aupr_sampling`` (how many pixels AUPR ranks), ``pairs_both_empty`` ((image, lesion type)
    pairs whose true and predicted masks are both empty), ``images_scored`` (images with a defined Dice of some
    lesion type), the empty-mask rule, ``threshold`` and ``dice_per_class`` (``{name: {mean, std, median, n}}`` of
    each image's mean Dice over its lesion types, by true class).
    """
    true_masks, probabilities = np.asarray(true_masks) > 0, np.asarray(mask_probabilities, float)
    present = np.asarray(channels_present, bool)
    if probabilities.shape != true_masks.shape or true_masks.ndim != 4 or present.shape != (len(true_masks),
                                                                                             len(mask_labels)):
        raise ValueError(f"true masks of shape {true_masks.shape}, probabilities of shape {probabilities.shape} and "
                         f"channels present of shape {present.shape} for {len(mask_labels)} lesion types; expected "
                         f"(n, H, W, {len(mask_labels)}) twice and (n, {len(mask_labels)})")
    predicted = probabilities > threshold
    dice, iou = overlap_per_label(true_masks, predicted, present, empty)
    per_label = {}
    for index, name in enumerate(mask_labels):
        have = present[:, index]
        true, guess = true_masks[have, ..., index], predicted[have, ..., index]
        tp, true_pixels, predicted_pixels = int(np.sum(true & guess)), int(true.sum()), int(guess.sum())
        aupr, ranked = pixel_aupr(true, probabilities[have, ..., index], max_aupr_pixels)
        dice_summary, iou_summary = _summary(dice[:, index]), _summary(iou[:, index])
        per_label[name] = {
            "dice_mean": dice_summary["mean"], "dice_std": dice_summary["std"], "dice_median": dice_summary["median"],
            "iou_mean": iou_summary["mean"], "iou_median": iou_summary["median"],
            "dice_pooled": _divide(2 * tp, true_pixels + predicted_pixels),
            "iou_pooled": _divide(tp, true_pixels + predicted_pixels - tp),
            "aupr": aupr, "aupr_pixels": ranked, "pixels_true": true_pixels, "pixels_predicted": predicted_pixels,
            "images": int(have.sum()),
            "images_both_empty": int(np.sum(~true.reshape(len(true), -1).any(1)
                                            & ~guess.reshape(len(guess), -1).any(1))),
            "images_scored": dice_summary["n"],
        }
    results = {key: _macro([row[key] for row in per_label.values()])
               for key in ("dice_mean", "dice_median", "iou_mean", "iou_median", "dice_pooled", "iou_pooled")}
    results["aupr_mean"] = _macro([row["aupr"] for row in per_label.values()])
    sampled = any(row["aupr_pixels"] < row["images"] * true_masks[0, ..., 0].size for row in per_label.values())
    results.update({
        "mask_labels": list(mask_labels), "mask_averaging": LABEL_AVERAGE, "mask_per_label": per_label,
        "aupr_sampling": (f"each lesion type's AUPR ranks a seeded sample of {max_aupr_pixels} of its pixels"
                          if sampled else "each lesion type's AUPR ranks all pixels of the images with its mask"),
        "pairs_both_empty": int(sum(row["images_both_empty"] for row in per_label.values())),
        "images_scored": int(np.count_nonzero(~np.isnan(_nanmean_rows(dice)))),
        "empty_mask_rule": empty,
        "empty_mask_rule_description": f"{EMPTY_MASK_RULES[empty]}; applied lesion type by lesion type",
        "threshold": float(threshold),
    })
    if labels is not None and class_names is not None:
        image_dice, labels = _nanmean_rows(dice), np.asarray(labels)
        results["dice_per_class"] = {name: _summary(image_dice[labels == index])
                                     for index, name in enumerate(class_names)}
    return results, dice, iou


def segmentation_metrics(true_masks, mask_probabilities, *, threshold=0.5, empty="one", labels=None,
                         class_names=None, mask_classes=None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Dice and IoU per image and pooled, the ISIC thresholded Jaccard, pixel sensitivity and specificity.

    Args:
        true_masks: ``(n, H, W[, 1])`` true masks (non-zero is lesion); with ``mask_classes``, integer class maps
            ``(n, H, W)``, 0 background and ``c`` the class ``mask_classes[c - 1]``.
        mask_probabilities: ``(n, H, W[, 1])`` predicted lesion probabilities; above ``threshold`` is lesion; with
            ``mask_classes``, ``(n, H, W, K + 1)`` probabilities of background and the K classes, argmax predicted.
        threshold: probability above which a pixel is lesion (binary masks only).
        empty: ``"one"`` or ``"skip"``, the rule for images whose true and predicted masks are both empty
            (``EMPTY_MASK_RULES``); it decides the per-image means, medians and the thresholded Jaccard. With
            ``mask_classes`` it is applied to each class of each image.
        labels, class_names: the true class of each image and the class names, for ``dice_per_class``.
        mask_classes: the K foreground class names of multi-class masks; None or a single name: binary masks.

    Returns ``(metrics, Dice per image, IoU per image)`` (NaN for the images ``empty="skip"`` leaves out); the
    metrics have the keys ``dice_mean``, ``dice_std``, ``dice_median``, the same for ``iou``, ``dice_pooled`` and
    ``iou_pooled`` (over all pixels of all images), ``thresholded_jaccard``, ``pixel_sensitivity``,
    ``pixel_specificity`` (pooled), ``images_both_empty``, ``images_scored``, ``empty_mask_rule`` and its
    description, ``threshold``, and ``dice_per_class`` (``{name: {mean, std, median, n}}`` by true class).

    With multi-class masks the Dice and IoU per image are the mean over the classes of that image's per-class values
    (NaNs left out); each of ``MACRO_KEYS`` is the macro mean over the foreground classes of the same key of
    ``mask_per_class`` (``{mask class: {dice_mean, dice_std, dice_median, iou_..., dice_pooled, iou_pooled,
    thresholded_jaccard, pixel_sensitivity, pixel_specificity (one class against the rest), pixels_true,
    pixels_predicted, images_with_class, images_both_empty, images_scored}}``); the other keys are
    ``mask_classes``, ``mask_averaging`` (the averaging, in words), ``mask_decision``, ``images_both_empty`` (images
    all background in both maps), ``images_scored`` (images with a defined Dice of some class), the empty-mask rule,
    ``mask_confusion_matrix`` (pixel counts, rows true, columns predicted, over background then ``mask_classes``)
    and ``dice_per_class`` (of the per-image Dice). There is no ``threshold``, ``dice_std`` or ``iou_std``.
    """
    mask_classes = None if mask_classes is None else [str(name) for name in np.atleast_1d(mask_classes)]
    if mask_classes is not None and len(mask_classes) > 1:
        results, dice, iou = _class_map_metrics(true_masks, mask_probabilities, mask_classes, empty, labels,
                                                class_names)
        return results, _nanmean_rows(dice), _nanmean_rows(iou)
    true_masks = np.asarray(true_masks) > 0
    predicted = np.asarray(mask_probabilities) > threshold
    dice, iou = overlap_per_image(true_masks, predicted, empty)
    true_flat, predicted_flat = true_masks.reshape(-1), predicted.reshape(-1)
    tp = int(np.count_nonzero(true_flat & predicted_flat))
    fp = int(np.count_nonzero(~true_flat & predicted_flat))
    fn = int(np.count_nonzero(true_flat & ~predicted_flat))
    tn = true_flat.size - tp - fp - fn
    both_empty = ~true_masks.reshape(len(true_masks), -1).any(1) & ~predicted.reshape(len(predicted), -1).any(1)
    dice_summary, iou_summary = _summary(dice), _summary(iou)
    results = {
        "dice_mean": dice_summary["mean"], "dice_std": dice_summary["std"], "dice_median": dice_summary["median"],
        "iou_mean": iou_summary["mean"], "iou_std": iou_summary["std"], "iou_median": iou_summary["median"],
        "dice_pooled": _divide(2 * tp, 2 * tp + fp + fn), "iou_pooled": _divide(tp, tp + fp + fn),
        "thresholded_jaccard": thresholded_jaccard(iou),
        "pixel_sensitivity": _divide(tp, tp + fn), "pixel_specificity": _divide(tn, tn + fp),
        "images_both_empty": int(both_empty.sum()), "images_scored": dice_summary["n"],
        "empty_mask_rule": empty, "empty_mask_rule_description": EMPTY_MASK_RULES[empty],
        "threshold": float(threshold),
    }
    if labels is not None and class_names is not None:
        labels = np.asarray(labels)
        results["dice_per_class"] = {name: _summary(dice[labels == index]) for index, name in enumerate(class_names)}
    return results, dice, iou


def resample_counts(indices, n: int) -> np.ndarray:
    """``(r, n)`` float counts of how often each of ``n`` images is in each row of ``indices`` (r, k): the weights
    ``bootstrap_statistics``'s functions take for a resample given as image indices."""
    indices = np.asarray(indices)
    rows = np.repeat(np.arange(len(indices)), indices.shape[1])
    return np.bincount(rows * n + indices.reshape(-1), minlength=len(indices) * n).reshape(len(indices), n).astype(
        float)


def bootstrap_intervals(statistics: dict, n: int, *, groups=None, resamples: int = 1000, confidence: float = 0.95,
                        seed: int = 0, chunk: int = 100) -> dict:
    """Percentile bootstrap confidence intervals over ``n`` paired samples (images), or over their patients.

    Hand-written rather than ``scipy.stats.bootstrap`` because a resample may leave a statistic undefined (AUC of a
    resample with one class), such resamples are left out of that statistic's interval and counted, and because
    ``scipy`` resamples observations, not clusters of them.

    Args:
        statistics: ``{name: function(weights) -> values}``: ``weights`` is ``(r, n)``, one resample a row, each
            image's count in it, and the function returns the statistic of each row, ``(r,)`` (NaN where
            undefined); every statistic sees the same resamples.
        n: number of images.
        groups: ``(n,)`` patient of each image, or None. Given, a resample draws patients with replacement and
            takes all images of each drawn patient (the cluster bootstrap): images of one patient are correlated,
            and resampling them as independent gives intervals too narrow. With one image per patient it draws
            exactly what the image bootstrap draws.
        resamples: bootstrap resamples.
        confidence: the interval's coverage, e.g. 0.95.
        seed: seed of the resampling; the same seed gives the same intervals.
        chunk: resamples drawn and evaluated at once (bounds the memory: ``chunk * n`` weights).

    Returns ``{name: {"low", "high", "resamples"}}`` (``resamples``: how many gave a defined value).
    """
    if resamples < 1:
        raise ConfigError(f"bootstrap resamples must be at least 1; received {resamples}")
    rng = np.random.default_rng(seed)
    patient_of_image = None
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"{len(groups)} patient ids for {n} images; expected one per image")
        # patients numbered in order of first appearance: one image per patient then draws the image bootstrap's
        _, first, code = np.unique(np.asarray(groups).astype(str), return_index=True, return_inverse=True)
        patient_of_image = np.argsort(np.argsort(first))[code]
    units = n if patient_of_image is None else int(patient_of_image.max()) + 1 if n else 0
    values = {name: [] for name in statistics}
    for start in range(0, resamples, chunk):
        counts = resample_counts(rng.integers(0, units, size=(min(chunk, resamples - start), units)), units)
        weights = counts if patient_of_image is None else counts[:, patient_of_image]
        for name, function in statistics.items():
            values[name].append(np.asarray(function(weights), float))
    tail = 100 * (1 - confidence) / 2
    intervals = {}
    for name, samples in values.items():
        samples = np.concatenate(samples)
        defined = samples[~np.isnan(samples)]
        low, high = np.percentile(defined, [tail, 100 - tail]) if defined.size else (math.nan, math.nan)
        intervals[name] = {"low": float(low), "high": float(high), "resamples": int(defined.size)}
    return intervals


def _weighted_auc(positives, scores, weights):
    """ROC AUC of ``scores`` (n,) for the booleans ``positives`` (n,) in each resample, a row of ``weights`` (r, n)
    (image counts); NaN for a row without positives or negatives.

    The Mann-Whitney statistic with each pair counted by the product of its weights (ties one half, as in
    scikit-learn's ``roc_auc_score``), vectorised over rows because ``roc_auc_score``'s per-call input checks cost
    milliseconds, too slow for thousands of resamples. The scores are sorted once: only the weights change.
    """
    if not len(scores):
        return np.full(len(weights), np.nan)
    order = np.argsort(scores, kind="stable")
    sorted_scores, sorted_positives = scores[order], positives[order]
    weights = weights[:, order]
    negative_weights = weights * ~sorted_positives
    positive_weights = weights * sorted_positives
    new_score = np.r_[True, np.diff(sorted_scores) != 0]
    tie_group = np.cumsum(new_score) - 1
    negatives_in_group = np.add.reduceat(negative_weights, np.flatnonzero(new_score), axis=1)
    negatives_below = np.cumsum(negatives_in_group, axis=1) - negatives_in_group
    credit = negatives_below[:, tie_group] + 0.5 * negatives_in_group[:, tie_group]
    pairs = positive_weights.sum(axis=1) * negative_weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (positive_weights * credit).sum(axis=1) / pairs, np.nan)


def _nanmean_rows(values):
    """Mean of each row without its NaNs; NaN for a row of NaNs only."""
    defined = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, values, 0).sum(axis=1) / defined.sum(axis=1)


def _weighted_mean(values, weights):
    """Weighted mean of ``values`` (n,) without its NaNs for each row of ``weights`` (r, n)."""
    defined = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.where(defined, values, 0.0)) / (weights @ defined.astype(float))


def _weighted_median(values, weights):
    """Median of ``values`` (n,) without its NaNs for each row of integer counts ``weights`` (r, n): the median of
    the values repeated as often as counted, as ``np.median`` computes it (the mean of the two middle values)."""
    defined = ~np.isnan(values)
    if not defined.any():
        return np.full(len(weights), np.nan)
    order = np.argsort(values[defined], kind="stable")
    ordered, counts = values[defined][order], weights[:, defined][:, order]
    cumulative = np.cumsum(counts, axis=1)
    total = cumulative[:, -1]
    lower = np.argmax(cumulative > ((total - 1) // 2)[:, None], axis=1)
    upper = np.argmax(cumulative > (total // 2)[:, None], axis=1)
    return np.where(total > 0, (ordered[lower] + ordered[upper]) / 2, np.nan)


def _weighted_std(values, weights):
    """Population standard deviation (``np.std``) of ``values`` (n,) without NaNs for each row of ``weights``."""
    mean = _weighted_mean(values, weights)
    squares = _weighted_mean(values ** 2, weights)
    return np.sqrt(np.maximum(squares - mean ** 2, 0.0))


def _ratio(numerator, denominator, undefined=math.nan):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), undefined)


def _quadratic_kappa(confusion):
    """Cohen's kappa with quadratic weights of each ``(K, K)`` confusion matrix of ``confusion`` (r, K, K), as
    ``sklearn.metrics.cohen_kappa_score(weights="quadratic")`` computes it (NaN where it is undefined)."""
    num_classes = confusion.shape[-1]
    grid = np.arange(num_classes)
    disagreement = (grid[:, None] - grid[None, :]) ** 2.0
    total = confusion.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = confusion.sum(axis=2)[:, :, None] * confusion.sum(axis=1)[:, None, :] / total[:, None, None]
        return 1 - (disagreement * confusion).sum(axis=(1, 2)) / (disagreement * expected).sum(axis=(1, 2))


def _classification_statistics(labels, probabilities, class_names) -> dict:
    """Bootstrap statistics of ``classification_metrics``'s headline and per-class figures, with its conventions:
    precision and F1 of a class never predicted are 0 (scikit-learn's ``zero_division=0``), recall (sensitivity),
    specificity and NPV without a case to count are undefined (NaN)."""
    correct = (probabilities.argmax(axis=1) == labels).astype(float)
    predicted = probabilities.argmax(axis=1)
    num_classes = probabilities.shape[1]
    statistics = {"accuracy": lambda weights: (weights @ correct) / weights.sum(axis=1)}
    confusion = {}  # class index -> function(weights) -> (tp, fp, fn, tn), each (r,)

    for index in range(num_classes):
        cells = [((labels == index) & (predicted == index)), ((labels != index) & (predicted == index)),
                 ((labels == index) & (predicted != index)), ((labels != index) & (predicted != index))]
        cells = np.stack(cells, axis=1).astype(float)
        confusion[index] = lambda weights, cells=cells: (weights @ cells).T

    def per_class(index, name):
        def figure(weights):
            tp, fp, fn, tn = confusion[index](weights)
            return {"precision": _ratio(tp, tp + fp, 0.0), "recall": _ratio(tp, tp + fn),
                    "specificity": _ratio(tn, tn + fp), "npv": _ratio(tn, tn + fn),
                    "f1": _ratio(2 * tp, 2 * tp + fp + fn, 0.0)}[name]
        return figure

    for index, class_name in enumerate(class_names):
        for name in ("precision", "recall", "specificity", "npv", "f1"):
            statistics[f"per_class/{class_name}/{name}"] = per_class(index, name)
        statistics[f"per_class/{class_name}/auc"] = (
            lambda weights, index=index: _weighted_auc(labels == index, probabilities[:, index], weights))
    statistics["balanced_accuracy"] = lambda weights: _nanmean_rows(np.stack(
        [per_class(index, "recall")(weights) for index in range(num_classes)], axis=1))
    statistics["macro_f1"] = lambda weights: np.mean(np.stack(
        [per_class(index, "f1")(weights) for index in range(num_classes)], axis=1), axis=1)

    def weighted_f1(weights):  # each class's F1 weighted by its support
        total = 0.0
        for index in range(num_classes):
            tp, _, fn, _ = confusion[index](weights)
            total = total + (tp + fn) * per_class(index, "f1")(weights)
        return _ratio(total, weights.sum(axis=1), 0.0)

    statistics["weighted_f1"] = weighted_f1
    pairs = np.zeros((len(labels), num_classes * num_classes))
    pairs[np.arange(len(labels)), labels * num_classes + predicted] = 1
    statistics["quadratic_weighted_kappa"] = lambda weights: _quadratic_kappa(
        (weights @ pairs).reshape(-1, num_classes, num_classes))
    if num_classes == 2:
        statistics["auc"] = statistics[f"per_class/{class_names[1]}/auc"]
    else:
        statistics["auc"] = lambda weights: _nanmean_rows(np.stack(
            [statistics[f"per_class/{name}/auc"](weights) for name in class_names], axis=1))
    return statistics


def _pooled_statistics(true_masks, mask_probabilities, threshold, present) -> dict:
    """Bootstrap statistics of the pooled figures of binary masks (``segmentation_metrics``'s): each resample pools
    the pixels of its images with a mask (``present``), counted as often as drawn."""
    true = np.asarray(true_masks).reshape(len(true_masks), -1) > 0
    predicted = np.asarray(mask_probabilities).reshape(len(true_masks), -1) > threshold
    cells = np.stack([(true & predicted).sum(1), (~true & predicted).sum(1), (true & ~predicted).sum(1),
                      (~true & ~predicted).sum(1)], axis=1).astype(float) * np.asarray(present, float)[:, None]

    def pooled(figure):
        return lambda weights: figure(*(weights @ cells).T)

    return {"dice_pooled": pooled(lambda tp, fp, fn, tn: _ratio(2 * tp, 2 * tp + fp + fn)),
            "iou_pooled": pooled(lambda tp, fp, fn, tn: _ratio(tp, tp + fp + fn)),
            "pixel_sensitivity": pooled(lambda tp, fp, fn, tn: _ratio(tp, tp + fn)),
            "pixel_specificity": pooled(lambda tp, fp, fn, tn: _ratio(tn, tn + fp))}


def bootstrap_statistics(predictions: dict, dice=None, iou=None, mask_classes=None, threshold=0.5,
                         per_mask_key="mask_per_class") -> dict:
    """``{name: function(weights (r, n)) -> (r,)}``: each figure of ``compute_metrics`` that gets an interval,
    computed for each resample (a row of image counts, see ``bootstrap_intervals``).

    Names: ``accuracy``, ``balanced_accuracy``, ``auc``, ``macro_f1``, ``weighted_f1``,
    ``quadratic_weighted_kappa`` and ``per_class/<class>/<precision, recall, specificity, npv, f1, auc>`` as
    ``classification_metrics`` defines them; ``dice_mean`` and ``iou_mean`` and, by the true class of the label,
    ``dice_per_class/<class>/mean``. ``dice`` and ``iou`` are ``(n,)`` per image (means leave NaNs out): then also
    their medians and standard deviations, ``thresholded_jaccard`` and, from the masks of ``predictions`` cut at
    ``threshold``, the pooled ``dice_pooled``, ``iou_pooled``, ``pixel_sensitivity`` and ``pixel_specificity``. For
    multi-class masks they are ``(n, K)`` per image and mask class (``overlap_per_class``): then the means are the
    macro means over the classes of each class's mean over the resampled images, as ``segmentation_metrics``'s, and
    ``<per_mask_key>/<mask class>/<dice_mean, iou_mean>`` are added (``mask_classes``, the K names, default
    ``class_1``..; ``per_mask_key`` ``"mask_per_label"`` for the lesion types of multi-label masks)."""
    statistics = {}
    labels = np.asarray(predictions["labels"])
    class_names = [str(name) for name in predictions.get("class_names", range(int(labels.max(initial=0)) + 1))]
    if "label_probabilities" in predictions:
        probabilities = np.asarray(predictions["label_probabilities"], float)
        class_names = class_names if len(class_names) == probabilities.shape[1] else [
            str(index) for index in range(probabilities.shape[1])]
        labelled = labels >= 0  # the class figures count the images with a label; a resample weighs those
        classification = _classification_statistics(labels[labelled], probabilities[labelled], class_names)
        statistics.update({name: (lambda weights, figure=figure: figure(weights[:, labelled]))
                           for name, figure in classification.items()})
    for key, values in (("dice", dice), ("iou", iou)):
        if values is None:
            continue
        values = np.asarray(values, float)
        if values.ndim == 2:
            names = mask_classes or [f"class_{index + 1}" for index in range(values.shape[1])]
            for index, name in enumerate(names):
                statistics[f"{per_mask_key}/{name}/{key}_mean"] = (
                    lambda weights, column=values[:, index]: _weighted_mean(column, weights))
            statistics[f"{key}_mean"] = lambda weights, values=values: _nanmean_rows(np.stack(
                [_weighted_mean(values[:, index], weights) for index in range(values.shape[1])], axis=1))
            image_values = _nanmean_rows(values)
        else:
            statistics[f"{key}_mean"] = lambda weights, values=values: _weighted_mean(values, weights)
            statistics[f"{key}_median"] = lambda weights, values=values: _weighted_median(values, weights)
            statistics[f"{key}_std"] = lambda weights, values=values: _weighted_std(values, weights)
            image_values = values
        if key == "iou" and values.ndim == 1:
            thresholded = np.where(values < ISIC_JACCARD_THRESHOLD, 0.0, values)
            statistics["thresholded_jaccard"] = lambda weights: _weighted_mean(thresholded, weights)
        if key == "dice":
            for index, name in enumerate(class_names):
                members = np.where(labels == index, image_values, np.nan)
                statistics[f"dice_per_class/{name}/mean"] = (
                    lambda weights, members=members: _weighted_mean(members, weights))
    if dice is not None and np.ndim(dice) == 1 and "true_masks" in predictions:
        statistics.update(_pooled_statistics(predictions["true_masks"], predictions["mask_probabilities"], threshold,
                                             masks_present(predictions)))
    return statistics


def nest_intervals(intervals: dict) -> dict:
    """``{"a/b/c": interval}`` as ``{"a": {"b": {"c": interval}}}``, the layout of the figures they belong to."""
    nested = {}
    for name, interval in intervals.items():
        *path, last = name.split("/")
        node = nested
        for part in path:
            node = node.setdefault(part, {})
        node[last] = interval
    return nested


def _scatter(values, present) -> np.ndarray:
    """``values`` of the images where ``present`` (``(n,)`` boolean) holds, at their places among all ``n``; NaN
    for the others."""
    values = np.asarray(values, float)
    scattered = np.full((len(present), *values.shape[1:]), np.nan)
    scattered[present] = values
    return scattered


def multilabel_names(predictions: dict) -> "list[str] | None":
    """The lesion type names of a multi-label predictions dict, from its ``mask_labels``; None for other masks."""
    if "mask_labels" not in predictions:
        return None
    return [str(name) for name in np.atleast_1d(predictions["mask_labels"])]


def channels_present(predictions: dict) -> np.ndarray:
    """``(n, L)`` whether each image of multi-label ``predictions`` has each lesion type's true mask
    (``mask_channels_present``; without it, all do)."""
    shape = np.shape(predictions["true_masks"])
    return np.asarray(predictions.get("mask_channels_present", np.ones((shape[0], shape[-1]), bool)), bool)


def masks_present(predictions: dict) -> np.ndarray:
    """``(n,)`` whether each image of ``predictions`` has a true mask (``mask_present``; without it, all do)."""
    return np.asarray(predictions.get("mask_present", np.ones(len(predictions["labels"]), bool)), bool)


def compute_metrics(predictions: dict, *, threshold=0.5, empty="one", bootstrap_resamples=1000, confidence=0.95,
                    seed=0) -> tuple[dict, "np.ndarray | None", "np.ndarray | None"]:
    """Every metric of ``metrics.json`` from the arrays of ``predictions.npz``.

    Args:
        predictions: ``ids`` (n,), ``labels`` (n,) true class indices, ``class_names``, ``groups`` (n,) the
            patient of each image when the data knows them, and, for the heads the model has,
            ``label_probabilities`` (n, num_classes) and ``mask_probabilities`` with ``true_masks``
            (n, H, W); ``predictions.npz`` also holds the ``threshold`` it was evaluated with. Multi-class masks
            add ``mask_classes`` (K names): ``true_masks`` are then class maps (n, H, W) of 0..K and
            ``mask_probabilities`` (n, H, W, K + 1) (see ``segmentation_metrics``). Multi-label masks add
            ``mask_labels`` (L lesion type names) and ``mask_channels_present`` (n, L): ``true_masks`` and
            ``mask_probabilities`` are then (n, H, W, L) (see ``multilabel_metrics``). ``labels`` of -1 (no label) are
            left out of the class head's figures (``images_without_label`` counts them). ``mask_present`` (n,), where
            some images have no true mask, leaves those out of the mask's figures (their Dice and IoU are NaN, and
            ``images_without_mask`` counts them). Further heads add their arrays
            (see ``mtunet.evaluation.heads.head_metrics``), their metrics go to ``heads``.
        threshold, empty: see ``segmentation_metrics``; ``threshold`` is unused with multi-class masks.
        bootstrap_resamples, confidence, seed: of the bootstrap intervals of every figure ``bootstrap_statistics``
            names, in ``confidence_intervals`` laid out as the figures are (e.g. ``["per_class"]["benign"]["f1"]``);
            over patients when ``predictions`` has ``groups`` (the patient of each image), else over images.

    Returns ``(metrics, dice per image, IoU per image)``; the per-image arrays are None without a mask head, and
    with multi-class or multi-label masks the mean over the classes (lesion types) of each image's values.
    """
    check_empty_rule(empty)
    class_names = [str(name) for name in predictions["class_names"]]
    labels = np.asarray(predictions["labels"])
    results = {"n_images": int(len(labels)), "class_names": class_names}
    labelled = labels >= 0
    if "label_probabilities" in predictions:
        probabilities = predictions["label_probabilities"][labelled]
        results.update(classification_metrics(labels[labelled], probabilities, class_names))
        results["calibration"] = calibration_metrics(labels[labelled], probabilities, class_names)
        if not labelled.all():
            results["images_without_label"] = int(np.sum(~labelled))
    dice = iou = bootstrapped_dice = bootstrapped_iou = None
    mask_classes = mask_class_names(predictions)
    mask_labels = multilabel_names(predictions)
    present = masks_present(predictions)
    if "mask_probabilities" in predictions:
        true_masks, probabilities = predictions["true_masks"][present], predictions["mask_probabilities"][present]
        if mask_labels is not None:
            segmentation, dice_scored, iou_scored = multilabel_metrics(
                true_masks, probabilities, channels_present(predictions)[present], mask_labels, threshold=threshold,
                empty=empty, labels=labels[present], class_names=class_names)
        elif mask_classes is not None:
            segmentation, dice_scored, iou_scored = _class_map_metrics(true_masks, probabilities, mask_classes, empty,
                                                                       labels[present], class_names)
        else:
            segmentation, dice_scored, iou_scored = segmentation_metrics(
                true_masks, probabilities, threshold=threshold, empty=empty, labels=labels[present],
                class_names=class_names)
        bootstrapped_dice, bootstrapped_iou = (_scatter(values, present) for values in (dice_scored, iou_scored))
        if mask_classes is not None or mask_labels is not None:
            dice, iou = _nanmean_rows(bootstrapped_dice), _nanmean_rows(bootstrapped_iou)
        else:
            dice, iou = bootstrapped_dice, bootstrapped_iou
        results.update(segmentation)
        if not present.all():
            results["images_without_mask"] = int(np.sum(~present))
    groups = predictions.get("groups")
    statistics = bootstrap_statistics(predictions, bootstrapped_dice, bootstrapped_iou, mask_labels or mask_classes,
                                      threshold, "mask_per_label" if mask_labels else "mask_per_class")
    intervals = bootstrap_intervals(statistics, len(labels), groups=groups, resamples=bootstrap_resamples,
                                    confidence=confidence, seed=seed)
    patients = None if groups is None else len(set(np.asarray(groups).astype(str).tolist()))
    method = ("percentile bootstrap over images" if groups is None else
              f"percentile bootstrap over patients ({patients} patients, {len(labels)} images): each resample draws "
              "patients and takes all their images")
    results["confidence_intervals"] = {
        "confidence": confidence, "method": method, "unit": "image" if groups is None else "patient",
        "units": len(labels) if groups is None else patients, "resamples": bootstrap_resamples, "seed": seed,
        **nest_intervals(intervals)}
    from mtunet.evaluation.heads import head_metrics  # it builds on this module's figures and intervals

    further = head_metrics(predictions, resamples=bootstrap_resamples, confidence=confidence, seed=seed)
    if further:
        results["heads"] = further
    return results, dice, iou


def save_predictions(path, predictions: dict, write=None) -> None:
    """Writes the arrays of ``predictions`` (see ``compute_metrics``) compressed to ``path``, in their own dtypes
    (``mask_classes`` as a string array).

    ``write(path, function)`` writes through a temporary file (``mtunet.rundir.write_atomically``); default: in
    place.
    """
    def save(target):
        np.savez_compressed(target, **{name: np.asarray(values) for name, values in predictions.items()})

    (write or (lambda target, function: function(target)))(path, save)


def load_predictions(path) -> dict:
    """The arrays of a ``predictions.npz`` written by ``save_predictions``; ``DataError`` if it is not one."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    try:
        with np.load(path, allow_pickle=False) as archive:
            predictions = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise DataError(f"{path} cannot be read as predictions ({error}); expected the {PREDICTIONS_FILE} that "
                        "`mtunet evaluate` writes") from None
    missing = [name for name in ("ids", "labels", "class_names") if name not in predictions]
    if missing or ("mask_probabilities" in predictions) != ("true_masks" in predictions):
        raise DataError(f"{path} lacks the array(s) {', '.join(missing) or 'true_masks/mask_probabilities'}; "
                        f"expected the {PREDICTIONS_FILE} that `mtunet evaluate` writes")
    mask_labels = multilabel_names(predictions)
    if mask_labels is not None and "mask_probabilities" in predictions:
        true_shape, shape = predictions["true_masks"].shape, predictions["mask_probabilities"].shape
        if len(true_shape) != 4 or shape != true_shape or true_shape[-1] != len(mask_labels):
            raise DataError(f"{path} has true_masks of shape {true_shape} and mask_probabilities of shape {shape} "
                            f"for the {len(mask_labels)} lesion types {mask_labels}; expected (n, H, W, "
                            f"{len(mask_labels)}) both")
    mask_classes = mask_class_names(predictions)
    if mask_classes is not None and "mask_probabilities" in predictions:
        true_shape, shape = predictions["true_masks"].shape, predictions["mask_probabilities"].shape
        if len(true_shape) != 3 or shape != (*true_shape, len(mask_classes) + 1):
            raise DataError(f"{path} has true_masks of shape {true_shape} and mask_probabilities of shape {shape} "
                            f"for the {len(mask_classes)} mask classes {mask_classes}; expected (n, H, W) and "
                            f"(n, H, W, {len(mask_classes) + 1})")
    return predictions


def metrics_from_predictions(path, *, threshold=None, empty="one", bootstrap_resamples=1000, confidence=0.95,
                             seed=0) -> dict:
    """The metrics of ``metrics.json`` recomputed from a ``predictions.npz`` (or its folder) alone, without the model.

    ``threshold`` defaults to the one the file was written with (0.5 if it has none); see ``compute_metrics``.

    Examples::

        metrics = mtunet.metrics_from_predictions("runs/demo/evaluation/test", empty="skip")
    """
    predictions = load_predictions(path)
    if threshold is None:
        threshold = float(predictions.get("threshold", 0.5))
    return compute_metrics(predictions, threshold=threshold, empty=empty,
                           bootstrap_resamples=bootstrap_resamples, confidence=confidence, seed=seed)[0]
