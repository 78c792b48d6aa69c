"""``predict_files``: a trained or exported model over image files, writing predictions.csv, masks and overlays.

Images are read as for training (``mtunet.data.images``: any bit depth stretched to 8 bits, colour with equal
channels as grayscale, alpha dropped) and predicted through the model's ``serving_default`` function, which
letterboxes them in the graph and returns the mask at each image's own size; a ``.keras`` model or run directory is
wrapped in the same function as an export (``mtunet.deploy.serving``), so every kind of model gives the same
predictions.
"""

import dataclasses
import functools
import logging
import pathlib

import cv2
import numpy as np
import pandas as pd
import tensorflow as tf

from mtunet.data.folder import IMAGE_SUFFIXES
from mtunet.data.images import (
    BINARY_MASK_CLASSES, expand_channels, has_unsupported_layout, read_image, to_rgb_or_gray, to_uint8,
)
from mtunet.deploy.serving import (
    SAVED_MODEL_FILE, build_serving_functions, load_trained_model, read_model_info, to_numpy,
)
from mtunet.errors import ConfigError
from mtunet.evaluation.plots import class_map_overlay
from mtunet.models.heads import build_head
from mtunet.rundir import write_atomically

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"
OVERLAY_COLOUR_RGB = (255, 0, 0)
OVERLAY_OPACITY = 0.35


@dataclasses.dataclass
class Predictor:
    """A model ready to predict: ``serve(images)`` takes ``uint8`` ``(B, H, W, C)`` images of one size and returns
    the serving outputs as numpy arrays (see ``mtunet.deploy.serving``).

    Attributes:
        serve: the function.
        class_names: the class of each label index (empty for a segmentation-only model).
        source: the file or folder the model was loaded from.
        mask_classes: the names of the mask's lesion classes (one for a binary mask; mask value c is
            ``mask_classes[c - 1]``), or of a multi-label mask's lesion types.
        further_heads: the configs of the heads beside the class head and the mask (further classification and
            regression heads).
        head_class_names: ``{head: class names}`` of the further classification heads.
        multilabel_masks: whether the mask is multi-label, a probability per lesion type of ``mask_classes``.
    """

    serve: object
    class_names: list[str]
    source: str
    mask_classes: tuple[str, ...] = BINARY_MASK_CLASSES
    further_heads: tuple[dict, ...] = ()
    head_class_names: dict = dataclasses.field(default_factory=dict)
    multilabel_masks: bool = False


def _mask_classes(head_configs) -> tuple[str, ...]:
    """The lesion classes of the mask head among ``head_configs``; binary for exports that list no heads."""
    for config in head_configs:
        if config["type"] in ("multiclass_mask", "multilabel_mask"):
            return tuple(config["mask_classes"])
    return BINARY_MASK_CLASSES


def _head_facts(head_configs, head_class_names) -> dict:
    """``Predictor``'s ``mask_classes``, ``further_heads``, ``head_class_names`` and ``multilabel_masks`` from a
    model's head configs."""
    further = tuple(config for config in head_configs
                    if not build_head(config).spatial and config["name"] != "label")
    return {"mask_classes": _mask_classes(head_configs), "further_heads": further,
            "head_class_names": dict(head_class_names),
            "multilabel_masks": any(config["type"] == "multilabel_mask" for config in head_configs)}


@dataclasses.dataclass
class PredictionResult:
    """What ``predict_files`` wrote: the table (one row per image read, in input order) and the files that failed,
    as ``[(file, reason), ...]``."""

    csv_path: pathlib.Path
    table: pd.DataFrame
    failed: list[tuple[str, str]]


def _saved_model_dir(path: pathlib.Path) -> pathlib.Path | None:
    """The SavedModel folder ``path`` is, or the highest numbered version in it (as TF Serving picks); else None."""
    if (path / SAVED_MODEL_FILE).is_file():
        return path
    versions = [child for child in path.iterdir() if child.name.isdigit() and (child / SAVED_MODEL_FILE).is_file()]
    return max(versions, key=lambda child: int(child.name)) if versions else None


def _call_signature(loaded, images):
    return to_numpy(loaded.signatures["serving_default"](images=tf.constant(images)))


def _call_function(function, images):
    return to_numpy(function(tf.constant(images)))


def load_predictor(model_or_export) -> Predictor:
    """A ``Predictor`` from a ``.keras`` file, a run directory, an exported SavedModel version folder or the model
    base folder holding numbered versions (the highest is used)."""
    path = pathlib.Path(model_or_export)
    if not path.exists():
        raise ConfigError(f"{path} not found: expected a .keras model, a run directory or an exported SavedModel")
    saved_model = _saved_model_dir(path) if path.is_dir() else None
    if saved_model is not None:
        info = read_model_info(saved_model)
        # the closure keeps the loaded object, whose variables the signature reads, alive
        serve = functools.partial(_call_signature, tf.saved_model.load(str(saved_model)))
        return Predictor(serve, list(info["class_names"]), str(saved_model),
                         **_head_facts(info.get("heads", []), info.get("head_class_names", {})))
    trained = load_trained_model(path)
    serve = functools.partial(_call_function, build_serving_functions(trained)["serving_default"])
    return Predictor(serve, trained.class_names, str(path),
                     **_head_facts([head.get_config() for head in trained.heads.values()], trained.head_class_names))


def list_images(inputs) -> list[pathlib.Path]:
    """The files of ``inputs``: files as given, folders as their image files (by suffix, sorted, not recursive)."""
    files = []
    for item in map(pathlib.Path, inputs):
        if item.is_dir():
            found = sorted(path for path in item.iterdir() if path.is_file() and not path.name.startswith(".")
                           and path.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(f"{item} holds no image file ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        else:
            files.append(item)
    if not files:
        raise ConfigError("no image given: expected image files or folders of images")
    return files


def read_image_file(path: pathlib.Path) -> tuple[np.ndarray | None, str | None]:
    """``(uint8 (H, W, 1 or 3) image, None)`` or ``(None, reason)``: how predict and Grad-CAM read image files."""
    if not path.is_file():
        return None, "not found"
    image = read_image(path)
    if image is None:
        return None, "not a readable PNG, JPEG, BMP or TIFF image"
    if has_unsupported_layout(image):
        return None, f"unsupported layout {image.shape}; expected a grayscale, RGB or RGBA image"
    return to_rgb_or_gray(to_uint8(image)), None


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``uint8`` RGB ``(H, W, 3)``: ``image`` with the lesion ``mask`` (``(H, W)`` bool) tinted and outlined."""
    rgb = expand_channels(image, 3).copy()
    colour = np.array(OVERLAY_COLOUR_RGB, np.float32)
    rgb[mask] = np.round((1 - OVERLAY_OPACITY) * rgb[mask] + OVERLAY_OPACITY * colour).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgb, contours, -1, OVERLAY_COLOUR_RGB, 1)
    return rgb


def _write_png(path: pathlib.Path, image: np.ndarray):
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)

    def write(temporary):
        if not cv2.imwrite(temporary, image):
            raise ConfigError(f"cannot write {path}")

    write_atomically(path, write)


def predict_files(predictor: Predictor, inputs, output_dir, *, threshold: float = 0.5, batch_size: int = 16,
                  progress=None) -> PredictionResult:
    """Predicts every image of ``inputs`` (files or folders) and writes the results to ``output_dir``.

    Writes ``predictions.csv`` (columns ``file``, ``predicted_class``, ``probability_<class>`` per class,
    ``lesion_area_pixels``, ``lesion_fraction``, ``mask_file``, ``overlay_file``) and per image ``<name>_mask.png``
    (0/255, the image's own size, lesion where the mask probability exceeds ``threshold``; for a multi-class mask the
    class map, pixel values 0..K, and columns ``area_pixels_<mask class>``) and ``<name>_overlay.png`` (a colour per
    mask class). A multi-label mask writes ``<name>_mask_<lesion type>.png`` (0/255) per lesion type instead, with
    columns ``mask_file_<lesion type>`` and ``area_pixels_<lesion type>``; its ``lesion_area_pixels`` count the pixels
    of any lesion type, and its overlay colours each of them by its most probable lesion type. Images of one size
    are predicted in batches of ``batch_size``. A file that cannot be read is listed in ``failed`` and the others
    are still predicted. ``progress(n)`` is called with the number of files
    handled since the last call.
    """

    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold {threshold}: expected a probability in [0, 1]")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; received {batch_size!r}")
    files = list_images(inputs)
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    progress = progress or (lambda count: None)
    names = _output_names(files)
    rows, failed, pending = {}, [], {}

    def flush(shape):
        batch = pending.pop(shape)
        outputs = predictor.serve(np.stack([image for _, image in batch]))
        for position, (index, image) in enumerate(batch):
            rows[index] = _write_outputs(files[index], names[index], image,
                                         {name: value[position] for name, value in outputs.items()},
                                         predictor, output_dir, threshold)
        progress(len(batch))

    for index, path in enumerate(files):
        image, reason = read_image_file(path)
        if image is None:
            failed.append((str(path), reason))
            logger.warning("%s: %s", path, reason)
            progress(1)
            continue
        pending.setdefault(image.shape, []).append((index, image))
        if len(pending[image.shape]) == batch_size:
            flush(image.shape)
    for shape in list(pending):
        flush(shape)

    table = pd.DataFrame([rows[index] for index in sorted(rows)])
    csv_path = output_dir / PREDICTIONS_FILE
    write_atomically(csv_path, lambda temporary: table.to_csv(temporary, index=False))
    return PredictionResult(csv_path, table, failed)


def _output_names(files) -> list[str]:
    """A distinct output name per file: its stem, with ``-2``, ``-3``, ... for repeated stems."""
    seen, names = {}, []
    for path in files:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        names.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return names


def _write_outputs(path, name, image, outputs, predictor, output_dir, threshold) -> dict:
    """Writes one image's mask and overlay; returns its row of predictions.csv."""
    row = {"file": str(path)}
    if "label_probabilities" in outputs:
        row["predicted_class"] = str(outputs["class_name"])
        for class_name, probability in zip(predictor.class_names, outputs["label_probabilities"]):
            row[f"probability_{class_name}"] = float(probability)
    for head in predictor.further_heads:
        name_of_head = head["name"]
        if head["type"] == "regression":
            row.update({f"{name_of_head}_{target}": float(value)
                        for target, value in zip(head["targets"], outputs[name_of_head])})
            continue
        row[f"{name_of_head}_predicted_class"] = str(outputs[f"{name_of_head}_class_name"])
        for class_name, probability in zip(predictor.head_class_names[name_of_head],
                                           outputs[f"{name_of_head}_probabilities"]):
            row[f"{name_of_head}_probability_{class_name}"] = float(probability)
    if "mask_class_map" in outputs:
        class_map = outputs["mask_class_map"].astype(np.uint8)
        area = int((class_map > 0).sum())
        row.update(lesion_area_pixels=area, lesion_fraction=area / class_map.size)
        for value, mask_class in enumerate(predictor.mask_classes, start=1):
            row[f"area_pixels_{mask_class}"] = int((class_map == value).sum())
        row.update(mask_file=f"{name}_mask.png", overlay_file=f"{name}_overlay.png")
        _write_png(output_dir / row["mask_file"], class_map)
        _write_png(output_dir / row["overlay_file"],
                   class_map_overlay(image, class_map, len(predictor.mask_classes)))
    elif "mask_probabilities" in outputs and predictor.multilabel_masks:
        masks = outputs["mask_probabilities"] > threshold
        lesion = masks.any(axis=-1)
        row.update(lesion_area_pixels=int(lesion.sum()), lesion_fraction=float(lesion.mean()))
        for index, lesion_type in enumerate(predictor.mask_classes):
            row[f"area_pixels_{lesion_type}"] = int(masks[..., index].sum())
            row[f"mask_file_{lesion_type}"] = f"{name}_mask_{lesion_type}.png"
            _write_png(output_dir / row[f"mask_file_{lesion_type}"], masks[..., index].astype(np.uint8) * 255)
        row["overlay_file"] = f"{name}_overlay.png"
        most_probable = np.where(lesion, outputs["mask_probabilities"].argmax(axis=-1) + 1, 0).astype(np.uint8)
        _write_png(output_dir / row["overlay_file"], class_map_overlay(image, most_probable, masks.shape[-1]))
    elif "mask_probabilities" in outputs:
        mask = outputs["mask_probabilities"][..., 0] > threshold
        area = int(mask.sum())
        row.update(lesion_area_pixels=area, lesion_fraction=area / mask.size,
                   mask_file=f"{name}_mask.png", overlay_file=f"{name}_overlay.png")
        _write_png(output_dir / row["mask_file"], mask.astype(np.uint8) * 255)
        _write_png(output_dir / row["overlay_file"], overlay(image, mask))
    return row
