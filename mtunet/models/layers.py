"""Custom layers, registered so that saved ``.keras`` models reload without extra arguments."""

import keras
from keras import ops

_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="mtunet")
class PixelPreprocessing(keras.layers.Layer):
    """Turns raw 0-255 pixels (1 or 3 channels) into the 3-channel input an encoder's weights expect.

    ``keras.applications.*.preprocess_input`` are plain functions, not layers, so a model using them could not be
    saved with its preprocessing; this layer performs the same arithmetic inside the graph.

    Args:
        scaling: ``"tf"`` ([-1, 1]), ``"torch"`` ([0, 1] then ImageNet mean/std), ``"caffe"`` (RGB to BGR, ImageNet
            mean subtracted) or ``"none"`` (unchanged: the encoder rescales itself).

    Input shape: ``(batch, height, width, 1 | 3)``, any real or integer dtype. Output shape: ``(batch, height,
    width, 3)``; a single channel is repeated to RGB.
    """

    def __init__(self, scaling, **kwargs):
        super().__init__(**kwargs)
        if scaling not in ("tf", "torch", "caffe", "none"):
            raise ValueError(f"unknown input scaling {scaling!r}; expected 'tf', 'torch', 'caffe' or 'none'")
        self.scaling = scaling

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if images.shape[-1] == 1:
            images = ops.repeat(images, 3, axis=-1)
        if self.scaling == "tf":
            return images / 127.5 - 1.0
        if self.scaling == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN_RGB, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_IMAGENET_STD_RGB, dtype=self.compute_dtype)
            return (images / 255.0 - mean) / std
        if self.scaling == "caffe":
            return ops.flip(images, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        return images

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        return {**super().get_config(), "scaling": self.scaling}
