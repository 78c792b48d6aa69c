"""Test-split mask figures of runs on data with empty masks, from their evaluations' predictions.npz.

    python benchmarks/empty_mask_figures.py runs/bg-bce runs/bg-bcedice ...

For each run: the mean per-image Dice (an empty mask predicted empty counts 1, ISIC's rule, as ``mtunet evaluate``),
the mean Dice over the images with a lesion, the share of empty-mask images predicted empty (no pixel >= the
threshold), the mean predicted area on them, and the balanced accuracy, with the lesion-free class's recall.
"""

import argparse
import pathlib

import numpy as np
from sklearn.metrics import balanced_accuracy_score, recall_score

from mtunet.evaluation.metrics import overlap_per_image


def figures(run_dir: pathlib.Path) -> dict:
    predictions = np.load(run_dir / "evaluation" / "test" / "predictions.npz")
    true_masks = predictions["true_masks"] > 0
    predicted = predictions["mask_probabilities"] >= predictions["threshold"]
    dice, _ = overlap_per_image(true_masks, predicted)
    lesion = true_masks.any(axis=(1, 2))
    labels, chosen = predictions["labels"], predictions["label_probabilities"].argmax(axis=1)
    class_names = list(predictions["class_names"])
    figures = {"images": len(dice), "empty": int((~lesion).sum()), "dice": dice.mean(),
               "dice_lesion_images": dice[lesion].mean(),
               "empty_predicted_empty": (~predicted[~lesion].any(axis=(1, 2))).mean(),
               "predicted_area_on_empty": predicted[~lesion].mean(axis=(1, 2)).mean(),
               "balanced_accuracy": balanced_accuracy_score(labels, chosen)}
    if "normal" in class_names:
        normal = class_names.index("normal")
        figures["normal_recall"] = recall_score(labels == normal, chosen == normal)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=pathlib.Path)
    for run_dir in parser.parse_args().runs:
        print(run_dir, " ".join(f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}"
                                for name, value in figures(run_dir).items()))


if __name__ == "__main__":
    main()
