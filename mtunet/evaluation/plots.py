"""Figures of an evaluation: confusion matrix, ROC curves, Dice histogram, the best/worst gallery and the training
curves.

Each function returns a ``matplotlib.figure.Figure`` made without pyplot (no global state, no display needed);
``figure_png`` turns it into PNG bytes for a file or the HTML report, ``save_png`` into a file;
``training_curves_figure`` plots history.csv; ``class_map_overlay`` colours a multi-class mask over its image.
"""

import io
import pathlib

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from mtunet.rundir import best_history_row, write_atomically

TRUE_COLOUR, PREDICTED_COLOUR = "lime", "red"


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save_png(figure: Figure, path) -> None:
    """Writes the figure to ``path`` as a PNG, atomically."""
    write_atomically(path, lambda temporary: pathlib.Path(temporary).write_bytes(figure_png(figure)))


def confusion_matrix_figure(counts, normalized, class_names) -> Figure:
    """The confusion matrix (rows true, columns predicted): each cell holds its count and its share of the row (the
    diagonal's share is the class's recall), coloured by that share."""
    counts, normalized = np.asarray(counts), np.asarray(normalized, float)
    size = 2.8 + 0.7 * len(class_names)
    figure = Figure(figsize=(size + 1, size))
    axis = figure.subplots()
    display = ConfusionMatrixDisplay(normalized, display_labels=list(class_names))
    display.plot(ax=axis, cmap="Blues", values_format=".0%", xticks_rotation=45, colorbar=False, im_kw={
        "vmin": 0, "vmax": 1})
    for (row, column), text in np.ndenumerate(display.text_):
        text.set_text(f"{counts[row, column]}\n({normalized[row, column]:.0%})")
    figure.colorbar(display.im_, ax=axis, label="share of the true class")
    axis.set_title(f"Confusion matrix, {counts.sum()} images: count (share of the row)")
    figure.tight_layout()
    return figure


def roc_figure(labels, probabilities, class_names) -> Figure:
    """ROC curves: of class 1 for a binary task, else one-vs-rest for each class with examples in and out of it."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    figure = Figure(figsize=(5, 4.5))
    axis = figure.subplots()
    shown = [1] if len(class_names) == 2 else range(len(class_names))
    drawn = 0
    for index in shown:
        positives = labels == index
        if not 0 < positives.sum() < len(labels):
            continue
        RocCurveDisplay.from_predictions(positives, probabilities[:, index], name=f"{class_names[index]}", ax=axis)
        drawn += 1
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="chance (AUC = 0.5)")  # last in the legend
    axis.legend(loc="lower right")
    title = f"ROC of {class_names[1]}" if len(class_names) == 2 else "ROC, one class vs the rest"
    axis.set(title=title if drawn else "ROC: undefined (one class only)", xlabel="1 - specificity",
             ylabel="sensitivity")
    figure.tight_layout()
    return figure


def reliability_figure(calibration: dict, class_names) -> Figure:
    """Reliability diagram from ``calibration_metrics``: per class (class 1 only for two classes), the fraction of
    positives against the mean predicted probability in each bin, the diagonal being perfect calibration."""
    figure = Figure(figsize=(5, 4.5))
    axis = figure.subplots()
    shown = [class_names[1]] if len(class_names) == 2 else list(class_names)
    for name in shown:
        figures = calibration["per_class"][name]
        axis.plot(figures["mean_probability"], figures["fraction_positive"], marker="o",
                  label=f"{name} (Brier {figures['brier']:.3f}, ECE {figures['expected_calibration_error']:.3f})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability (bin)", ylabel="fraction that is the class",
             title=f"Reliability, {calibration['bins']} bins")
    axis.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    return figure


def regression_figure(true, predicted, figures: dict, target: str) -> Figure:
    """Predicted against true values of one regression target (with the identity line), and its Bland-Altman plot:
    the difference predicted - true against the pair's mean, with the mean difference and the limits of agreement
    of ``figures["bland_altman"]`` (``mtunet.evaluation.heads.regression_figures``)."""
    true, predicted = np.asarray(true, float), np.asarray(predicted, float)
    figure = Figure(figsize=(9, 4))
    scatter, agreement = figure.subplots(1, 2)
    scatter.scatter(true, predicted, s=12, alpha=0.6)
    ends = [min(true.min(), predicted.min()), max(true.max(), predicted.max())]
    scatter.plot(ends, ends, color="grey", linestyle="--", label="predicted = true")
    scatter.set(xlabel=f"true {target}", ylabel=f"predicted {target}",
                title=f"{target}: MAE {figures['mae']:.3g}, R² {figures['r2']:.3f}")
    scatter.legend(loc="upper left")
    limits = figures["bland_altman"]
    agreement.scatter((true + predicted) / 2, predicted - true, s=12, alpha=0.6)
    for value, style, text in ((limits["bias"], "-", "mean difference"), (limits["lower_limit"], "--", "-1.96 SD"),
                               (limits["upper_limit"], "--", "+1.96 SD")):
        agreement.axhline(value, color="tab:red", linestyle=style, label=f"{text} {value:.3g}")
    agreement.set(xlabel="mean of predicted and true", ylabel="predicted - true",
                  title=f"Bland-Altman, n = {len(true)}")
    agreement.legend(loc="best", fontsize="small")
    figure.tight_layout()
    return figure


def dice_histogram_figure(dice, empty_rule_description: str) -> Figure:
    """Histogram of per-image Dice (NaNs, the images the empty-mask rule leaves out, are not drawn)."""
    dice = np.asarray(dice, float)
    scored = dice[~np.isnan(dice)]
    figure = Figure(figsize=(6, 3.8))
    axis = figure.subplots()
    axis.hist(scored, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
    if scored.size:
        axis.axvline(scored.mean(), color="black", linestyle="--", label=f"mean {scored.mean():.3f}")
        axis.legend(loc="upper left")
    axis.set(xlabel="Dice per image", ylabel="images", xlim=(0, 1),
             title=f"Dice of {scored.size} of {dice.size} images")
    figure.text(0.01, 0.01, empty_rule_description, fontsize=7, wrap=True)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return figure


def _outline(axis, mask, colour, style):
    mask = np.asarray(mask, float)
    if 0 < mask.sum() < mask.size:  # contour needs both levels present
        axis.contour(mask, levels=[0.5], colors=colour, linewidths=1.2, linestyles=style)


def class_colours(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` uint8 RGB colours, one distinct colour per foreground class 1..num_classes (tab10, then
    tab20, then evenly spaced hues)."""
    if num_classes <= 10:
        colours = matplotlib.colormaps["tab10"].colors[:num_classes]
    elif num_classes <= 20:
        colours = matplotlib.colormaps["tab20"].colors[:num_classes]
    else:
        colours = matplotlib.colormaps["hsv"](np.arange(num_classes) / num_classes)
    return (np.asarray(colours)[:, :3] * 255).round().astype(np.uint8)


def class_map_overlay(image, class_map, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """The image as ``(H, W, 3)`` uint8 RGB with each pixel of class ``c`` of ``class_map`` blended with
    ``class_colours(num_classes)[c - 1]``.

    Args:
        image: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``, 0-255.
        class_map: ``(H, W)`` integer classes, 0 (background, left as it is) to ``num_classes``.
        num_classes: K, the number of foreground classes.
        alpha: weight of the class colour (0: the image only; 1: the colour only).
    """
    image, class_map = np.asarray(image, float), np.asarray(class_map)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3 or class_map.shape != image.shape[:2]:
        raise ValueError(f"image of shape {np.shape(image)} and class map of shape {class_map.shape}; expected "
                         "(H, W[, 1 or 3]) and (H, W)")
    if class_map.size and (class_map.min() < 0 or class_map.max() > num_classes):
        raise ValueError(f"class map values {class_map.min()}..{class_map.max()}; expected 0 to {num_classes}")
    palette = np.concatenate([np.zeros((1, 3)), class_colours(num_classes)]).astype(float)
    weight = np.where(class_map > 0, alpha, 0.0)[..., None]
    blended = (1 - weight) * np.clip(image, 0, 255) + weight * palette[class_map]
    return blended.round().astype(np.uint8)


def gallery_figure(rows: dict, mask_classes=None) -> Figure:
    """A grid of cases: one row per ``rows`` entry (e.g. ``{"best": [...], "worst": [...]}``).

    Each case is a dict with ``image`` ((H, W, C) 0-255), ``true_mask`` and ``predicted_mask`` ((H, W), outlined in
    green and red; either may be None) and ``title`` (a few short lines: id, classes and probability, Dice).

    With ``mask_classes`` (the K foreground class names of multi-class masks), ``true_mask`` and ``predicted_mask``
    are class maps of 0..K: the prediction is filled with one colour per class (``class_map_overlay``), the truth
    outlined in the same colours, and a legend names the classes.
    """
    if mask_classes is not None:
        return _class_map_gallery(rows, [str(name) for name in mask_classes])
    figure, placed = _gallery_grid(rows)
    for axis, case in placed:
        image = np.clip(np.asarray(case["image"], float), 0, 255).astype(np.uint8)
        if image.shape[-1] == 1:
            axis.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            axis.imshow(image)
        if case.get("true_mask") is not None:
            _outline(axis, case["true_mask"], TRUE_COLOUR, "solid")
        if case.get("predicted_mask") is not None:
            _outline(axis, case["predicted_mask"], PREDICTED_COLOUR, "dashed")
        axis.set_title(case["title"], fontsize=8)
    figure.text(0.5, 0.005, f"outlines: ground truth ({TRUE_COLOUR}, solid), prediction ({PREDICTED_COLOUR}, dashed)",
                ha="center", fontsize=9)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


def _gallery_grid(rows: dict, extra_height: float = 0.0):
    """``(figure, [(axis, case), ...])``: one row of bare axes per ``rows`` entry, labelled with its name."""
    columns = max(1, *(len(cases) for cases in rows.values()))
    figure = Figure(figsize=(2.7 * columns, 3.2 * len(rows) + extra_height))
    axes = figure.subplots(len(rows), columns, squeeze=False)
    placed = []
    for axis_row, (name, cases) in zip(axes, rows.items()):
        axis_row[0].set_ylabel(name, fontsize=13)
        for axis in axis_row:
            axis.set(xticks=[], yticks=[])
            axis.set_frame_on(False)
        placed += list(zip(axis_row, cases))
    return figure, placed


def _class_map_gallery(rows: dict, mask_classes: list) -> Figure:
    """``gallery_figure`` of multi-class masks."""
    num_classes = len(mask_classes)
    colours = class_colours(num_classes) / 255
    figure, placed = _gallery_grid(rows, extra_height=0.4)
    for axis, case in placed:
        image = np.clip(np.asarray(case["image"], float), 0, 255)
        predicted = case.get("predicted_mask")
        if predicted is None:
            predicted = np.zeros(image.shape[:2], int)
        axis.imshow(class_map_overlay(image, predicted, num_classes))
        if case.get("true_mask") is not None:
            for index in range(num_classes):
                _outline(axis, np.asarray(case["true_mask"]) == index + 1, [colours[index]], "solid")
        axis.set_title(case["title"], fontsize=8)
    figure.legend(handles=[Patch(color=colours[index], label=name) for index, name in enumerate(mask_classes)],
                  loc="lower center", ncol=min(num_classes, 6), fontsize=8, frameon=False,
                  bbox_to_anchor=(0.5, 0.03))
    figure.text(0.5, 0.005, "fill: prediction; solid outline: ground truth, in the colour of its class",
                ha="center", fontsize=9)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure


def training_curves_figure(history: list[dict]) -> Figure:
    """Loss, accuracy and Dice per epoch, training and validation, from the rows of history.csv, with the kept epoch
    marked."""
    panels = [(name, title) for name, title in [("loss", "loss"), ("label_accuracy", "accuracy"),
                                                ("mask_dice", "Dice")] if history and name in history[0]]
    figure = Figure(figsize=(4.5 * len(panels), 3.5))
    epochs = [row["epoch"] for row in history]
    kept = best_history_row(history)["epoch"] if "val_loss" in history[0] else None
    for axis, (name, title) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        axis.plot(epochs, [row[name] for row in history], marker="o", label="training")
        axis.plot(epochs, [row[f"val_{name}"] for row in history], marker="o", label="validation")
        if kept is not None:
            axis.axvline(kept, color="grey", linestyle=":", label=f"kept: epoch {kept}")
        axis.set(title=title, xlabel="epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(fontsize="small")
    figure.tight_layout()
    return figure
