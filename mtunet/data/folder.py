"""The generic ``folder`` dataset: ``images/<id>.<ext>``, ``masks/<id>.<ext>`` and ``labels.csv``.

``labels.csv`` has the columns ``id`` (the image file's name without extension) and ``label`` (a class name), and
optionally ``patient`` (or ``group``): examples of one patient are kept in one split. An optional ``classes.txt``
lists the class names, one a line, in the order of their indices; a label not in it is a bad row. Without it,
classes are numbered in sorted order of the labels found. Images may be PNG, JPEG, BMP or TIFF, 8 or 16 bits,
grayscale or colour; see ``mtunet.data.images`` for how they are converted.

Masks are binary (lesion / background) unless an optional ``mask_classes.txt`` names the mask classes, one a line,
at least 2: then a mask is a map of class values, 0 background and ``i`` the ``i``-th name of the file.

Masks are multi-label (lesion types that may overlap, e.g. the microaneurysms, haemorrhages and exudates of a fundus
photograph) when ``masks/`` holds one sub-folder per lesion type, ``masks/<lesion type>/<id>.<ext>``, each a binary
mask, and no mask file of its own: the lesion types are the sub-folder names in sorted order, channel ``l`` of the
mask the ``l``-th of them; a ``mask_classes.txt`` is then refused. (Sub-folders beside mask files in ``masks/`` are
ignored, as they always were, now with a warning.)

Further columns of ``labels.csv`` are further targets, each learnt by a head of its own, when an optional
``columns.json`` declares them (see ``mtunet.data.targets``).

With ``allow_missing=("mask",)`` an image without a mask file is kept, as partially labelled: it trains the class head
and the further heads but adds nothing to the mask's loss and metrics (IDRiD grades 516 images and segments 81).
With multi-label masks it may lack the file of any lesion type: that lesion type's channel is then missing (adding
nothing to its loss and metrics), and an image lacking all of them has no mask. Without it, every image needs the
file of every lesion type.
``allow_missing=("label",)`` likewise keeps rows with an empty label (class index ``MISSING_CLASS``): they train the
mask and the further heads, not the class head (ISIC 2018's Task 1 masks beside its Task 3 diagnoses).
"""

import concurrent.futures
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mtunet.data.images import (BINARY_MASK_CLASSES, MISSING_MASK_VALUE, MaskError, binarise_mask,
                                field_of_view_box, has_unsupported_layout, lesion_fraction, mask_fractions,
                                missing_mask, prepare_image, prepare_multilabel_mask, prepare_pair, read_image,
                                to_rgb_or_gray, to_uint8)
from mtunet.data.problems import Problems, name_some
from mtunet.data.store import ExampleStore, build_store, check_memory_limit, fits_in_memory
from mtunet.data.targets import COLUMNS_FILE, MISSING_CLASS, parse_targets, read_target_heads
from mtunet.errors import DataError
from mtunet.options import check_allow_missing, spell

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_COLUMNS = "id,label[,patient or group]"
LAYOUT = f"images/<id>.png, masks/<id>.png and labels.csv (columns {_COLUMNS})"
_IMAGE_FILE = "a PNG, JPEG, BMP or TIFF image"
_NOT_AN_IMAGE = "are not PNG, JPEG, BMP or TIFF files"
# most mask classes a mask_classes.txt may name: mask values are stored as uint8, and one value marks a missing mask
MAX_MASK_CLASSES = MISSING_MASK_VALUE - 1


def _index_files(folder: Path) -> tuple[dict[str, Path], list[Path]]:
    """``({stem: path} of the image files, [other files])`` in ``folder``, hidden files aside; the other files are
    ignored with a warning."""
    by_stem, ignored = {}, []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(path.stem, []).append(path.name)
        else:
            ignored.append(path.name)
    clashes = [name for names in by_stem.values() if len(names) > 1 for name in names]
    if clashes:
        raise DataError(f"{folder} has several files with one id (name without extension): {name_some(clashes)}; "
                        "expected one file per id")
    if ignored:
        logger.warning("ignoring %d file(s) in %s that are not images: %s", len(ignored), folder, name_some(ignored))
    return {stem: folder / names[0] for stem, names in by_stem.items()}, [folder / name for name in ignored]


def _read_labels(path: Path) -> pd.DataFrame:
    """``labels.csv`` as strings, checked for the required columns and unique ids; a ``group`` column is renamed
    ``patient``."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path} cannot be read as CSV ({error}); expected columns {_COLUMNS}") from None
    missing = [column for column in ("id", "label") if column not in table.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)}; expected columns {_COLUMNS}, "
                        f"found {', '.join(map(str, table.columns))}")
    if {"patient", "group"} <= set(table.columns):
        raise DataError(f"{path} has both a patient and a group column; expected at most one of them")
    table = table.rename(columns={"group": "patient"})
    duplicated = table["id"][table["id"].duplicated()].unique().tolist()
    if duplicated:
        raise DataError(f"{path} lists {len(duplicated)} id(s) more than once: {name_some(duplicated)}; "
                        "expected one row per image")
    return table


def _read_class_list(path: Path) -> list[str] | None:
    """The class names in ``path`` (``classes.txt`` or ``mask_classes.txt``: one a line, blank lines ignored), or None
    if there is no such file."""
    if not path.exists():
        return None
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if not names or repeated:
        raise DataError(f"{path} names {'no class' if not names else 'a class more than once: ' + name_some(repeated)}"
                        "; expected one class name a line, each once")
    return names


def _read_mask_classes(path: Path) -> tuple[str, ...]:
    """The mask classes named in ``mask_classes.txt`` (2 to ``MAX_MASK_CLASSES``), or ``BINARY_MASK_CLASSES`` if there
    is no such file."""
    names = _read_class_list(path)
    if names is None:
        return BINARY_MASK_CLASSES
    if not 2 <= len(names) <= MAX_MASK_CLASSES:
        raise DataError(f"{path} names {len(names)} mask class(es); expected 2 to {MAX_MASK_CLASSES} (for binary "
                        "masks, no mask_classes.txt)")
    return tuple(names)


def _lesion_types(masks_dir: Path) -> tuple[str, ...]:
    """The sub-folders of ``masks_dir`` (hidden ones aside), sorted: the lesion types of a multi-label dataset; ``()``
    for masks of one file per image, which a mask file directly in ``masks_dir`` makes them."""
    folders = sorted(path.name for path in masks_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    if any(path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES for path in masks_dir.iterdir()):
        if folders:
            logger.warning("ignoring the sub-folder(s) %s of %s: it holds mask files, one per image",
                           name_some(folders), masks_dir)
        return ()
    return tuple(folders)


def _check_layout(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise DataError(f"data_dir {data_dir} is not a folder; expected a folder with {LAYOUT}")
    missing = [name for name in ("images", "masks", "labels.csv") if not (data_dir / name).exists()]
    if missing:
        raise DataError(f"{data_dir} lacks {', '.join(missing)}; expected {LAYOUT}")


class _BadPair(Exception):
    """An image and mask that cannot be used: ``file`` has ``problem``; ``expected`` says what was wanted."""

    def __init__(self, file: Path, problem: str, expected: str):
        super().__init__(file, problem, expected)
        self.file, self.problem, self.expected = file, problem, expected


def _read_mask(mask_path: Path, image: np.ndarray) -> np.ndarray:
    """The decoded mask at ``mask_path`` of the decoded ``image``; ``_BadPair`` if unreadable or of another size."""
    mask = read_image(mask_path)
    if mask is None:
        raise _BadPair(mask_path, "cannot be read as an image", _IMAGE_FILE + " (a lesion mask)")
    if mask.shape[:2] != image.shape[:2]:
        raise _BadPair(mask_path, "are masks of another size than their image",
                       "a mask of its image's height and width")
    return mask


def _decode_multilabel(image: np.ndarray, mask_paths: tuple, image_size: int, crop_fov: bool):
    """``(mask, facts)`` of a multi-label mask: ``prepare_multilabel_mask`` of the lesion types' files
    ``mask_paths`` (None for a lesion type without one; cut to the image's field of view with ``crop_fov``), and its
    lesion fraction (of any lesion type present) and fractions per lesion type (NaN where missing)."""
    masks = [None if path is None else binarise_mask(_read_mask(path, image))[..., 0] for path in mask_paths]
    given = [mask for mask in masks if mask is not None]
    facts = {"lesion_fraction": float(np.mean(np.any(given, axis=0))) if given else float("nan"),
             "mask_fractions": [float("nan") if mask is None else float(mask.mean()) for mask in masks],
             "mask_present": bool(given)}
    box = field_of_view_box(to_rgb_or_gray(to_uint8(image))) if crop_fov else None
    return prepare_multilabel_mask(masks, image_size, box), facts


def _decode(image_path: Path, mask_path, image_size: int, num_mask_classes: int, crop_fov: bool):
    """``(image, mask, facts)``: the pair prepared at ``image_size`` with ``num_mask_classes`` mask classes (cut to the
    image's field of view with ``crop_fov``), and
    ``{"size", "lesion_fraction", "mask_fractions", "channels", "mask_present"}`` of it (``missing_mask`` and NaN
    fractions when ``mask_path`` is None); ``_BadPair`` if it cannot be used. A tuple ``mask_path`` is a multi-label
    mask's files, one per lesion type (see ``_decode_multilabel``)."""
    image = read_image(image_path)
    if image is None:
        raise _BadPair(image_path, "cannot be read as an image", _IMAGE_FILE)
    if has_unsupported_layout(image):
        raise _BadPair(image_path, "have an unsupported number of channels", "a grayscale, RGB or RGBA image")
    if isinstance(mask_path, tuple):
        prepared_image = prepare_image(image, image_size, crop_fov=crop_fov)
        mask, facts = _decode_multilabel(image, mask_path, image_size, crop_fov)
        return prepared_image, mask, {"size": image.shape[:2], "channels": prepared_image.shape[2], **facts}
    if mask_path is None:
        prepared_image = prepare_image(image, image_size, crop_fov=crop_fov)
        facts = {"size": image.shape[:2], "lesion_fraction": float("nan"),
                 "mask_fractions": [float("nan")] * num_mask_classes, "channels": prepared_image.shape[2],
                 "mask_present": False}
        return prepared_image, missing_mask(image_size), facts
    mask = _read_mask(mask_path, image)
    try:
        prepared_image, prepared_mask = prepare_pair(image, mask, image_size, num_mask_classes,
                                                     crop_fov=crop_fov)
    except MaskError as bad:
        raise _BadPair(mask_path, bad.problem, f"{bad.expected} in mask_classes.txt") from None
    facts = {"size": image.shape[:2], "lesion_fraction": lesion_fraction(mask, num_mask_classes),
             "mask_fractions": mask_fractions(mask, num_mask_classes), "channels": prepared_image.shape[2],
             "mask_present": True}
    return prepared_image, prepared_mask, facts


def _decode_again(image_path: Path, mask_path, image_size: int, num_mask_classes: int, crop_fov: bool):
    """The prepared ``(image, mask)`` of a pair found good while reading; ``DataError`` if it has gone bad since."""
    try:
        image, mask, _ = _decode(image_path, mask_path, image_size, num_mask_classes, crop_fov)
    except _BadPair as bad:
        raise DataError(f"{bad.file} {bad.problem} since the dataset was read; expected {bad.expected}") from None
    return image, mask


def _index_masks(data_dir: Path, lesion_types: tuple[str, ...], images: dict):
    """``({folder under masks/: {stem: path}}, ignored files with reasons)``: ``{"": ...}`` of ``masks/`` itself, or
    one entry per lesion type's sub-folder of a multi-label dataset."""
    masks_dir = data_dir / "masks"
    masks, other_masks = _index_files(masks_dir)
    if lesion_types:
        if (data_dir / "mask_classes.txt").exists():
            raise DataError(f"{data_dir} has both mask_classes.txt and lesion sub-folders of masks/ "
                            f"({', '.join(lesion_types)}); expected one of them: masks/<id>.png of class values, or "
                            "masks/<lesion type>/<id>.png of binary masks")
        folders = {}
        for lesion in lesion_types:
            folders[lesion], others = _index_files(masks_dir / lesion)
            other_masks = other_masks + others
    else:
        folders = {"": masks}
    ignored = [(path.relative_to(data_dir), _NOT_AN_IMAGE) for path in other_masks]
    ignored += [(path.relative_to(data_dir), "are masks without an image") for folder in folders.values()
                for stem, path in folder.items() if stem not in images]
    return folders, ignored


def _list_rows(data_dir: Path, problems: Problems, allow_missing):
    """``(usable rows, classes.txt names or None, mask classes, whether the masks are multi-label, whether rows have
    patients, further target heads, the label's kind, ignored files with reasons)``: the rows of ``labels.csv``
    matched with the files (mask file None for an image without one, when ``allow_missing`` has ``"mask"``; a tuple
    of one per lesion type for multi-label masks); problems of rows and files go to ``problems``."""
    images, other_images = _index_files(data_dir / "images")
    lesion_types = _lesion_types(data_dir / "masks")
    mask_folders, ignored_masks = _index_masks(data_dir, lesion_types, images)
    table = _read_labels(data_dir / "labels.csv")
    class_list = _read_class_list(data_dir / "classes.txt")
    mask_classes = lesion_types or _read_mask_classes(data_dir / "mask_classes.txt")
    declarations, label_kind = read_target_heads(data_dir / COLUMNS_FILE, list(table.columns))
    target_columns = [column for declaration in declarations for column in declaration["columns"]]
    listed = set(table["id"])
    ignored = [(path.relative_to(data_dir), _NOT_AN_IMAGE) for path in other_images] + ignored_masks
    for stem, path in images.items():
        if stem not in listed:
            problems.add(path.relative_to(data_dir), "have no row in labels.csv",
                         "a labels.csv row for every image")
    usable = []
    for record in table.to_dict("records"):
        example, label = record["id"], record["label"].strip()
        if example not in images:
            problems.add(f"labels.csv:{example}", "name no image in images/", "an image file for every labels.csv row")
        elif lesion_types and "mask" not in allow_missing and any(
                example not in mask_folders[lesion] for lesion in lesion_types):
            for lesion in lesion_types:
                if example not in mask_folders[lesion]:
                    problems.add(f"masks/{lesion}/{example}", "have no mask file of their lesion type",
                                 f"masks/<lesion type>/<id>.<ext> for every image and each of "
                                 f"{', '.join(lesion_types)}, or {spell('allow_missing', 'mask')} to keep images "
                                 "without some")
        elif not lesion_types and example not in mask_folders[""] and "mask" not in allow_missing:
            problems.add(images[example].relative_to(data_dir), "have no mask in masks/",
                         f"masks/<id>.<ext> for every image, or {spell('allow_missing', 'mask')} to keep images "
                         "without one")
        elif not label and "label" not in allow_missing:
            problems.add(f"labels.csv:{example}", "have an empty label",
                         f"a class name in every row, or {spell('allow_missing', 'label')} to keep rows without one")
        elif label and class_list is not None and label not in class_list:
            problems.add(f"labels.csv:{example}", "have a label that is not in classes.txt",
                         f"one of {', '.join(class_list)}")
        else:
            patient = (record.get("patient") or "").strip()
            mask_files = (tuple(mask_folders[lesion].get(example) for lesion in lesion_types) if lesion_types
                          else mask_folders[""].get(example))
            usable.append({"id": example, "label": label, "group": patient or example,
                           "files": (images[example], mask_files),
                           "cells": {column: record[column] for column in target_columns}})
    target_heads, bad = parse_targets(declarations, usable, problems)
    usable = [row for row in usable if row["id"] not in bad]
    return (usable, class_list, mask_classes, bool(lesion_types), "patient" in table.columns, target_heads, label_kind,
            ignored)


def read_folder(data_dir, *, image_size: int, skip_bad_files: bool = False, memory_limit: int | None = None,
                allow_missing=(), crop_fov: bool = False) -> ExampleStore:
    """Reads and decodes a folder dataset (see the module docstring) at ``image_size``, each image and its masks cut
    to the image's field of view first with ``crop_fov`` (``mtunet.data.images.field_of_view_box``).

    Every image is decoded here, so bad files (unreadable images, missing masks or labels, masks of the wrong size,
    labels not in ``classes.txt``, mask values beyond ``mask_classes.txt``, a lesion type's mask missing) raise one
    ``DataError`` naming them, or
    are left out and listed in ``skipped`` when ``skip_bad_files``. Files that are not images, and masks without an
    image, are listed in ``skipped`` too. ``allow_missing`` (some of ``"mask"``, ``"label"``) keeps images without a
    mask file or rows without a label (see the module docstring) instead of calling them bad. The decoded examples
    are kept in memory if they take at most ``memory_limit`` bytes (None: the default of
    ``mtunet.data.store.default_memory_limit``), else streamed.
    """
    allow_missing = check_allow_missing(allow_missing)
    data_dir = Path(data_dir).expanduser()
    _check_layout(data_dir)
    problems = Problems(str(data_dir), skip=skip_bad_files)
    (usable, class_list, mask_classes, multilabel, grouped, target_heads, label_kind,
     ignored) = _list_rows(data_dir, problems, allow_missing)
    num_mask_classes = len(mask_classes)
    mask_channels = num_mask_classes if multilabel else 1
    in_memory = fits_in_memory(len(usable), image_size, check_memory_limit(memory_limit), mask_channels=mask_channels)

    def decode(row):
        try:
            image, mask, facts = _decode(*row["files"], image_size, num_mask_classes, crop_fov)
        except _BadPair as bad:
            return bad
        return {**row, **facts, "image": image if in_memory else None, "mask": mask if in_memory else None}

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        decoded = list(pool.map(decode, usable))
    rows = [row for row in decoded if isinstance(row, dict)]
    for bad in decoded:
        if isinstance(bad, _BadPair):
            problems.add(bad.file.relative_to(data_dir), bad.problem, bad.expected)
    skipped = problems.resolve() + [(str(file), reason) for file, reason in ignored]

    class_names = class_list or sorted({row["label"] for row in rows if row["label"]})
    for row in rows:
        row["label"] = class_names.index(row["label"]) if row["label"] else MISSING_CLASS
    files = [row["files"] for row in rows]
    streamer = None
    if not in_memory:
        from mtunet.data.stream import file_streamer  # imports TensorFlow: only streaming needs it

        streamer = file_streamer(lambda position: _decode_again(*files[position], image_size, num_mask_classes,
                                                                 crop_fov),
                                 image_size, mask_channels)
    return build_store(rows, class_names, grouped=grouped, skipped=skipped, source=str(data_dir),
                       image_size=image_size, streamer=streamer, mask_classes=mask_classes, target_heads=target_heads,
                       label_kind=label_kind, multilabel_masks=multilabel)
