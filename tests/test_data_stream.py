"""Datasets over the memory limit are streamed: decoded by tf.data into a cache file instead of held in memory."""

import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf

from mtunet.data import load_dataset
from mtunet.errors import ConfigError, DataError


def _epoch(dataset):
    """All batches of one pass as numpy: (images, labels, masks), concatenated."""
    batches = [(images.numpy(), targets["label"].numpy(), targets["mask"].numpy()) for images, targets in dataset]
    return tuple(np.concatenate(parts) for parts in zip(*batches))


def _assert_same_examples(in_memory, streamed, splits=("train", "validation", "test")):
    for split in splits:
        assert streamed.ids(split) == in_memory.ids(split)
        for served, expected in zip(_epoch(streamed.pipeline(split, batch_size=5, training=False)),
                                    _epoch(in_memory.pipeline(split, batch_size=5, training=False))):
            np.testing.assert_array_equal(served, expected)


@pytest.fixture
def mixed_channels_dataset(folder_dataset):
    """A folder dataset of RGB images, two of them grayscale: served with 3 channels."""
    root = folder_dataset(colour=True, num_patients=10)
    for name in ("case000_0.png", "case003_1.png"):
        image = cv2.imread(str(root / "images" / name))
        cv2.imwrite(str(root / "images" / name), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    return root


def test_streamed_folder_dataset_serves_what_memory_serves(mixed_channels_dataset):
    in_memory = load_dataset("folder", data_dir=mixed_channels_dataset, image_size=24)
    streamed = load_dataset("folder", data_dir=mixed_channels_dataset, image_size=24, memory_limit=0)
    assert (in_memory.info.storage, streamed.info.storage) == ("memory", "stream")
    assert streamed.info.to_dict() == {**in_memory.info.to_dict(), "storage": "stream"}
    assert streamed.info.channels == 3
    assert streamed.table("train").equals(in_memory.table("train"))
    _assert_same_examples(in_memory, streamed)


def test_streamed_multi_class_masks_keep_their_values(folder_dataset):
    root = folder_dataset()
    (root / "mask_classes.txt").write_text("rim\ncore\n")
    for path in (root / "masks").iterdir():  # each lesion's rectangle: a rim of 1 around a core of 2
        lesion = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) > 0
        core = cv2.erode(lesion.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        cv2.imwrite(str(path), lesion.astype(np.uint8) + core)
    in_memory = load_dataset("folder", data_dir=root, image_size=24)
    streamed = load_dataset("folder", data_dir=root, image_size=24, memory_limit=0)
    assert streamed.info.mask_classes == in_memory.info.mask_classes == ("rim", "core")
    assert streamed.info.to_dict() == {**in_memory.info.to_dict(), "storage": "stream"}
    assert streamed.table("test").equals(in_memory.table("test"))
    _assert_same_examples(in_memory, streamed)
    _, _, masks = _epoch(streamed.pipeline("train", batch_size=8, training=True))
    assert set(np.unique(masks)) == {0.0, 1.0, 2.0}


def test_streamed_synthetic_dataset_serves_what_memory_serves(synthetic_dataset, tfds_dir):
    streamed = load_dataset("synthetic", data_dir=tfds_dir, image_size=32, memory_limit=0)
    assert streamed.info.storage == "stream"
    _assert_same_examples(synthetic_dataset, streamed, splits=("test",))


def test_datasets_over_the_limit_are_streamed(folder_dataset):
    root = folder_dataset()  # 24 examples: 24 * 16 * 16 * (3 + 1) bytes decoded, counting colour
    assert load_dataset("folder", data_dir=root, image_size=16, memory_limit=24 * 16 * 16 * 4).info.storage == "memory"
    assert load_dataset("folder", data_dir=root, image_size=16, memory_limit=24 * 16 * 16 * 4 - 1).info.storage == \
        "stream"
    with pytest.raises(ConfigError, match=r"memory_limit must be a number of bytes >= 0 or None; received -1"):
        load_dataset("folder", data_dir=root, image_size=16, memory_limit=-1)


def test_streamed_split_is_decoded_once_into_its_cache(folder_dataset, tmp_path):
    root = folder_dataset()
    streamed = load_dataset("folder", data_dir=root, image_size=16, memory_limit=0, cache_dir=tmp_path)
    first = _epoch(streamed.pipeline("train", batch_size=4, training=False))
    assert len(list(tmp_path.glob("mtunet-cache-*/train*"))) > 0
    shutil.rmtree(root / "images")  # from now on only the cache can serve the train split
    for served, expected in zip(_epoch(streamed.pipeline("train", batch_size=3, training=False)), first):
        np.testing.assert_array_equal(served, expected)
    with pytest.raises(tf.errors.OpError, match=r"images/case\d{3}_\d.png cannot be read as an image since the "
                                                r"dataset was read"):
        _epoch(streamed.pipeline("test", batch_size=4, training=False))


def test_streamed_training_is_shuffled_and_reproducible(folder_dataset):
    streamed = load_dataset("folder", data_dir=folder_dataset(num_patients=30), image_size=16, memory_limit=0)
    first, first_labels, _ = _epoch(streamed.pipeline("train", batch_size=8, training=True, augment=False, seed=3))
    again, _, _ = _epoch(streamed.pipeline("train", batch_size=8, training=True, augment=False, seed=3))
    ordered, ordered_labels, _ = _epoch(streamed.pipeline("train", batch_size=8, training=False))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first_labels, ordered_labels)
    order, ordered_order = (np.lexsort(images.reshape(len(images), -1).T) for images in (first, ordered))
    np.testing.assert_array_equal(first[order], ordered[ordered_order])


def test_bad_files_are_found_at_load_when_streaming(folder_dataset):
    root = folder_dataset()
    (root / "images" / "case002_1.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError, match=r"1 cannot be read as an image \(images/case002_1.png;"):
        load_dataset("folder", data_dir=root, image_size=16, memory_limit=0)
    streamed = load_dataset("folder", data_dir=root, image_size=16, memory_limit=0, skip_bad_files=True)
    assert streamed.info.skipped == [("images/case002_1.png", "cannot be read as an image")]
    assert sum(streamed.info.split_sizes.values()) == 23
