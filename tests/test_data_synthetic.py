import cv2
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conftest import refuse_network
from mtunet.data import synthetic


@pytest.fixture(scope="module")
def examples():
    """300 synthetic examples at 64 px (about a second to draw)."""
    return list(synthetic.synthetic_examples(num_patients=150, size=64, seed=7))


def _lesion_features(image, mask):
    """Shape, margin, texture and contrast of the lesion that ``mask`` marks in ``image``, as a radiologist sees it:
    log height/width, solidity (area over convex hull), inner coefficient of variation, inner over surrounding
    brightness."""
    image, lesion = image[..., 0].astype(np.float64), mask[..., 0] > 0
    contours, _ = cv2.findContours(lesion.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    _, _, width, height = cv2.boundingRect(contour)
    solidity = cv2.contourArea(contour) / max(cv2.contourArea(cv2.convexHull(contour)), 1.0)
    around = cv2.dilate(lesion.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~lesion
    inner = image[lesion]
    contrast = inner.mean() / (image[around].mean() + 1)
    return [np.log(height / width), solidity, inner.std() / (inner.mean() + 1), contrast]


def _accuracy(features, labels):
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return cross_val_score(model, features, labels, cv=3).mean()


def test_same_seed_same_bytes_other_seed_differs():
    first = list(synthetic.synthetic_examples(num_patients=4, seed=1))
    again = list(synthetic.synthetic_examples(num_patients=4, seed=1))
    other = list(synthetic.synthetic_examples(num_patients=4, seed=2))
    assert len(first) == 4 * synthetic.IMAGES_PER_PATIENT
    for one, same, different in zip(first, again, other):
        assert one["id"] == same["id"] and one["label"] == same["label"]
        assert one["image"].tobytes() == same["image"].tobytes() and one["mask"].tobytes() == same["mask"].tobytes()
        assert one["image"].tobytes() != different["image"].tobytes()


def test_every_image_has_one_lesion_darker_than_the_tissue_its_mask_borders(examples):
    darker = []
    for example in examples:
        image, mask = example["image"][..., 0].astype(float), example["mask"][..., 0]
        assert example["image"].shape == example["mask"].shape == (64, 64, 1)
        assert set(np.unique(mask)) == {0, 255}
        count, _ = cv2.connectedComponents((mask > 0).astype(np.uint8))
        assert count == 2  # background and one lesion
        under = np.maximum.accumulate(mask > 0, axis=0)  # the lesion and its shadow or enhancement
        around = (cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0) & ~under
        darker.append(image[mask > 0].mean() < image[around].mean())
    assert np.mean(darker) > 0.95  # a few faint ones are lost in the speckle
    assert {example["label"] for example in examples} == set(synthetic.CLASS_NAMES)


def test_some_lesions_are_small_or_faint(examples):
    areas = np.array([np.mean(example["mask"] > 0) for example in examples])
    contrasts = np.array([_lesion_features(example["image"], example["mask"])[3] for example in examples])
    assert 0.05 < np.mean(areas < 0.01) < 0.5
    assert 0.05 < np.mean(contrasts > 0.75) < 0.5


def test_class_is_learnable_from_the_lesion_not_from_overall_brightness(examples):
    labels = np.array([synthetic.CLASS_NAMES.index(example["label"]) for example in examples])
    chance = np.bincount(labels).max() / len(labels)
    lesion = np.array([_lesion_features(example["image"], example["mask"]) for example in examples])
    brightness = np.array([[example["image"].mean()] for example in examples])
    assert _accuracy(lesion, labels) > chance + 0.35
    assert _accuracy(brightness, labels) < chance + 0.1


def test_tfds_load_works_offline(tfds_dir, monkeypatch):
    import tensorflow_datasets as tfds

    import mtunet.data.synthetic_tfds  # noqa: F401  (registers the builder)

    refuse_network(monkeypatch)
    dataset, info = tfds.load("mtunet_synthetic", split="train", data_dir=tfds_dir, with_info=True)
    assert info.splits["train"].num_examples == synthetic.NUM_PATIENTS * synthetic.IMAGES_PER_PATIENT == 1400
    assert info.features["label"].names == list(synthetic.CLASS_NAMES)
    assert str(info.version) == "2.1.0"
    example = next(iter(tfds.as_numpy(dataset)))
    assert example["id"] == b"p0000_0"  # stored in id order
    assert example["image"].shape == example["mask"].shape == (128, 128, 1)
    assert set(np.unique(example["mask"])) == {0, 255}
    drawn = next(synthetic.synthetic_examples(num_patients=1))
    np.testing.assert_array_equal(example["image"], drawn["image"])


def test_load_dataset_synthetic(synthetic_dataset):
    info = synthetic_dataset.info
    assert info.class_names == ["cyst", "fibroadenoma", "carcinoma"]
    assert (info.num_classes, info.channels, info.image_size, info.storage) == (3, 1, 32, "memory")
    assert info.num_groups == 700 and synthetic_dataset.splits.grouping == "patient"
    assert info.split_sizes == {"train": 980, "validation": 210, "test": 210}
    assert info.skipped == []
