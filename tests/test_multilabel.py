"""Multi-label lesion masks (one sigmoid channel per lesion type, which may overlap): the folder layout
``masks/<lesion type>/<id>.png`` with a lesion type's mask missing for some images, served per channel (-1 where
missing) through augmentation and inspected per lesion type; the loss and training metrics over the present (image,
lesion type) pairs; per-lesion Dice and AUPR against scikit-learn; and a run trained, evaluated, exported, predicted
and explained end to end."""

import json
import re
import shutil

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from click.testing import CliRunner
from sklearn.metrics import average_precision_score

from cli import main
from conftest import write_folder_dataset
from mtunet.data.augment import Augmenter
from mtunet.data.dataset import DatasetInfo, load_dataset
from mtunet.data.folder import read_folder
from mtunet.data.inspect import inspect_dataset
from mtunet.deploy.export import TOLERANCE, export_model
from mtunet.deploy.predict import load_predictor, predict_files
from mtunet.deploy.serving import to_numpy
from mtunet.errors import ConfigError, DataError
from mtunet.evaluation.metrics import (
    compute_metrics, load_predictions, metrics_from_predictions, multilabel_metrics, overlap_per_image, pixel_aupr,
    save_predictions,
)
from mtunet.evaluation.run import evaluate_run
from mtunet.explain.gallery import prepare_gallery
from mtunet.explain.gradcam import GradCam
from mtunet.models import load_model
from mtunet.models.heads import build_head
from mtunet.models.heads.multilabel_mask import MultiLabelMaskHead
from mtunet.models.losses import MultiLabelSegmentationLoss, SegmentationLoss
from mtunet.models.metrics import MeanLabelDice, MeanLabelIoU
from mtunet.training.loop import data_fingerprint, train

LESION_TYPES = ("ex", "ma")


@pytest.fixture(scope="module")
def lesion_dir(tmp_path_factory):
    """24 images of 12 patients; every 4th image lacks its ``ma`` mask."""
    return write_folder_dataset(tmp_path_factory.mktemp("multilabel") / "lesions", lesion_types=LESION_TYPES)


def test_a_missing_lesion_mask_is_bad_unless_allowed_then_that_channel_is_missing(lesion_dir):
    with pytest.raises(DataError, match=r"6 have no mask file of their lesion type \(masks/ma/case001_1, "
                                        r"masks/ma/case003_1, masks/ma/case005_1 and 3 more; expected "
                                        r"masks/<lesion type>/<id>.<ext> for every image and each of ex, ma, or "
                                        r"allow_missing='mask'"):
        read_folder(lesion_dir, image_size=32)
    store = read_folder(lesion_dir, image_size=32, allow_missing=("mask",))
    assert store.multilabel_masks and store.mask_classes == LESION_TYPES
    assert store.masks.shape == (24, 32, 32, 2) and store.masks.dtype == np.uint8
    lacking = np.arange(24) % 4 == 3
    assert (store.masks[lacking, ..., 1] == 255).all()
    assert set(np.unique(store.masks[~lacking])) == {0, 1} and set(np.unique(store.masks[..., 0])) == {0, 1}
    assert store.has_masks().all()  # one lesion type present is a mask
    assert np.isnan(store.mask_fractions[lacking, 1]).all() and not np.isnan(store.mask_fractions[:, 0]).any()
    overlap = store.masks[~lacking, ..., 0] & store.masks[~lacking, ..., 1]
    assert overlap.any() and (store.masks[~lacking, ..., 0] != store.masks[~lacking, ..., 1]).any()


def test_an_image_without_any_lesion_mask_has_none(tmp_path):
    root = write_folder_dataset(tmp_path / "data", num_patients=4, lesion_types=LESION_TYPES, missing_lesion_every=0)
    for lesion in LESION_TYPES:
        (root / "masks" / lesion / "case000_0.png").unlink()
    store = read_folder(root, image_size=32, allow_missing=("mask",))
    assert store.has_masks().tolist() == [False] + [True] * 7
    assert (store.masks[0] == 255).all() and np.isnan(store.lesion_fractions[0])


def test_sub_folders_beside_mask_files_are_ignored_as_before(folder_dataset, caplog):
    root = folder_dataset(num_patients=4)
    binary = read_folder(root, image_size=32)
    (root / "masks" / "old").mkdir()
    cv2.imwrite(str(root / "masks" / "old" / "case000_0.png"), np.zeros((40, 56), np.uint8))
    store = read_folder(root, image_size=32)
    assert not store.multilabel_masks and store.mask_classes == ("lesion",)
    np.testing.assert_array_equal(store.masks, binary.masks)
    assert "ignoring the sub-folder(s) old of" in caplog.text


def test_a_lesion_mask_of_another_size_or_beside_mask_classes_txt_is_refused(tmp_path):
    root = write_folder_dataset(tmp_path / "data", num_patients=4, lesion_types=LESION_TYPES, missing_lesion_every=0)
    cv2.imwrite(str(root / "masks" / "ex" / "case001_0.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"1 are masks of another size than their image \(masks/ex/case001_0.png"):
        read_folder(root, image_size=32)
    (root / "mask_classes.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="has both mask_classes.txt and lesion sub-folders of masks/ \\(ex, ma\\)"):
        read_folder(root, image_size=32)


@pytest.mark.parametrize("memory_limit", [None, 0])
def test_pipeline_serves_each_channel_with_minus_one_where_missing(lesion_dir, memory_limit):
    data = load_dataset("folder", data_dir=lesion_dir, image_size=32, allow_missing=("mask",),
                        memory_limit=memory_limit)
    assert data.info.multilabel_masks and not data.info.multiclass_masks
    assert DatasetInfo.from_dict(data.info.to_dict()) == data.info
    lacking = {example: int(example[4:7]) % 2 == 1 and example.endswith("_1") for example in data.ids("train")}
    assert any(lacking.values())
    assert data.channels_present("train").tolist() == [[True, not lacking[example]] for example in data.ids("train")]
    for training in (False, True):
        for _, targets in data.pipeline("train", batch_size=8, training=training, flip="horizontal_and_vertical"):
            for mask in targets["mask"].numpy():
                assert mask.shape == (32, 32, 2) and set(np.unique(mask[..., 0])) == {0.0, 1.0}
                assert set(np.unique(mask[..., 1])) in ({0.0, 1.0}, {-1.0})
        if not training:
            served = np.concatenate([targets["mask"].numpy()[:, 0, 0, 1] < 0 for _, targets in
                                     data.pipeline("train", batch_size=8, training=False)])
            assert served.tolist() == [lacking[example] for example in data.ids("train")]


def test_augmentation_moves_every_channel_alike():
    masks = np.zeros((4, 32, 32, 3), "float32")
    masks[:, 5:20, 8:14] = 1
    masks[..., 2] = 255.0  # a missing channel as stored, filled with 0 where moved in from outside
    images = np.repeat(masks[..., :1] * 200, 3, axis=-1)
    _, moved = Augmenter(seed=3, flip="horizontal_and_vertical")(images, masks)
    moved = moved.numpy()
    np.testing.assert_array_equal(moved[..., 0], moved[..., 1])
    assert set(np.unique(moved[..., :2])) == {0.0, 1.0} and set(np.unique(moved[..., 2])) <= {0.0, 255.0}
    assert (moved[..., 0] != masks[..., 0]).any()


def test_the_data_fingerprint_knows_which_lesion_masks_are_missing(tmp_path):
    root = write_folder_dataset(tmp_path / "data", lesion_types=LESION_TYPES)
    before = data_fingerprint(load_dataset("folder", data_dir=root, image_size=32, allow_missing=("mask",)))
    (root / "masks" / "ex" / "case000_0.png").unlink()
    assert data_fingerprint(load_dataset("folder", data_dir=root, image_size=32, allow_missing=("mask",))) != before


def test_old_dataset_records_read_as_single_channel_masks(lesion_dir):
    info = load_dataset("folder", data_dir=lesion_dir, image_size=32, allow_missing=("mask",)).info
    record = info.to_dict()
    assert record["multilabel_masks"] is True and record["mask_classes"] == list(LESION_TYPES)
    del record["multilabel_masks"]
    assert DatasetInfo.from_dict(record).multilabel_masks is False


def test_inspect_counts_each_lesion_types_masks(lesion_dir):
    report = inspect_dataset("folder", data_dir=lesion_dir, image_size=32, allow_missing=("mask",))
    lesions = report["lesion_types"]
    assert list(lesions) == list(LESION_TYPES)
    assert lesions["ex"]["present"] == 24 and lesions["ma"]["present"] == 18
    store = read_folder(lesion_dir, image_size=32, allow_missing=("mask",))
    assert lesions["ma"]["mean_lesion_fraction"] == pytest.approx(np.nanmean(store.mask_fractions[:, 1]))
    assert report["mask_class_fractions"]["ex"] == pytest.approx(lesions["ex"]["mean_lesion_fraction"])


def test_data_inspect_prints_a_row_per_lesion_type(lesion_dir):
    result = CliRunner().invoke(main, ["data", "inspect", "--dataset", "folder", "--data-dir", str(lesion_dir),
                                       "--image-size", "32", "--allow-missing", "mask"])
    assert result.exit_code == 0, result.output
    assert re.search(r"lesion type\s+with mask\s+empty masks\s+mean lesion", result.output)
    assert re.search(r"\nma\s+18\s+0\s+10\.\d%", result.output)


# y_true (batch 3, 6 x 6, 2 lesion types): image 0 lacks type 1 (-1), image 2 has an empty type 0; a prediction
_TRUE = np.zeros((3, 6, 6, 2), "float32")
_TRUE[0, 1:4, 1:4, 0] = 1
_TRUE[0, ..., 1] = -1
_TRUE[1, 2:5, 0:3, 0], _TRUE[1, 0:3, 0:3, 1] = 1, 1
_TRUE[2, 3:6, 3:6, 1] = 1
_PRED = np.random.default_rng(0).uniform(0.01, 0.99, (3, 6, 6, 2)).astype("float32")
_PAIRS = [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1)]  # the present (image, lesion type) pairs


def _pair(array, image, channel):
    return array[image:image + 1, ..., channel:channel + 1]


@pytest.mark.parametrize("kind", ["bce", "dice", "bce_dice"])
@pytest.mark.parametrize("dice", ["image", "image_scaled", "batch", "lesion"])
def test_with_one_lesion_type_the_loss_is_the_binary_masks(kind, dice):
    true, prediction = _TRUE[..., :1].copy(), _PRED[..., :1]
    true[1] = -1  # an image without a mask
    expected = float(SegmentationLoss(kind, dice)(true, prediction))
    assert float(MultiLabelSegmentationLoss(kind, dice)(true, prediction)) == pytest.approx(expected, rel=1e-5)


def test_the_loss_of_hand_cases():
    true, half = np.ones((1, 4, 4, 2), "float32"), np.full((1, 4, 4, 2), 0.5, "float32")
    assert float(MultiLabelSegmentationLoss("bce")(true, half)) == pytest.approx(np.log(2), rel=1e-5)
    # Dice of each channel 1 - (2 * 8 + 1) / (16 + 8 + 1), the same for both
    assert float(MultiLabelSegmentationLoss("dice")(true, half)) == pytest.approx(1 - 17 / 25, rel=1e-5)
    true[..., 1] = -1  # a missing channel adds nothing, whatever is predicted there
    other = half.copy()
    other[..., 1] = 0.99
    assert float(MultiLabelSegmentationLoss("bce_dice")(true, other)) == pytest.approx(np.log(2) + 1 - 17 / 25,
                                                                                      rel=1e-5)
    assert float(MultiLabelSegmentationLoss("bce_dice")(np.full_like(true, -1), half)) == 0.0


@pytest.mark.parametrize("kind,dice", [("bce", "image"), ("dice", "image"), ("dice", "image_scaled"),
                                       ("bce_dice", "image")])
def test_the_loss_is_the_mean_over_present_pairs(kind, dice):
    loss = MultiLabelSegmentationLoss(kind, dice)
    pairs = [float(loss(_pair(_TRUE, *pair), _pair(_PRED, *pair))) for pair in _PAIRS]
    assert float(loss(_TRUE, _PRED)) == pytest.approx(np.mean(pairs), rel=1e-5)


def test_the_batch_and_lesion_dice_leave_missing_channels_out():
    batch = MultiLabelSegmentationLoss("dice", "batch")
    first = float(batch(_TRUE[..., :1], _PRED[..., :1]))
    second = float(batch(_TRUE[1:, ..., 1:], _PRED[1:, ..., 1:]))  # image 0 lacks lesion type 1
    assert float(batch(_TRUE, _PRED)) == pytest.approx((first + second) / 2, rel=1e-5)
    lesion = MultiLabelSegmentationLoss("dice", "lesion")
    with_lesion = [pair for pair in _PAIRS if _pair(_TRUE, *pair).sum() > 0]
    expected = np.mean([float(lesion(_pair(_TRUE, *pair), _pair(_PRED, *pair))) for pair in with_lesion])
    assert float(lesion(_TRUE, _PRED)) == pytest.approx(expected, rel=1e-5)


def test_a_missing_channel_changes_no_gradient():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                              keras.layers.Conv2D(2, 1, activation="sigmoid")])
    loss = MultiLabelSegmentationLoss("bce_dice", "image")
    images = np.random.default_rng(2).uniform(0, 1, (3, 6, 6, 1)).astype("float32")

    def gradients(batch_loss):
        with tf.GradientTape() as tape:
            value = batch_loss(model(images))
        return [gradient.numpy() for gradient in tape.gradient(value, model.trainable_weights)]

    # the loss computed without the missing channel: the mean of each present pair's own loss
    reference = gradients(lambda outputs: tf.add_n([loss(_pair(_TRUE, *pair), _pair(outputs, *pair))
                                                    for pair in _PAIRS]) / len(_PAIRS))
    for got, expected in zip(gradients(lambda outputs: loss(_TRUE, outputs)), reference):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_the_head_thresholds_each_lesion_type_and_rebuilds_from_its_config():
    head = MultiLabelMaskHead(mask_classes=LESION_TYPES)
    decided = head.predict_numpy(_PRED, threshold=0.6)
    assert decided.shape == _PRED.shape and (decided == (_PRED > 0.6)).all()
    assert build_head(head.get_config()).mask_classes == LESION_TYPES
    with pytest.raises(ConfigError, match="a multi-label mask needs at least 1 lesion type"):
        MultiLabelMaskHead(mask_classes=())


def test_training_dice_and_iou_average_the_present_pairs():
    dice, iou = MeanLabelDice(), MeanLabelIoU()
    dice.update_state(_TRUE, _PRED)
    iou.update_state(_TRUE, _PRED)
    per_pair = [overlap_per_image(_pair(_TRUE, *pair) > 0, _pair(_PRED, *pair) > 0.5) for pair in _PAIRS]
    assert float(dice.result()) == pytest.approx(np.mean([pair[0] for pair in per_pair]))
    assert float(iou.result()) == pytest.approx(np.mean([pair[1] for pair in per_pair]))


def _multilabel_predictions(seed=3):
    """6 images of 8 x 8 px and 2 lesion types; images 1 and 4 lack type 1, image 5 has no mask at all."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(size=(6, 8, 8, 2)) > 0.7
    probabilities = np.clip(true * 0.4 + rng.uniform(size=true.shape) * 0.6, 0, 1)
    present = np.ones((6, 2), bool)
    present[[1, 4], 1] = False
    present[5] = False
    return {"ids": np.arange(6).astype(str), "labels": np.array([0, 1, 0, 1, 1, 0]),
            "class_names": np.array(["a", "b"]), "mask_probabilities": probabilities,
            "true_masks": true & present[:, None, None, :], "mask_channels_present": present,
            "mask_present": present.any(axis=1), "mask_labels": np.array(LESION_TYPES)}


def test_evaluation_scores_each_lesion_type_over_the_images_with_its_mask():
    predictions = _multilabel_predictions()
    metrics, dice, _ = compute_metrics(predictions, bootstrap_resamples=50)
    true, probabilities = predictions["true_masks"], predictions["mask_probabilities"]
    present = predictions["mask_channels_present"]
    assert metrics["mask_labels"] == list(LESION_TYPES) and metrics["images_without_mask"] == 1
    for index, name in enumerate(LESION_TYPES):
        have = present[:, index]
        scores = metrics["mask_per_label"][name]
        expected, _ = overlap_per_image(true[have, ..., index], probabilities[have, ..., index] > 0.5)
        assert scores["images"] == have.sum() and scores["dice_mean"] == pytest.approx(expected.mean())
        assert scores["aupr"] == pytest.approx(average_precision_score(true[have, ..., index].ravel(),
                                                                       probabilities[have, ..., index].ravel()))
        assert "mask_per_label" in metrics["confidence_intervals"]
    assert metrics["dice_mean"] == pytest.approx(np.mean([metrics["mask_per_label"][name]["dice_mean"]
                                                          for name in LESION_TYPES]))
    assert metrics["aupr_mean"] == pytest.approx(np.mean([metrics["mask_per_label"][name]["aupr"]
                                                          for name in LESION_TYPES]))
    assert np.isnan(dice[5]) and not np.isnan(dice[:5]).any()
    # by true class, each image's mean Dice over its lesion types: images 0 and 2 of class a have a mask (5 has none)
    assert metrics["dice_per_class"]["a"]["n"] == 2
    assert metrics["dice_per_class"]["a"]["mean"] == pytest.approx(np.mean(dice[[0, 2]]))


def test_a_hand_computed_lesion_type():
    true = np.zeros((1, 2, 2, 1), bool)
    true[0, 0, :, 0] = True  # two lesion pixels, ranked first and third: AP = (1 + 2/3) / 2
    probabilities = np.array([0.9, 0.3, 0.6, 0.1]).reshape(1, 2, 2, 1)
    metrics, dice, iou = multilabel_metrics(true, probabilities, np.ones((1, 1), bool), ["ex"])
    assert metrics["mask_per_label"]["ex"]["aupr"] == pytest.approx((1 + 2 / 3) / 2)
    # thresholded at 0.5: pixels 0 and 2 predicted, pixel 0 right: Dice 2 / 4, IoU 1 / 3
    assert dice[0, 0] == pytest.approx(0.5) and iou[0, 0] == pytest.approx(1 / 3)
    assert metrics["aupr_sampling"].endswith("all pixels of the images with its mask")


def test_aupr_of_many_pixels_ranks_a_seeded_sample():
    rng = np.random.default_rng(0)
    true = rng.uniform(size=20000) > 0.9
    scores = np.clip(true * 0.3 + rng.uniform(size=true.size), 0, 1)
    sampled, ranked = pixel_aupr(true, scores, max_pixels=5000)
    assert ranked == 5000 and pixel_aupr(true, scores, max_pixels=5000)[0] == sampled
    assert sampled == pytest.approx(average_precision_score(true, scores), abs=0.05)
    assert np.isnan(pixel_aupr(np.zeros(4, bool), np.ones(4))[0])


def test_multilabel_predictions_file_round_trips(tmp_path):
    predictions = _multilabel_predictions()
    save_predictions(tmp_path / "predictions.npz", predictions)
    expected = compute_metrics(predictions, bootstrap_resamples=20)[0]
    assert metrics_from_predictions(tmp_path, bootstrap_resamples=20)["mask_per_label"] == expected["mask_per_label"]


@pytest.fixture(scope="module")
def run(lesion_dir, tmp_path_factory):
    """MTL-DRNet's kind of model: a grade head (the label declared ordinal, CORAL) beside the two-lesion mask."""
    graded = tmp_path_factory.mktemp("graded") / "lesions"
    shutil.copytree(lesion_dir, graded)
    (graded / "columns.json").write_text(json.dumps({"label": {"kind": "ordinal"}}))
    return train(weights=None, dataset="folder", data_dir=str(graded), image_size=32, batch_size=8, epochs=2,
                 seg_loss="bce_dice", allow_missing=("mask",), ordinal_loss="coral",
                 output_dir=str(tmp_path_factory.mktemp("run")))


def test_run_builds_the_multilabel_head_for_multilabel_data(run):
    record = json.loads((run.directory / "config.json").read_text())
    assert record["dataset"]["multilabel_masks"] is True and record["dataset"]["mask_classes"] == list(LESION_TYPES)
    assert record["model"]["heads"][0]["type"] == "ordinal"
    assert record["model"]["heads"][1] == {"type": "multilabel_mask", "name": "mask",
                                           "mask_classes": list(LESION_TYPES)}
    model = load_model(run.best_model_path)
    assert model.output_shape[1] == (None, 32, 32, 2)
    assert {"mask_dice", "val_mask_dice", "val_mask_iou"} <= set(run.history[0])
    assert all(np.isfinite(epoch["loss"]) for epoch in run.history)


def test_evaluation_writes_each_lesion_types_figures(run):
    metrics = evaluate_run(run.directory, bootstrap_resamples=20)
    assert metrics["mask_labels"] == list(LESION_TYPES) and set(metrics["mask_per_label"]) == set(LESION_TYPES)
    assert metrics["heads"]["label"]["kind"] == "ordinal" and "qwk" in metrics["heads"]["label"]
    for name in LESION_TYPES:
        assert {"dice_mean", "iou_mean", "aupr", "images"} <= set(metrics["mask_per_label"][name])
    folder = run.directory / "evaluation" / "test"
    predictions = load_predictions(folder)
    assert predictions["true_masks"].shape[-1] == 2 and predictions["mask_channels_present"].shape[1] == 2
    assert metrics["mask_per_label"]["ma"]["images"] == predictions["mask_channels_present"][:, 1].sum()
    table = pd.read_csv(folder / "per_image.csv")
    lacking = ~predictions["mask_channels_present"][:, 1]
    assert np.isnan(table["dice_ma"][lacking]).all() and not np.isnan(table["dice_ex"]).any()
    page = (folder / "report.html").read_text()
    assert "Per lesion type" in page and "AUPR" in page and "macro mean over lesion types" in page


def test_a_multilabel_model_is_not_evaluated_on_binary_masks(run, folder_dataset):
    with pytest.raises(ConfigError, match=r"predicts the multi-label mask classes \['ex', 'ma'\], but dataset "
                                          r"'folder' at .* has the mask classes \['lesion'\]"):
        evaluate_run(run.directory, data_dir=str(folder_dataset()), bootstrap_resamples=10)


@pytest.fixture(scope="module")
def export(run, tmp_path_factory):
    return export_model(run.directory, tmp_path_factory.mktemp("export"))


def test_saved_model_returns_each_lesion_types_probabilities(run, export):
    model = load_model(run.best_model_path)
    images = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 1), dtype=np.uint8)
    served = to_numpy(tf.saved_model.load(str(export.directory)).signatures["serving_default"](
        images=tf.constant(images)))
    assert set(served) >= {"mask_probabilities", "label_probabilities"} and "mask_class_map" not in served
    np.testing.assert_allclose(served["mask_probabilities"], model.predict(images.astype("float32"),
                                                                           verbose=0)["mask"], atol=TOLERANCE)


def test_predict_writes_a_mask_per_lesion_type(export, tmp_path):
    cv2.imwrite(str(tmp_path / "fundus.png"), np.random.default_rng(1).integers(0, 255, (40, 56), dtype=np.uint8))
    predictor = load_predictor(export.directory)
    assert predictor.multilabel_masks and predictor.mask_classes == LESION_TYPES
    result = predict_files(predictor, [tmp_path / "fundus.png"], tmp_path / "out", threshold=0.3)
    row = pd.read_csv(result.csv_path).iloc[0]
    masks = [cv2.imread(str(tmp_path / "out" / f"fundus_mask_{name}.png"), cv2.IMREAD_UNCHANGED)
             for name in LESION_TYPES]
    for name, mask in zip(LESION_TYPES, masks):
        assert row[f"mask_file_{name}"] == f"fundus_mask_{name}.png"
        assert mask.shape == (40, 56) and set(np.unique(mask)) <= {0, 255}
        assert row[f"area_pixels_{name}"] == (mask > 0).sum()
    assert row["lesion_area_pixels"] == np.logical_or(*(mask > 0 for mask in masks)).sum()
    assert cv2.imread(str(tmp_path / "out" / row["overlay_file"])).shape == (40, 56, 3)


def test_gradcam_explains_the_class_head_and_the_lesion_types(run, tmp_path):
    model = load_model(run.best_model_path)
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    for head, target in (("label", "predicted"), ("mask", "predicted"), ("mask", 1)):
        result = GradCam(model, head=head)(images, target_class=target)
        assert result.heatmaps.shape == (2, 32, 32) and result.masks.shape == (2, 32, 32)
    summary = prepare_gallery(run.directory, output_dir=tmp_path / "gallery", num_images=2).write()
    assert len(summary["images"]) == 2 and summary["index"].is_file()
