"""Fundus preprocessing (``--preprocessing fov_crop,ben_graham``): the field-of-view crop of images and masks, Ben
Graham's normalisation against OpenCV, their in-graph twins, and one run whose training, evaluation, export, predict
and Grad-CAM all see the images so prepared."""

import json
import re

import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cli import main
from conftest import write_folder_dataset
from mtunet.data import load_dataset
from mtunet.data.images import field_of_view_box, letterbox, model_input, prepare_image, prepare_pair
from mtunet.deploy.export import export_model
from mtunet.deploy.predict import load_predictor, predict_files
from mtunet.deploy.serving import (
    crop_and_letterbox, field_of_view_boxes, load_trained_model, uncrop_masks,
)
from mtunet.errors import ConfigError
from mtunet.evaluation.run import evaluate_run
from mtunet.models import load_model, model_spec
from mtunet.models.layers import BenGrahamNormalisation
from mtunet.training.loop import train

FIELD = (6, 10, 30, 40)  # top, left, height, width of the pictures inside their black frames


def _framed(picture: np.ndarray, shape=(60, 80)) -> np.ndarray:
    """``picture`` at ``FIELD`` inside a black frame of ``shape``, with one stray bright pixel in the frame."""
    top, left, height, width = FIELD
    framed = np.zeros(shape + picture.shape[2:], picture.dtype)
    framed[top:top + height, left:left + width] = picture
    framed[0, -1] = 255
    return framed


def _fundus_dataset(root):
    """The fake folder dataset (colour, 30 x 40) with every image and mask framed in black (``_framed``)."""
    write_folder_dataset(root, num_patients=8, shape=(30, 40), colour=True)
    for folder in ("images", "masks"):
        for path in (root / folder).glob("*.png"):
            picture = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            picture = np.maximum(picture, 20) if folder == "images" else picture  # no dark pixel inside the field
            framed = _framed(picture)
            if folder == "masks":
                framed[0, -1] = 0
            cv2.imwrite(str(path), framed)
    return root


def test_field_of_view_box_ignores_stray_pixels_and_falls_back_to_the_whole_image():
    picture = np.full((30, 40, 3), 90, np.uint8)
    assert field_of_view_box(_framed(picture)) == FIELD
    assert field_of_view_box(np.zeros((20, 24, 1), np.uint8)) == (0, 0, 20, 24)
    dim = _framed(np.full((30, 40, 1), 10, np.uint8))  # nothing above the threshold of 10 but the stray pixel
    assert field_of_view_box(dim) == (0, 0, 60, 80)


def test_prepare_pair_cuts_image_and_mask_to_the_image_field_of_view():
    rng = np.random.default_rng(0)
    picture = rng.integers(30, 256, (30, 40, 3), dtype=np.uint8)
    lesion = np.zeros((30, 40), np.uint8)
    lesion[5:12, 20:31] = 255
    image, mask = prepare_pair(_framed(picture), _framed(lesion[..., None])[..., 0], 32, crop_fov=True)
    np.testing.assert_array_equal(image, letterbox(picture, 32, nearest=False))
    np.testing.assert_array_equal(mask, letterbox((lesion > 127).astype(np.uint8)[..., None], 32, nearest=True))
    np.testing.assert_array_equal(prepare_image(_framed(picture), 32, crop_fov=True), image)
    uncropped, _ = prepare_pair(_framed(picture), _framed(lesion[..., None])[..., 0], 32)
    assert not np.array_equal(uncropped, image)


def test_multilabel_masks_are_cut_to_their_image_field_of_view(tmp_path):
    write_folder_dataset(tmp_path, num_patients=8, shape=(30, 40), colour=True, lesion_types=("ex", "ma"))
    framed = {}
    for path in sorted(tmp_path.rglob("*.png")):
        picture = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if path.parent.name == "images":
            picture = np.maximum(picture, 20)
        framed[path] = _framed(picture)
        if path.parent.name != "images":
            framed[path][0, -1] = 0
        cv2.imwrite(str(path), framed[path])
    data = load_dataset("folder", data_dir=tmp_path, image_size=32, crop_fov=True, allow_missing=("mask",),
                        validation_fraction=0.25, test_fraction=0.25)
    image_id = data.ids("train")[0]
    served = next(iter(data.pipeline("train", batch_size=1, training=False)))[1]["mask"].numpy()[0]
    top, left, height, width = FIELD
    for channel, lesion in enumerate(("ex", "ma")):
        path = tmp_path / "masks" / lesion / f"{image_id}.png"
        if not path.exists():
            assert np.all(served[..., channel] == -1)
            continue
        lesion_mask = (framed[path][top:top + height, left:left + width] > 127).astype(np.uint8)
        np.testing.assert_array_equal(served[..., channel], letterbox(lesion_mask[..., None], 32, nearest=True)[..., 0])


def test_ben_graham_matches_opencv_and_greys_the_surround():
    rng = np.random.default_rng(1)
    side = 120
    rows, columns = np.mgrid[:side, :side]
    distance = np.hypot(rows - side / 2, columns - side / 2)
    image = np.zeros((side, side, 3), np.float32)
    image[distance < 50] = rng.uniform(20, 250, (int((distance < 50).sum()), 3))
    normalised = np.asarray(BenGrahamNormalisation()(image[None]))[0]
    sigma = side / 60
    expected = np.clip(4 * image - 4 * cv2.GaussianBlur(image, (0, 0), sigma) + 128, 0, 255)
    inner = distance < 50 - 2 * sigma - 2  # inside the field shrunk by the rim
    np.testing.assert_allclose(normalised[inner], expected[inner], atol=1e-3)
    assert np.all(normalised[distance > 51] == 128)


def test_serving_graph_crops_like_the_data_and_puts_masks_back():
    rng = np.random.default_rng(2)
    pictures = [rng.integers(30, 256, (30, 40, 3)).astype(np.float32) for _ in range(2)]
    images = np.stack([_framed(pictures[0]), np.roll(_framed(pictures[1]), (3, -5), axis=(0, 1))])
    boxes = field_of_view_boxes(tf.constant(images)).numpy()
    np.testing.assert_array_equal(boxes, [field_of_view_box(image) for image in images])
    np.testing.assert_array_equal(boxes[1], (FIELD[0] + 3, FIELD[1] - 5, FIELD[2], FIELD[3]))
    prepared = crop_and_letterbox(tf.constant(images), tf.constant(boxes), 32).numpy()
    expected = np.stack([model_input(image, 32, 3, crop_fov=True) for image in images])
    np.testing.assert_allclose(prepared, expected, atol=1e-3)
    restored = uncrop_masks(tf.ones((2, 32, 32, 2)), tf.constant(boxes), 60, 80).numpy()
    assert restored.shape == (2, 60, 80, 2)
    for mask, (top, left, height, width) in zip(restored, boxes):
        np.testing.assert_allclose(mask[top:top + height, left:left + width], 1.0, atol=1e-5)
        assert mask.sum() == pytest.approx(height * width * 2, rel=1e-4)


def test_preprocess_is_checked_on_the_command_line_and_in_the_library():
    result = CliRunner().invoke(main, ["train", "--preprocessing", "fov_crop,clahe"])
    assert result.exit_code == 2 and "unknown step 'clahe'; expected some of: fov_crop, ben_graham" in result.output
    message = "preprocessing='sharpen': unknown step(s) sharpen; expected some of: fov_crop, ben_graham"
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        train(weights=None, preprocessing=("sharpen",), epochs=1)


@pytest.fixture(scope="module")
def fundus_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fundus")
    data_dir = _fundus_dataset(root / "data")
    run = train(weights=None, dataset="folder", data_dir=str(data_dir), image_size=32, batch_size=8, epochs=1,
                preprocessing=("ben_graham", "fov_crop"), output_dir=str(root / "run"))
    return run, data_dir


def test_run_trains_on_cropped_images_and_keeps_its_preprocessing(fundus_run):
    run, data_dir = fundus_run
    record = json.loads((run.directory / "config.json").read_text())
    assert record["options"]["preprocessing"] == ["ben_graham", "fov_crop"]
    model = load_model(run.directory / "best.keras")
    assert model_spec(model).preprocessing == ("fov_crop", "ben_graham")
    assert model.get_layer("ben_graham").__class__ is BenGrahamNormalisation
    data = load_dataset("folder", data_dir=data_dir, image_size=32, crop_fov=True)
    image_id = data.ids("train")[0]
    stored = next(iter(data.pipeline("train", batch_size=1, training=False)))[0].numpy()[0]
    expected = prepare_image(cv2.cvtColor(cv2.imread(str(data_dir / "images" / f"{image_id}.png")),
                                          cv2.COLOR_BGR2RGB), 32, crop_fov=True)
    np.testing.assert_array_equal(stored, expected)


def test_evaluation_export_predict_and_gradcam_apply_the_crop(fundus_run, tmp_path):
    run, data_dir = fundus_run
    metrics = evaluate_run(run.directory, bootstrap_resamples=10)
    assert metrics["n_images"] > 0 and np.isfinite(metrics["dice_mean"])
    export = export_model(run.directory, tmp_path / "export")
    info = json.loads((export.directory / "model_info.json").read_text())
    assert info["preprocessing_steps"] == ["fov_crop", "ben_graham"] and "field of view" in info["preprocessing"]
    image_path = sorted((data_dir / "images").glob("*.png"))[0]
    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    trained = load_trained_model(run.directory)
    expected = trained.model(model_input(image, 32, 3, crop_fov=True)[None], training=False)
    served = tf.saved_model.load(str(export.directory)).signatures["serving_default"](
        images=tf.constant(image[None]))
    np.testing.assert_allclose(served["label_probabilities"].numpy(), np.asarray(expected["label"]), atol=1e-4)
    mask = served["mask_probabilities"].numpy()[0, ..., 0]
    assert mask.shape == image.shape[:2]
    top, left, height, width = FIELD
    outside = np.ones(mask.shape, bool)
    outside[top:top + height, left:left + width] = False
    assert np.all(mask[outside] == 0) and np.all(mask[~outside] > 0)
    result = predict_files(load_predictor(export.directory), [image_path], tmp_path / "predictions")
    table = pd.read_csv(tmp_path / "predictions" / "predictions.csv")
    assert not result.failed and len(table) == 1
    written = cv2.imread(str(tmp_path / "predictions" / table["mask_file"][0]), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(written > 0, mask > 0.5)
    gallery = CliRunner().invoke(main, ["gradcam", str(run.directory), str(image_path), "--output-dir",
                                        str(tmp_path / "gallery")])
    assert gallery.exit_code == 0, gallery.output
