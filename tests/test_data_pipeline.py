import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from mtunet.data.pipeline import build_pipeline
from mtunet.errors import ConfigError


def _epoch(dataset):
    """All batches of one pass as numpy: (images, labels, masks), concatenated."""
    images, labels, masks = [], [], []
    for batch_images, targets in dataset:
        images.append(batch_images.numpy())
        labels.append(targets["label"].numpy())
        masks.append(targets["mask"].numpy())
    return np.concatenate(images), np.concatenate(labels), np.concatenate(masks)


def test_batches_have_the_promised_shapes_and_values(synthetic_dataset):
    dataset = synthetic_dataset.pipeline("train", batch_size=16, training=True)
    images, targets = next(iter(dataset))
    assert images.shape == (16, 32, 32, 1) and images.dtype == "float32"
    assert targets["label"].shape == (16, 3) and targets["label"].dtype == "float32"
    assert targets["mask"].shape == (16, 32, 32, 1) and targets["mask"].dtype == "float32"
    np.testing.assert_array_equal(np.sum(targets["label"], axis=1), 1.0)
    assert set(np.unique(targets["mask"])) <= {0.0, 1.0}
    assert 0 <= np.min(images) and np.max(images) <= 255 and np.max(images) > 1  # raw 0-255, not rescaled


def test_evaluation_order_matches_ids_labels_and_table(synthetic_dataset):
    images, labels, masks = _epoch(synthetic_dataset.pipeline("test", batch_size=7, training=False))
    np.testing.assert_array_equal(labels.argmax(axis=1), synthetic_dataset.labels("test"))
    table = synthetic_dataset.table("test")
    assert table["id"].tolist() == synthetic_dataset.ids("test")
    assert table["label"].tolist() == [synthetic_dataset.info.class_names[index]
                                       for index in synthetic_dataset.labels("test")]
    # served masks cover the share of the image that the stored masks do (128 px stored, 32 px served)
    np.testing.assert_allclose(masks.mean(axis=(1, 2, 3)), table["lesion_fraction"], atol=0.02)
    assert len(table) == len(images) == synthetic_dataset.info.split_sizes["test"]
    again = _epoch(synthetic_dataset.pipeline("test", batch_size=5, training=False))[0]
    np.testing.assert_array_equal(again, images)


def test_training_is_shuffled_augmented_and_reproducible_from_seed(synthetic_dataset):
    first = synthetic_dataset.pipeline("train", batch_size=32, training=True, seed=5)
    images, _, _ = _epoch(first)
    same, _, _ = _epoch(synthetic_dataset.pipeline("train", batch_size=32, training=True, seed=5))
    other, _, _ = _epoch(synthetic_dataset.pipeline("train", batch_size=32, training=True, seed=6))
    second_epoch, _, _ = _epoch(first)
    np.testing.assert_array_equal(images, same)
    assert not np.array_equal(images, other)
    assert not np.array_equal(images, second_epoch)  # reshuffled and augmented anew each epoch
    stored = _epoch(synthetic_dataset.pipeline("train", batch_size=64, training=False))[0]
    matches = [any(np.array_equal(image, original) for original in stored) for image in images]
    assert sum(matches) < len(images) / 2  # most images were transformed


def test_training_without_augmentation_serves_the_stored_images_shuffled(synthetic_dataset):
    images, labels, _ = _epoch(synthetic_dataset.pipeline("train", batch_size=32, training=True, augment=False))
    stored, stored_labels, _ = _epoch(synthetic_dataset.pipeline("train", batch_size=64, training=False))
    order = np.lexsort(images.reshape(len(images), -1).T)
    stored_order = np.lexsort(stored.reshape(len(stored), -1).T)
    np.testing.assert_array_equal(images[order], stored[stored_order])
    np.testing.assert_array_equal(labels[order], stored_labels[stored_order])
    assert not np.array_equal(labels, stored_labels)  # shuffled


def test_augmentation_moves_image_and_mask_together():
    masks = np.zeros((48, 32, 32, 1), np.uint8)
    masks[:, 4:14, 6:26] = 1  # an off-centre bar, so that flips and rotations change it
    images = masks * 255
    examples = tf.data.Dataset.from_tensor_slices((images, masks, np.zeros(48, np.int32), {}))
    dataset = build_pipeline(examples, shuffle_buffer=48, num_classes=2, batch_size=16, training=True, seed=1)
    augmented_images, _, augmented_masks = _epoch(dataset)
    assert set(np.unique(augmented_masks)) <= {0.0, 1.0}
    moved = np.mean([not np.array_equal(mask, masks[0]) for mask in augmented_masks])
    assert moved > 0.9
    disagreement = np.mean((augmented_images > 127.5) != (augmented_masks > 0.5))
    assert disagreement < 0.02  # only interpolation at the bar's edges


def test_augmentation_keeps_the_values_of_multi_class_masks():
    masks = np.zeros((48, 32, 32, 1), np.uint8)
    masks[:, 4:20, 6:28] = 1  # nested off-centre rectangles of classes 1, 2 and 3
    masks[:, 7:16, 10:22] = 2
    masks[:, 10:13, 14:18] = 3
    images = masks * 60
    examples = tf.data.Dataset.from_tensor_slices((images, masks, np.zeros(48, np.int32), {}))
    dataset = build_pipeline(examples, shuffle_buffer=48, num_classes=2, batch_size=16, training=True, seed=3,
                             flip="horizontal_and_vertical")
    augmented_images, _, augmented_masks = _epoch(dataset)
    assert set(np.unique(augmented_masks)) == {0.0, 1.0, 2.0, 3.0}  # nearest-neighbour: never a value in between
    assert all(set(np.unique(mask)) == {0.0, 1.0, 2.0, 3.0} for mask in augmented_masks)  # no class lost
    assert np.mean([not np.array_equal(mask, masks[0]) for mask in augmented_masks]) > 0.9
    disagreement = np.mean(np.round(augmented_images / 60) != augmented_masks)
    assert disagreement < 0.05  # only interpolation of the image at the rectangles' edges


@pytest.mark.parametrize("flip, flips_vertically, flips_horizontally", [
    ("horizontal_and_vertical", True, True), ("horizontal", False, True), ("vertical", True, False),
    ("none", False, False),
])
def test_flip_modes(flip, flips_vertically, flips_horizontally):
    # a bar in the top-left quadrant: 15 degrees of rotation or 10% of shear never move its mass across a midline
    masks = np.zeros((64, 32, 32, 1), np.uint8)
    masks[:, 3:9, 3:12] = 1
    examples = tf.data.Dataset.from_tensor_slices((masks * 255, masks, np.zeros(64, np.int32), {}))
    dataset = build_pipeline(examples, shuffle_buffer=64, num_classes=2, batch_size=16, training=True, seed=2,
                             flip=flip)
    _, _, augmented = _epoch(dataset)
    bottom = augmented[:, 16:].sum(axis=(1, 2, 3)) > augmented[:, :16].sum(axis=(1, 2, 3))
    right = augmented[:, :, 16:].sum(axis=(1, 2, 3)) > augmented[:, :, :16].sum(axis=(1, 2, 3))
    assert bool(bottom.any()) == flips_vertically
    assert bool(right.any()) == flips_horizontally


def test_unknown_flip_mode():
    from mtunet.data.augment import Augmenter

    with pytest.raises(ConfigError, match=r"unknown flip 'diagonal'; expected one of: horizontal_and_vertical"):
        Augmenter(0, "diagonal")


def test_pipelines_are_finite_and_can_drop_the_remainder(synthetic_dataset):
    size = synthetic_dataset.info.split_sizes["train"]
    assert len(list(synthetic_dataset.pipeline("train", batch_size=10, training=True))) == math.ceil(size / 10)
    batches = list(synthetic_dataset.pipeline("train", batch_size=10, training=True, drop_remainder=True))
    assert len(batches) == size // 10 and all(images.shape[0] == 10 for images, _ in batches)


def test_class_weights_are_balanced_on_the_train_split(synthetic_dataset):
    expected = compute_class_weight("balanced", classes=np.arange(3), y=synthetic_dataset.labels("train"))
    np.testing.assert_allclose(synthetic_dataset.class_weights(), expected)
    counts = np.bincount(synthetic_dataset.labels("train"))
    assert np.argmax(synthetic_dataset.class_weights()) == np.argmin(counts)


def test_bad_split_or_batch_size_raise_config_error(synthetic_dataset):
    with pytest.raises(ConfigError, match=r"unknown split 'valid'; expected one of: train, validation, test"):
        synthetic_dataset.pipeline("valid", batch_size=4, training=False)
    with pytest.raises(ConfigError, match=r"batch_size must be a positive integer; received 0"):
        synthetic_dataset.pipeline("train", batch_size=0, training=True)


def test_a_two_headed_keras_model_fits_on_the_pipeline(synthetic_dataset):
    inputs = keras.Input((32, 32, 1))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    label = keras.layers.Dense(3, activation="softmax", name="label")(keras.layers.GlobalAveragePooling2D()(features))
    mask = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(features)
    model = keras.Model(inputs, {"label": label, "mask": mask})
    model.compile("adam", loss={"label": "categorical_crossentropy", "mask": "binary_crossentropy"})
    history = model.fit(synthetic_dataset.pipeline("train", batch_size=32, training=True),
                        validation_data=synthetic_dataset.pipeline("validation", batch_size=32, training=False),
                        epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["val_loss"][0])
