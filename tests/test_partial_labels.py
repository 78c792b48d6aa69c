"""Partially labelled data: images without a mask or a label (``--allow-missing mask,label``) are read, counted,
served as all -1 masks or all-zero one-hot labels, train only the losses they have (no mask gradient), and are left
out of that head's metrics; ``--splits-file`` trains on given splits; a class label declared ordinal is learnt by an
ordinal head and evaluated as grades."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from click.testing import CliRunner
from sklearn import metrics as sk_metrics
from sklearn.utils.class_weight import compute_class_weight

from cli import main
from conftest import write_folder_dataset
from mtunet.data import load_dataset
from mtunet.data.dataset import DatasetInfo
from mtunet.errors import ConfigError, DataError
from mtunet.evaluation.metrics import classification_metrics, compute_metrics, segmentation_metrics
from mtunet.evaluation.run import evaluate_run
from mtunet.models.losses import MultiClassSegmentationLoss, SegmentationLoss
from mtunet.models.metrics import MeanClassDice, MeanDice
from mtunet.training.loop import train

WITHOUT_MASK = ("case001_1", "case002_0", "case004_1", "case007_0", "case009_1")


def _partial_dataset(root, *, num_patients=12, without_mask=WITHOUT_MASK):
    """The fake folder dataset with the mask files of ``without_mask`` removed."""
    write_folder_dataset(root, num_patients=num_patients)
    for example in without_mask:
        (root / "masks" / f"{example}.png").unlink()
    return root


def test_images_without_a_mask_are_bad_unless_allowed_then_counted(tmp_path):
    root = _partial_dataset(tmp_path / "data")
    with pytest.raises(DataError, match=r"5 have no mask in masks/ .*or allow_missing='mask' to keep images"):
        load_dataset("folder", data_dir=root, image_size=32)
    data = load_dataset("folder", data_dir=root, image_size=32, allow_missing=("mask",))
    assert sum(len(data.ids(split)) for split in ("train", "validation", "test")) == 24  # none left out
    for split in ("train", "validation", "test"):
        missing = [example in WITHOUT_MASK for example in data.ids(split)]
        np.testing.assert_array_equal(data.mask_present(split), np.logical_not(missing))
        assert data.info.missing_masks[split] == sum(missing)
        table = data.table(split)
        assert table["has_mask"].tolist() == [not flag for flag in missing]
        assert table["lesion_fraction"].isna().tolist() == missing
    assert DatasetInfo.from_dict(data.info.to_dict()) == data.info
    record = data.info.to_dict()
    del record["missing_masks"]  # a config.json written before partial labels
    assert DatasetInfo.from_dict(record).missing_masks == {}


def _blank_labels(root, examples):
    table = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    table.loc[table["id"].isin(examples), "label"] = ""
    table.to_csv(root / "labels.csv", index=False)


def test_rows_without_a_label_are_bad_unless_allowed_then_counted_and_unweighted(tmp_path):
    root = write_folder_dataset(tmp_path / "data", num_patients=12)
    unlabelled = ["case000_1", "case003_0", "case005_0", "case005_1", "case010_0"]
    _blank_labels(root, unlabelled)
    with pytest.raises(DataError, match=r"5 have an empty label .*or allow_missing='label' to keep rows"):
        load_dataset("folder", data_dir=root, image_size=32)
    data = load_dataset("folder", data_dir=root, image_size=32, allow_missing=("label",))
    assert data.info.class_names == ["benign", "malignant"]
    labels = {split: data.labels(split) for split in ("train", "validation", "test")}
    assert sorted(example for split in labels for example, label in zip(data.ids(split), labels[split])
                  if label == -1) == unlabelled
    for split, values in labels.items():
        assert data.info.missing_labels[split] == int(np.sum(values == -1))
        assert sum(data.info.class_counts[split].values()) == int(np.sum(values >= 0))
        assert (data.table(split)["label"] == "").sum() == np.sum(values == -1)
    train = labels["train"][labels["train"] >= 0]
    np.testing.assert_allclose(data.class_weights(), compute_class_weight("balanced", classes=np.arange(2), y=train))
    for _, targets in data.pipeline("train", batch_size=32, training=False):
        np.testing.assert_array_equal(targets["label"].numpy().sum(axis=1), labels["train"] >= 0)


def test_evaluation_scores_the_class_head_on_the_labelled_images():
    rng = np.random.default_rng(4)
    labels = np.array([0, -1, 1, 2, -1, 1, 0, 2, 2, 1])
    probabilities = rng.dirichlet(np.ones(3), size=len(labels))
    predictions = {"ids": np.arange(10).astype(str), "labels": labels, "class_names": np.array(["a", "b", "c"]),
                   "label_probabilities": probabilities}
    metrics, _, _ = compute_metrics(predictions, bootstrap_resamples=50)
    labelled = labels >= 0
    expected = classification_metrics(labels[labelled], probabilities[labelled], ["a", "b", "c"])
    assert metrics["images_without_label"] == 2
    assert metrics["accuracy"] == pytest.approx(sk_metrics.accuracy_score(labels[labelled],
                                                                          probabilities[labelled].argmax(1)))
    assert metrics["balanced_accuracy"] == pytest.approx(expected["balanced_accuracy"])
    assert metrics["confusion_matrix"] == expected["confusion_matrix"]
    interval = metrics["confidence_intervals"]["accuracy"]
    assert interval["low"] <= expected["accuracy"] <= interval["high"] and interval["resamples"] == 50


def test_columns_json_declares_the_label_ordinal_or_is_refused(tmp_path):
    root = write_folder_dataset(tmp_path / "data")
    (root / "columns.json").write_text(json.dumps({"label": {"kind": "ordinal"}}))
    info = load_dataset("folder", data_dir=root, image_size=32).info
    assert info.label_kind == "ordinal" and info.target_heads == ()
    record = info.to_dict()
    del record["label_kind"]  # a config.json written before ordinal labels
    assert DatasetInfo.from_dict(record).label_kind == "categorical"
    (root / "columns.json").write_text(json.dumps({"label": {"kind": "continuous"}}))
    with pytest.raises(DataError, match=r"columns.json: column 'label' has \{'kind': 'continuous'\}; expected "
                                        r"\{\"kind\": \"ordinal\"\}"):
        load_dataset("folder", data_dir=root, image_size=32)


def test_allow_missing_is_checked(tmp_path):
    root = _partial_dataset(tmp_path / "data")
    with pytest.raises(ConfigError, match=r"allow_missing='labels': unknown target\(s\) labels; expected some of: "
                                          r"mask, label"):
        load_dataset("folder", data_dir=root, image_size=32, allow_missing=("labels",))
    with pytest.raises(ConfigError, match="dataset 'synthetic' cannot keep images without some targets .*folder"):
        load_dataset("synthetic", image_size=32, allow_missing=("mask",))


def test_pipeline_serves_a_missing_mask_as_all_minus_one_after_augmentation(tmp_path):
    data = load_dataset("folder", data_dir=_partial_dataset(tmp_path / "data"), image_size=32,
                        allow_missing=("mask",))
    present = dict(zip(data.ids("train"), data.mask_present("train")))
    assert not all(present.values())
    for training in (False, True):
        served = []
        for _, targets in data.pipeline("train", batch_size=4, training=training, seed=1):
            served.extend(targets["mask"].numpy())
        flags = [mask.min() >= 0 for mask in served]
        assert sorted(flags) == sorted(present.values())
        for mask, flag in zip(served, flags):
            values = set(np.unique(mask).tolist())
            assert values <= {0.0, 1.0} if flag else values == {-1.0}
        if not training:  # in order: each image's own mask
            assert flags == list(present.values())


# y_true (batch, H, W, 1) with image 1 missing (-1), and a prediction
_TRUE = np.zeros((3, 6, 6, 1), "float32")
_TRUE[0, 1:4, 1:4] = 1
_TRUE[1] = -1
_TRUE[2, 2:5, 0:3] = 1
_PRED = np.random.default_rng(0).uniform(0.01, 0.99, (3, 6, 6, 1)).astype("float32")
_HAS = np.array([True, False, True])


@pytest.mark.parametrize("kind", ["bce", "dice", "bce_dice"])
@pytest.mark.parametrize("dice", ["image", "image_scaled", "batch", "lesion"])
def test_mask_loss_of_a_batch_is_that_of_its_images_with_a_mask(kind, dice):
    loss = SegmentationLoss(kind, dice)
    assert float(loss(_TRUE, _PRED)) == pytest.approx(float(loss(_TRUE[_HAS], _PRED[_HAS])), rel=1e-5)
    # the missing image's prediction does not matter
    other = _PRED.copy()
    other[1] = 0.99
    assert float(loss(_TRUE, other)) == pytest.approx(float(loss(_TRUE, _PRED)), rel=1e-6)
    assert float(loss(_TRUE[1:2], _PRED[1:2])) == 0.0  # a batch without any mask


def test_multiclass_mask_loss_and_metrics_skip_missing_masks():
    true = np.zeros((3, 6, 6, 1), "float32")
    true[0, 1:3, 1:3], true[0, 4:, 4:] = 1, 2
    true[1] = -1
    true[2, 0:2, 3:6] = 2
    prediction = keras.ops.softmax(np.random.default_rng(1).normal(size=(3, 6, 6, 3)).astype("float32")).numpy()
    for kind in ("bce", "dice", "bce_dice"):
        loss = MultiClassSegmentationLoss(kind, "batch")
        assert float(loss(true, prediction)) == pytest.approx(float(loss(true[_HAS], prediction[_HAS])), rel=1e-5)
    partial, whole = MeanClassDice(), MeanClassDice()
    partial.update_state(true, prediction)
    whole.update_state(true[_HAS], prediction[_HAS])
    assert float(partial.result()) == pytest.approx(float(whole.result()))


def test_training_dice_averages_the_images_with_a_mask():
    dice = MeanDice()
    dice.update_state(_TRUE, _PRED)
    expected, _, _ = segmentation_metrics(_TRUE[_HAS], _PRED[_HAS])
    assert float(dice.result()) == pytest.approx(expected["dice_mean"])


def test_an_image_without_a_mask_changes_no_mask_gradient():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                              keras.layers.Conv2D(1, 1, activation="sigmoid")])
    loss = SegmentationLoss("bce_dice", "image")
    images = np.random.default_rng(2).uniform(0, 1, (3, 6, 6, 1)).astype("float32")

    def gradients(batch_images, batch_masks):
        with tf.GradientTape() as tape:
            value = loss(batch_masks, model(batch_images))
        return [gradient.numpy() for gradient in tape.gradient(value, model.trainable_weights)]

    reference = gradients(images[_HAS], _TRUE[_HAS])
    other_images = images.copy()
    other_images[1] = 1.0 - images[1]
    for batch_images in (images, other_images):
        for got, expected in zip(gradients(batch_images, _TRUE), reference):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_evaluation_scores_only_the_images_with_a_mask():
    rng = np.random.default_rng(3)
    true = rng.uniform(size=(6, 8, 8)) > 0.7
    probabilities = rng.uniform(size=(6, 8, 8))
    present = np.array([True, False, True, True, False, True])
    labels = np.array([0, 1, 0, 1, 1, 0])
    predictions = {"ids": np.arange(6).astype(str), "labels": labels, "class_names": np.array(["a", "b"]),
                   "mask_probabilities": probabilities, "true_masks": np.where(present[:, None, None], true, False),
                   "mask_present": present, "groups": np.array(["p0", "p0", "p1", "p2", "p3", "p3"])}
    metrics, dice, _ = compute_metrics(predictions, bootstrap_resamples=50)
    expected, expected_dice, _ = segmentation_metrics(true[present], probabilities[present], labels=labels[present],
                                                      class_names=["a", "b"])
    assert metrics["images_without_mask"] == 2 and metrics["n_images"] == 6
    for key in ("dice_mean", "dice_pooled", "pixel_sensitivity", "images_scored"):
        assert metrics[key] == pytest.approx(expected[key])
    np.testing.assert_allclose(dice[present], expected_dice)
    assert np.isnan(dice[~present]).all()
    # the pooled Dice's interval pools only the images with a mask: all resamples of those give it
    interval = metrics["confidence_intervals"]["dice_pooled"]
    assert interval["low"] <= expected["dice_pooled"] <= interval["high"]


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory):
    """A run on graded data (the label declared ordinal, learnt with CORAL) with images without a mask in every split
    and without a label in train and test, trained on given splits (fewer training images)."""
    root = tmp_path_factory.mktemp("partial")
    data_dir = write_folder_dataset(root / "data", num_patients=16)
    whole = load_dataset("folder", data_dir=data_dir, image_size=32)  # masks decide nothing of the split
    for example in whole.ids("train")[:3] + whole.ids("validation")[:1] + whole.ids("test")[:2]:
        (data_dir / "masks" / f"{example}.png").unlink()
    # one image of three patients: the other keeps the patient's class, so the split stays the same
    _blank_labels(data_dir, [whole.ids("train")[-1], whole.ids("train")[-3], whole.ids("test")[-1]])
    (data_dir / "columns.json").write_text(json.dumps({"label": {"kind": "ordinal"}}))
    data = load_dataset("folder", data_dir=data_dir, image_size=32, allow_missing=("mask", "label"))
    assert data.info.label_kind == "ordinal"
    assert data.info.missing_masks == {"train": 3, "validation": 1, "test": 2}
    splits = data.splits.to_dict()
    splits["splits"] = {**splits["splits"], "train": data.ids("train")[2:]}
    (root / "splits.json").write_text(json.dumps(splits))
    run = train(weights=None, dataset="folder", data_dir=str(data_dir), image_size=32, batch_size=8, epochs=1,
                allow_missing=("mask", "label"), splits_file=str(root / "splits.json"), ordinal_loss="coral",
                output_dir=str(root / "run"))
    return run, splits


def test_run_trains_on_the_splits_file_and_records_the_missing_masks(partial_run):
    run, splits = partial_run
    assert json.loads((run.directory / "splits.json").read_text())["splits"] == splits["splits"]
    record = json.loads((run.directory / "config.json").read_text())
    assert record["options"]["allow_missing"] == ["mask", "label"]
    assert record["dataset"]["missing_labels"] == {"train": 2, "validation": 0, "test": 1}
    assert record["dataset"]["label_kind"] == "ordinal"
    assert {head["name"]: head["type"] for head in record["model"]["heads"]}["label"] == "ordinal"
    assert record["dataset"]["split_sizes"]["train"] == len(splits["splits"]["train"])
    assert record["dataset"]["missing_masks"] == {"train": 1, "validation": 1, "test": 2}
    assert all(np.isfinite(value) for value in run.history[0].values())


def test_evaluation_of_the_run_leaves_out_the_test_images_without_a_mask(partial_run):
    run, _ = partial_run
    metrics = evaluate_run(run.directory, bootstrap_resamples=20)  # with Grad-CAM of the ordinal label
    assert metrics["images_without_mask"] == 2
    table = pd.read_csv(run.directory / "evaluation" / "test" / "per_image.csv")
    assert int(table["dice"].isna().sum()) == 2 and table["true_lesion_pixels"].isna().sum() == 2
    assert metrics["images_scored"] == len(table) - 2
    assert metrics["images_without_label"] == 1 and (table["true_class"].isna()).sum() == 1
    predictions = np.load(run.directory / "evaluation" / "test" / "predictions.npz")
    labelled = predictions["labels"] >= 0
    assert metrics["accuracy"] == pytest.approx(sk_metrics.accuracy_score(
        predictions["labels"][labelled], predictions["label_probabilities"][labelled].argmax(1)))
    # the label is graded: its CORAL decisions (the number of P(y > k) above 0.5) scored by quadratic kappa
    exceeding = predictions["label_probabilities"][:, 1:].sum(axis=1)  # P(y > 0) of two grades
    grades = (exceeding > 0.5).astype(int)
    np.testing.assert_array_equal(predictions["label_predicted"], grades)
    grading = metrics["heads"]["label"]
    assert grading["kind"] == "ordinal" and grading["n"] == int(labelled.sum()) and grading["missing"] == 1
    assert grading["qwk"] == pytest.approx(sk_metrics.cohen_kappa_score(
        predictions["labels"][labelled], grades[labelled], labels=[0, 1], weights="quadratic"))
    assert metrics["gradcam"]["head"] == "label" and "Head label" in (
        run.directory / "evaluation" / "test" / "report.html").read_text()


def test_inspect_and_train_take_allow_missing(tmp_path):
    root = _partial_dataset(tmp_path / "data")
    runner = CliRunner()
    refused = runner.invoke(main, ["data", "inspect", "--dataset", "folder", "--data-dir", str(root),
                                   "--image-size", "32"])
    assert refused.exit_code == 1 and "--allow-missing mask" in refused.output
    result = runner.invoke(main, ["data", "inspect", "--dataset", "folder", "--data-dir", str(root),
                                  "--image-size", "32", "--allow-missing", "mask"])
    assert result.exit_code == 0, result.output
    assert "images without a mask: 5 (" in result.output
    unknown = runner.invoke(main, ["train", "--dataset", "folder", "--data-dir", str(root),
                                   "--allow-missing", "mask,grade"])
    assert unknown.exit_code == 2 and "unknown target 'grade'; expected some of: mask, label" in unknown.output
