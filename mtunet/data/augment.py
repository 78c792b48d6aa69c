"""Geometric augmentation that moves an image and its lesion mask together, from Keras 3 preprocessing layers.

Keras 3 image preprocessing layers take ``{"images": ..., "segmentation_masks": ...}`` and apply one random
transformation to both, also inside ``tf.data``. Masks are sampled with nearest-neighbour interpolation and filled
with 0, so a mask of class values 0..K keeps exactly its values: no value between two classes appears.
"""

import keras
import tensorflow as tf

from mtunet.errors import ConfigError

# Left-right flips by default: ultrasound (transducer at the top, acoustic shadows below a lesion), chest X-rays and
# MRI slices have an up and a down that a vertical flip makes unreal. Dermoscopy has none: "horizontal_and_vertical".
from mtunet.options import FLIP_MODES
ROTATION_DEGREES = 15.0
SHEAR_FACTOR = 0.1  # shifts pixels up to 10% of the image across


class Augmenter:
    """Random flip (``flip``: a mode of ``FLIP_MODES``), rotation and (if ``shear``) shear of a batch, reproducible
    from ``seed``.

    Call it on ``images`` float32 ``(B, H, W, C)`` 0-255 and ``masks`` float32 ``(B, H, W, 1)`` of 0/1 or of class
    values 0..K (or ``(B, H, W, K)``, a channel per lesion type, each moved alike); it returns both transformed
    alike, images clipped to 0-255 and masks holding only values they held (rounded, so a binary mask stays 0/1).
    Areas moved in from outside the image are 0 (black, background). Each call draws new transformations, so call it
    from one sequential ``map`` to keep a pipeline reproducible.
    """

    def __init__(self, seed: int = 0, flip: str = "horizontal", shear: bool = True):
        if flip not in FLIP_MODES:
            raise ConfigError(f"unknown flip {flip!r}; expected one of: {', '.join(FLIP_MODES)}")
        flips = [] if flip == "none" else [keras.layers.RandomFlip(flip, seed=seed)]
        shears = [keras.layers.RandomShear(x_factor=SHEAR_FACTOR, y_factor=SHEAR_FACTOR, fill_mode="constant",
                                           seed=seed + 2)] if shear else []
        self.layers = [*flips, keras.layers.RandomRotation(ROTATION_DEGREES / 360.0, fill_mode="constant",
                                                           seed=seed + 1), *shears]

    def __call__(self, images, masks):
        data = {"images": images, "segmentation_masks": masks}
        for layer in self.layers:
            data = layer(data, training=True)
        images = tf.clip_by_value(data["images"], 0.0, 255.0)
        masks = tf.round(data["segmentation_masks"])
        return images, masks
