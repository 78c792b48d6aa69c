"""Further targets from labels.csv (columns.json): read and checked in one line per problem, served with missing
values, learnt by their own heads, evaluated per head against scikit-learn, exported and predicted with their
class names."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk_metrics
from sklearn.utils.class_weight import compute_class_weight

from conftest import write_folder_dataset
from mtunet.data import load_dataset
from mtunet.data.targets import MISSING_CLASS
from mtunet.deploy.export import export_model
from mtunet.deploy.predict import load_predictor, predict_files
from mtunet.errors import DataError
from mtunet.evaluation.metrics import metrics_from_predictions
from mtunet.evaluation.run import evaluate_run
from mtunet.models.metrics import LabelledAccuracy, LabelledAUC
from mtunet.training.loop import train

COLUMNS = {"birads": {"kind": "ordinal", "classes": ["3", "4", "5"]}, "histology": {"kind": "categorical"},
           "centre_y": {"kind": "continuous", "head": "geometry"},
           "centre_x": {"kind": "continuous", "head": "geometry"}}


def _write_dataset(root, *, num_patients=12, columns=COLUMNS):
    """The fake folder dataset with further columns: BI-RADS from the label (one cell empty), a histology with two
    values (two cells empty), the lesion's centre row and column from its mask (one row cell empty)."""
    import cv2

    write_folder_dataset(root, num_patients=num_patients, images_per_patient=2)
    table = pd.read_csv(root / "labels.csv", dtype=str)
    centres = [np.nonzero(cv2.imread(str(root / "masks" / f"{example}.png"), cv2.IMREAD_GRAYSCALE))
               for example in table["id"]]
    table["birads"] = np.where(table["label"] == "malignant", "5", "3")
    table.loc[3, "birads"] = ""
    table["histology"] = ["ductal" if index % 3 else "lobular" for index in range(len(table))]
    table.loc[[1, 6], "histology"] = ""
    table["centre_y"] = [f"{rows.mean():.2f}" for rows, _ in centres]
    table["centre_x"] = [f"{columns.mean():.2f}" for _, columns in centres]
    table.loc[4, "centre_y"] = ""
    table.to_csv(root / "labels.csv", index=False)
    (root / "columns.json").write_text(json.dumps(columns))
    return root


def test_columns_json_declares_heads_with_missing_values(tmp_path):
    data = load_dataset("folder", data_dir=_write_dataset(tmp_path / "data"), image_size=32)
    heads = {head.name: head for head in data.info.target_heads}
    assert list(heads) == ["birads", "histology", "geometry"]
    assert heads["birads"].kind == "ordinal" and heads["birads"].class_names == ("3", "4", "5")
    assert heads["histology"].class_names == ("ductal", "lobular")  # sorted, as none are given
    assert heads["geometry"].continuous and heads["geometry"].columns == ("centre_y", "centre_x")
    table = pd.read_csv(tmp_path / "data" / "labels.csv", dtype=str, keep_default_na=False).set_index("id")
    for split in ("train", "validation", "test"):
        rows = table.loc[data.ids(split)]
        targets = data.targets(split)
        expected = [("3", "4", "5").index(value) if value else MISSING_CLASS for value in rows["birads"]]
        np.testing.assert_array_equal(targets["birads"], expected)
        values = rows[["centre_y", "centre_x"]].replace("", "nan").astype(float).to_numpy()
        np.testing.assert_array_equal(targets["geometry"], values)
    train_values = data.targets("train")["geometry"]
    mean, std = data.target_statistics()["geometry"]
    np.testing.assert_allclose(mean, np.nanmean(train_values, axis=0))
    np.testing.assert_allclose(std, np.nanstd(train_values, axis=0))
    histology, birads = data.targets("train")["histology"], data.targets("train")["birads"]
    weights = data.target_class_weights()
    np.testing.assert_allclose(weights["histology"], compute_class_weight(
        "balanced", classes=np.arange(2), y=histology[histology != MISSING_CLASS]))
    # BI-RADS 4 is declared but no image has it: weight 1, the others balanced among themselves
    np.testing.assert_allclose(weights["birads"][[0, 2]], compute_class_weight(
        "balanced", classes=np.array([0, 2]), y=birads[birads != MISSING_CLASS]))
    assert weights["birads"][1] == 1.0
    shown = data.table("train").set_index("id")
    assert (shown["histology"] == table.loc[shown.index, "histology"]).all()
    restored = type(data.info).from_dict(json.loads(json.dumps(data.info.to_dict())))
    assert restored == data.info


def test_pipeline_serves_missing_labels_as_zero_rows_and_missing_values_as_nan(tmp_path):
    data = load_dataset("folder", data_dir=_write_dataset(tmp_path / "data"), image_size=32)
    split = next(name for name in ("train", "validation", "test") if MISSING_CLASS in data.targets(name)["birads"])
    targets = data.targets(split)
    served = {name: [] for name in ("birads", "geometry")}
    for _, batch in data.pipeline(split, batch_size=4, training=False):
        for name in served:
            served[name].append(batch[name].numpy())
    birads, geometry = np.concatenate(served["birads"]), np.concatenate(served["geometry"])
    assert birads.shape == (len(targets["birads"]), 3) and geometry.shape == (len(targets["birads"]), 2)
    missing = targets["birads"] == MISSING_CLASS
    assert not birads[missing].any()
    np.testing.assert_array_equal(birads[~missing].argmax(axis=1), targets["birads"][~missing])
    np.testing.assert_array_equal(np.isnan(geometry), np.isnan(targets["geometry"]))


@pytest.mark.parametrize("change, message", [
    (lambda root: (root / "columns.json").write_text('{"size": {"kind": "continuous"}}'),
     "names column(s) size that labels.csv lacks"),
    (lambda root: (root / "columns.json").write_text('{"centre_y": {"kind": "numeric"}}'),
     "column 'centre_y' has kind 'numeric'; expected one of: categorical, ordinal, continuous"),
    (lambda root: (root / "columns.json").write_text('{"centre_y": {"kind": "continuous", "head": "mask"}}'),
     "names head 'mask'; expected a name"),
    (lambda root: (root / "columns.json").write_text('{"patient": {"kind": "categorical"}}'),
     "declares column(s) patient, which labels.csv uses for ids, the class label and patients"),
    (lambda root: (root / "columns.json").write_text('{"label": {"kind": "continuous"}}'),
     "column 'label' has {'kind': 'continuous'}; expected {\"kind\": \"ordinal\"}"),
    (lambda root: (root / "columns.json").write_text(
        '{"birads": {"kind": "ordinal", "head": "both"}, "histology": {"kind": "categorical", "head": "both"}}'),
     "shares head 'both' with column 'birads'; only continuous columns may share a head"),
    (lambda root: (root / "columns.json").write_text("{not json"), "cannot be read as JSON"),
])
def test_bad_declarations_are_named_in_one_line(tmp_path, change, message):
    root = _write_dataset(tmp_path / "data", num_patients=4)
    change(root)
    with pytest.raises(DataError, match="^[^\n]*" + re.escape(message)):
        load_dataset("folder", data_dir=root, image_size=32)


def test_bad_values_are_named_per_row_and_can_be_skipped(tmp_path):
    root = _write_dataset(tmp_path / "data", num_patients=12)
    table = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    table.loc[0, "centre_y"], table.loc[2, "birads"] = "top", "4a"
    table.to_csv(root / "labels.csv", index=False)
    with pytest.raises(DataError) as raised:
        load_dataset("folder", data_dir=root, image_size=32)
    text = str(raised.value)
    assert "\n" not in text
    assert (f"have a non-numeric value in column centre_y (labels.csv:{table.loc[0, 'id']}; expected a number or an "
            "empty cell (missing))") in text
    assert f"have a value in column birads that is not a class (labels.csv:{table.loc[2, 'id']}; expected one of 3, " \
           "4, 5 or an empty cell (missing))" in text
    data = load_dataset("folder", data_dir=root, image_size=32, skip_bad_files=True)
    assert sum(data.info.split_sizes.values()) == len(table) - 2
    assert {file for file, _ in data.info.skipped} == {f"labels.csv:{table.loc[row, 'id']}" for row in (0, 2)}


def test_inspect_counts_each_heads_values(tmp_path):
    from click.testing import CliRunner

    from cli import main

    root = _write_dataset(tmp_path / "data")
    result = CliRunner().invoke(main, ["data", "inspect", "--dataset", "folder", "--data-dir", str(root),
                                       "--image-size", "32"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    birads = table["birads"].value_counts()
    assert (f"head birads (ordinal), column birads: {len(table) - 1} of {len(table)} with a value; "
            f"3 {birads['3']}, 4 0, 5 {birads['5']}") in result.output.splitlines()
    centre = table["centre_y"].replace("", "nan").astype(float)
    assert (f"head geometry (continuous), column centre_y: {len(table) - 1} of {len(table)} with a value; mean "
            f"{centre.mean():.4g}, std {centre.std(ddof=0):.4g}, {centre.min():.4g}-{centre.max():.4g}"
            ) in result.output.splitlines()


def test_training_metrics_count_only_labelled_examples_as_sklearn():
    y_true = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 1, 0]], "float32")
    y_pred = np.array([[.6, .3, .1], [.1, .1, .8], [.5, .4, .1], [.2, .2, .6], [.9, .05, .05], [.1, .8, .1]],
                      "float32")
    labelled = y_true.any(axis=1)
    accuracy, auc = LabelledAccuracy(), LabelledAUC(num_thresholds=2000)
    accuracy.update_state(y_true, y_pred)
    auc.update_state(y_true, y_pred)
    expected = sk_metrics.accuracy_score(y_true[labelled].argmax(1), y_pred[labelled].argmax(1))
    assert float(accuracy.result()) == pytest.approx(expected)  # 3 of 4: counting the unlabelled as class 0 gives 3/6
    # Keras's AUC (multi_label=False) pools every class's one-vs-rest decisions: sklearn's micro average
    pooled = sk_metrics.roc_auc_score(y_true[labelled].ravel(), y_pred[labelled].ravel())
    assert float(auc.result()) == pytest.approx(pooled, abs=2e-3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("target_heads")
    data_dir = _write_dataset(root / "data", num_patients=16)
    return train(weights=None, dataset="folder", data_dir=str(data_dir), image_size=32, batch_size=8, epochs=1,
                 ordinal_loss="coral", output_dir=str(root / "run"))


def _coral_grades(probabilities):
    """How many of ``P(y > k)``, the sums of the class probabilities above k, exceed 0.5."""
    probabilities = np.asarray(probabilities, float)
    return (np.cumsum(probabilities[:, ::-1], axis=1)[:, ::-1][:, 1:] > 0.5).sum(axis=1)


def test_run_learns_a_head_per_declared_target(run):
    record = json.loads((run.directory / "config.json").read_text())
    heads = {head["name"]: head for head in record["model"]["heads"]}
    assert set(heads) == {"label", "mask", "birads", "histology", "geometry"}
    assert heads["birads"]["num_classes"] == 3 and heads["geometry"]["targets"] == ["centre_y", "centre_x"]
    assert heads["birads"]["type"] == "ordinal" and heads["histology"]["type"] == "classification"
    assert record["options"]["ordinal_loss"] == "coral"
    data = load_dataset("folder", data_dir=record["options"]["data_dir"], image_size=32,
                        splits_path=run.directory / "splits.json")
    mean, std = data.target_statistics()["geometry"]
    np.testing.assert_allclose(heads["geometry"]["mean"], mean)
    np.testing.assert_allclose(heads["geometry"]["std"], std)
    assert set(record["target_class_weights"]) == {"birads", "histology"}
    assert {"birads_accuracy", "histology_auc", "geometry_mae", "val_geometry_mae"} <= set(run.history[0])
    assert all(np.isfinite(value) for value in run.history[0].values())


def test_evaluation_reports_each_head_as_sklearn_on_the_labelled_images(run):
    metrics = evaluate_run(run.directory, bootstrap_resamples=20, sections=())
    predictions = np.load(run.directory / "evaluation" / "test" / "predictions.npz")
    true, probabilities = predictions["true_birads"], predictions["birads_probabilities"]
    labelled = true != MISSING_CLASS
    birads = metrics["heads"]["birads"]
    assert birads["kind"] == "ordinal" and str(predictions["birads_kind"]) == "ordinal"
    assert birads["n"] == labelled.sum() and birads["missing"] == (~labelled).sum()
    predicted = predictions["birads_predicted"]
    np.testing.assert_array_equal(predicted, _coral_grades(probabilities))
    true, predicted, probabilities = true[labelled], predicted[labelled], probabilities[labelled]
    assert birads["accuracy"] == pytest.approx(sk_metrics.accuracy_score(true, predicted))
    assert birads["qwk"] == pytest.approx(sk_metrics.cohen_kappa_score(true, predicted, labels=[0, 1, 2],
                                                                       weights="quadratic"))
    assert birads["confusion_matrix"] == sk_metrics.confusion_matrix(true, predicted, labels=[0, 1, 2]).tolist()
    assert birads["referable_grade"] == "4" and set(true) == {0, 2}  # BI-RADS 4 or above: here 5 against 3
    assert birads["referable_auc"] == pytest.approx(sk_metrics.roc_auc_score(true >= 1, probabilities[:, 1:].sum(1)))
    assert "qwk" in birads["confidence_intervals"] and "auc" in metrics["heads"]["histology"]
    geometry = metrics["heads"]["geometry"]["targets"]
    values, truth = predictions["geometry_values"], predictions["true_geometry"]
    for index, column in enumerate(("centre_y", "centre_x")):
        present = ~np.isnan(truth[:, index])
        figures = geometry[column]
        assert figures["n"] == present.sum()
        assert figures["mae"] == pytest.approx(sk_metrics.mean_absolute_error(truth[present, index],
                                                                              values[present, index]))
        assert figures["r2"] == pytest.approx(sk_metrics.r2_score(truth[present, index], values[present, index]))
        differences = values[present, index] - truth[present, index]
        assert figures["bland_altman"]["upper_limit"] == pytest.approx(
            differences.mean() + 1.96 * differences.std(ddof=1))
        low, high = figures["confidence_intervals"]["mae"]["low"], figures["confidence_intervals"]["mae"]["high"]
        assert low <= high
    page = (run.directory / "evaluation" / "test" / "report.html").read_text()
    assert "Head geometry" in page and "Ordinal head birads" in page and "Bland-Altman" in page
    again = metrics_from_predictions(run.directory / "evaluation" / "test", bootstrap_resamples=20)
    assert again["heads"]["geometry"]["targets"]["centre_y"]["mae"] == pytest.approx(geometry["centre_y"]["mae"])
    assert again["heads"]["birads"]["qwk"] == pytest.approx(birads["qwk"])


def test_export_and_predict_return_every_head_with_its_class_names(run, tmp_path):
    import cv2

    export = export_model(run.directory, tmp_path / "export")
    assert export.info["self_check"]["signatures"]["serving_default"]["max_standardised_diff"] < 1e-3
    predictor = load_predictor(export.directory)
    assert predictor.head_class_names == {"birads": ["3", "4", "5"], "histology": ["ductal", "lobular"]}
    image = np.random.default_rng(1).integers(0, 255, (40, 56), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "scan.png"), image)
    row = pd.read_csv(predict_files(predictor, [tmp_path / "scan.png"], tmp_path / "out").csv_path,
                      dtype={"birads_predicted_class": str}).iloc[0]
    probabilities = [row[f"birads_probability_{name}"] for name in ("3", "4", "5")]
    assert row["birads_predicted_class"] == ("3", "4", "5")[_coral_grades([probabilities])[0]]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert row["histology_predicted_class"] in ("ductal", "lobular")
    assert np.isfinite(row["geometry_centre_y"]) and np.isfinite(row["geometry_centre_x"])
    direct = load_predictor(run.directory).serve(image[None, :, :, None])
    assert direct["geometry"].shape == (1, 2)
