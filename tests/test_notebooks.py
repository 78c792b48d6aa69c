"""The Colab notebooks in colab/: committed without outputs, each with its badge, install and parameters cells, and
executed with papermill against this checkout with tiny parameters.

Cells that need what CI lacks (a GPU, a TPU, Google Drive, Google Cloud, TF Serving) carry one of ``SKIPPED_TAGS``
and are not executed; every other cell must run without error. Notebooks 2 and 3 read a fake ISIC 2018 download in
the official layout, written by the isic2018 builder's seeded fake-data generator.
"""

import base64
import importlib.util
import json
import os
import pathlib
import sys

import nbformat
import papermill
import pytest

from mtunet.data.builders import DATASETS_DIR

from conftest import write_folder_dataset

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
BADGE_URL = "https://colab.research.google.com/github/{org}/mtunet/blob/main/colab/{name}"
# what each tag needs; cells carrying one are skipped in CI, and each notebook's introduction names its tags
SKIPPED_TAGS = {"gpu_only": "a GPU", "tpu_only": "a TPU", "drive_only": "Google Drive", "gcs_only": "Google Cloud",
                "serving_only": "TF Serving"}
TINY = {"IMAGE_SIZE": 32, "EPOCHS": 1}


def read(path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def tags(cell) -> set[str]:
    return set(cell.metadata.get("tags", []))


def test_the_four_notebooks_are_there():
    assert [path.name for path in NOTEBOOKS] == ["01_quickstart.ipynb", "02_train_isic2018_t4.ipynb",
                                                 "03_tpu.ipynb", "04_bring_your_own_data.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_without_outputs(path):
    for index, cell in enumerate(read(path).cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {index} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_badge_parameters_install_and_listed_skips(path):
    notebook = read(path)
    nbformat.validate(notebook)
    intro = notebook.cells[0].source
    assert BADGE_URL.format(org="mtunet-org", name=path.name) in intro
    parameters = [index for index, cell in enumerate(notebook.cells) if "parameters" in tags(cell)]
    assert len(parameters) == 1, f"{path.name}: expected one cell tagged parameters"
    assert notebook.cells[parameters[0]].source.startswith("MTUNET_SOURCE = ")
    install = next(cell for cell in notebook.cells if cell.get("id") == "install")
    assert "pip" in install.source and "MTUNET_SOURCE" in install.source
    used = set().union(*(tags(cell) for cell in notebook.cells)) - {"parameters"}
    assert used <= set(SKIPPED_TAGS), f"{path.name}: unknown tags {used - set(SKIPPED_TAGS)}"
    listed = {tag for tag in SKIPPED_TAGS if f"`{tag}`" in intro}
    assert listed == used, f"{path.name}: its introduction must list the tags of the cells CI skips"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_every_cell_compiles(path):
    """Also the cells CI skips: IPython's own transformation (cell magics to calls), then Python's compiler."""
    from IPython.core.inputtransformer2 import TransformerManager

    transformer = TransformerManager()
    for index, cell in enumerate(read(path).cells):
        if cell.cell_type == "code":
            compile(transformer.transform_cell(cell.source), f"{path.name} cell {index}", "exec")


def execute(name, tmp_path, monkeypatch, **parameters) -> nbformat.NotebookNode:
    """Runs ``colab/<name>.ipynb`` with papermill against this checkout, its ``SKIPPED_TAGS`` cells skipped; returns
    the executed notebook (also written to ``tmp_path``). Every cell outside those tags must have run."""
    notebook = read(ROOT / "colab" / f"{name}.ipynb")
    for cell in notebook.cells:
        if tags(cell) & set(SKIPPED_TAGS):
            cell.metadata.tags.append("skip-execution")  # nbclient's tag for cells it leaves alone
    source = tmp_path / f"{name}.ipynb"
    nbformat.write(notebook, source)
    parameters = {"MTUNET_SOURCE": str(ROOT), **parameters}
    unknown = set(parameters) - set(papermill.inspect_notebook(source))
    assert not unknown, f"{name} has no parameter {unknown}"
    # the kernel and the `mtunet` commands it runs import this checkout, with this interpreter's packages
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("PATH", os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ["PATH"]]))
    executed = papermill.execute_notebook(source, tmp_path / f"{name}.out.ipynb", cwd=tmp_path,
                                          parameters=parameters,
                                          kernel_name="python3", progress_bar=False)
    for cell in executed.cells:
        if cell.cell_type == "code":
            skipped = bool(tags(cell) & set(SKIPPED_TAGS))
            assert (cell.execution_count is None) == skipped, cell.source
    return executed


def output_text(notebook, cell_id) -> str:
    """The printed output of the cell ``cell_id``."""
    cell = next(cell for cell in notebook.cells if cell.get("id") == cell_id)
    return "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")


@pytest.fixture(scope="module")
def isic_download(tmp_path_factory):
    """A fake ISIC 2018 download in the official layout, with enough lesions for splits holding every diagnosis."""
    spec = importlib.util.spec_from_file_location("isic2018_fake_data",
                                                  DATASETS_DIR / "isic2018" / "isic2018_fake_data.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    root = tmp_path_factory.mktemp("isic2018") / "download"
    generator.write_fake_download(root, lesions_per_diagnosis=8)
    return root


def test_quickstart(tmp_path, monkeypatch, tfds_dir):
    work = tmp_path / "quickstart"
    notebook = execute("01_quickstart", tmp_path, monkeypatch, WORK_DIR=str(work), TFDS_DATA_DIR=str(tfds_dir),
                       BATCH_SIZE=64, GRADCAM_IMAGES=2, BOOTSTRAP_RESAMPLES=20, **TINY)
    assert f"from {ROOT / 'mtunet'}" in output_text(notebook, "install")
    assert (work / "run" / "evaluation" / "test" / "report.html").is_file()
    assert len(list((work / "run" / "gradcam").glob("*.png"))) == 2
    assert (work / "export" / "1" / "saved_model.pb").is_file()


def test_isic2018_t4_up_to_the_gpu(tmp_path, monkeypatch, isic_download):
    drive = tmp_path / "drive"
    # mixed precision stays on: bfloat16 on a CPU (float16 on the T4)
    execute("02_train_isic2018_t4", tmp_path, monkeypatch, DRIVE_DIR=str(drive), ISIC_DIR=str(isic_download),
            WEIGHTS="none", BATCH_SIZE=16, BOOTSTRAP_RESAMPLES=20, **TINY)
    assert list((drive / "tensorflow_datasets" / "isic2018" / "task3_256").glob("*/isic2018-train.tfrecord*"))
    run_dir = drive / "runs" / "isic2018-task3_256-mobilenetv2-32"
    options = json.loads((run_dir / "config.json").read_text())["options"]
    assert (options["dataset"], options["data_dir"], options["image_size"], options["mixed_precision"]) == (
        "isic2018/task3_256", str(isic_download), 32, True)
    assert (run_dir / "summary.json").is_file()
    assert (run_dir / "evaluation" / "test" / "report.html").is_file()
    assert (drive / "models" / "isic2018" / "1" / "saved_model.pb").is_file()


def test_tpu_up_to_the_tpu(tmp_path, monkeypatch, isic_download):
    bucket = tmp_path / "bucket"
    notebook = execute("03_tpu", tmp_path, monkeypatch, BUCKET_DIR=str(bucket), ISIC_DIR=str(isic_download),
                       RUN_DIR=str(tmp_path / "run"), IMAGE_SIZE=32)
    assert list((bucket / "tensorflow_datasets" / "isic2018" / "task3_256").glob("*/isic2018-train.tfrecord*"))
    assert "dataset isic2018/task3_256: 7 classes" in output_text(notebook, "inspect")
    assert not (tmp_path / "run").exists()


def test_bring_your_own_data_up_to_tf_serving(tmp_path, monkeypatch):
    data = write_folder_dataset(tmp_path / "my_dataset", num_patients=16)
    work = tmp_path / "work"
    notebook = execute("04_bring_your_own_data", tmp_path, monkeypatch, DATA_DIR=str(data), WORK_DIR=str(work),
                       WEIGHTS="none", BATCH_SIZE=16, **TINY)
    (run_dir,) = (work / "runs").iterdir()
    assert (run_dir / "export" / "1" / "saved_model.pb").is_file()
    body = json.loads((run_dir / "request.json").read_text())
    assert body["signature_name"] == "predict_encoded"
    first_image = sorted((data / "images").iterdir())[0]
    assert base64.b64decode(body["instances"][0]["b64"]) == first_image.read_bytes()
    printed = output_text(notebook, "payload")
    assert any(f"class_name: {name}\n" in printed for name in ("benign", "malignant")), printed
    assert "mask: 40x56 px" in printed
