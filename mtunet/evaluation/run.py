"""``evaluate_run``: predict a split with a run's model, then write predictions, metrics, plots and report.html."""

import dataclasses
import datetime
import json
import math
import pathlib
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from mtunet.data import load_dataset
from mtunet.data.images import BINARY_MASK_CLASSES, served_channels_present, served_mask_present
from mtunet.data.splits import SPLIT_NAMES
from mtunet.data.targets import MISSING_CLASS
from mtunet.errors import ConfigError
from mtunet.evaluation import plots
from mtunet.evaluation.heads import head_sections
from mtunet.evaluation.metrics import (
    PREDICTIONS_FILE, channels_present, check_empty_rule, compute_metrics, masks_present, overlap_per_label,
    save_predictions,
)
from mtunet.evaluation.report import ReportSection, render_report
from mtunet.explain.gradcam import gradcam_section
from mtunet.models import load_model, model_heads, model_spec
from mtunet.rundir import (
    BEST_MODEL_FILE, CONFIG_FILE, HISTORY_FILE, SPLITS_FILE, read_history, write_atomically, write_json,
)
from mtunet.training.config import load_config

ALL_SPLITS = "all"
METRICS_FILE, PER_IMAGE_FILE, REPORT_FILE = "metrics.json", "per_image.csv", "report.html"


@dataclasses.dataclass
class EvaluationContext:
    """What a report-section builder (``evaluate_run(sections=...)``, e.g. Grad-CAM's) is given.

    Attributes:
        model: the evaluated Keras model.
        predictions: the arrays of ``predictions.npz`` (see ``mtunet.evaluation.metrics.compute_metrics``).
        metrics: the metrics computed so far.
        batches: ``batches()`` iterates ``(images, {"label", "mask"})`` batches of the evaluated examples, in the
            order of ``predictions["ids"]``.
        output_dir: the evaluation folder, for files the section writes.
    """

    model: object
    predictions: dict
    metrics: dict
    batches: Callable[[], Iterable]
    output_dir: pathlib.Path


def _json_safe(value):
    """NaN (an undefined metric) as JSON null; numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def _load_run(run_dir: pathlib.Path, model_path):
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist; expected the folder `mtunet train` wrote")
    options = load_config(run_dir)
    record = json.loads((run_dir / CONFIG_FILE).read_text())
    model_path = pathlib.Path(model_path) if model_path else run_dir / BEST_MODEL_FILE
    if not model_path.is_file():
        raise ConfigError(f"model {model_path} not found" + (": the run never finished an epoch"
                                                              if model_path.name == BEST_MODEL_FILE else ""))
    return options, record, load_model(model_path), model_path


def _check_compatible(model, model_path, data, run_classes, source):
    """``ConfigError`` unless the model's heads and input channels fit the dataset."""
    further = {head.name: head for head in data.info.target_heads}
    for head in model_heads(model).values():
        if head.target == "label":
            names = list(data.info.class_names)
            if names != list(run_classes):
                raise ConfigError(f"{source} has the classes {names}, but the model was trained on "
                                  f"{list(run_classes)}; expected the same class names in the same order")
            if head.num_classes != len(names):
                raise ConfigError(f"model {model_path} predicts {head.num_classes} classes, but {source} has "
                                  f"{len(names)} ({names})")
        elif head.target == "mask":
            model_classes = tuple(getattr(head, "mask_classes", BINARY_MASK_CLASSES))
            if (len(model_classes) != len(data.info.mask_classes)
                    or (head.type == "multilabel_mask") != data.info.multilabel_masks):
                kinds = {True: "multi-label ", False: ""}
                raise ConfigError(f"model {model_path} predicts the {kinds[head.type == 'multilabel_mask']}mask "
                                  f"classes {list(model_classes)}, but {source} has the "
                                  f"{kinds[data.info.multilabel_masks]}mask classes {list(data.info.mask_classes)}")
        else:
            target = further.get(head.target)
            declared = None if target is None else target.columns if target.continuous else len(target.class_names)
            if declared != (head.targets if head.type == "regression" else head.num_classes):
                raise ConfigError(f"model {model_path} has the head {head.name!r}, which {source} does not declare "
                                  f"alike in its columns.json (it declares: {', '.join(further) or 'no head'})")
    channels = model.input_shape[-1]
    if channels != data.info.channels:
        raise ConfigError(f"model {model_path} takes {channels}-channel images, but {source} serves "
                          f"{data.info.channels}-channel images")


def _predict(model, batches, mask_classes, target_heads=()):
    """The model's outputs and the true masks, concatenated over ``batches``: ``label_probabilities`` and, for a
    binary mask, ``mask_probabilities`` ``(n, H, W)`` and boolean ``true_masks``; for a multi-class mask,
    ``mask_probabilities`` ``(n, H, W, K + 1)``, ``true_masks`` class maps and ``mask_classes``; for a multi-label
    mask, ``mask_probabilities`` and boolean ``true_masks`` ``(n, H, W, L)``, ``mask_labels`` and
    ``mask_channels_present`` ``(n, L)`` (a missing channel's true mask is empty). Each further head
    of ``target_heads`` the model has adds the arrays ``mtunet.evaluation.heads.head_metrics`` reads. Where some
    images have no true mask, ``mask_present`` says which (their ``true_masks`` are empty)."""
    heads = model_heads(model)
    further = [head for head in target_heads if head.name in heads]
    outputs, true_masks = {name: [] for name in heads}, []
    truths = {head.name: [] for head in further}
    for images, targets in batches:
        true_masks.append(targets["mask"].numpy())
        for head in further:
            truths[head.name].append(targets[head.name].numpy())
        for name, values in model.predict_on_batch(images).items():
            outputs[name].append(np.asarray(values, np.float32))
    predictions = {f"{name}_probabilities": np.concatenate(values) for name, values in outputs.items()}
    for head in further:
        truth = np.concatenate(truths[head.name])
        if head.continuous:
            predictions[f"{head.name}_values"] = predictions.pop(f"{head.name}_probabilities")
            predictions[f"true_{head.name}"], predictions[f"{head.name}_columns"] = truth, np.asarray(head.columns)
        else:  # the pipeline's one-hot rows back to class indices, all-zero rows (missing) to MISSING_CLASS
            predictions[f"true_{head.name}"] = np.where(truth.any(axis=1), truth.argmax(axis=1), MISSING_CLASS)
            predictions[f"{head.name}_class_names"] = np.asarray(head.class_names)
            # the head's own decision (an ordinal head's differs from the argmax) and the target's kind
            predictions[f"{head.name}_predicted"] = heads[head.name].predict_numpy(
                predictions[f"{head.name}_probabilities"]).astype(np.int64)
            predictions[f"{head.name}_decision"] = np.asarray(heads[head.name].decision)
            predictions[f"{head.name}_kind"] = np.asarray(head.kind)
    mask_head = heads.get("mask")
    true_masks = np.concatenate(true_masks)
    present = served_mask_present(true_masks)
    if mask_head is not None and mask_head.type == "multilabel_mask":
        predictions["mask_channels_present"] = served_channels_present(true_masks)
        predictions["mask_labels"] = np.asarray(mask_classes, dtype=str)
    else:
        true_masks = true_masks[..., 0]
    if mask_head is not None and not present.all():
        predictions["mask_present"] = present
    true_masks = np.maximum(true_masks, 0)
    if mask_head is not None and mask_head.type == "multilabel_mask":
        predictions["true_masks"] = true_masks > 0.5
    elif mask_head is not None and mask_head.type == "multiclass_mask":
        predictions["true_masks"] = np.rint(true_masks).astype(np.uint8)
        predictions["mask_classes"] = np.asarray(mask_classes, dtype=str)
    elif mask_head is not None:
        predictions["mask_probabilities"] = predictions["mask_probabilities"][..., 0]
        predictions["true_masks"] = true_masks > 0.5
    return predictions


def _label_as_grades(predictions, head) -> dict:
    """The arrays with which ``head_metrics`` evaluates an ordinal class label as grades, as it does an ordinal
    further head (``heads["label"]`` in metrics.json): by the head's own decision (``head``'s ``predict_numpy``)."""
    return {"true_label": predictions["labels"], "label_class_names": predictions["class_names"],
            "label_predicted": head.predict_numpy(predictions["label_probabilities"]).astype(np.int64),
            "label_decision": np.asarray(head.decision), "label_kind": np.asarray("ordinal")}


def _predicted_masks(predictions) -> np.ndarray:
    """The predicted masks: thresholded probabilities (of each lesion type of a multi-label mask), or the argmax
    class maps of a multi-class mask."""
    if "mask_classes" in predictions:
        return predictions["mask_probabilities"].argmax(axis=-1)
    return predictions["mask_probabilities"] > predictions["threshold"]


def _per_image_table(predictions, dice, iou, empty) -> pd.DataFrame:
    names = np.asarray(predictions["class_names"], dtype=object)
    labels = predictions["labels"]
    # an image without a label (-1) has an empty true class
    table = pd.DataFrame({"id": predictions["ids"], "true_class": np.append(names, "")[labels]})
    if "groups" in predictions:
        table.insert(1, "patient", predictions["groups"])
    if "label_probabilities" in predictions:
        probabilities = predictions["label_probabilities"]
        predicted = probabilities.argmax(axis=1)
        table["predicted_class"] = names[predicted]
        table["predicted_probability"] = probabilities.max(axis=1)
        table["true_class_probability"] = np.where(labels >= 0, probabilities[np.arange(len(predicted)), labels],
                                                   np.nan)
    if dice is not None:
        table["dice"], table["iou"] = dice, iou
        true_masks, predicted_masks = _lesion_maps(predictions, predictions["true_masks"]), _lesion_maps(
            predictions, _predicted_masks(predictions))
        table["true_lesion_pixels"] = np.where(masks_present(predictions), (true_masks > 0).reshape(
            len(table), -1).sum(axis=1), np.nan)
        table["predicted_lesion_pixels"] = (predicted_masks > 0).reshape(len(table), -1).sum(axis=1)
    if dice is not None and "mask_labels" in predictions:
        per_label, _ = overlap_per_label(predictions["true_masks"], _predicted_masks(predictions),
                                         channels_present(predictions), empty)
        for index, name in enumerate(predictions["mask_labels"]):
            table[f"dice_{name}"] = per_label[:, index]
    return table


def _lesion_maps(predictions, masks) -> np.ndarray:
    """``masks`` (true or predicted) as one map per image: a multi-label mask's pixels of any lesion type."""
    return masks.any(axis=-1) if "mask_labels" in predictions else masks


def _gallery(table: pd.DataFrame, predictions, batches, size: int):
    """``{"best": cases, "worst": cases}`` ranked by Dice, or by the true class's probability without masks."""
    score = "dice" if "dice" in table else "true_class_probability"
    ranked = table[score].dropna().sort_values(kind="stable")
    chosen = {"best": list(ranked.index[::-1][:size]), "worst": list(ranked.index[:size])}
    wanted = {index for indices in chosen.values() for index in indices}
    images, offset = {}, 0
    for batch_images, _ in batches:
        batch_images = batch_images.numpy()
        for position in range(len(batch_images)):
            if offset + position in wanted:
                images[offset + position] = batch_images[position]
        offset += len(batch_images)
    masks = "true_masks" in predictions
    predicted_masks = _lesion_maps(predictions, _predicted_masks(predictions)) if masks else None
    true_masks = _lesion_maps(predictions, predictions["true_masks"]) if masks else None

    def case(index):
        row = table.loc[index]
        lines = [str(row["id"]), f"true {row['true_class']}"]
        if "predicted_class" in row:
            lines[1] += f" | predicted {row['predicted_class']} ({row['predicted_probability']:.2f})"
        if "dice" in row:
            lines.append(f"Dice {row['dice']:.3f}")
        return {"image": images[index], "title": "\n".join(lines),
                "true_mask": true_masks[index] if masks else None,
                "predicted_mask": predicted_masks[index] if masks else None}

    return {name: [case(index) for index in indices] for name, indices in chosen.items()}


def _figures(predictions, metrics, dice, gallery, history) -> dict:
    """``{name: PNG bytes}`` of the plots that the predictions allow (see ``mtunet.evaluation.report.FIGURES``)."""
    figures = {}
    if "label_probabilities" in predictions:
        figures["confusion_matrix"] = plots.confusion_matrix_figure(
            metrics["confusion_matrix"], metrics["confusion_matrix_normalized"], metrics["class_names"])
        labelled = predictions["labels"] >= 0
        figures["roc"] = plots.roc_figure(predictions["labels"][labelled],
                                          predictions["label_probabilities"][labelled], metrics["class_names"])
        figures["reliability"] = plots.reliability_figure(metrics["calibration"], metrics["class_names"])
    if dice is not None:
        figures["dice_histogram"] = plots.dice_histogram_figure(dice, metrics["empty_mask_rule_description"])
    figures["gallery"] = plots.gallery_figure(gallery, mask_classes=predictions.get("mask_classes"))
    if history:
        figures["training_curves"] = plots.training_curves_figure(history)
    return {name: plots.figure_png(figure) for name, figure in figures.items()}


def _data_splits(data, chosen) -> dict:
    """Images, patients (None when the data names none) and images per class of each split; the evaluated ones."""
    splits = {}
    for name in SPLIT_NAMES:
        groups = data.groups(name)
        splits[name] = {"images": data.info.split_sizes[name],
                        "patients": None if groups is None else len(set(groups.tolist())),
                        "classes": data.info.class_counts[name]}
    return {"grouping": data.splits.grouping, "evaluated": list(chosen), "splits": splits}


def evaluate_run(run_dir, *, split=None, model_path=None, dataset=None, data_dir=None, threshold=0.5, empty="one",
                 output_dir=None, batch_size=32, bootstrap_resamples=1000, seed=0, gallery_size=4,
                 sections=None) -> dict:
    """Predicts a split with a run's model and writes its evaluation; returns the metrics.

    Args:
        run_dir: the run directory of ``mtunet train``.
        split: ``"train"``, ``"validation"``, ``"test"`` or ``"all"``. Default: ``"test"`` of the run's own
            ``splits.json`` (so exactly the examples training never saw); ``"all"`` for another dataset.
        model_path: a ``.keras`` model instead of the run's ``best.keras``.
        dataset, data_dir: evaluate on another dataset (its classes must be the run's, in the same order); split
            with the run's seed.
        threshold: mask probability above which a pixel is lesion.
        empty: ``"one"`` or ``"skip"``: images whose true and predicted masks are both empty count as Dice 1, or
            are left out (``mtunet.evaluation.metrics.EMPTY_MASK_RULES``).
        output_dir: default ``RUN_DIR/evaluation/<split>``, or ``RUN_DIR/evaluation/<dataset>[-<data dir
            name>]/<split>`` for another dataset.
        batch_size: images predicted at once.
        bootstrap_resamples, seed: of the 95% bootstrap intervals.
        gallery_size: cases in each of the best and worst rows of the gallery.
        sections: functions ``(EvaluationContext) -> ReportSection`` adding sections to metrics.json and
            report.html; default: Grad-CAM's localisation scores (``mtunet.explain.gradcam.gradcam_section``, key
            ``"gradcam"``); ``()`` for none.

    Files written to the output folder: ``predictions.npz`` (``mtunet.metrics_from_predictions`` recomputes the
    metrics from it), ``per_image.csv``, ``confusion_matrix.png``, ``roc.png``, ``reliability.png``,
    ``dice_histogram.png``, ``training_curves.png``, ``gallery.png``, ``metrics.json`` and, last, ``report.html``.
    """
    check_empty_rule(empty)
    if not 0 <= threshold <= 1:
        raise ConfigError(f"--threshold {threshold}: expected a probability in [0, 1]")
    run_dir = pathlib.Path(run_dir)
    options, record, model, model_path = _load_run(run_dir, model_path)
    dataset, data_dir = dataset or options.dataset, data_dir if data_dir is not None else options.data_dir
    same_folder = data_dir == options.data_dir or (
        None not in (data_dir, options.data_dir) and pathlib.Path(data_dir).resolve() == pathlib.Path(
            options.data_dir).resolve())
    own_data = dataset == options.dataset and same_folder
    split = split or ("test" if own_data else ALL_SPLITS)
    if split not in (*SPLIT_NAMES, ALL_SPLITS):
        raise ConfigError(f"unknown split {split!r}; expected one of: {', '.join((*SPLIT_NAMES, ALL_SPLITS))}")
    splits_path = run_dir / SPLITS_FILE
    if own_data and not splits_path.is_file():
        raise ConfigError(f"run {run_dir} has no {SPLITS_FILE}; expected the splits the run was trained on")
    image_size = model.input_shape[1] or options.image_size
    # all of another dataset needs no hold-out (which a dataset of few patients could not make): all in train
    whole = {"validation_fraction": 0.0, "test_fraction": 0.0} if split == ALL_SPLITS and not own_data else {}
    data = load_dataset(dataset, data_dir=data_dir, image_size=image_size, seed=options.seed,
                        splits_path=splits_path if own_data else None,
                        allow_missing=options.allow_missing if dataset == options.dataset else (),
                        crop_fov="fov_crop" in model_spec(model).preprocessing, **whole)
    source = f"dataset {dataset!r}" + (f" at {data_dir}" if data_dir else "")
    _check_compatible(model, model_path, data, record["class_names"], source)

    chosen = SPLIT_NAMES if split == ALL_SPLITS else (split,)

    def batches():
        for name in chosen:
            yield from data.pipeline(name, batch_size=batch_size, training=False)

    predictions = {"ids": np.asarray([i for name in chosen for i in data.ids(name)], str),
                   "labels": np.concatenate([data.labels(name) for name in chosen]).astype(np.int64),
                   "class_names": np.asarray(data.info.class_names, str),
                   "threshold": np.float64(threshold),
                   **_predict(model, batches(), data.info.mask_classes, data.info.target_heads)}
    label_head = model_heads(model).get("label")
    if data.info.label_kind == "ordinal" and label_head is not None:
        predictions |= _label_as_grades(predictions, label_head)
    groups = [data.groups(name) for name in chosen]
    if all(group is not None for group in groups):
        predictions["groups"] = np.concatenate(groups)
    metrics, dice, iou = compute_metrics(predictions, threshold=threshold, empty=empty,
                                         bootstrap_resamples=bootstrap_resamples, seed=seed)
    if output_dir is None:
        label = dataset + (f"-{pathlib.Path(data_dir).name}" if data_dir else "")
        output_dir = run_dir / "evaluation" / split if own_data else run_dir / "evaluation" / label / split
    output_dir = pathlib.Path(output_dir)
    run_facts = {"run": str(run_dir), "model": str(model_path), "dataset": dataset, "data_dir": data_dir,
                 "split": split, "output_dir": str(output_dir), "date": f"{datetime.datetime.now():%Y-%m-%d %H:%M}"}
    metrics = {**run_facts, "data_splits": _data_splits(data, chosen), **metrics}

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / REPORT_FILE).unlink(missing_ok=True)  # its presence means a complete evaluation
    save_predictions(output_dir / PREDICTIONS_FILE, predictions, write_atomically)
    table = _per_image_table(predictions, dice, iou, empty)
    write_atomically(output_dir / PER_IMAGE_FILE, lambda temporary: table.to_csv(temporary, index=False))

    pngs = _figures(predictions, metrics, dice, _gallery(table, predictions, batches(), gallery_size),
                    read_history(run_dir / HISTORY_FILE))
    for name, png in pngs.items():
        write_atomically(output_dir / f"{name}.png",
                         lambda temporary, png=png: pathlib.Path(temporary).write_bytes(png))

    built = head_sections(predictions, metrics.get("heads", {}))
    if sections is None:
        sections = (gradcam_section,)
    for build in sections:
        section = build(EvaluationContext(model, predictions, metrics, batches, output_dir))
        if not isinstance(section, ReportSection) or section.key in metrics:
            raise ValueError(f"a report section builder returned {section!r}; expected a ReportSection whose key is "
                             f"not already in metrics.json")
        metrics[section.key] = section.metrics
        built.append(section)
    metrics = _json_safe(metrics)
    write_json(output_dir / METRICS_FILE, metrics)
    page = render_report(metrics=metrics, run={**run_facts, "images": metrics["n_images"]}, config=record,
                         figures=pngs, sections=built)
    write_atomically(output_dir / REPORT_FILE, lambda temporary: pathlib.Path(temporary).write_text(page))
    return metrics
