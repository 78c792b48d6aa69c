"""``report.html``: one self-contained page (images embedded as base64 PNG) with an evaluation's run configuration,
metric tables, plots and gallery, readable without a server."""

import base64
import dataclasses
import html
import math

import pandas as pd

# figure name -> its caption in the report
FIGURES = {
    "confusion_matrix": "Confusion matrix: each cell's count and its share of the true class",
    "roc": "ROC curves, in class order, chance last",
    "reliability": "Reliability diagram: how far the class probabilities can be trusted",
    "dice_histogram": "Dice per image",
    "training_curves": "Training curves of the run; the dotted line marks the kept epoch (lowest validation loss)",
    "gallery": "Best and worst cases by Dice (or by the true class's probability)",
}

# metrics.json and config.json keys -> the words the report shows instead (others: underscores become spaces)
LABELS = {
    "mass_in_lesion": "Grad-CAM mass inside the true lesion (mean)",
    "pointing_game_hit_rate": "pointing game hit rate (heatmap maximum inside the lesion)",
    "pointing_game_chance": "pointing game chance level (mean lesion area)",
    "images_scored": "images scored", "data_dir": "data folder", "output_dir": "output folder",
    "seg_loss": "segmentation loss", "dice": "Dice term computed over",
    "loss_weights": "loss weights (segmentation, classification; or per head)",
    "class_weights": "class weights", "ema_momentum": "EMA momentum of the weights",
    "precise_bn": "precise batch-norm statistics", "jit_compile": "XLA compilation",
    "mixed_precision": "mixed precision", "reduce_lr_patience": "learning-rate reduction patience",
    "patience": "early-stopping patience", "unfreeze_after": "unfreeze the encoder after epoch",
    "split_seed": "split seed", "num_folds": "folds", "skip_connections": "skip connections",
    "skip_bad_files": "skip unreadable files", "freeze_encoder": "freeze the encoder",
    "allow_missing": "targets some images lack", "splits_file": "splits read from",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .9em; }
th, td { border: 1px solid #bbb; padding: .25em .6em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #555; } .note { color: #444; font-size: .95em; }
"""


@dataclasses.dataclass
class ReportSection:
    """An extra section of ``metrics.json`` and ``report.html``, such as Grad-CAM's localisation scores.

    Attributes:
        key: its key in ``metrics.json`` (e.g. ``"gradcam"``); must not be one of the evaluation's own keys.
        title: its heading in the report.
        metrics: JSON-serialisable values, shown as a table (nested dicts are flattened to ``a / b`` rows).
        text: a paragraph of plain text above the table.
        figures: ``{caption: PNG bytes}``, embedded below the table.
    """

    key: str
    title: str
    metrics: dict
    text: str = ""
    figures: dict = dataclasses.field(default_factory=dict)


def _number(value, decimals: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return str(value)


def _table(frame: pd.DataFrame, index=True) -> str:
    return frame.to_html(index=index, na_rep="n/a", float_format=lambda value: f"{value:.4f}", border=0)


def _flatten(values: dict, prefix="") -> dict:
    rows = {}
    for key, value in values.items():
        if isinstance(value, dict):
            rows.update(_flatten(value, f"{prefix}{key} / "))
        else:
            rows[f"{prefix}{key}"] = value
    return rows


def label(key: str) -> str:
    """The words the report shows for a metrics.json or config key."""
    return LABELS.get(key, key.replace("_", " "))


def _key_value_table(values: dict) -> str:
    """A name/value table with readable names; None and NaN (an undefined metric) show as n/a."""
    rows = "".join(f"<tr><td>{html.escape(' / '.join(label(part) for part in key.split(' / ')))}</td>"
                   f"<td>{html.escape(_number(value))}</td></tr>" for key, value in _flatten(values).items())
    return f"<table><tr><th>name</th><th>value</th></tr>{rows}</table>"


def _figure(figures: dict, name: str) -> str:
    """The figure ``name`` of ``figures`` with its caption from ``FIGURES``; empty when it was not drawn."""
    return _image(figures[name], FIGURES[name]) if name in figures else ""


def _image(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _interval(interval) -> str:
    """``[low, high]`` of a bootstrap interval, 3 decimals as ``mtunet evaluate`` prints it; empty without one."""
    if not interval:
        return ""
    return f"[{_number(interval['low'], 3)}, {_number(interval['high'], 3)}]"


def _interval_note(metrics: dict) -> str:
    """How the intervals were computed, in words."""
    intervals = metrics.get("confidence_intervals")
    if not intervals:
        return ""
    return (f"<p class='note'>{intervals.get('confidence', 0.95):.0%} confidence intervals: "
            f"{html.escape(str(intervals.get('method', 'percentile bootstrap')))}; "
            f"{intervals.get('resamples')} resamples, seed {intervals.get('seed')}.</p>")


def _summary_table(metrics: dict) -> str:
    """Headline metrics with their 95% bootstrap intervals."""
    intervals = metrics.get("confidence_intervals", {})
    auc_label = ("ROC AUC" if len(metrics.get("class_names", ())) <= 2
                 else "ROC AUC, macro mean of the one-vs-rest AUCs")
    names = [("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("auc", auc_label),
             ("macro_f1", "macro F1"), ("weighted_f1", "weighted F1"),
             ("quadratic_weighted_kappa", "quadratic-weighted kappa"), ("dice_mean", "Dice, mean per image"),
             ("dice_std", "Dice, standard deviation"), ("dice_median", "Dice, median"),
             ("dice_pooled", "Dice, pooled over all pixels"), ("iou_mean", "IoU, mean per image"),
             ("iou_median", "IoU, median"), ("iou_pooled", "IoU, pooled over all pixels"),
             ("thresholded_jaccard", "thresholded Jaccard (ISIC, 0 below 0.65)"),
             ("pixel_sensitivity", "pixel sensitivity"), ("pixel_specificity", "pixel specificity"),
             ("aupr_mean", "AUPR, pixel-level average precision")]
    level = f"{intervals.get('confidence', 0.95):.0%} CI"
    # a multi-class mask's headline segmentation numbers are macro means over its classes (evaluation.MACRO_KEYS)
    macro = {"dice_mean", "dice_median", "dice_pooled", "iou_mean", "iou_median", "iou_pooled",
             "thresholded_jaccard", "pixel_sensitivity", "pixel_specificity"} if "mask_classes" in metrics else set()
    # a multi-label mask's are macro means over its lesion types
    by_label = {"dice_mean", "dice_median", "dice_pooled", "iou_mean", "iou_median", "iou_pooled",
                "aupr_mean"} if "mask_labels" in metrics else set()
    rows = []
    for key, label in names:
        if key not in metrics:
            continue
        if key in macro:
            label += ", macro mean over foreground classes"
        if key in by_label:
            label += ", macro mean over lesion types"
        rows.append({"metric": label, "value": metrics[key], level: _interval(intervals.get(key))})
    return _table(pd.DataFrame(rows), index=False) + _interval_note(metrics)


def _classification(metrics: dict, figures: dict) -> str:
    names = metrics["class_names"]
    # undefined metrics are None in metrics.json: as floats they are NaN, shown as n/a
    columns = {"precision": "precision (PPV)", "recall": "recall (sensitivity)", "specificity": "specificity",
               "npv": "NPV", "f1": "F1", "auc": "AUC (one vs rest)"}
    intervals = metrics.get("confidence_intervals", {}).get("per_class", {})
    rows = []
    for name in names:
        values = metrics["per_class"][name]
        row = {"class": name, "support": int(values["support"])}
        for key, heading in columns.items():
            interval = intervals.get(name, {}).get(key)
            row[heading] = f"{_number(values.get(key), 3)} {_interval(interval)}".strip()
        rows.append(row)
    per_class = pd.DataFrame(rows).set_index("class")
    micro = pd.DataFrame([metrics["micro_average"]], index=["micro average"]).astype(float)
    level = f"{metrics.get('confidence_intervals', {}).get('confidence', 0.95):.0%}"
    parts = [f"<h3>Per class (value and {level} interval)</h3>", _table(per_class),
             "<h3>Micro average over the one-vs-rest decisions</h3>", _table(micro),
             _figure(figures, "confusion_matrix"), _figure(figures, "roc")]
    calibration = metrics.get("calibration")
    if calibration:
        table = pd.DataFrame({name: {"Brier score": values["brier"],
                                     "expected calibration error": values["expected_calibration_error"]}
                              for name, values in calibration["per_class"].items()}).T
        parts += [f"<h3>Calibration</h3><p class='note'>Decision: {html.escape(calibration['decision'])}. "
                  f"Brier score over all classes {_number(calibration['brier_score'])} (0 is perfect); "
                  f"expected calibration error over {calibration['bins']} equal-width bins.</p>", _table(table),
                  _figure(figures, "reliability")]
    return "".join(parts)


# column of mask_per_class -> its heading in the per-class table of a multi-class mask
MASK_CLASS_COLUMNS = {"dice_mean": "Dice mean", "dice_median": "Dice median", "iou_mean": "IoU mean",
                      "iou_median": "IoU median", "dice_pooled": "Dice pooled", "iou_pooled": "IoU pooled",
                      "thresholded_jaccard": "thresholded Jaccard", "pixel_sensitivity": "pixel sensitivity",
                      "pixel_specificity": "pixel specificity", "pixels_true": "true pixels",
                      "pixels_predicted": "predicted pixels", "images_with_class": "images with the class",
                      "images_scored": "images scored"}
MASK_COUNT_COLUMNS = ("pixels_true", "pixels_predicted", "images_with_class", "images_scored")


def _mask_classes(metrics: dict) -> str:
    """The per-class table and pixel confusion matrix of a multi-class mask."""
    names = metrics["mask_classes"]
    per_class = pd.DataFrame(metrics["mask_per_class"]).T.astype(float)[list(MASK_CLASS_COLUMNS)]
    macro = pd.DataFrame([{key: metrics.get(key) for key in MASK_CLASS_COLUMNS if key not in MASK_COUNT_COLUMNS}],
                         index=["macro mean"]).astype(float)
    table = pd.concat([per_class, macro])
    for column in MASK_COUNT_COLUMNS:  # counts as integers; the macro row has none
        table[column] = ["" if math.isnan(value) else str(int(value)) for value in table[column]]
    intervals = metrics.get("confidence_intervals", {})
    for key in ("dice_mean", "iou_mean"):
        table[f"{key}_interval"] = [_interval(intervals.get("mask_per_class", {}).get(name, {}).get(key))
                                    for name in names] + [_interval(intervals.get(key))]
    level = f"{intervals.get('confidence', 0.95):.0%} CI"
    table = table.rename(columns={**MASK_CLASS_COLUMNS, "dice_mean_interval": f"Dice mean {level}",
                                  "iou_mean_interval": f"IoU mean {level}"}).rename_axis("class").reset_index()
    labels = ["background", *names]
    counts = pd.DataFrame(metrics["mask_confusion_matrix"], index=[f"true {name}" for name in labels],
                          columns=[f"predicted {name}" for name in labels])
    note = (f"<p class='note'>Each pixel's class is the {html.escape(metrics.get('mask_decision', 'argmax'))}. "
            "Dice and IoU are computed per image and class; a class's mean and median are over images, and the "
            "headline Dice and IoU (the last row) are the <b>macro mean over the foreground classes</b> of the "
            "classes' values, background excluded. Pooled values and pixel sensitivity and specificity count all "
            "pixels of all images, one class against the rest.</p>")
    return (note + "<h3>Per mask class</h3>" + _table(table, index=False)
            + "<h3>Pixel confusion matrix (counts, rows true, columns predicted)</h3>" + _table(counts))


# column of mask_per_label -> its heading in the per-lesion-type table of a multi-label mask
MASK_LABEL_COLUMNS = {"images": "images with its mask", "dice_mean": "Dice mean", "dice_median": "Dice median",
                      "iou_mean": "IoU mean", "dice_pooled": "Dice pooled", "iou_pooled": "IoU pooled",
                      "aupr": "AUPR", "pixels_true": "true pixels", "pixels_predicted": "predicted pixels"}
MASK_LABEL_COUNTS = ("images", "pixels_true", "pixels_predicted")


def _mask_labels(metrics: dict) -> str:
    """The per-lesion-type table of a multi-label mask, with the macro means over the lesion types."""
    names = metrics["mask_labels"]
    table = pd.DataFrame(metrics["mask_per_label"]).T.astype(float)[list(MASK_LABEL_COLUMNS)]
    macro = {key: metrics.get(key) for key in MASK_LABEL_COLUMNS if key not in MASK_LABEL_COUNTS}
    table = pd.concat([table, pd.DataFrame([{**macro, "aupr": metrics["aupr_mean"]}], index=["macro mean"])
                       .astype(float)])
    for column in MASK_LABEL_COUNTS:  # counts as integers; the macro row has none
        table[column] = ["" if math.isnan(value) else str(int(value)) for value in table[column]]
    intervals = metrics.get("confidence_intervals", {})
    level = f"{intervals.get('confidence', 0.95):.0%} CI"
    table[f"Dice mean {level}"] = [_interval(intervals.get("mask_per_label", {}).get(name, {}).get("dice_mean"))
                                   for name in names] + [_interval(intervals.get("dice_mean"))]
    table = table.rename(columns=MASK_LABEL_COLUMNS).rename_axis("lesion type").reset_index()
    note = (f"<p class='note'>One sigmoid channel per lesion type, each thresholded at {metrics['threshold']:g}. "
            "A lesion type's Dice and IoU mean and median are over the images that have its mask; the pooled values "
            "count all their pixels; AUPR is the pixel-level average precision (area under the precision-recall "
            f"curve; {html.escape(metrics['aupr_sampling'])}). The headline values (the last row) are the <b>macro "
            "mean over the lesion types</b>.</p>")
    return note + "<h3>Per lesion type</h3>" + _table(table, index=False)


def _segmentation(metrics: dict, figures: dict) -> str:
    multiclass, multilabel = "mask_per_class" in metrics, "mask_per_label" in metrics
    # a multi-label mask's threshold is in its per-lesion-type note
    decision = "" if multiclass or multilabel else f"Mask threshold {metrics['threshold']:g}. "
    if multilabel:
        counts = (f"{metrics['pairs_both_empty']} (image, lesion type) pair(s) had both masks empty; "
                  f"{metrics['images_scored']} of {metrics['n_images']} images have a defined Dice of some lesion type")
    else:
        scored = ("have a defined Dice of some class" if multiclass else "are in the per-image Dice and IoU")
        empty = "all background in both maps" if multiclass else "both masks empty"
        counts = (f"{metrics['images_both_empty']} image(s) had {empty}; {metrics['images_scored']} of "
                  f"{metrics['n_images']} images {scored}")
    rule = (f"<p class='note'>{decision}Empty-mask rule <b>{html.escape(metrics['empty_mask_rule'])}</b>: "
            f"{html.escape(metrics['empty_mask_rule_description'])}. {counts}.</p>")
    per_class = pd.DataFrame(metrics.get("dice_per_class", {})).T.astype(float)
    if len(per_class):
        per_class["n"] = per_class["n"].astype(int)
        intervals = metrics.get("confidence_intervals", {})
        per_class[f"mean, {intervals.get('confidence', 0.95):.0%} CI"] = [
            _interval(intervals.get("dice_per_class", {}).get(name, {}).get("mean")) for name in per_class.index]
    heading = ("Dice per class of the label (mean over the mask classes of each image's Dice)" if multiclass
               else "Dice per class of the label (mean over the lesion types of each image's Dice)" if multilabel
               else "Dice per class of the label")
    return (rule + (_mask_classes(metrics) if multiclass else _mask_labels(metrics) if multilabel else "")
            + (f"<h3>{heading}</h3>" + _table(per_class) if len(per_class) else "")
            + _figure(figures, "dice_histogram"))


def _model_description(model: dict) -> str:
    """``unet, mobilenetv2 encoder, 128 px`` from config.json's model spec; empty without one."""
    if not model:
        return ""
    return (f"{model.get('preset') or 'custom model'}, {model['encoder']} encoder"
            + (f", {model['decoder']} decoder" if model.get("decoder") not in (None, model.get("preset")) else "")
            + (f", {model['skip']} skips" if model.get("skip", "identity") != "identity" else "")
            + f", {model['input_shape'][0]} px")


def _data_splits(splits: dict) -> str:
    """Images, patients and images per class of every split, the evaluated one marked."""
    rows = []
    for name, values in splits["splits"].items():
        row = {"split": name + (" (evaluated)" if name in splits["evaluated"] else ""), "images": values["images"],
               "patients": "n/a" if values["patients"] is None else values["patients"]}
        rows.append({**row, **values["classes"]})
    grouping = {"patient": "no patient is in two splits", "example": "the data names no patients: each image is its "
                "own", "published": "the dataset's published splits"}.get(splits["grouping"], splits["grouping"])
    return (_table(pd.DataFrame(rows), index=False)
            + f"<p class='note'>Split by {html.escape(str(splits['grouping']))}: {html.escape(grouping)}.</p>")


# options whose None is a choice, not "unset": what it means
NONE_MEANS = {"weights": "none (trained from scratch)"}


def _configuration(options: dict) -> str:
    """The options that are set, and the names of those left unset (None: the default applies)."""
    shown = {key: NONE_MEANS[key] if value is None and key in NONE_MEANS else value for key, value in options.items()}
    unset = [label(key) for key, value in shown.items() if value is None]
    note = f"<p class='note'>Not set (the model's or dataset's default applies): {html.escape(', '.join(unset))}.</p>"
    return _key_value_table({key: value for key, value in shown.items() if value is not None}) + (
        note if unset else "")


def render_report(*, metrics: dict, run: dict, config: dict, figures: dict, sections=()) -> str:
    """The HTML of ``report.html``.

    Args:
        metrics: the content of ``metrics.json`` (``mtunet.evaluation.metrics.compute_metrics`` plus run facts;
            ``data_splits``, when present, is shown first).
        run: facts shown at the top, ``{key: value}`` (``run``, ``model``, ``dataset``, ``split``, ``date``, ...);
            None values are left out.
        config: the run's ``config.json`` (its ``model`` titles the page, its ``options`` and ``versions`` are
            tabulated).
        figures: ``{name: PNG bytes}`` with names from ``FIGURES``.
        sections: ``ReportSection``s appended after the gallery (e.g. Grad-CAM).
    """
    title = " · ".join(str(part) for part in (run.get("dataset"), _model_description(config.get("model", {})),
                                              run.get("split") and f"{run['split']} split", run.get("date"))
                       if part) or "Evaluation"
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p class='note'>Run {html.escape(str(run.get('run', '')))}</p>",
             _key_value_table({key: value for key, value in run.items() if value is not None})]
    if "data_splits" in metrics:
        parts += ["<h2>Data</h2>", _data_splits(metrics["data_splits"])]
    parts += ["<h2>Summary</h2>", _summary_table(metrics)]
    if "per_class" in metrics:
        parts += ["<h2>Classification</h2>", _classification(metrics, figures)]
    if "dice_mean" in metrics:
        parts += ["<h2>Segmentation</h2>", _segmentation(metrics, figures)]
    for heading, name in (("Training", "training_curves"), ("Best and worst cases", "gallery")):
        if name in figures:
            parts += [f"<h2>{heading}</h2>", _figure(figures, name)]
    for section in sections:
        parts += [f"<h2>{html.escape(section.title)}</h2>",
                  f"<p class='note'>{html.escape(section.text)}</p>" if section.text else "",
                  _key_value_table(section.metrics),
                  *(_image(png, caption) for caption, png in section.figures.items())]
    parts += ["<h2>Run configuration</h2>", _configuration(config.get("options", {})),
              "<h3>Versions</h3>", _key_value_table(config.get("versions", {}))]
    body = "\n".join(part for part in parts if part)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
