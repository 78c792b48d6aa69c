"""The generic ``folder`` dataset: ``images/<id>.<ext>``, ``masks/<id>.<ext>`` and ``labels.csv``.

``labels.csv`` has the columns ``id`` (the image file's name without extension) and ``label`` (a class name), and
optionally ``patient``: examples of one patient are kept in one split. Classes are numbered in sorted order of their
names. Images may be PNG, JPEG, BMP or TIFF, 8 or 16 bits, grayscale or colour; see ``mtunet.data.images`` for how
they are converted.
"""

import concurrent.futures
import logging
import os
from pathlib import Path

import pandas as pd

from mtunet.data.images import prepare_pair, read_image, has_unsupported_layout
from mtunet.data.problems import Problems, name_some
from mtunet.data.store import ExampleStore, build_store
from mtunet.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LAYOUT = "images/<id>.png, masks/<id>.png and labels.csv (columns id,label[,patient])"
_IMAGE_FILE = "a PNG, JPEG, BMP or TIFF image"


def _index_files(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of the image files in ``folder``; other files are ignored with a warning."""
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
    return {stem: folder / names[0] for stem, names in by_stem.items()}


def _read_labels(path: Path) -> pd.DataFrame:
    """``labels.csv`` as strings, checked for the required columns and unique ids."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path} cannot be read as CSV ({error}); expected columns id,label[,patient]") from None
    missing = [column for column in ("id", "label") if column not in table.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)}; expected columns id,label[,patient], "
                        f"found {', '.join(map(str, table.columns))}")
    duplicated = table["id"][table["id"].duplicated()].unique().tolist()
    if duplicated:
        raise DataError(f"{path} lists {len(duplicated)} id(s) more than once: {name_some(duplicated)}; "
                        "expected one row per image")
    return table


def _check_layout(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise DataError(f"data_dir {data_dir} is not a folder; expected a folder with {LAYOUT}")
    missing = [name for name in ("images", "masks", "labels.csv") if not (data_dir / name).exists()]
    if missing:
        raise DataError(f"{data_dir} lacks {', '.join(missing)}; expected {LAYOUT}")


def _decode(image_path: Path, mask_path: Path, image_size: int):
    """``(image, mask, None)`` prepared at ``image_size``, or ``(file, problem, expected)`` if the pair is bad."""
    image = read_image(image_path)
    if image is None:
        return image_path, "cannot be read as an image", _IMAGE_FILE
    if has_unsupported_layout(image):
        return image_path, "have an unsupported number of channels", "a grayscale, RGB or RGBA image"
    mask = read_image(mask_path)
    if mask is None:
        return mask_path, "cannot be read as an image", _IMAGE_FILE + " (a lesion mask)"
    if mask.shape[:2] != image.shape[:2]:
        return (mask_path, "are masks of another size than their image",
                "a mask of its image's height and width")
    return (*prepare_pair(image, mask, image_size), None)


def read_folder(data_dir, *, image_size: int, skip_bad_files: bool = False) -> ExampleStore:
    """Reads and decodes a folder dataset (see the module docstring) at ``image_size``.

    Bad files (unreadable images, missing masks or labels, masks of the wrong size) raise one ``DataError`` naming
    them, or are left out and listed in ``skipped`` when ``skip_bad_files``.
    """
    data_dir = Path(data_dir).expanduser()
    _check_layout(data_dir)
    images, masks = _index_files(data_dir / "images"), _index_files(data_dir / "masks")
    table = _read_labels(data_dir / "labels.csv")
    problems = Problems(str(data_dir), skip=skip_bad_files)
    listed = set(table["id"])
    for stem, path in images.items():
        if stem not in listed:
            problems.add(path.relative_to(data_dir), "have no row in labels.csv",
                         "a labels.csv row for every image")
    usable = []
    for row in table.itertuples(index=False):
        if row.id not in images:
            problems.add(f"labels.csv:{row.id}", "name no image in images/", "an image file for every labels.csv row")
        elif row.id not in masks:
            problems.add(images[row.id].relative_to(data_dir), "have no mask in masks/",
                         "masks/<id>.<ext> for every image")
        elif not row.label.strip():
            problems.add(f"labels.csv:{row.id}", "have an empty label", "a class name in every row")
        else:
            usable.append(row)

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        decoded = list(pool.map(lambda row: _decode(images[row.id], masks[row.id], image_size), usable))
    kept = []
    for row, (first, second, expected) in zip(usable, decoded):
        if expected is None:
            kept.append((row, first, second))
        else:
            problems.add(first.relative_to(data_dir), second, expected)
    skipped = problems.resolve()

    class_names = sorted({row.label.strip() for row, _, _ in kept})
    grouped = "patient" in table.columns
    rows = [
        {
            "id": row.id,
            "label": class_names.index(row.label.strip()),
            "group": (row.patient.strip() or row.id) if grouped else row.id,
            "image": image,
            "mask": mask,
        }
        for row, image, mask in kept
    ]
    return build_store(rows, class_names, grouped=grouped, skipped=skipped, source=str(data_dir))
