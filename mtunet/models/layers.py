"""Custom layers, registered so that saved ``.keras`` models reload without extra arguments."""

import math

import keras
from keras import ops

from mtunet.data.images import FOV_THRESHOLD

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


@keras.saving.register_keras_serializable(package="mtunet")
class BenGrahamNormalisation(keras.layers.Layer):
    """Ben Graham's local colour normalisation of fundus photographs (Kaggle Diabetic Retinopathy Detection, 2015):
    ``4 * image - 4 * blur + 128`` clipped to 0-255, ``blur`` a Gaussian blur of standard deviation ``side / 60``
    (his radius / 30 for a field of view as wide as the image, as after ``--preprocessing fov_crop``), and 128 outside
    the field of view shrunk by twice that deviation (he cut at 90% of the radius), where the blur of the black
    surround leaves a bright rim.

    A layer rather than a data step so that training, evaluation, predict and the SavedModel apply it alike. The
    blur is OpenCV's ``GaussianBlur`` of a float image (its kernel size, reflected border), written in ``keras.ops``
    because Keras has no blur layer that runs on every backend.

    Input shape: ``(batch, height, width, channels)`` of 0-255 pixels. Output shape: the same, float.
    """

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        sigma = min(images.shape[1], images.shape[2]) / 60
        size = int(round(sigma * 8 + 1)) | 1  # cv2.GaussianBlur's size for a float image and ksize (0, 0)
        radius = size // 2
        offsets = ops.arange(-radius, radius + 1, dtype=self.compute_dtype)
        kernel = ops.exp(-(offsets ** 2) / (2 * sigma ** 2))
        kernel = kernel / ops.sum(kernel)
        channels = images.shape[-1]
        padded = ops.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")
        rows = ops.tile(ops.reshape(kernel, (size, 1, 1, 1)), (1, 1, channels, 1))
        columns = ops.tile(ops.reshape(kernel, (1, size, 1, 1)), (1, 1, channels, 1))
        blur = ops.depthwise_conv(ops.depthwise_conv(padded, rows, padding="valid"), columns, padding="valid")
        normalised = ops.clip(4 * images - 4 * blur + 128, 0, 255)
        outside = ops.cast(ops.max(images, axis=-1, keepdims=True) <= FOV_THRESHOLD, self.compute_dtype)
        rim = 2 * math.ceil(2 * sigma) + 1
        outside = ops.max_pool(ops.max_pool(outside, (rim, 1), strides=1, padding="same"), (1, rim), strides=1,
                               padding="same")
        return normalised * (1 - outside) + 128 * outside
