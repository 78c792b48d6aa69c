"""Metrics of the further heads a dataset declares (``columns.json``), each over the examples that have its target:
categorical heads as the class head's (accuracy, balanced accuracy, AUC, F1 ...), ordinal heads as grades (quadratic
weighted kappa, accuracy, sensitivity per grade, the AUC of a referable grade or above), regression heads by MAE,
RMSE, R² and Bland-Altman agreement on the targets' own scale; all with bootstrap intervals."""

import math
import warnings

import numpy as np
from sklearn import metrics as sk_metrics

from mtunet.data.targets import MISSING_CLASS
from mtunet.evaluation import plots
from mtunet.evaluation.metrics import (
    _classification_statistics, _quadratic_kappa, _ratio, _weighted_auc, _weighted_mean, bootstrap_intervals,
    classification_metrics, nest_intervals,
)
from mtunet.evaluation.report import ReportSection

BLAND_ALTMAN_SPREAD = 1.96  # limits of agreement: mean difference +/- 1.96 standard deviations


def target_head_names(predictions: dict) -> list[str]:
    """The further heads in ``predictions`` (those with a ``true_<head>`` array other than the masks)."""
    return [key[len("true_"):] for key in predictions if key.startswith("true_") and key != "true_masks"]


def regression_figures(true, predicted) -> dict:
    """``{"n", "mae", "rmse", "r2", "bland_altman"}`` of one target's present values (scikit-learn's MAE, RMSE and
    R²; Bland-Altman's mean difference predicted - true, its sample standard deviation and limits of agreement)."""
    true, predicted = np.asarray(true, float), np.asarray(predicted, float)
    differences = predicted - true
    n = len(true)
    sd = float(differences.std(ddof=1)) if n > 1 else math.nan
    bias = float(differences.mean()) if n else math.nan
    return {"n": n,
            "mae": float(sk_metrics.mean_absolute_error(true, predicted)) if n else math.nan,
            "rmse": float(sk_metrics.root_mean_squared_error(true, predicted)) if n else math.nan,
            "r2": float(sk_metrics.r2_score(true, predicted)) if n > 1 else math.nan,
            "bland_altman": {"bias": bias, "sd": sd, "lower_limit": bias - BLAND_ALTMAN_SPREAD * sd,
                             "upper_limit": bias + BLAND_ALTMAN_SPREAD * sd}}


def _regression_statistics(true, predicted) -> dict:
    """Bootstrap statistics of ``regression_figures``'s MAE, RMSE, R² and bias: ``{name: function(weights)}``."""
    errors = np.asarray(predicted, float) - np.asarray(true, float)
    true = np.asarray(true, float)

    def r2(weights):
        mean = (weights @ true) / weights.sum(axis=1)
        spread = np.einsum("rn,rn->r", weights, (true[None] - mean[:, None]) ** 2)
        return 1.0 - _ratio(weights @ errors ** 2, spread)

    return {"mae": lambda weights: _weighted_mean(np.abs(errors), weights),
            "rmse": lambda weights: np.sqrt(_weighted_mean(errors ** 2, weights)),
            "r2": r2, "bland_altman/bias": lambda weights: _weighted_mean(errors, weights)}


def referable_grade(num_grades: int) -> int:
    """The index of the lowest referable grade, the default split of ``ordinal_figures``'s referable AUC: the middle
    grade, ``num_grades // 2``. For diabetic retinopathy's 5 grades it is 2 (moderate non-proliferative retinopathy
    or worse: referable DR), for ISUP's 6 grades 3, for 3 grades the second."""
    return num_grades // 2


def ordinal_figures(labels, probabilities, predicted, class_names) -> dict:
    """The figures of an ordinal head: grades ``labels`` (n,) against ``predicted`` (n,), class probabilities
    ``probabilities`` (n, K), grade names ``class_names`` in their order.

    Returns ``qwk`` (scikit-learn's ``cohen_kappa_score(weights="quadratic")``), ``accuracy``, ``sensitivity``
    (``{grade: recall}``, NaN for a grade without an example), ``referable_grade`` (the name of
    ``referable_grade(K)``), ``referable_auc`` (ROC AUC of ``P(y >= referable grade)``, the sum of the class
    probabilities from that grade up, for the images of that grade or above against the others; NaN without both),
    ``confusion_matrix`` (counts, rows true, columns predicted) and ``confusion_matrix_normalized`` (rows divided by
    their totals).
    """
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    indices = np.arange(len(class_names))
    counts = sk_metrics.confusion_matrix(labels, predicted, labels=indices)
    referable = referable_grade(len(class_names))
    positives = labels >= referable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kappa warns when a grade is absent or never predicted
        kappa = sk_metrics.cohen_kappa_score(labels, predicted, labels=indices, weights="quadratic")
    return {"qwk": float(kappa), "accuracy": float(sk_metrics.accuracy_score(labels, predicted)),
            "sensitivity": {name: float(counts[index, index] / counts[index].sum()) if counts[index].sum() else math.nan
                            for index, name in enumerate(class_names)},
            "referable_grade": class_names[referable],
            "referable_auc": float(sk_metrics.roc_auc_score(positives, probabilities[:, referable:].sum(axis=1)))
            if 0 < positives.sum() < len(labels) else math.nan,
            "confusion_matrix": counts.tolist(),
            "confusion_matrix_normalized": (counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)).tolist()}


def _ordinal_statistics(labels, probabilities, predicted, class_names) -> dict:
    """Bootstrap statistics of ``ordinal_figures``'s QWK, accuracy, referable AUC and sensitivities."""
    num_grades = len(class_names)
    pairs = np.zeros((len(labels), num_grades * num_grades))
    pairs[np.arange(len(labels)), labels * num_grades + predicted] = 1
    correct = (labels == predicted).astype(float)
    referable = referable_grade(num_grades)
    statistics = {
        "qwk": lambda weights: _quadratic_kappa((weights @ pairs).reshape(-1, num_grades, num_grades)),
        "accuracy": lambda weights: (weights @ correct) / weights.sum(axis=1),
        "referable_auc": lambda weights: _weighted_auc(labels >= referable,
                                                       probabilities[:, referable:].sum(axis=1), weights)}
    for index, name in enumerate(class_names):
        members = (labels == index).astype(float)
        statistics[f"sensitivity/{name}"] = (
            lambda weights, members=members: _ratio(weights @ (members * correct), weights @ members))
    return statistics


def _intervals(statistics, present, groups, **bootstrap) -> dict:
    chosen = None if groups is None else np.asarray(groups)[present]
    return nest_intervals(bootstrap_intervals(statistics, int(present.sum()), groups=chosen, **bootstrap))


def head_metrics(predictions: dict, *, resamples=1000, confidence=0.95, seed=0) -> dict:
    """``{head: metrics}`` of every further head of ``predictions`` (``predictions.npz``'s arrays).

    A classification or ordinal head has ``<head>_probabilities`` (n, classes), ``<head>_class_names``,
    ``true_<head>`` (n,) class indices (``MISSING_CLASS`` where missing) and, as ``evaluate_run`` writes them,
    ``<head>_predicted`` (n,) the head's decisions, ``<head>_decision`` (that rule, in words) and ``<head>_kind``
    (its target's kind, ``mtunet.data.targets.KINDS``; without it, or without ``<head>_predicted``, the head is
    categorical and decides by the argmax). The metrics of a categorical target are ``classification_metrics``'s,
    those of an ordinal target ``ordinal_figures``'s, over the examples with a label, with ``kind``, ``n``,
    ``missing``, ``class_names`` and ``decision``. A regression head has ``<head>_values`` and ``true_<head>``
    (n, targets), NaN where missing, and ``<head>_columns``; its metrics are ``{"targets": {column:
    regression_figures(...) with "missing"}}``. Each has ``confidence_intervals`` (over patients when
    ``predictions`` has ``groups``), as ``compute_metrics``'s.
    """
    groups = predictions.get("groups")
    bootstrap = {"resamples": resamples, "confidence": confidence, "seed": seed}
    results = {}
    for name in target_head_names(predictions):
        true = np.asarray(predictions[f"true_{name}"])
        if f"{name}_probabilities" in predictions:
            present = true != MISSING_CLASS
            class_names = [str(value) for value in predictions[f"{name}_class_names"]]
            probabilities = np.asarray(predictions[f"{name}_probabilities"], float)
            decided = f"{name}_predicted" in predictions
            predicted = np.asarray(predictions[f"{name}_predicted"]) if decided else probabilities.argmax(axis=1)
            ordinal = decided and str(predictions.get(f"{name}_kind", "")) == "ordinal"
            labels, probabilities, predicted = true[present], probabilities[present], predicted[present]
            figures = {"kind": "ordinal" if ordinal else "classification", "n": int(present.sum()),
                       "missing": int((~present).sum()), "class_names": class_names,
                       "decision": str(predictions[f"{name}_decision"]) if decided else "the class of highest "
                                                                                       "probability"}
            if present.any() and ordinal:
                figures |= ordinal_figures(labels, probabilities, predicted, class_names)
                figures["confidence_intervals"] = _intervals(
                    _ordinal_statistics(labels, probabilities, predicted, class_names), present, groups, **bootstrap)
            elif present.any():
                figures |= classification_metrics(labels, probabilities, class_names)
                figures["confidence_intervals"] = _intervals(
                    _classification_statistics(labels, probabilities, class_names), present, groups, **bootstrap)
            results[name] = figures
            continue
        values = np.asarray(predictions[f"{name}_values"], float)
        targets = {}
        for index, column in enumerate(str(value) for value in predictions[f"{name}_columns"]):
            present = ~np.isnan(true[:, index])
            figures = regression_figures(true[present, index], values[present, index])
            figures["missing"] = int((~present).sum())
            if present.sum() > 1:
                figures["confidence_intervals"] = _intervals(
                    _regression_statistics(true[present, index], values[present, index]), present, groups,
                    **bootstrap)
            targets[column] = figures
        results[name] = {"kind": "regression", "targets": targets}
    return results


def head_sections(predictions: dict, heads: dict) -> list:
    """A ``ReportSection`` per further head of ``heads`` (``head_metrics``'s result): its headline figures with
    their intervals, and its confusion matrix or regression plots."""
    sections = []
    for name, figures in heads.items():
        true = np.asarray(predictions[f"true_{name}"])
        if figures["kind"] == "ordinal":
            shown = {key: figures.get(key) for key in ("n", "missing", "decision", "qwk", "accuracy",
                                                        "referable_grade", "referable_auc", "sensitivity")}
            shown["95% interval"] = {key: figures.get("confidence_intervals", {}).get(key)
                                     for key in ("qwk", "accuracy", "referable_auc")}
            pngs = {} if not figures["n"] else {"confusion matrix": plots.figure_png(plots.confusion_matrix_figure(
                figures["confusion_matrix"], figures["confusion_matrix_normalized"], figures["class_names"]))}
            referable = figures["class_names"][referable_grade(len(figures["class_names"]))]
            text = (f"Ordinal head {name}: {figures['n']} evaluated images with a grade, {figures['missing']} "
                    f"without (left out). The predicted grade is {figures['decision']}; qwk is the quadratic "
                    f"weighted kappa, referable_auc the ROC AUC of the probability of grade {referable} or above "
                    "against the grades below.")
        elif figures["kind"] == "classification":
            shown = {key: figures.get(key) for key in ("n", "missing", "accuracy", "balanced_accuracy", "auc",
                                                        "macro_f1", "quadratic_weighted_kappa")}
            shown["95% interval"] = {key: figures.get("confidence_intervals", {}).get(key)
                                     for key in ("accuracy", "balanced_accuracy", "auc", "macro_f1")}
            pngs = {} if not figures["n"] else {"confusion matrix": plots.figure_png(plots.confusion_matrix_figure(
                figures["confusion_matrix"], figures["confusion_matrix_normalized"], figures["class_names"]))}
            text = (f"Classification head {name}: {figures['n']} evaluated images with a label, {figures['missing']} "
                    "without (left out).")
        else:
            shown, pngs = {}, {}
            values = np.asarray(predictions[f"{name}_values"], float)
            for index, (column, target) in enumerate(figures["targets"].items()):
                shown[column] = {key: target[key] for key in ("n", "missing", "mae", "rmse", "r2")}
                shown[column]["bland_altman"] = target["bland_altman"]
                shown[column]["95% interval"] = {key: target.get("confidence_intervals", {}).get(key)
                                                 for key in ("mae", "rmse", "r2")}
                present = ~np.isnan(true[:, index])
                if present.sum() > 1:
                    pngs[f"{column}: predicted against true, and Bland-Altman"] = plots.figure_png(
                        plots.regression_figure(true[present, index], values[present, index], target, column))
            text = (f"Regression head {name}: each target over the evaluated images that have it, on its own scale; "
                    "Bland-Altman limits of agreement are the mean difference +/- 1.96 standard deviations.")
        sections.append(ReportSection(key=f"head_{name}", title=f"Head {name}", metrics=_interval_text(shown),
                                      text=text, figures=pngs))
    return sections


def _interval_text(values: dict) -> dict:
    """``values`` with each bootstrap interval ``{"low", "high", ...}`` as the text ``[low, high]``."""
    shown = {}
    for key, value in values.items():
        if isinstance(value, dict) and "low" in value:
            value = f"[{value['low']:.3f}, {value['high']:.3f}]"
        elif isinstance(value, dict):
            value = _interval_text(value)
        shown[key] = value
    return shown
