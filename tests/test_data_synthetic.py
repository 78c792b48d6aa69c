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


@pytest.fixture(scope="module")
def multiclass_dataset(tfds_dir):
    """The synthetic_multiclass dataset at 32x32 with the default split, in memory, prepared offline."""
    from mtunet.data import load_dataset

    with pytest.MonkeyPatch.context() as monkeypatch:
        refuse_network(monkeypatch)
        return load_dataset("synthetic_multiclass", data_dir=tfds_dir, image_size=32)


def test_rim_and_core_keep_the_binary_draws_and_brighten_the_core(examples):
    multiclass = list(synthetic.synthetic_examples(num_patients=150, size=64, seed=7, rim_and_core=True))
    both, brighter = [], []
    for binary, example in zip(examples, multiclass, strict=True):
        assert (example["id"], example["patient"], example["label"]) == (binary["id"], binary["patient"],
                                                                          binary["label"])
        mask, image = example["mask"][..., 0], example["image"][..., 0].astype(float)
        assert set(np.unique(mask)) <= {0, 1, 2}
        np.testing.assert_array_equal(mask > 0, binary["mask"][..., 0] > 0)  # the same outline
        np.testing.assert_array_equal(image[mask == 0], binary["image"][..., 0][mask == 0])  # the same tissue
        both.append({1, 2} <= set(np.unique(mask)))
        if both[-1]:
            brighter.append(image[mask == 2].mean() > image[mask == 1].mean())
    assert np.mean(both) > 0.9  # at 64 px some small lesions are too thin for a rim (at 128 px none is)
    assert np.mean(brighter) > 0.95


def test_load_dataset_synthetic_multiclass(multiclass_dataset, synthetic_dataset):
    from mtunet.data import DatasetInfo

    info, binary = multiclass_dataset.info, synthetic_dataset.info
    assert info.mask_classes == ("rim", "core") and info.multiclass_masks
    assert binary.mask_classes == ("lesion",) and not binary.multiclass_masks
    assert {**info.to_dict(), "name": "synthetic", "mask_classes": ["lesion"]} == binary.to_dict()
    assert DatasetInfo.from_dict(info.to_dict()) == info
    for split in ("train", "validation", "test"):
        assert multiclass_dataset.ids(split) == synthetic_dataset.ids(split)
    _, targets = next(iter(multiclass_dataset.pipeline("test", batch_size=64, training=False)))
    masks = targets["mask"].numpy()
    assert masks.shape == (64, 32, 32, 1) and masks.dtype == np.float32
    assert set(np.unique(masks)) == {0.0, 1.0, 2.0}
    table = multiclass_dataset.table("test")
    np.testing.assert_allclose(table["fraction_rim"] + table["fraction_core"], table["lesion_fraction"])
    np.testing.assert_allclose(table["lesion_fraction"], synthetic_dataset.table("test")["lesion_fraction"])


def test_inspect_reports_the_share_of_each_mask_class(multiclass_dataset, tfds_dir):
    from mtunet.data import inspect_dataset

    report = inspect_dataset("synthetic_multiclass", data_dir=tfds_dir, image_size=32)
    assert report["info"] == multiclass_dataset.info.to_dict()
    assert report["mask_classes"] == ["rim", "core"]
    fractions = report["mask_class_fractions"]
    assert list(fractions) == ["rim", "core"] and 0.01 < fractions["rim"] < 0.05 and 0.01 < fractions["core"] < 0.05
    assert fractions["rim"] + fractions["core"] == pytest.approx(report["mask_coverage"]["all"]["mean_lesion_fraction"])


def test_streamed_synthetic_multiclass_serves_what_memory_serves(multiclass_dataset, tfds_dir):
    from mtunet.data import load_dataset

    streamed = load_dataset("synthetic_multiclass", data_dir=tfds_dir, image_size=32, memory_limit=0)
    assert streamed.info.storage == "stream"
    for (images, targets), (stored_images, stored_targets) in zip(
            streamed.pipeline("test", batch_size=70, training=False),
            multiclass_dataset.pipeline("test", batch_size=70, training=False), strict=True):
        np.testing.assert_array_equal(images, stored_images)
        np.testing.assert_array_equal(targets["mask"], stored_targets["mask"])
