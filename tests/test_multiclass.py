"""Multi-class lesion masks end to end: a folder dataset with mask_classes.txt trained with the softmax mask head,
evaluated (per-class Dice, the report in headless Chromium), exported (the SavedModel's class map is the Keras
model's argmax), predicted (class maps and colour overlays) and explained (Seg-Grad-CAM of one mask class)."""

import json
import re

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import write_folder_dataset
from mtunet.deploy.export import TOLERANCE, export_model
from mtunet.deploy.predict import load_predictor, predict_files
from mtunet.deploy.serving import to_numpy
from mtunet.evaluation.run import evaluate_run
from mtunet.explain.gallery import prepare_gallery
from mtunet.models import load_model, model_heads
from mtunet.training.loop import train
from test_run_evaluation import IMAGE_CHECK, _chromium

MASK_CLASSES = ("rim", "core")


def _write_rim_and_core_dataset(root):
    """The fake folder dataset with each rectangular lesion split into a rim (1) and, 4 pixels in, a core (2)."""
    write_folder_dataset(root, num_patients=12, images_per_patient=2)
    for path in (root / "masks").glob("*.png"):
        lesion = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0
        core = cv2.erode(lesion.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        cv2.imwrite(str(path), lesion.astype(np.uint8) + core.astype(np.uint8))
    (root / "mask_classes.txt").write_text("\n".join(MASK_CLASSES) + "\n")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiclass")
    data_dir = _write_rim_and_core_dataset(root / "lesions")
    return train(architecture="attention_unet", weights=None, dataset="folder", data_dir=str(data_dir),
                 image_size=32, batch_size=8, epochs=2, seg_loss="bce_dice", output_dir=str(root / "run"))


def test_run_stores_the_softmax_mask_in_its_spec(run):
    record = json.loads((run.directory / "config.json").read_text())
    assert record["dataset"]["mask_classes"] == list(MASK_CLASSES)
    assert record["model"]["decoder"] == "attention_unet"
    assert record["model"]["heads"][1] == {"type": "multiclass_mask", "name": "mask", "mask_classes": ["rim", "core"]}
    model = load_model(run.best_model_path)
    assert model.output_shape[1] == (None, 32, 32, 3)
    assert {"mask_dice", "val_mask_dice", "val_mask_iou"} <= set(run.history[0])


def test_evaluation_reports_each_mask_class(run, tmp_path):
    metrics = evaluate_run(run.directory, bootstrap_resamples=50)
    assert metrics["mask_classes"] == list(MASK_CLASSES)
    per_class = metrics["mask_per_class"]
    assert set(per_class) == set(MASK_CLASSES)
    assert metrics["dice_mean"] == pytest.approx(np.mean([per_class[name]["dice_mean"] for name in MASK_CLASSES]))
    folder = run.directory / "evaluation" / "test"
    predictions = np.load(folder / "predictions.npz")
    assert predictions["mask_probabilities"].shape[-1] == 3 and set(np.unique(predictions["true_masks"])) <= {0, 1, 2}
    page = (folder / "report.html").read_text()
    assert "Per mask class" in page and "macro mean over foreground classes" in page
    checked = tmp_path / "report.html"
    checked.write_text(page.replace("</body>", IMAGE_CHECK + "</body>"))
    dom = _chromium("--dump-dom", checked.as_uri(), profile=tmp_path / "profile").stdout
    facts = dict(re.findall(r'data-(images|broken|tables|rows)="(\d+)"', dom))
    assert int(facts["images"]) >= 4 and facts["broken"] == "0", facts


@pytest.fixture(scope="module")
def export(run, tmp_path_factory):
    return export_model(run.directory, tmp_path_factory.mktemp("export"))


def test_saved_model_class_map_is_the_keras_models_argmax(run, export):
    import tensorflow as tf

    # folding batch norm moves probabilities by up to TOLERANCE, which may flip the argmax of a near-tied pixel
    checks = export.info["self_check"]["signatures"]
    assert all(check["mask_class_map_agreement"] > 0.99 for check in checks.values()), checks
    model = load_model(run.best_model_path)
    images = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 1), dtype=np.uint8)
    served = to_numpy(tf.saved_model.load(str(export.directory)).signatures["serving_default"](
        images=tf.constant(images)))
    probabilities = model.predict(images.astype("float32"), verbose=0)["mask"]
    top_two = np.sort(probabilities, axis=-1)[..., -2:]
    decided = top_two[..., 1] - top_two[..., 0] > 2 * TOLERANCE
    assert decided.mean() > 0.9
    np.testing.assert_array_equal(served["mask_class_map"][decided], probabilities.argmax(-1)[decided])
    np.testing.assert_allclose(served["mask_probabilities"], probabilities, atol=TOLERANCE)


def test_predict_writes_class_maps_and_colour_overlays(export, tmp_path):
    image = np.random.default_rng(1).integers(0, 255, (40, 56), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "scan.png"), image)
    predictor = load_predictor(export.directory)
    assert predictor.mask_classes == MASK_CLASSES
    result = predict_files(predictor, [tmp_path / "scan.png"], tmp_path / "out")
    row = pd.read_csv(result.csv_path).iloc[0]
    class_map = cv2.imread(str(tmp_path / "out" / row["mask_file"]), cv2.IMREAD_UNCHANGED)
    assert class_map.shape == (40, 56) and set(np.unique(class_map)) <= {0, 1, 2}
    assert row["area_pixels_rim"] == (class_map == 1).sum() and row["area_pixels_core"] == (class_map == 2).sum()
    assert row["lesion_area_pixels"] == (class_map > 0).sum()
    overlay = cv2.imread(str(tmp_path / "out" / row["overlay_file"]))
    assert overlay.shape == (40, 56, 3)


def test_seg_gradcam_explains_a_chosen_mask_class(run, tmp_path):
    model = load_model(run.best_model_path)
    assert model_heads(model)["mask"].mask_classes == MASK_CLASSES
    gallery = prepare_gallery(run.directory, output_dir=tmp_path / "gallery", num_images=2, head="mask",
                              target_class="core")
    assert gallery.target_class == 2
    summary = gallery.write()
    assert len(summary["images"]) == 2 and summary["index"].is_file()
    index = summary["index"].read_text()
    assert "mask class 2" in index
    # the Attention U-Net's gate coefficients are a second row of panels under the image and its heatmap
    assert "bottom row: decoder_stage1_gate_attention, decoder_stage2_gate_attention" in index
    assert cv2.imread(str(summary["images"][0])).shape[:2] == (600, 1100)
