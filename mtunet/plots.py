"""Figures of an evaluation: confusion matrix, ROC curves, Dice histogram and the best/worst gallery.

Each function returns a ``matplotlib.figure.Figure`` made without pyplot (no global state, no display needed);
``figure_png`` turns it into PNG bytes for a file or the HTML report.
"""

import io

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

TRUE_COLOUR, PREDICTED_COLOUR = "lime", "red"


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def confusion_matrix_figure(counts, normalized, class_names) -> Figure:
    """Two panels: the confusion matrix as counts and as row-normalised fractions (rows true, columns predicted)."""
    size = 2.5 + 0.6 * len(class_names)
    figure = Figure(figsize=(2 * size + 1, size))
    for axis, matrix, title, value_format in zip(figure.subplots(1, 2), (counts, normalized),
                                                 ("counts", "row-normalised (recall on the diagonal)"), ("d", ".2f")):
        ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(class_names)).plot(
            ax=axis, cmap="Blues", values_format=value_format, xticks_rotation=45, colorbar=False)
        axis.set_title(title)
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
        RocCurveDisplay.from_predictions(positives, probabilities[:, index], name=f"{class_names[index]}",
                                         ax=axis, plot_chance_level=drawn == 0)
        drawn += 1
    title = f"ROC of {class_names[1]}" if len(class_names) == 2 else "ROC, one class vs the rest"
    axis.set(title=title if drawn else "ROC: undefined (one class only)", xlabel="1 - specificity",
             ylabel="sensitivity")
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


def gallery_figure(rows: dict) -> Figure:
    """A grid of cases: one row per ``rows`` entry (e.g. ``{"best": [...], "worst": [...]}``).

    Each case is a dict with ``image`` ((H, W, C) 0-255), ``true_mask`` and ``predicted_mask`` ((H, W), outlined in
    green and red; either may be None) and ``title`` (a few short lines: id, classes and probability, Dice).
    """
    columns = max(1, *(len(cases) for cases in rows.values()))
    figure = Figure(figsize=(2.7 * columns, 3.2 * len(rows)))
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for axis_row, (name, cases) in zip(axes, rows.items()):
        axis_row[0].set_ylabel(name, fontsize=13)
        for axis in axis_row:
            axis.set(xticks=[], yticks=[])
            axis.set_frame_on(False)
        for axis, case in zip(axis_row, cases):
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
