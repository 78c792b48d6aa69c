"""Evaluation of a trained run on a split it never trained on, from saved predictions (numpy and scikit-learn)."""

import pathlib

import numpy as np
from sklearn import metrics as sk_metrics

from mtunet.errors import ConfigError

EMPTY_MASK_RULES = ("one", "exclude")
ISIC_JACCARD_THRESHOLD = 0.65


def overlap_per_image(true_masks, predicted_masks, empty="one"):
    """Dice and IoU of each image's binary masks, ``(n, H, W[, 1])`` each.

    ``empty`` decides images whose true and predicted masks are both empty: ``"one"`` counts them as perfect (1),
    ``"exclude"`` returns NaN for them (nnU-Net's rule), to be left out of means.
    """
    if empty not in EMPTY_MASK_RULES:
        raise ConfigError(f"unknown empty-mask rule {empty!r}; expected one of: {', '.join(EMPTY_MASK_RULES)}")
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


def thresholded_jaccard(iou):
    """The ISIC 2018 challenge score: per-image Jaccard, counted as 0 below 0.65, averaged."""
    iou = np.asarray(iou, float)
    iou = iou[~np.isnan(iou)]
    return float(np.mean(np.where(iou < ISIC_JACCARD_THRESHOLD, 0.0, iou)))


def classification_metrics(labels, probabilities, class_names):
    """Accuracy, balanced accuracy, ROC AUC (binary, or macro one-vs-rest) and per-class tables."""
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    present = np.unique(labels)
    if len(present) < 2:
        auc = float("nan")
    elif probabilities.shape[1] == 2:
        auc = sk_metrics.roc_auc_score(labels, probabilities[:, 1])
    else:
        auc = sk_metrics.roc_auc_score(labels, probabilities, multi_class="ovr", average="macro",
                                       labels=list(range(probabilities.shape[1])))
    indices = list(range(len(class_names)))
    report = sk_metrics.classification_report(labels, predicted, labels=indices, target_names=list(class_names),
                                              output_dict=True, zero_division=0)
    return {
        "accuracy": float(sk_metrics.accuracy_score(labels, predicted)),
        "balanced_accuracy": float(sk_metrics.balanced_accuracy_score(labels, predicted)),
        "auc": float(auc),
        "per_class": {name: report[name] for name in class_names},
        "macro_f1": report["macro avg"]["f1-score"],
        "weighted_f1": report["weighted avg"]["f1-score"],
        "confusion_matrix": sk_metrics.confusion_matrix(labels, predicted, labels=indices).tolist(),
    }


def segmentation_metrics(true_masks, mask_probabilities, threshold=0.5, empty="one"):
    """Per-image Dice and IoU (mean, std, median) and the ISIC thresholded Jaccard of the thresholded masks."""
    dice, iou = overlap_per_image(np.asarray(true_masks) > 0.5, np.asarray(mask_probabilities) > threshold, empty)
    return {
        "dice_mean": float(np.nanmean(dice)), "dice_std": float(np.nanstd(dice)),
        "dice_median": float(np.nanmedian(dice)),
        "iou_mean": float(np.nanmean(iou)), "iou_std": float(np.nanstd(iou)), "iou_median": float(np.nanmedian(iou)),
        "thresholded_jaccard": thresholded_jaccard(iou),
        "empty_mask_rule": empty, "threshold": threshold,
        "dice_per_image": dice.tolist(),
    }


def evaluate_run(run_dir, *, split="test", threshold=0.5, empty="one", output_dir=None, batch_size=32) -> dict:
    """Predicts ``split`` of the run's dataset with its best model and writes predictions.npz and metrics.json.

    The split is the one in the run's splits.json, so the test set is exactly the one training never saw.
    Returns the metrics; the output folder defaults to ``RUN_DIR/evaluation/<split>/``.
    """
    from mtunet.data import load_dataset
    from mtunet.model import load_model
    from mtunet.training import BEST_MODEL_FILE, SPLITS_FILE, load_config, write_atomically, write_json

    run_dir = pathlib.Path(run_dir)
    config = load_config(run_dir)
    model_path = run_dir / BEST_MODEL_FILE
    if not model_path.is_file():
        raise ConfigError(f"run {run_dir} has no {BEST_MODEL_FILE}: it never finished an epoch")
    data = load_dataset(config.dataset, data_dir=config.data_dir, image_size=config.image_size, seed=config.seed,
                        splits_path=run_dir / SPLITS_FILE)
    if split not in data.splits:
        raise ConfigError(f"unknown split {split!r}; expected one of: {', '.join(data.splits)}")
    model = load_model(model_path)
    true_masks, outputs = [], {name: [] for name in model.output_names}
    for images, targets in data.pipeline(split, batch_size=batch_size, training=False):
        true_masks.append(targets["mask"].numpy())
        for name, values in model.predict_on_batch(images).items():
            outputs[name].append(np.asarray(values))
    outputs = {name: np.concatenate(values) for name, values in outputs.items()}
    labels = data.labels(split)
    results = {"split": split, "n_images": int(len(labels)), "run": str(run_dir)}
    if "label" in outputs:
        results.update(classification_metrics(labels, outputs["label"], data.info.class_names))
    if "mask" in outputs:
        results.update(segmentation_metrics(np.concatenate(true_masks), outputs["mask"], threshold, empty))

    output_dir = pathlib.Path(output_dir) if output_dir else run_dir / "evaluation" / split
    output_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"ids": np.asarray(data.ids(split), str), "labels": labels,
              **{f"{name}_probabilities": values for name, values in outputs.items()}}
    write_atomically(output_dir / "predictions.npz", lambda temporary: np.savez_compressed(temporary, **arrays))
    write_json(output_dir / "metrics.json", results)
    return results
