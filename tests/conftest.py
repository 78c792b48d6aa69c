"""Shared fixtures: quiet TensorFlow, a fresh Keras session per module, a prepared synthetic TFDS dataset and seeded
fake datasets in the ``folder`` layout."""

import gc
import os
import socket

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def clear_keras_session():
    """Frees the graphs and objects of the previous module's models, so memory grows less over the suite (each of
    the two test processes held about 10 GB by its end)."""
    keras.backend.clear_session()
    gc.collect()
    yield


def write_folder_dataset(root, *, num_patients=12, images_per_patient=2, classes=("benign", "malignant"),
                         shape=(40, 56), colour=False, dtype=np.uint8, suffix=".png", patients=True, seed=0,
                         lesion_types=(), missing_lesion_every=4):
    """Writes a seeded fake dataset in the folder layout under ``root`` and returns ``root``.

    Each image is noise with a bright rectangular lesion; its mask (0/255, same size) marks the rectangle. Patients
    cycle through ``classes``; ids are ``<patient>_<view>``. ``dtype=np.uint16`` writes 16-bit images using the
    full range, ``colour=True`` RGB images whose channels differ.

    ``lesion_types`` (e.g. ``("ex", "ma")``) writes multi-label masks instead, ``masks/<lesion type>/<id>.png``: the
    ``l``-th type marks the rectangle shifted right by ``l`` sixths of the width (half as bright in the image), so
    the types overlap; every ``missing_lesion_every``-th image (0: none) lacks the last type's file.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    top = np.iinfo(dtype).max
    for patient in range(num_patients):
        label = classes[patient % len(classes)]
        for view in range(images_per_patient):
            example_id = f"case{patient:03d}_{view}"
            image = rng.integers(0, top // 3, size=shape, dtype=dtype)
            mask = np.zeros(shape, np.uint8)
            y, x = rng.integers(2, shape[0] // 2), rng.integers(2, shape[1] // 2)
            image[y:y + shape[0] // 3, x:x + shape[1] // 3] = top
            mask[y:y + shape[0] // 3, x:x + shape[1] // 3] = 255
            for index, lesion in enumerate(lesion_types):
                shifted = np.roll(mask, index * shape[1] // 6, axis=1)
                if index:
                    image[shifted > 0] = np.maximum(image[shifted > 0], top // 2)
                missing = missing_lesion_every and len(rows) % missing_lesion_every == missing_lesion_every - 1
                if not (missing and index == len(lesion_types) - 1):
                    (root / "masks" / lesion).mkdir(exist_ok=True)
                    cv2.imwrite(str(root / "masks" / lesion / f"{example_id}.png"), shifted)
            if colour:
                image = np.stack([image, image // 2, image // 4], axis=2)
            cv2.imwrite(str(root / "images" / f"{example_id}{suffix}"), image)
            if not lesion_types:
                cv2.imwrite(str(root / "masks" / f"{example_id}.png"), mask)
            rows.append({"id": example_id, "label": label, "patient": f"case{patient:03d}"})
    table = pd.DataFrame(rows)
    if not patients:
        table = table.drop(columns="patient")
    table.to_csv(root / "labels.csv", index=False)
    return root


@pytest.fixture
def folder_dataset(tmp_path):
    """``folder_dataset(**options)``: writes a fake folder dataset in a fresh temporary folder; see above."""
    count = iter(range(1000))

    def make(**options):
        return write_folder_dataset(tmp_path / f"dataset{next(count)}", **options)

    return make


def refuse_network(monkeypatch):
    """Makes any attempt to open a network connection fail."""

    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """A TFDS data directory in which the synthetic dataset is prepared once per test session, offline."""
    import tensorflow_datasets as tfds

    from mtunet.data.synthetic_tfds import MtunetSynthetic

    directory = tmp_path_factory.mktemp("tensorflow_datasets")
    with pytest.MonkeyPatch.context() as monkeypatch:
        refuse_network(monkeypatch)
        MtunetSynthetic(data_dir=str(directory)).download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return directory


@pytest.fixture(scope="session")
def synthetic_dataset(tfds_dir):
    """The synthetic dataset at 32x32 with the default split, in memory."""
    from mtunet.data import load_dataset

    return load_dataset("synthetic", data_dir=tfds_dir, image_size=32)


TINY_CLASSES = ("cyst", "fibroadenoma", "carcinoma")


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """A randomly initialised grayscale MobileNetV2 multi-task model at 32 px with 3 classes and a narrow decoder,
    saved as ``best.keras`` in a fake run directory whose ``config.json`` names the classes; returns the file."""
    import json

    import mtunet

    run_dir = tmp_path_factory.mktemp("tiny_run")
    keras.utils.set_random_seed(0)
    model = mtunet.build_model("mobilenetv2", input_shape=(32, 32, 1), num_classes=len(TINY_CLASSES), weights=None,
                               decoder_filters=(16, 8, 8, 8, 8))
    model.save(run_dir / "best.keras")
    options = {"encoder": "mobilenetv2", "task": "multi", "dataset": "synthetic", "data_dir": None}
    (run_dir / "config.json").write_text(json.dumps({"options": options, "class_names": list(TINY_CLASSES)}))
    return run_dir / "best.keras"


@pytest.fixture(scope="session")
def tiny_export(tiny_model_file, tmp_path_factory):
    """``mtunet.export_model`` of ``tiny_model_file`` as a SavedModel: ``(ExportResult, model base folder)``."""
    import mtunet

    base = tmp_path_factory.mktemp("exported")
    return mtunet.export_model(tiny_model_file, base), base
