"""A run directory written before model specs existed (fixtures/legacy_run: config.json, splits.json and
history.csv written by the code of commit f2bf19c) with a plain functional best.keras still evaluates, exports,
predicts, explains and resumes."""

import json
import pathlib
import shutil
import zipfile

import cv2
import keras
import numpy as np
import pytest

import mtunet
from conftest import write_folder_dataset
from mtunet.deploy.export import export_model
from mtunet.deploy.predict import load_predictor, predict_files
from mtunet.evaluation.run import evaluate_run
from mtunet.explain.gallery import prepare_gallery
from mtunet.models import model_spec
from mtunet.training.config import load_config
from mtunet.training.loop import train

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "legacy_run"


@pytest.fixture(scope="module")
def legacy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("legacy")
    data_dir = write_folder_dataset(root / "lesions", num_patients=12, images_per_patient=2)
    run_dir = root / "run"
    run_dir.mkdir()
    for name in ("splits.json", "history.csv"):
        shutil.copy(FIXTURE / name, run_dir / name)
    record = json.loads((FIXTURE / "config.json").read_text())
    assert "model" not in record and "architecture" not in record["options"]
    record["options"].update(data_dir=str(data_dir), output_dir=str(run_dir))
    (run_dir / "config.json").write_text(json.dumps(record))
    # best.keras as that code saved it: a plain functional model, no spec in its config
    keras.utils.set_random_seed(0)
    model = mtunet.build_model("mobilenetv2", input_shape=(32, 32, 1), num_classes=2, weights=None)
    legacy = keras.Model(model.inputs, dict(zip(model.output_names, model.outputs)), name=model.name)
    legacy.save(run_dir / "best.keras")
    with zipfile.ZipFile(run_dir / "best.keras") as archive:
        assert json.loads(archive.read("config.json"))["class_name"] == "Functional"
    return run_dir


def test_legacy_config_reads_as_the_unet_preset(legacy_run):
    config = load_config(legacy_run)
    assert (config.architecture, config.decoder, config.skip) == ("unet", None, None)
    spec = model_spec(keras.saving.load_model(legacy_run / "best.keras"))
    assert spec.encoder == "mobilenetv2" and [head["type"] for head in spec.heads] == ["classification",
                                                                                       "binary_mask"]


def test_legacy_run_evaluates_exports_predicts_and_explains(legacy_run, tmp_path):
    metrics = evaluate_run(legacy_run, bootstrap_resamples=20)
    assert metrics["n_images"] == 4 and 0 <= metrics["dice_mean"] <= 1
    result = export_model(legacy_run, tmp_path / "export")
    assert all(check["same_class"] for check in result.info["self_check"]["signatures"].values())
    cv2.imwrite(str(tmp_path / "scan.png"), np.random.default_rng(0).integers(0, 255, (40, 56), dtype=np.uint8))
    predicted = predict_files(load_predictor(result.directory), [tmp_path / "scan.png"], tmp_path / "predicted")
    assert list(predicted.table["predicted_class"].isin(["benign", "malignant"])) == [True]
    summary = prepare_gallery(legacy_run, output_dir=tmp_path / "gallery", num_images=2).write()
    assert len(summary["images"]) == 2


def test_legacy_run_resumes_to_the_end(legacy_run):
    run = train(resume=str(legacy_run))
    assert len(run.history) == 2 and (legacy_run / "summary.json").is_file()
    record = json.loads((legacy_run / "config.json").read_text())
    assert record["model"]["preset"] == "unet" and record["model"]["decoder"] == "unet"
