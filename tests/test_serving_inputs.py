"""One answer per image: the raw-pixel and encoded-file signatures, ``mtunet predict`` and the TFLite input
preparation give the same outputs for the same pixels, whatever channels the image and the model have."""

import io

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

import mtunet
from mtunet.data.images import model_input, to_channels
from mtunet.models import model_heads
from mtunet.deploy.serving import TrainedModel, build_serving_functions, letterbox_images, to_model_channels

# odd sizes: neither square nor the model's 32 px
HEIGHT, WIDTH = 23, 37


def image_of(channels: int, seed: int = 0) -> np.ndarray:
    """``uint8`` ``(HEIGHT, WIDTH, channels)`` with channels that differ (alpha not constant)."""
    return np.random.default_rng(seed).integers(0, 256, size=(HEIGHT, WIDTH, channels), dtype=np.uint8)


def encoded(image: np.ndarray, file_format: str) -> bytes:
    """``image`` written by Pillow as a ``file_format`` file (``LA`` for gray + alpha, which OpenCV cannot write)."""
    modes = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
    pixels = image[..., 0] if image.shape[2] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(pixels, modes[image.shape[2]]).save(buffer, format=file_format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def serving(tiny_export):
    """``{model channels: (raw signature, encoded signature)}``: the exported grayscale model as TF Serving loads it
    and an RGB model's serving functions in this process."""
    loaded = tf.saved_model.load(str(tiny_export[0].directory))
    keras.utils.set_random_seed(1)
    rgb_model = mtunet.build_model("mobilenetv2", input_shape=(32, 32, 3), num_classes=2, weights=None,
                                   decoder_filters=(16, 8, 8, 8, 8))
    rgb = build_serving_functions(TrainedModel(rgb_model, ["a", "b"], {}, model_heads(rgb_model)))
    return {1: (lambda images: loaded.signatures["serving_default"](images=images),
                lambda image_bytes: loaded.signatures["predict_encoded"](image_bytes=image_bytes)),
            3: (rgb["serving_default"], rgb["predict_encoded"])}


CASES = [(1, "PNG"), (1, "BMP"), (2, "PNG"), (3, "PNG"), (3, "BMP"), (4, "PNG"), (4, "BMP")]


@pytest.mark.parametrize("model_channels", [1, 3])
@pytest.mark.parametrize("image_channels, file_format", CASES)
def test_encoded_file_and_raw_pixels_give_one_answer(serving, model_channels, image_channels, file_format):
    raw_signature, encoded_signature = serving[model_channels]
    images = np.stack([image_of(image_channels, seed) for seed in (0, 1)])
    raw = raw_signature(tf.constant(images))
    from_files = encoded_signature(tf.constant([encoded(image, file_format) for image in images]))
    assert raw["mask_probabilities"].shape == (2, HEIGHT, WIDTH, 1)
    for name in ("label_probabilities", "mask_probabilities"):
        np.testing.assert_allclose(from_files[name].numpy(), raw[name].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(from_files["label"].numpy(), raw["label"].numpy())


def test_graph_and_numpy_channel_conversions_agree():
    for image_channels in (1, 2, 3, 4):
        images = np.stack([image_of(image_channels, seed) for seed in (2, 3)])
        for model_channels in (1, 3):
            graph = to_model_channels(tf.constant(images), model_channels).numpy()
            np.testing.assert_allclose(to_channels(images, model_channels), graph, rtol=0, atol=1e-4)
            # and, after the letterbox, the TFLite caller's input is what the serving graph gives the model
            boxed = letterbox_images(tf.constant(graph), 32).numpy()
            prepared = np.stack([model_input(image, 32, model_channels) for image in images])
            np.testing.assert_allclose(prepared, boxed, rtol=0, atol=1e-3)
    rgb = image_of(3)
    luminance = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(to_channels(rgb, 1)[..., 0], luminance, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(to_channels(image_of(2), 3), np.repeat(image_of(2)[..., :1], 3, axis=2))


def test_predict_gives_the_signatures_answer_for_an_rgba_file_into_a_gray_model(tiny_export, serving, tmp_path):
    image = image_of(4, seed=5)
    path = tmp_path / "scan.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA))
    predictor = mtunet.load_predictor(tiny_export[0].directory)
    result = mtunet.predict_files(predictor, [path], tmp_path / "out")
    raw = serving[1][0](tf.constant(image[None]))
    row = pd.read_csv(result.csv_path).iloc[0]
    probabilities = [row[f"probability_{name}"] for name in predictor.class_names]
    np.testing.assert_allclose(probabilities, raw["label_probabilities"].numpy()[0], rtol=0, atol=1e-6)
    mask = cv2.imread(str(tmp_path / "out" / row["mask_file"]), cv2.IMREAD_GRAYSCALE) > 0
    np.testing.assert_array_equal(mask, raw["mask_probabilities"].numpy()[0, ..., 0] > 0.5)
