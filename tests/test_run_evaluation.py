"""`mtunet evaluate` on a tiny trained run: every file, metrics that the predictions reproduce, the report rendered
by headless Chromium, another dataset, and one-line user errors."""

import base64
import html.parser
import json
import re
import shutil
import subprocess

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cli
from conftest import write_folder_dataset
from mtunet.evaluation.metrics import load_predictions, metrics_from_predictions
from mtunet.evaluation.report import ReportSection
from mtunet.evaluation.run import evaluate_run
from mtunet.training.loop import train

EVALUATION_FILES = ["predictions.npz", "per_image.csv", "confusion_matrix.png", "roc.png", "reliability.png",
                    "dice_histogram.png", "training_curves.png", "gallery.png", "metrics.json", "report.html"]
HEADLINE = ["accuracy", "balanced_accuracy", "auc", "dice_mean", "iou_mean", "thresholded_jaccard", "n_images"]
# added to a copy of the report: after the page loaded, Chromium itself records which images failed to decode
IMAGE_CHECK = """<script>window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.dataset.images = images.length;
  document.body.dataset.broken = images.filter(image => !image.complete || image.naturalWidth === 0).length;
  document.body.dataset.tables = document.querySelectorAll("table").length;
  document.body.dataset.rows = document.querySelectorAll("table tr").length;
});</script>"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    data_dir = write_folder_dataset(root / "lesions", num_patients=12, images_per_patient=2)
    return train(encoder="mobilenetv2", weights=None, dataset="folder", data_dir=str(data_dir), image_size=32,
                 batch_size=8, epochs=1, output_dir=str(root / "run")).directory


@pytest.fixture(scope="module")
def evaluation(run_dir):
    """The run evaluated on its test split, with one extra report section; returns (folder, returned metrics)."""

    def count_images(context):
        seen = sum(len(images) for images, _ in context.batches())
        return ReportSection("extra_check", "Extra check section", {"images_seen": seen, "ids": len(
            context.predictions["ids"])}, text="Added by a section builder.")

    metrics = evaluate_run(run_dir, bootstrap_resamples=200, sections=[count_images])
    return run_dir / "evaluation" / "test", metrics


def _without_nan(value):
    return json.loads(json.dumps(value).replace("NaN", "null"))


def test_evaluate_writes_every_file_and_the_predictions_reproduce_the_metrics(run_dir, evaluation):
    folder, returned = evaluation
    for name in EVALUATION_FILES:
        assert (folder / name).is_file(), name
        if name.endswith(".png"):
            assert cv2.imread(str(folder / name)) is not None, name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics == returned
    for name in HEADLINE:
        assert isinstance(metrics[name], (int, float)) and not isinstance(metrics[name], bool), name
    test_ids = json.loads((run_dir / "splits.json").read_text())["splits"]["test"]
    predictions = load_predictions(folder / "predictions.npz")
    assert sorted(predictions["ids"].tolist()) == sorted(test_ids) and metrics["n_images"] == len(test_ids)
    assert predictions["mask_probabilities"].shape == predictions["true_masks"].shape == (len(test_ids), 32, 32)
    assert metrics["split"] == "test" and metrics["empty_mask_rule"] == "one"
    assert set(metrics["per_class"]) == {"benign", "malignant"} and len(metrics["confusion_matrix"]) == 2
    assert metrics["confidence_intervals"]["accuracy"]["low"] <= metrics["accuracy"]
    # two images per patient: the intervals resample patients, each image keeps its patient
    intervals = metrics["confidence_intervals"]
    assert intervals["unit"] == "patient" and intervals["units"] == len(set(predictions["groups"].tolist()))
    assert len(predictions["groups"]) == len(test_ids) and intervals["units"] < len(test_ids)
    for name in ("benign", "malignant"):
        assert set(intervals["per_class"][name]) == {"precision", "recall", "specificity", "npv", "f1", "auc"}

    recomputed = metrics_from_predictions(folder, bootstrap_resamples=200)
    assert _without_nan(recomputed) == {name: metrics[name] for name in recomputed}
    table = pd.read_csv(folder / "per_image.csv")
    assert table["id"].tolist() == predictions["ids"].tolist()
    assert table["patient"].astype(str).tolist() == predictions["groups"].tolist()
    assert table["dice"].mean() == pytest.approx(metrics["dice_mean"])
    assert (table["predicted_class"] == table["true_class"]).mean() == pytest.approx(metrics["accuracy"])
    assert metrics["extra_check"] == {"images_seen": len(test_ids), "ids": len(test_ids)}

    # the split summary counts each split's images, patients and classes as splits.json and the data define them
    splits = json.loads((run_dir / "splits.json").read_text())["splits"]
    summary = metrics["data_splits"]
    assert summary["grouping"] == "patient" and summary["evaluated"] == ["test"]
    for name, ids in splits.items():
        assert summary["splits"][name]["images"] == len(ids)
        assert summary["splits"][name]["patients"] == len({example.rsplit("_", 1)[0] for example in ids})
        assert sum(summary["splits"][name]["classes"].values()) == len(ids)
    assert summary["splits"]["test"]["classes"] == table["true_class"].value_counts().to_dict() | {
        name: 0 for name in ("benign", "malignant") if name not in set(table["true_class"])}


class _ImageSources(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.links = [], []

    def handle_starttag(self, tag, attributes):
        attributes = dict(attributes)
        if tag == "img":
            self.sources.append(attributes.get("src", ""))
        self.links += [attributes[name] for name in ("href", "src") if name in attributes and tag != "img"]


def _chromium(*arguments, profile):
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium package is not installed (.ci/run installs it with apt-get)"
    # --no-sandbox: Chromium refuses to run as root (CI) with its sandbox
    command = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={profile}", "--virtual-time-budget=10000", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)


def test_report_is_self_contained_and_renders_in_headless_chromium(evaluation, tmp_path):
    folder, metrics = evaluation
    page = (folder / "report.html").read_text()
    for text in ("Summary", "Per class", "Confusion matrix", "Empty-mask rule", "Dice per class of the label",
                 "Best and worst cases", "Training curves", "Run configuration", "Extra check section",
                 "Added by a section builder.", "percentile bootstrap over patients", "NPV", "Calibration",
                 "Reliability diagram", "Brier score",
                 "Per class (value and 95% interval)", "<h2>Data</h2>", "test (evaluated)",
                 "Split by patient: no patient is in two splits", "kept epoch",
                 "<h1>folder · unet, mobilenetv2 encoder, 32 px · test split · ",
                 "segmentation loss", "images seen",
                 "Not set (the model's or dataset's default applies): decoder, skip, unfreeze",
                 "none (trained from scratch)"):
        assert text in page, text
    # the data and the summary come first; the confusion matrix is a figure, once; no raw keys, no None rows
    assert page.index("<h2>Data</h2>") < page.index("<h2>Summary</h2>") < page.index("<h2>Classification</h2>")
    assert page.count("<figcaption>Confusion matrix") == 1 and "predicted benign" not in page
    configuration = page[page.index("<h2>Run configuration</h2>"):]
    assert ">none<" not in configuration and ">None<" not in configuration and "n/a" not in configuration
    for key in ("images_seen", "seg_loss", "data_dir", "balanced_accuracy"):
        assert key not in page, key
    parser = _ImageSources()
    parser.feed(page)
    assert parser.links == []  # nothing loaded from elsewhere
    assert len(parser.sources) == 6  # confusion matrix, ROC, reliability, Dice histogram, training curves, gallery
    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")
        png = base64.b64decode(source.split(",", 1)[1], validate=True)
        assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) is not None

    checked = tmp_path / "report.html"
    checked.write_text(page.replace("</body>", IMAGE_CHECK + "</body>"))
    dom = _chromium("--dump-dom", checked.as_uri(), profile=tmp_path / "profile").stdout
    facts = dict(re.findall(r'data-(images|broken|tables|rows)="(\d+)"', dom))
    assert facts.get("images") == "6" and facts.get("broken") == "0", facts
    assert int(facts["tables"]) >= 8 and int(facts["rows"]) > 40, facts

    screenshot = tmp_path / "report.png"
    _chromium(f"--screenshot={screenshot}", "--window-size=1200,2400", checked.as_uri(), profile=tmp_path / "profile")
    picture = cv2.imread(str(screenshot), cv2.IMREAD_GRAYSCALE)
    assert picture is not None and picture.shape == (2400, 1200)
    assert picture.std() > 20 and (picture < 128).mean() > 0.01  # text, tables and plots, not a blank page


def test_cli_evaluates_another_dataset_with_the_same_classes(run_dir, tmp_path):
    other = write_folder_dataset(tmp_path / "other", num_patients=4, images_per_patient=2, seed=5)
    result = CliRunner().invoke(cli.main, ["evaluate", str(run_dir), "--dataset", "folder", "--data-dir", str(other),
                                           "--empty", "skip", "--threshold", "0.3", "--bootstrap-resamples", "50"])
    assert result.exit_code == 0, result.output
    folder = run_dir / "evaluation" / "folder-other" / "all"
    assert f"report: {folder}/report.html" in result.output
    assert re.search(r"^all: 8 images; 95% bootstrap intervals over 4 patients; accuracy \d\.\d{4} "
                     r"\[\d\.\d{3}, \d\.\d{3}\], balanced_accuracy", result.output, re.MULTILINE), result.output
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n_images"] == 8 and metrics["split"] == "all" and metrics["data_dir"] == str(other)
    assert metrics["empty_mask_rule"] == "skip" and metrics["threshold"] == 0.3
    assert (folder / "report.html").is_file()


def test_cli_user_errors_are_one_line(run_dir, tmp_path):
    mismatched = write_folder_dataset(tmp_path / "grades", num_patients=4, classes=("grade1", "grade2"))
    (tmp_path / "not-a-model.keras").write_text("no")
    cases = [
        ([str(tmp_path / "nowhere")], f"Error: run directory {tmp_path / 'nowhere'} does not exist"),
        ([str(tmp_path)], f"Error: {tmp_path} is not a run directory: config.json not found"),
        ([str(run_dir), "--model", str(tmp_path / "missing.keras")], "model " + str(tmp_path / "missing.keras")
         + " not found"),
        ([str(run_dir), "--model", str(tmp_path / "not-a-model.keras")],
         f"Error: model {tmp_path / 'not-a-model.keras'} is not a .keras archive"),
        ([str(run_dir), "--dataset", "folder", "--data-dir", str(mismatched)],
         f"Error: dataset 'folder' at {mismatched} has the classes ['grade1', 'grade2'], but the model was trained "
         "on ['benign', 'malignant']; expected the same class names in the same order"),
        ([str(run_dir), "--split", "holdout"], "Invalid value for '--split'"),
    ]
    for arguments, message in cases:
        result = CliRunner().invoke(cli.main, ["evaluate", *arguments])
        assert result.exit_code in (1, 2), (arguments, result.output)
        assert message in result.output, (arguments, result.output)
        assert "Traceback" not in result.output
