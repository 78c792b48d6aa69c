"""``mtunet gradcam``: one Grad-CAM figure per image of a run's split or of image files, and an ``index.html`` gallery.

Examples::

    gallery = prepare_gallery("runs/demo", split="test", num_images=8)
    gallery.skipped                  # [(file, reason), ...]: unreadable images, left out
    summary = gallery.write()        # PNGs, then index.html, in runs/demo/gradcam/
"""

import dataclasses
import html
import pathlib
import re

import cv2
import numpy as np
from matplotlib.figure import Figure

from mtunet.data import SPLIT_NAMES, load_dataset
from mtunet.data.images import expand_channels, letterbox
from mtunet.deploy.predict import list_images, read_image_file
from mtunet.deploy.serving import load_trained_model
from mtunet.errors import ConfigError, DataError
from mtunet.explain.decoder_maps import DecoderMaps
from mtunet.explain.gradcam import GradCam, mass_in_lesion, pointing_game
from mtunet.models import model_heads
from mtunet.rundir import SPLITS_FILE, write_atomically
from mtunet.training.config import load_config

GALLERY_DIR = "gradcam"
INDEX_FILE = "index.html"
DEFAULT_SPLIT_IMAGES = 16


@dataclasses.dataclass
class Example:
    """One image to explain, at the model's input size: raw pixels ``(S, S, C)``, and its truth when known."""

    id: str
    image: np.ndarray
    mask: np.ndarray | None = None
    label: int | None = None


def prepare_image(image: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """A ``uint8`` ``(H, W, 1 or 3)`` image as the ``(S, S, channels)`` the model takes, letterboxed as for training."""
    image = letterbox(image, image_size, nearest=False)
    if channels == 1 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    return expand_channels(image, channels)


def read_image_files(inputs, image_size: int, channels: int) -> tuple[list[Example], list[tuple[str, str]]]:
    """``(examples, skipped)``: the readable image files of ``inputs`` (files, or folders of images), prepared for the
    model; ``(file, reason)`` for the rest."""
    examples, skipped = [], []
    for path in list_images(inputs):
        image, reason = read_image_file(path)
        if image is None:
            skipped.append((str(path), reason))
        else:
            examples.append(Example(path.stem, prepare_image(image, image_size, channels)))
    return examples, skipped


def _split_examples(run_dir: pathlib.Path, split: str, num_images: int) -> list[Example]:
    """The first ``num_images`` examples of ``split`` of the run's dataset (its splits.json), masks and labels too."""
    config = load_config(run_dir)
    data = load_dataset(config.dataset, data_dir=config.data_dir, image_size=config.image_size, seed=config.seed,
                        splits_path=run_dir / SPLITS_FILE)
    ids, labels = data.ids(split)[:num_images], data.labels(split)[:num_images]
    examples = []
    for images, targets in data.pipeline(split, batch_size=min(num_images, 64), training=False):
        for image, mask in zip(images.numpy(), targets["mask"].numpy()):
            index = len(examples)
            if index == len(ids):
                return examples
            examples.append(Example(ids[index], image, mask[..., 0], int(labels[index])))
    return examples


def _target_index(target_class, class_names) -> int | str:
    if target_class == "predicted":
        return target_class
    if target_class in class_names:
        return class_names.index(target_class)
    if str(target_class).isdigit() and int(target_class) < len(class_names):
        return int(target_class)
    raise ConfigError(f"--target-class {target_class!r}: expected 'predicted' or one of: {', '.join(class_names)}")


def _file_name(index: int, example_id: str) -> str:
    return f"{index:03d}_{re.sub(r'[^A-Za-z0-9._-]', '_', example_id)}.png"


class Gallery:
    """Images ready to be explained; made by ``prepare_gallery``. ``write()`` writes the figures and index.html.

    Attributes:
        examples: the ``Example``s to explain.
        skipped: ``[(file, reason), ...]``: image files that could not be read, left out.
        output_dir: where the PNGs and index.html go.
    """

    def __init__(self, model, examples, skipped, output_dir, class_names, source, *, layer, head, target_class):
        self.examples, self.skipped, self.output_dir = examples, skipped, pathlib.Path(output_dir)
        self.class_names, self.source, self.head = class_names, source, head
        self.cam = GradCam(model, layer=layer, head=head)
        self.decoder_maps = DecoderMaps(model)
        if self.cam.kind == "classification":
            self.target_class = _target_index(target_class, class_names)
        elif self.cam.kind == "multiclass_mask":
            mask_classes = model_heads(model)[head].mask_classes
            self.target_class = (target_class if target_class == "predicted"
                                 else _target_index(target_class, ("background", *mask_classes)))
        elif target_class != "predicted":
            raise ConfigError("--target-class applies to the class head and multi-class masks only")
        else:
            self.target_class = "predicted"

    def write(self, *, batch_size: int = 16, progress=None) -> dict:
        """Writes one PNG per example, then index.html (last, so a gallery with an index is complete).

        ``progress``: called with 1 after each image. Returns ``index`` (path of index.html), ``images`` (PNG paths)
        and, when the true masks are known, ``mass_in_lesion`` and ``pointing_game_hit_rate`` over them.
        """
        self.output_dir.mkdir(parents=True, exist_ok=True)
        index_path = self.output_dir / INDEX_FILE
        index_path.unlink(missing_ok=True)
        entries = []
        for start in range(0, len(self.examples), batch_size):
            batch = self.examples[start:start + batch_size]
            images = np.stack([example.image for example in batch]).astype(np.float32)
            result = self.cam(images, target_class=self.target_class)
            maps = self.decoder_maps(images)
            for offset, example in enumerate(batch):
                entry = self._describe(example, result, offset)
                entry["file"] = _file_name(start + offset, example.id)
                figure = self._figure(example, result, offset, entry, maps)
                write_atomically(self.output_dir / entry["file"],
                                 lambda temporary: figure.savefig(temporary, format="png", dpi=100))
                entries.append(entry)
                if progress is not None:
                    progress(1)
        scored = [entry for entry in entries if not np.isnan(entry.get("pointing_game", np.nan))]
        summary = {"index": index_path, "images": [self.output_dir / entry["file"] for entry in entries]}
        if scored:
            summary["mass_in_lesion"] = float(np.mean([entry["mass_in_lesion"] for entry in scored]))
            summary["pointing_game_hit_rate"] = float(np.mean([entry["pointing_game"] for entry in scored]))
        write_atomically(index_path, lambda temporary: pathlib.Path(temporary).write_text(
            self._index_html(entries, summary)))
        return summary

    def _describe(self, example, result, offset) -> dict:
        """Caption facts of one image: predicted class and probability, target, truth, localisation scores."""
        entry = {"id": example.id}
        if result.probabilities is not None:
            predicted = int(np.argmax(result.probabilities[offset]))
            entry["predicted"] = self.class_names[predicted]
            entry["probability"] = float(result.probabilities[offset, predicted])
        if example.label is not None:
            entry["true"] = self.class_names[example.label]
        if self.cam.kind == "classification":
            entry["explained"] = f"Grad-CAM of {self.class_names[result.target_classes[offset]]} at {self.cam.layer}"
        elif self.cam.kind == "multiclass_mask":
            entry["explained"] = f"Seg-Grad-CAM of mask class {result.target_classes[offset]} at {self.cam.layer}"
        else:
            entry["explained"] = f"Seg-Grad-CAM of the mask at {self.cam.layer}"
        if example.mask is not None and example.mask.any():
            heatmap, mask = result.heatmaps[offset:offset + 1], example.mask[None]
            entry["mass_in_lesion"] = float(mass_in_lesion(heatmap, mask)[0])
            entry["pointing_game"] = float(pointing_game(heatmap, mask)[0])
        return entry

    def _figure(self, example, result, offset, entry, maps):
        """The image with the true lesion (green), and the heatmap over it with the predicted mask (yellow); below,
        the decoder's explained maps (attention coefficients, 0 to 1) where it has any."""
        image = example.image.astype(np.uint8)
        image = image[..., 0] if image.shape[2] == 1 else image
        heatmap = result.heatmaps[offset]
        heatmap = heatmap / heatmap.max() if heatmap.max() > 0 else heatmap
        figure = Figure(figsize=(8, 7.2 if maps else 4.8), layout="constrained")
        top, bottom = figure.subfigures(2, 1, height_ratios=(2, 1)) if maps else (figure, None)
        left, right = top.subplots(1, 2)
        for axis in (left, right):
            axis.imshow(image, cmap="gray", vmin=0, vmax=255)
            axis.set_axis_off()
        right.imshow(heatmap, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        outlines = ["predicted mask: yellow"] if result.masks is not None else []
        if result.masks is not None and 0 < (result.masks[offset] > 0.5).sum() < result.masks[offset].size:
            right.contour(result.masks[offset], levels=[0.5], colors="yellow", linewidths=1.5)
        if example.mask is not None and 0 < example.mask.sum() < example.mask.size:
            outlines.insert(0, "true lesion: green")
            for axis in (left, right):
                axis.contour(example.mask, levels=[0.5], colors="lime", linewidths=1.2, linestyles="dashed")
        left.set_title("image" + (" (true lesion: green)" if example.mask is not None else ""), fontsize=9)
        right.set_title(f"{entry['explained']}\n{', '.join(outlines)}", fontsize=9)
        if maps:
            axes = np.atleast_1d(bottom.subplots(1, len(maps)))
            for axis, (name, decoder_map) in zip(axes, maps.items()):
                axis.imshow(image, cmap="gray", vmin=0, vmax=255)
                shown = axis.imshow(decoder_map.values[offset], cmap="jet", alpha=0.45, vmin=0, vmax=1)
                axis.set_title(f"{name.removeprefix('decoder_')}\n(stride {decoder_map.stride})", fontsize=8)
                axis.set_axis_off()
            bottom.colorbar(shown, ax=list(axes), shrink=0.8, label="attention coefficient")
        figure.suptitle(_caption(entry), fontsize=11)
        return figure

    def _index_html(self, entries, summary) -> str:
        if self.cam.kind == "binary_mask":
            explained = "Seg-Grad-CAM of the mask logits summed over the image"
        elif self.cam.kind == "multiclass_mask" and isinstance(self.target_class, str):
            explained = "Seg-Grad-CAM of the logits of each image's most predicted mask class, summed over the image"
        elif self.cam.kind == "multiclass_mask":
            name = model_heads(self.cam.model)[self.head].mask_classes[self.target_class - 1]
            explained = f"Seg-Grad-CAM of the logits of mask class {self.target_class} ({name}), summed over the image"
        elif isinstance(self.target_class, str):
            explained = "Grad-CAM of the class score (before the softmax) of each image's predicted class"
        else:
            explained = f"Grad-CAM of the class score (before the softmax) of {self.class_names[self.target_class]}"
        facts = [f"source: {self.source}", f"heatmap: {explained}, at layer {self.cam.layer}",
                 f"images: {len(entries)}"]
        if "pointing_game_hit_rate" in summary:
            facts.append(f"Grad-CAM mass inside the true lesion (mean): {summary['mass_in_lesion']:.3f}; "
                         f"pointing game hit rate: {summary['pointing_game_hit_rate']:.3f}")
        if self.decoder_maps.layers:
            facts.append(f"bottom row: {', '.join(self.decoder_maps.layers)}, the attention coefficients of the "
                         "decoder's gates from 0 (skip removed) to 1 (skip kept), deepest stage first")
        facts += [f"skipped {file}: {reason}" for file, reason in self.skipped]
        figures = "\n".join(
            f'<figure><img src="{html.escape(entry["file"])}" alt="{html.escape(entry["id"])}">'
            f"<figcaption>{html.escape(_caption(entry))}</figcaption></figure>" for entry in entries)
        items = "".join(f"<li>{html.escape(fact)}</li>" for fact in facts)
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Grad-CAM gallery</title>\n<style>"
                "body{font-family:sans-serif;margin:1.5em} figure{display:inline-block;margin:0.5em;width:420px}"
                "img{width:100%} figcaption{font-size:0.85em}</style></head>\n"
                f"<body><h1>Grad-CAM gallery</h1><ul>{items}</ul>\n{figures}\n</body></html>\n")


def _caption(entry) -> str:
    parts = [entry["id"]]
    if "predicted" in entry:
        parts.append(f"predicted {entry['predicted']} ({entry['probability']:.0%})")
    if "true" in entry:
        parts.append(f"true {entry['true']}")
    if "pointing_game" in entry:
        parts.append(f"mass in lesion {entry['mass_in_lesion']:.0%}, pointing game {entry['pointing_game']:.2g}")
    return "; ".join(parts)


def prepare_gallery(run_or_model, *, images=None, split: str = "test", output_dir=None, num_images: int | None = None,
                    target_class="predicted", layer: str = "auto", head: str = "label") -> Gallery:
    """Loads the model and the images to explain.

    Args:
        run_or_model: a run directory (its best.keras and class names) or a ``.keras`` model file.
        images: image files (or folders of images) to explain; None explains the first ``num_images`` of the run's
            ``split`` (with their true masks and classes).
        split: split of the run's splits.json, when no ``images`` are given.
        output_dir: default ``RUN_DIR/gradcam`` (or ``gradcam`` beside the model file).
        num_images: at most this many images (default: every file given, or 16 of a split).
        target_class: ``"predicted"``, a class name or a class index (of the class head, or a mask class of a
            multi-class mask).
        layer, head: as for ``mtunet.explain.gradcam.GradCam``.

    Raises:
        ConfigError: no such run or model, a split without a run, an unknown class, layer or head.
        DataError: none of the image files could be read.
    """
    if num_images is not None and num_images < 1:
        raise ConfigError(f"--num-images {num_images}: expected a positive number")
    trained = load_trained_model(run_or_model)
    run_dir = pathlib.Path(trained.info["run"]) if "run" in trained.info else None
    if images is None and run_dir is None:
        raise ConfigError(f"{run_or_model} is not in a run directory, so it has no split to explain; give image files")
    if images is not None:
        examples, skipped = read_image_files(images, trained.image_size, trained.channels)
        examples = examples[:num_images]
        if not examples:
            raise DataError(f"none of the {len(skipped)} image file(s) could be read: "
                            + "; ".join(f"{file}: {reason}" for file, reason in skipped))
        source = f"{trained.info['source']}, {len(examples)} image file(s)"
    else:
        if split not in SPLIT_NAMES:
            raise ConfigError(f"--split {split!r}: expected one of: {', '.join(SPLIT_NAMES)}")
        examples, skipped = _split_examples(run_dir, split, num_images or DEFAULT_SPLIT_IMAGES), []
        if not examples:
            raise DataError(f"the {split} split of run {run_dir} has no images")
        source = f"{trained.info['source']}, {split} split"
    model_path = pathlib.Path(trained.info["source"])
    output_dir = pathlib.Path(output_dir) if output_dir else (run_dir or model_path.parent) / GALLERY_DIR
    return Gallery(trained.model, examples, skipped, output_dir, trained.class_names, source, layer=layer,
                   head=head, target_class=target_class)
