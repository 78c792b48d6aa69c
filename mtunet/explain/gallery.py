"""``mtunet gradcam``: one Grad-CAM figure per image of a run's split or of image files, and an ``index.html`` gallery.

Examples::

    gallery = prepare_gallery("runs/demo", split="test", num_images=8)
    gallery.skipped                  # [(file, reason), ...]: unreadable images, left out
    summary = gallery.write()        # PNGs, then index.html, in runs/demo/gradcam/
"""

import dataclasses
import html
import itertools
import pathlib
import re

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from mtunet.data import SPLIT_NAMES, load_dataset
from mtunet.data.images import model_input, served_mask_present
from mtunet.deploy.predict import list_images, read_image_file
from mtunet.deploy.serving import load_trained_model
from mtunet.errors import ConfigError, DataError
from mtunet.explain.decoder_maps import DecoderMaps
from mtunet.explain.gradcam import GradCam, mass_in_lesion, pointing_game
from mtunet.models import model_heads
from mtunet.options import spell
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


def read_image_files(inputs, image_size: int, channels: int, *,
                     crop_fov: bool = False) -> tuple[list[Example], list[tuple[str, str]]]:
    """``(examples, skipped)``: the readable image files of ``inputs`` (files, or folders of images), prepared for the
    model (cut to their field of view with ``crop_fov``); ``(file, reason)`` for the rest."""
    examples, skipped = [], []
    for path in list_images(inputs):
        image, reason = read_image_file(path)
        if image is None:
            skipped.append((str(path), reason))
        else:
            examples.append(Example(path.stem, model_input(image, image_size, channels, crop_fov=crop_fov)))
    return examples, skipped


def _split_examples(run_dir: pathlib.Path, split: str, num_images: int) -> list[Example]:
    """The first ``num_images`` examples of ``split`` of the run's dataset (its splits.json), masks (where the image
    has one; a multi-label mask's lesion pixels of any lesion type present) and labels too."""
    config = load_config(run_dir)
    data = load_dataset(config.dataset, data_dir=config.data_dir, image_size=config.image_size, seed=config.seed,
                        splits_path=run_dir / SPLITS_FILE, allow_missing=config.allow_missing,
                        crop_fov="fov_crop" in config.preprocessing)
    ids, labels = data.ids(split)[:num_images], data.labels(split)[:num_images]
    examples = []
    for images, targets in data.pipeline(split, batch_size=min(num_images, 64), training=False):
        for image, mask in zip(images.numpy(), targets["mask"].numpy()):
            index = len(examples)
            if index == len(ids):
                return examples
            label = int(labels[index]) if labels[index] >= 0 else None  # -1: no label
            lesion = np.maximum(mask, 0).max(axis=-1)  # missing channels (-1) of a multi-label mask left out
            examples.append(Example(ids[index], image, lesion if served_mask_present(mask[None])[0] else None, label))
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
                figure = self._figure(example, result, offset, maps)
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
            entry["explained"] = f"heatmap: Grad-CAM of {self.class_names[result.target_classes[offset]]}"
        elif self.cam.kind == "multiclass_mask":
            entry["explained"] = f"heatmap: Seg-Grad-CAM of mask class {result.target_classes[offset]}"
        else:
            entry["explained"] = "heatmap: Seg-Grad-CAM of the mask"
        if example.mask is not None and example.mask.any():
            heatmap, mask = result.heatmaps[offset:offset + 1], example.mask[None]
            entry["mass_in_lesion"] = float(mass_in_lesion(heatmap, mask)[0])
            entry["pointing_game"] = float(pointing_game(heatmap, mask)[0])
        return entry

    def _figure(self, example, result, offset, maps):
        """Side by side: the image, the heatmap with its colour bar, the heatmap over the image with the predicted
        mask (yellow), and the true lesion (green) when known; below, the decoder's explained maps (attention
        coefficients, 0 to 1) where it has any. The caption is the page's, not burnt into the picture."""
        image = np.round(example.image).astype(np.uint8)
        image = image[..., 0] if image.shape[2] == 1 else image
        heatmap = result.heatmaps[offset]
        heatmap = heatmap / heatmap.max() if heatmap.max() > 0 else heatmap
        truth = example.mask is not None
        figure = Figure(figsize=(11 if truth else 8.4, 6.0 if maps else 3.4), layout="constrained")
        top, bottom = figure.subfigures(2, 1, height_ratios=(1.3, 1)) if maps else (figure, None)
        axes = top.subplots(1, 4 if truth else 3)
        for axis in axes:
            axis.imshow(image, cmap="gray", vmin=0, vmax=255)
            axis.set_axis_off()
        axes[0].set_title("image", fontsize=12)
        shown = axes[1].imshow(heatmap, cmap="jet", vmin=0, vmax=1)
        axes[1].set_title("heatmap", fontsize=12)
        top.colorbar(shown, ax=axes[1], shrink=0.8).set_label("Grad-CAM, 0 to its maximum", fontsize=10)
        axes[2].imshow(heatmap, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        overlay_title = "overlay"
        if result.masks is not None:
            overlay_title += ", predicted mask: yellow"
            if 0 < (result.masks[offset] > 0.5).sum() < result.masks[offset].size:
                axes[2].contour(result.masks[offset], levels=[0.5], colors="yellow", linewidths=1.5)
        axes[2].set_title(overlay_title, fontsize=12)
        if truth:
            lesion = np.ma.masked_where(example.mask <= 0.5, np.ones_like(example.mask, float))
            axes[3].imshow(lesion, cmap=ListedColormap(["lime"]), alpha=0.45, vmin=0, vmax=1)
            axes[3].set_title("true lesion: green" if example.mask.any() else "true mask: empty", fontsize=12)
        if maps:
            map_axes = np.atleast_1d(bottom.subplots(1, len(maps)))
            for axis, (name, decoder_map) in zip(map_axes, maps.items()):
                axis.imshow(image, cmap="gray", vmin=0, vmax=255)
                shown = axis.imshow(decoder_map.values[offset], cmap="jet", alpha=0.45, vmin=0, vmax=1)
                axis.set_title(f"{name.removeprefix('decoder_')}\n(stride {decoder_map.stride})", fontsize=8)
                axis.set_axis_off()
            bottom.colorbar(shown, ax=list(map_axes), shrink=0.8, label="attention coefficient")
        return figure

    def heatmap_description(self) -> str:
        """What the heatmaps show, in words: ``Grad-CAM of the class score ... of each image's predicted class``."""
        if self.cam.kind == "binary_mask":
            return "Seg-Grad-CAM of the mask logits summed over the image"
        elif self.cam.kind == "multilabel_mask":
            return "Seg-Grad-CAM of the mask logits of every lesion type summed over the image"
        elif self.cam.kind == "multiclass_mask" and isinstance(self.target_class, str):
            return "Seg-Grad-CAM of the logits of each image's most predicted mask class, summed over the image"
        elif self.cam.kind == "multiclass_mask":
            name = model_heads(self.cam.model)[self.head].mask_classes[self.target_class - 1]
            return f"Seg-Grad-CAM of the logits of mask class {self.target_class} ({name}), summed over the image"
        if isinstance(self.target_class, str):
            return "Grad-CAM of the predicted class's score (before the softmax)"
        return f"Grad-CAM of the class score (before the softmax) of {self.class_names[self.target_class]}"

    def _index_html(self, entries, summary) -> str:
        facts = [f"source: {self.source}", f"heatmap: {self.heatmap_description()}, at layer {self.cam.layer}",
                 f"images: {len(entries)}"]
        if "pointing_game_hit_rate" in summary:
            facts.append(f"Grad-CAM mass inside the true lesion (mean): {summary['mass_in_lesion']:.3f}; "
                         f"pointing game hit rate: {summary['pointing_game_hit_rate']:.3f}")
        if self.decoder_maps.layers:
            facts.append(f"bottom row: {', '.join(self.decoder_maps.layers)}, the attention coefficients of the "
                         "decoder's gates from 0 (skip removed) to 1 (skip kept), deepest stage first")
        facts += [f"skipped {file}: {reason}" for file, reason in self.skipped]
        attributes = [_sort_keys(index, entry) for index, entry in enumerate(entries)]
        orders = [(key, text) for key, text in SORT_ORDERS if all(key in keys for keys in attributes)]
        options = "".join(f'<option value="{key}">{html.escape(text)}</option>' for key, text in orders)
        figures = "\n".join(_figure_html(index, entry) for index, entry in enumerate(entries))
        items = "".join(f"<li>{html.escape(fact)}</li>" for fact in facts)
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Grad-CAM gallery</title>\n"
                f"<style>{GALLERY_STYLE}</style></head>\n<body><h1>Grad-CAM gallery</h1><ul>{items}</ul>\n"
                f'<label>Order: <select id="order">{options}</select></label>\n'
                f'<div id="figures">\n{figures}\n</div>\n<script>{SORT_SCRIPT}</script>\n</body></html>\n')


# value of <select id="order"> (an entry key, its figure's data- attribute) -> its label
SORT_ORDERS = (("index", "as listed"), ("true", "by true class"), ("predicted", "by predicted class"),
               ("correct", "wrong first"))
GALLERY_STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#222} "
                 "#figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(600px,1fr));gap:1em} "
                 "figure{margin:0;border:1px solid #ddd;padding:.4em} img{width:100%} "
                 "figcaption{font-size:.9em;line-height:1.4} .wrong{color:#b00020;font-weight:bold} "
                 "select{margin:.5em 0 1em}")
# sorts the figures by the chosen data- attribute, ties in list order (hand-written: no library needed for this)
SORT_SCRIPT = """
const order = document.getElementById("order"), box = document.getElementById("figures");
order.addEventListener("change", () => {
  const key = order.value, figures = [...box.children];
  figures.sort((a, b) => (a.dataset[key] ?? "").localeCompare(b.dataset[key] ?? "", undefined, {numeric: true})
                         || a.dataset.index - b.dataset.index);
  figures.forEach(figure => box.appendChild(figure));
});"""


def _sort_keys(index: int, entry: dict) -> dict:
    """The values a figure sorts by (``SORT_ORDERS``): those the entry knows."""
    keys = {"index": index, **{key: entry[key] for key in ("true", "predicted") if key in entry}}
    if "true" in entry and "predicted" in entry:
        keys["correct"] = int(entry["true"] == entry["predicted"])
    return keys


def _figure_html(index: int, entry: dict) -> str:
    """One ``<figure>`` of the gallery: its PNG, a caption of a few lines, and the data- attributes it sorts by."""
    keys = _sort_keys(index, entry)
    correct = keys.get("correct")
    data = "".join(f' data-{key}="{html.escape(str(value))}"' for key, value in keys.items())
    lines = [f"<b>{html.escape(entry['id'])}</b>"]
    classes = []
    if "true" in entry:
        classes.append(f"true {html.escape(entry['true'])}")
    if "predicted" in entry:
        classes.append(f"predicted {html.escape(entry['predicted'])} ({entry['probability']:.0%})")
    if correct is not None:
        classes.append("correct" if correct else "<span class='wrong'>wrong</span>")
    if classes:
        lines.append(" · ".join(classes))
    lines.append(html.escape(entry["explained"]))
    if "pointing_game" in entry:
        hit = entry["pointing_game"]
        lines.append(f"heatmap mass inside the lesion {entry['mass_in_lesion']:.0%} · pointing game "
                     + ("hit" if hit == 1 else "miss" if hit == 0 else f"{hit:.2f} (a maximum shared by several "
                        "pixels, some in the lesion)"))
    return (f'<figure{data}><img src="{html.escape(entry["file"])}" alt="{html.escape(entry["id"])}">'
            f"<figcaption>{'<br>'.join(lines)}</figcaption></figure>")


def _gallery_folder(output_dir, parent: pathlib.Path) -> pathlib.Path:
    """The folder a new gallery goes to, never one holding files already (two galleries would mix): ``output_dir``
    if it is empty or absent (else ``ConfigError``), by default ``PARENT/gradcam``, or ``gradcam-2``, ``-3``, ... when
    that one is taken."""
    def taken(folder):
        return folder.exists() and any(folder.iterdir())

    if output_dir is not None:
        output_dir = pathlib.Path(output_dir)
        if taken(output_dir):
            raise ConfigError(f"{spell('output_dir', str(output_dir))}: the folder already holds files (an earlier "
                              "gallery?); choose an empty or new folder, so that two galleries never mix")
        return output_dir
    candidates = (parent / (GALLERY_DIR if number == 1 else f"{GALLERY_DIR}-{number}") for number in itertools.count(1))
    return next(folder for folder in candidates if not taken(folder))


def prepare_gallery(run_or_model, *, images=None, split: str = "test", output_dir=None, num_images: int | None = None,
                    target_class="predicted", layer: str = "auto", head: str = "label") -> Gallery:
    """Loads the model and the images to explain.

    Args:
        run_or_model: a run directory (its best.keras and class names) or a ``.keras`` model file.
        images: image files (or folders of images) to explain; None explains the first ``num_images`` of the run's
            ``split`` (with their true masks and classes).
        split: split of the run's splits.json, when no ``images`` are given.
        output_dir: an empty or new folder; default ``RUN_DIR/gradcam`` (or ``gradcam`` beside the model file),
            ``gradcam-2``, ``gradcam-3``, ... when it holds an earlier gallery.
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
    output_dir = _gallery_folder(output_dir, run_dir or pathlib.Path(trained.info["source"]).parent)
    if images is not None:
        examples, skipped = read_image_files(images, trained.image_size, trained.channels,
                                             crop_fov=trained.crops_field_of_view)
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
    return Gallery(trained.model, examples, skipped, output_dir, trained.class_names, source, layer=layer,
                   head=head, target_class=target_class)
