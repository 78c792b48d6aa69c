"""Streaming examples with ``tf.data`` for datasets larger than the memory limit: files (or TFDS records) are decoded
in a parallel ``map``, by the same numpy functions that decode them for memory, so both paths serve the same
arrays."""

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from mtunet.data.images import expand_channels


def _decode_map(inputs: tf.data.Dataset, decode: Callable, image_size: int, channels: int,
                mask_channels: int = 1) -> tf.data.Dataset:
    """``inputs`` mapped, in order and in parallel, through ``decode(*element) -> (image, mask)`` (numpy ``uint8``
    ``(S, S, 1 or 3)`` and ``(S, S, mask_channels)``) to ``(image, mask)`` tensors of ``channels`` channels."""

    def decode_numpy(*element):
        image, mask = decode(*element)
        return expand_channels(image, channels), mask

    def decode_tensors(*element):
        image, mask = tf.numpy_function(decode_numpy, list(element), [tf.uint8, tf.uint8], stateful=False)
        image.set_shape((image_size, image_size, channels))
        mask.set_shape((image_size, image_size, mask_channels))
        return image, mask

    return inputs.map(decode_tensors, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def file_streamer(decode_at: Callable[[int], tuple], image_size: int, mask_channels: int = 1) -> Callable:
    """A ``streamer`` for ``build_store``: ``decode_at(position)`` decodes the example at ``position``, its mask of
    ``mask_channels``."""

    def streamer(channels: int):
        def stream(positions) -> tf.data.Dataset:
            inputs = tf.data.Dataset.from_tensor_slices(np.asarray(positions, np.int64))
            return _decode_map(inputs, lambda position: decode_at(int(position)), image_size, channels, mask_channels)

        return stream

    return streamer


def tfds_streamer(builder, read_positions: np.ndarray, prepare: Callable, image_size: int) -> Callable:
    """A ``streamer`` for ``build_store`` reading the ``"train"`` split of a prepared TFDS ``builder``.

    ``read_positions[i]`` is where example ``i`` of the store comes in the split's file order, and
    ``prepare(image, mask)`` turns a record's decoded image and mask into the served pair.
    """
    read_positions = np.asarray(read_positions, np.int64)

    def streamer(channels: int):
        def stream(positions) -> tf.data.Dataset:
            wanted = np.zeros(builder.info.splits["train"].num_examples, bool)
            wanted[read_positions[np.asarray(positions, np.int64)]] = True
            records = builder.as_dataset(split="train", shuffle_files=False).enumerate()
            records = records.filter(lambda index, record: tf.gather(wanted, index))
            pairs = records.map(lambda index, record: (record["image"], record["mask"]))
            return _decode_map(pairs, prepare, image_size, channels)

        return stream

    return streamer
