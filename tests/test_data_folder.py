import re

import cv2
import numpy as np
import pandas as pd
import pytest

from mtunet.data.folder import read_folder
from mtunet.data.problems import BadFilesError
from mtunet.errors import DataError


def _corrupt_images(root):
    for name in ("case000_0.png", "case001_1.png", "case002_0.png", "case003_1.png"):
        (root / "images" / name).write_bytes(b"\x89PNG truncated")


def _shrink_mask(root):
    cv2.imwrite(str(root / "masks" / "case004_0.png"), np.zeros((10, 10), np.uint8))


def _drop_mask(root):
    (root / "masks" / "case005_1.png").unlink()


def _drop_image(root):
    (root / "images" / "case006_0.png").unlink()


def _add_unlisted_image(root):
    cv2.imwrite(str(root / "images" / "stray.png"), np.zeros((8, 8), np.uint8))


def _empty_label(root):
    table = pd.read_csv(root / "labels.csv", dtype=str)
    table.loc[3, "label"] = ""
    table.to_csv(root / "labels.csv", index=False)


def _label_not_in_class_list(root):
    (root / "classes.txt").write_text("benign\nmalignant\n")
    table = pd.read_csv(root / "labels.csv", dtype=str)
    table.loc[[2, 5], "label"] = "Malignant"
    table.to_csv(root / "labels.csv", index=False)


def _mask_classes_with_a_value_above_them(root):
    (root / "mask_classes.txt").write_text("rim\ncore\n")
    for path in (root / "masks").iterdir():
        cv2.imwrite(str(path), (cv2.imread(str(path), cv2.IMREAD_UNCHANGED) > 0).astype(np.uint8) * 2)
    mask = np.zeros((40, 56), np.uint8)
    mask[5:10, 5:10] = 3
    cv2.imwrite(str(root / "masks" / "case003_0.png"), mask)


def _mask_classes_with_a_colour_mask(root):
    (root / "mask_classes.txt").write_text("rim\ncore\n")
    for path in (root / "masks").iterdir():
        cv2.imwrite(str(path), (cv2.imread(str(path), cv2.IMREAD_UNCHANGED) > 0).astype(np.uint8))
    mask = np.zeros((40, 56, 3), np.uint8)
    mask[5:10, 5:10] = (0, 1, 2)
    cv2.imwrite(str(root / "masks" / "case004_1.png"), mask)


# breakage, error message (regex), examples left when skipping (24 in the intact dataset), files listed as skipped
BAD_FILES = [
    (_corrupt_images, r"4 bad file\(s\) in .*: 4 cannot be read as an image \(images/case000_0.png, "
                      r"images/case001_1.png, images/case002_0.png and 1 more; expected a PNG, JPEG, BMP or TIFF "
                      r"image", 20, 4),
    (_shrink_mask, r"1 bad file\(s\) in .*: 1 are masks of another size than their image \(masks/case004_0.png; "
                   r"expected a mask of its image's height and width\)", 23, 1),
    (_drop_mask, r"images/case005_1.png; expected masks/<id>.<ext> for every image", 23, 1),
    (_drop_image, r"name no image in images/ \(labels.csv:case006_0; expected an image file", 23, 2),  # + its mask
    (_add_unlisted_image, r"have no row in labels.csv \(images/stray.png", 24, 1),
    (_empty_label, r"have an empty label \(labels.csv:case001_1", 23, 1),
    (_label_not_in_class_list, r"2 bad file\(s\) in .*: 2 have a label that is not in classes.txt \("
                               r"labels.csv:case001_0, labels.csv:case002_1; expected one of benign, malignant", 22, 2),
    (_mask_classes_with_a_value_above_them, r"^1 bad file\(s\) in .*: 1 have mask value 3, above the 2 mask classes "
                                            r"\(masks/case003_0.png; expected mask values 0 \(background\) to 2, one "
                                            r"per mask class in mask_classes.txt\)\. Pass skip_bad_files", 23, 1),
    (_mask_classes_with_a_colour_mask, r"are colour masks whose channels differ \(masks/case004_1.png; expected "
                                       r"1-channel mask values 0 \(background\) to 2", 23, 1),
]


@pytest.mark.parametrize("break_dataset, message, num_left, num_skipped", BAD_FILES)
def test_bad_files_raise_one_error_naming_them_or_are_skipped(folder_dataset, break_dataset, message, num_left,
                                                              num_skipped):
    root = folder_dataset()
    break_dataset(root)
    with pytest.raises(DataError, match=message) as error:
        read_folder(root, image_size=16)
    assert "\n" not in str(error.value) and "skip_bad_files=True" in str(error.value)
    store = read_folder(root, image_size=16, skip_bad_files=True)
    assert len(store.ids) == num_left
    assert len(store.skipped) == num_skipped
    assert all(isinstance(file, str) and reason for file, reason in store.skipped)


def test_every_kind_of_problem_is_named_with_its_files(folder_dataset):
    root = folder_dataset()
    _corrupt_images(root)
    _drop_mask(root)
    with pytest.raises(BadFilesError) as error:
        read_folder(root, image_size=16)
    message = str(error.value)
    assert re.match(r"5 bad file\(s\) in .*: ", message), message
    assert ("1 have no mask in masks/ (images/case005_1.png; expected masks/<id>.<ext> for every image, or "
            "allow_missing='mask' to keep images without one)") in message
    assert "4 cannot be read as an image (images/case000_0.png" in message and "\n" not in message
    kinds = error.value.kinds()
    assert {problem: len(files) for (problem, _), files in kinds.items()} == {
        "have no mask in masks/": 1, "cannot be read as an image": 4}


# breakage, error message (regex): problems with the dataset as a whole, never skipped
BAD_LAYOUTS = [
    (lambda root: (root / "labels.csv").unlink(), r"lacks labels.csv; expected images/<id>.png"),
    (lambda root: (root / "labels.csv").write_text("name,label\na,b\n"),
     r"labels.csv lacks the column\(s\) id; expected columns id,label\[,patient or group\], found name, label"),
    (lambda root: (root / "labels.csv").write_text("id,label,patient,group\ncase000_0,a,1,1\n"),
     r"has both a patient and a group column"),
    (lambda root: (root / "classes.txt").write_text("benign\nmalignant\nbenign\n"),
     r"classes.txt names a class more than once: benign; expected one class name a line"),
    (lambda root: (root / "mask_classes.txt").write_text("lesion\n"),
     r"mask_classes.txt names 1 mask class\(es\); expected 2 to 254 \(for binary masks, no mask_classes.txt\)"),
    (lambda root: (root / "mask_classes.txt").write_text("rim\n\nrim\n"),
     r"mask_classes.txt names a class more than once: rim;"),
    (lambda root: (root / "labels.csv").write_text("id,label\ncase000_0,a\ncase000_0,b\ncase001_0,a\n"),
     r"lists 1 id\(s\) more than once: case000_0"),
    (lambda root: cv2.imwrite(str(root / "images" / "case000_0.jpg"), np.zeros((4, 4), np.uint8)),
     r"several files with one id .*: case000_0.jpg, case000_0.png;"),
]


@pytest.mark.parametrize("break_dataset, message", BAD_LAYOUTS)
def test_bad_layouts_raise_even_when_skipping(folder_dataset, break_dataset, message):
    root = folder_dataset()
    break_dataset(root)
    with pytest.raises(DataError, match=message):
        read_folder(root, image_size=16, skip_bad_files=True)


def test_missing_folder_empty_dataset_and_single_class(tmp_path, folder_dataset):
    with pytest.raises(DataError, match=r"is not a folder; expected a folder with images/"):
        read_folder(tmp_path / "absent", image_size=16)
    with pytest.raises(DataError, match=r"has only the class\(es\) \['benign'\]; expected at least 2 classes"):
        read_folder(folder_dataset(classes=("benign",)), image_size=16)
    empty = folder_dataset(num_patients=0)
    (empty / "labels.csv").write_text("id,label,patient\n")
    with pytest.raises(DataError, match=r"has no usable example \(0 skipped\)"):
        read_folder(empty, image_size=16)


def test_class_list_sets_the_order_of_classes(folder_dataset):
    root = folder_dataset()
    (root / "classes.txt").write_text("malignant\n\nbenign\nnormal\n")
    store = read_folder(root, image_size=16)
    assert store.class_names == ["malignant", "benign", "normal"]  # a class may have no example
    assert store.labels[:4].tolist() == [1, 1, 0, 0]  # case000 is benign, case001 malignant


def test_files_outside_the_dataset_are_listed_as_skipped(folder_dataset):
    root = folder_dataset()
    (root / "images" / "notes.txt").write_text("scanned 2024")
    cv2.imwrite(str(root / "masks" / "orphan.png"), np.zeros((8, 8), np.uint8))
    (root / "images" / ".DS_Store").write_bytes(b"")
    store = read_folder(root, image_size=16)
    assert len(store.ids) == 24
    assert store.skipped == [("images/notes.txt", "are not PNG, JPEG, BMP or TIFF files"),
                             ("masks/orphan.png", "are masks without an image")]


def test_group_column_is_a_patient_column(folder_dataset):
    root = folder_dataset()
    table = pd.read_csv(root / "labels.csv", dtype=str).rename(columns={"patient": "group"})
    table.to_csv(root / "labels.csv", index=False)
    store = read_folder(root, image_size=16)
    assert store.grouped and store.num_groups == 12


def test_one_dataset_mixes_16_bit_tiff_grayscale_png_and_rgb_jpeg(folder_dataset):
    root = folder_dataset(num_patients=3)
    deep = np.zeros((40, 56), np.uint16)
    deep[10:20, 10:30] = 4095  # 12-bit data in a 16-bit TIFF
    (root / "images" / "case000_0.png").unlink()
    cv2.imwrite(str(root / "images" / "case000_0.tif"), deep)
    cv2.imwrite(str(root / "masks" / "case000_0.png"), (deep > 0).astype(np.uint8) * 255)
    colour = np.zeros((40, 56, 3), np.uint8)
    colour[..., 2] = 200  # red in OpenCV's BGR order
    (root / "images" / "case001_0.png").unlink()
    cv2.imwrite(str(root / "images" / "case001_0.jpg"), colour)
    store = read_folder(root, image_size=28)  # 56 -> 28: halved
    assert store.channels == 3 and store.images.shape == (6, 28, 28, 3)
    np.testing.assert_array_equal(store.images[0][store.masks[0][..., 0] == 1], 255)  # TIFF stretched, repeated
    np.testing.assert_array_equal(store.images[0][store.masks[0][..., 0] == 0], 0)
    assert np.abs(store.images[2][8:20].astype(int) - [200, 0, 0]).max() <= 3  # JPEG, RGB order
    assert store.images[1].std(axis=2).max() == 0  # grayscale PNG repeated to 3 channels
    assert store.original_sizes.tolist() == [[40, 56]] * 6


def test_reads_ids_labels_patients_and_masks(folder_dataset):
    store = read_folder(folder_dataset(classes=("malignant", "benign", "normal")), image_size=32)
    assert store.class_names == ["benign", "malignant", "normal"]  # sorted, whatever the order in labels.csv
    assert store.ids[:3].tolist() == ["case000_0", "case000_1", "case001_0"]
    assert store.labels[:3].tolist() == [1, 1, 0]
    assert store.grouped and store.num_groups == 12 and store.groups[1] == "case000"
    assert store.images.shape == (24, 32, 32, 1) and store.images.dtype == np.uint8
    assert store.masks.shape == (24, 32, 32, 1) and set(np.unique(store.masks)) == {0, 1}
    # the lesion is the brightest part of each image
    assert store.images[store.masks == 1].mean() > 3 * store.images[store.masks == 0].mean()


def test_without_patient_column_each_example_is_its_own_group(folder_dataset):
    store = read_folder(folder_dataset(patients=False), image_size=16)
    assert not store.grouped and store.num_groups == 24


@pytest.mark.parametrize("options, channels", [
    ({"colour": True}, 3),
    ({"dtype": np.uint16, "suffix": ".tif"}, 1),
    ({"dtype": np.uint16, "suffix": ".png"}, 1),
    ({"suffix": ".jpg"}, 1),
])
def test_reads_colour_16_bit_and_other_formats(folder_dataset, options, channels):
    store = read_folder(folder_dataset(**options), image_size=16)
    assert store.images.shape == (24, 16, 16, channels)
    assert store.images.max() == 255  # 16-bit images stretched to the 8-bit range


def _write_multiclass_dataset(root):
    """Three 6x8 images of a rim (1) around a core (2) in a folder dataset with mask_classes.txt: the masks as an
    8-bit PNG, a 16-bit PNG and a colour PNG of equal channels. Returns ``{id: mask written}``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "mask_classes.txt").write_text("rim\ncore\n\n")
    masks = {}
    for index, (example_id, dtype, colour) in enumerate([("a", np.uint8, False), ("b", np.uint16, False),
                                                         ("c", np.uint8, True)]):
        mask = np.zeros((6, 8), np.uint8)
        mask[1:5, index:index + 4] = 1
        mask[2:4, index + 1:index + 3] = 2
        mask[0, 7] = 2 * (index == 2)  # a lone core pixel in c
        masks[example_id] = mask
        cv2.imwrite(str(root / "images" / f"{example_id}.png"), mask * 100)
        stored = np.stack([mask] * 3, axis=2) if colour else mask.astype(dtype)
        cv2.imwrite(str(root / "masks" / f"{example_id}.png"), stored)
    (root / "labels.csv").write_text("id,label\na,benign\nb,malignant\nc,benign\n")
    return masks


def test_mask_classes_txt_makes_masks_class_values_read_exactly(tmp_path):
    masks = _write_multiclass_dataset(tmp_path)
    store = read_folder(tmp_path, image_size=8)  # 6x8 letterboxed to 8x8: a row of padding above and below
    assert store.mask_classes == ("rim", "core")
    assert store.ids.tolist() == ["a", "b", "c"] and store.masks.shape == (3, 8, 8, 1)
    for position, mask in enumerate(masks.values()):
        np.testing.assert_array_equal(store.masks[position, 1:7, :, 0], mask)
        np.testing.assert_array_equal(store.masks[position, [0, 7]], 0)
    np.testing.assert_allclose(store.lesion_fractions, [np.mean(mask > 0) for mask in masks.values()])
    np.testing.assert_allclose(store.mask_fractions, [[np.mean(mask == 1), np.mean(mask == 2)]
                                                      for mask in masks.values()])
    smaller = read_folder(tmp_path, image_size=5)  # nearest-neighbour: only values of the original masks
    assert set(np.unique(smaller.masks)) == {0, 1, 2}


def test_without_mask_classes_txt_masks_stay_binary(folder_dataset):
    store = read_folder(folder_dataset(), image_size=16)
    assert store.mask_classes == ("lesion",)
    assert set(np.unique(store.masks)) == {0, 1}
    np.testing.assert_array_equal(store.mask_fractions[:, 0], store.lesion_fractions)
