"""SavedModel export: reloaded in a fresh process it matches the Keras model at other image sizes, through both
signatures and a REST-style JSON body; bad input is refused clearly; versions are never overwritten; TFLite
variants record their agreement."""

import base64
import json

import cv2
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import cli
import mtunet
from mtunet.data.images import letterbox, model_input
from mtunet.deploy.export import check_agreement, reload_in_fresh_process, sample_requests
from mtunet.errors import ConfigError, ExportError
from mtunet.evaluation.metrics import overlap_per_image
from mtunet.training.batchnorm import batchnorm_layers
from tests.conftest import TINY_CLASSES


def keras_reference(model, images):
    """Outputs of ``model`` on ``uint8`` ``(B, H, W, C)`` images prepared with OpenCV as training prepared them
    (``letterbox``), the masks mapped back to ``H x W`` with OpenCV: an implementation independent of the graph's."""
    size = model.input_shape[1]
    boxed = np.stack([letterbox(image.astype(np.float32), size, nearest=False) for image in images])
    outputs = model.predict_on_batch(boxed)
    height, width = images.shape[1:3]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    interpolation = cv2.INTER_LINEAR if side > size else cv2.INTER_AREA
    masks = np.stack([cv2.resize(mask[..., 0], (side, side), interpolation=interpolation)
                      [top:top + height, left:left + width] for mask in outputs["mask"]])
    return {"label_probabilities": outputs["label"], "mask_probabilities": masks[..., None]}


def assert_matches(outputs, reference):
    assert outputs["mask_probabilities"].shape == reference["mask_probabilities"].shape
    for name in ("label_probabilities", "mask_probabilities"):
        np.testing.assert_allclose(outputs[name], reference[name], rtol=0, atol=1e-4)
    labels = reference["label_probabilities"].argmax(axis=1)
    np.testing.assert_array_equal(outputs["label"], labels)
    assert [str(name) for name in outputs["class_name"]] == [TINY_CLASSES[label] for label in labels]


@pytest.fixture(scope="module")
def keras_model(tiny_model_file):
    return mtunet.load_model(tiny_model_file)


@pytest.fixture(scope="module")
def loaded(tiny_export):
    return tf.saved_model.load(str(tiny_export[0].directory))


def test_every_signature_matches_keras_in_a_fresh_process_at_another_size(tiny_export, keras_model):
    images = np.random.default_rng(1).integers(0, 256, size=(2, 45, 70, 1), dtype=np.uint8)
    reloaded = reload_in_fresh_process(tiny_export[0].directory, {"gray 45x70": images})["gray 45x70"]
    reference = keras_reference(keras_model, images)
    assert set(reloaded) == {"serving_default", "predict_encoded (PNG)", "predict_encoded (BMP)"}
    for outputs in reloaded.values():
        assert_matches(outputs, reference)


def test_smaller_rgb_image_is_enlarged_and_converted_to_the_models_grayscale(loaded, keras_model):
    rgb = np.random.default_rng(2).integers(0, 256, size=(1, 20, 13, 3), dtype=np.uint8)
    outputs = loaded.signatures["serving_default"](images=tf.constant(rgb))
    # BT.601 luminance, computed here in float64
    gray = (0.299 * rgb[..., :1] + 0.587 * rgb[..., 1:2] + 0.114 * rgb[..., 2:]).astype(np.float32)
    reference = keras_reference(keras_model, gray)
    for name in ("label_probabilities", "mask_probabilities"):
        np.testing.assert_allclose(outputs[name].numpy(), reference[name], rtol=0, atol=1e-4)


def test_rest_json_body_with_base64_png_gives_the_same_prediction(loaded):
    images = np.random.default_rng(3).integers(0, 256, size=(2, 40, 40, 1), dtype=np.uint8)
    png = [cv2.imencode(".png", image)[1].tobytes() for image in images]
    body = json.dumps({"signature_name": "predict_encoded",
                       "instances": [{"b64": base64.b64encode(data).decode()} for data in png]})
    # what TF Serving's REST API does with it: {"b64": ...} values become the bytes of a string tensor
    request = json.loads(body)
    image_bytes = tf.constant([base64.b64decode(instance["b64"]) for instance in request["instances"]])
    encoded = loaded.signatures[request["signature_name"]](image_bytes=image_bytes)
    direct = loaded.signatures["serving_default"](images=tf.constant(images))
    for name in ("label_probabilities", "mask_probabilities", "label", "class_name"):
        np.testing.assert_array_equal(encoded[name].numpy(), direct[name].numpy())
    assert encoded["mask_probabilities"].shape == (2, 40, 40, 1)


@pytest.mark.parametrize("images, message", [
    (np.zeros((32, 32, 1), np.uint8), "Shape of tensor images [32,32,1] is not compatible with expected shape"),
    (np.zeros((1, 32, 32, 1), np.float32), "expected to be a uint8 tensor but is a float tensor"),
    (np.zeros((1, 32, 32, 5), np.uint8),
     "images: expected 1 (grayscale), 2 (grayscale + alpha), 3 (RGB) or 4 (RGBA) channels"),
])
def test_signature_rejects_wrong_rank_dtype_and_channels(loaded, images, message):
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        loaded.signatures["serving_default"](images=tf.constant(images))
    assert message in str(error.value)


def test_model_info_records_classes_size_run_and_check(tiny_export, tiny_model_file):
    result, _ = tiny_export
    info = json.loads((result.directory / "model_info.json").read_text())
    assert info["class_names"] == list(TINY_CLASSES) and info["input_size"] == [32, 32, 1]
    assert info["encoder"] == "mobilenetv2" and info["run"] == str(tiny_model_file.parent.resolve())
    assert info["version"] == 1 and result.directory.name == "1"
    for check in info["self_check"]["signatures"].values():
        assert check["max_abs_diff"] < 1e-4 and check["same_class"]
    # every BatchNormalization of MobileNetV2 and of the decoder follows a convolution
    assert info["self_check"]["batchnorm_folded"] == len(batchnorm_layers(mtunet.load_model(tiny_model_file))) > 50


def test_export_refuses_to_overwrite_a_version(tiny_export, tiny_model_file):
    result, base = tiny_export
    before = sorted(path.name for path in base.iterdir())
    outcome = CliRunner().invoke(cli.main, ["export", str(tiny_model_file), "--output-dir", str(base)])
    assert outcome.exit_code == 1
    assert outcome.output.strip() == (f"Error: {base / '1'} already exists: an exported version is never "
                                      "overwritten; choose --version 2 (TF Serving serves the highest version)")
    assert sorted(path.name for path in base.iterdir()) == before


def test_self_check_fails_on_a_difference_or_another_class():
    reference = {"label_probabilities": np.array([[0.2, 0.8]]), "label": np.array([1]),
                 "class_name": np.array(["b"], dtype=object), "mask_probabilities": np.full((1, 5, 7, 1), 0.5)}
    close = {**reference, "mask_probabilities": reference["mask_probabilities"] + 5e-5}
    closer = {**reference, "mask_probabilities": reference["mask_probabilities"] + 2e-5}
    checks = check_agreement({"a": reference, "b": reference}, {"a": {"serving_default": close},
                                                                "b": {"serving_default": closer}})
    assert checks == {"serving_default": {"max_abs_diff": pytest.approx(5e-5), "same_class": True}}
    off = {**reference, "mask_probabilities": reference["mask_probabilities"] + 2e-4}
    with pytest.raises(ExportError, match="self-check failed: signature predict_encoded of the reloaded SavedModel "
                                          "differs from the Keras model by 0.0002"):
        check_agreement({"a": reference}, {"a": {"serving_default": close, "predict_encoded": off}})
    other_class = {**reference, "label": np.array([0]), "class_name": np.array(["a"], dtype=object)}
    with pytest.raises(ExportError, match="same class: False"):
        check_agreement({"a": reference}, {"a": {"serving_default": other_class}})
    # within the tolerance of the Keras model, but not the raw pixels' answer
    with pytest.raises(ExportError, match="signature predict_encoded .* answers 3e-05 away from serving_default on "
                                          "the same pixels"):
        check_agreement({"a": reference}, {"a": {"serving_default": close, "predict_encoded": closer}})


def test_failed_export_leaves_no_version_folder(tiny_model_file, tmp_path, monkeypatch):
    def fail_after_writing(trained, directory):
        (directory / "saved_model.pb").write_bytes(b"half")
        raise ExportError("self-check failed")

    monkeypatch.setattr("mtunet.deploy.export._write_saved_model", fail_after_writing)
    with pytest.raises(ExportError, match="self-check failed"):
        mtunet.export_model(tiny_model_file, tmp_path, version=3)
    assert list(tmp_path.iterdir()) == []


def test_export_rejects_a_file_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="notes.txt: expected a .keras model file or a run directory"):
        mtunet.export_model(tmp_path / "notes.txt", tmp_path / "out")


def test_tflite_variants_record_size_and_agreement(tiny_model_file, keras_model, tmp_path):
    result = mtunet.export_model(tiny_model_file, tmp_path, format="tflite")
    variants = result.info["tflite"]["variants"]
    assert list(variants) == ["float32", "float16", "dynamic_range"]
    sizes = {name: (result.directory / figures["file"]).stat().st_size for name, figures in variants.items()}
    assert sizes == {name: figures["size_bytes"] for name, figures in variants.items()}
    assert sizes["dynamic_range"] < sizes["float16"] < 0.6 * sizes["float32"]
    assert json.loads((result.directory / "model_info.json").read_text())["tflite"] == result.info["tflite"]

    # the recorded dynamic-range figures, recomputed here with the TFLite interpreter
    images = np.stack([model_input(image, 32, 1) for request in sample_requests().values() for image in request])
    reference = keras_model.predict_on_batch(images)
    runner = tf.lite.Interpreter(str(result.directory / "model_dynamic_range.tflite")).get_signature_runner()
    outputs = [runner(images=image[None]) for image in images]
    mask = np.concatenate([output["mask"] for output in outputs])
    label = np.concatenate([output["label"] for output in outputs])
    figures = variants["dynamic_range"]
    assert figures["mask_max_abs_diff"] == pytest.approx(np.abs(mask - reference["mask"]).max())
    assert figures["same_class"] == int(np.sum(label.argmax(1) == reference["label"].argmax(1)))
    dice, _ = overlap_per_image(mask > 0.5, reference["mask"] > 0.5)
    assert figures["mask_dice_mean"] == pytest.approx(dice.mean())
    assert variants["float32"]["same_class"] == len(images) == 6 and variants["float32"]["label_max_abs_diff"] < 1e-4
    assert variants["float32"]["mask_dice_mean"] > 0.95
