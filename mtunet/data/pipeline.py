"""``tf.data`` pipelines serving examples as ``(image, {"label": one-hot, "mask": mask, ...})`` batches."""

import tensorflow as tf

from mtunet.data.augment import Augmenter
from mtunet.data.images import MISSING_MASK_TARGET, MISSING_MASK_VALUE


def build_pipeline(examples: tf.data.Dataset, *, shuffle_buffer: int, num_classes: int, batch_size: int,
                   training: bool, augment: bool = True, seed: int = 0, flip: str = "horizontal",
                   shear: bool = True, drop_remainder: bool = False, target_classes=None) -> tf.data.Dataset:
    """A finite dataset of batches ``(images, {"label": ..., "mask": ..., head: ...})``.

    Args:
        examples: ``(image, mask, label, targets)``: ``uint8`` ``(H, W, C)``, ``uint8`` ``(H, W, 1)`` of 0/1
            (binary) or of class values 0..K (multi-class), or ``(H, W, K)`` of 0/1 per lesion type (multi-label),
            all ``MISSING_MASK_VALUE`` when missing (in each missing channel of a multi-label mask), int32 class
            index, ``{head: int32 class index (-1: missing) | float32 (columns,) values}`` of further targets;
            already decoded (in memory or from a cache file).
        shuffle_buffer: examples held for shuffling when ``training``: all of them shuffles completely.
        num_classes: length of the one-hot labels.
        target_classes: ``{head: classes (one-hot length) | None (values served as they are)}`` of ``targets``.
        batch_size: examples per batch.
        training: shuffle (reshuffled every epoch, from ``seed``) and, if ``augment``, augment; False keeps the
            order of ``examples`` and never augments.
        augment: random flip, rotation and shear (see ``mtunet.data.augment``) when ``training``.
        seed: seed of the shuffling and augmentation.
        flip: flips of the augmentation: ``"horizontal"`` (left-right, the default), ``"horizontal_and_vertical"``
            (dermoscopy), ``"vertical"`` or ``"none"``.
        shear: whether the augmentation shears.
        drop_remainder: drop a last batch smaller than ``batch_size``.

    Returns:
        Batches of images float32 ``(B, H, W, C)`` raw 0-255, labels float32 ``(B, num_classes)`` one-hot, masks
        float32 ``(B, H, W, 1 or K)`` holding the values of the examples' masks (0/1, or class values 0..K;
        augmentation never mixes them; all ``MISSING_MASK_TARGET`` for a missing mask or channel), further targets
        float32 one-hot (all zeros where missing) or values; not repeated.
    """
    target_classes = target_classes or {}
    if training:
        examples = examples.shuffle(max(shuffle_buffer, 1), seed=seed, reshuffle_each_iteration=True)
    dataset = examples.batch(batch_size, drop_remainder=drop_remainder)

    def to_float(images, masks, labels, targets):
        present = tf.reduce_any(masks != MISSING_MASK_VALUE, axis=[1, 2])  # (B, mask channels)
        return tf.cast(images, tf.float32), tf.cast(masks, tf.float32), present, labels, targets

    dataset = dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if training and augment:
        augmenter = Augmenter(seed, flip, shear)
        # Sequential on purpose: the layers' random state advances once per batch, in batch order.
        dataset = dataset.map(lambda images, masks, present, labels, targets: (
            *augmenter(images, masks), present, labels, targets))

    def to_model_inputs(images, masks, present, labels, targets):
        # after augmentation, which fills a missing mask's corners with 0 (background) like any other mask's
        masks = tf.where(present[:, None, None, :], masks, MISSING_MASK_TARGET)
        further = {name: values if target_classes[name] is None
                   else tf.one_hot(values, target_classes[name], dtype=tf.float32)  # index -1: all zeros
                   for name, values in targets.items()}
        return images, {"label": tf.one_hot(labels, num_classes, dtype=tf.float32), "mask": masks, **further}

    dataset = dataset.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
