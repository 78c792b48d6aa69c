"""``mtunet predict``: predictions.csv, masks at each image's own size and overlays, for a .keras model and an
export alike; unreadable files are named and the rest are still written."""

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cli
import mtunet
from mtunet.deploy.predict import Predictor
from mtunet.errors import ConfigError
from tests.conftest import TINY_CLASSES


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Three images of different sizes (one RGB, one 16-bit) and one corrupt file."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(4)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 256, size=(48, 40), dtype=np.uint8))
    cv2.imwrite(str(folder / "b.png"), rng.integers(0, 256, size=(30, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "c.tif"), rng.integers(0, 4096, size=(48, 40), dtype=np.uint16))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    return folder


def run_predict(model, folder, output_dir):
    return CliRunner().invoke(cli.main, ["predict", str(model), str(folder), "--output-dir", str(output_dir),
                                         "--batch-size", "2"])


def test_folder_with_a_corrupt_file_writes_the_rest_and_names_it(tiny_model_file, image_folder, tmp_path):
    outcome = run_predict(tiny_model_file, image_folder, tmp_path)
    assert outcome.exit_code == 1
    assert (f"Error: 1 file(s) could not be read and have no prediction: {image_folder / 'broken.png'} (not a "
            "readable PNG, JPEG, BMP or TIFF image)") in outcome.output
    assert f"3 image(s) predicted: {tmp_path / 'predictions.csv'}" in outcome.output

    table = pd.read_csv(tmp_path / "predictions.csv")
    assert list(table.columns) == ["file", "predicted_class", *(f"probability_{name}" for name in TINY_CLASSES),
                                   "lesion_area_pixels", "lesion_fraction", "mask_file", "overlay_file"]
    assert [name.split("/")[-1] for name in table["file"]] == ["a.png", "b.png", "c.tif"]
    counts = table["predicted_class"].value_counts()
    assert "; predicted " + ", ".join(f"{name} {count}" for name, count in counts.items()) in outcome.output
    probabilities = table[[f"probability_{name}" for name in TINY_CLASSES]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert table["predicted_class"].tolist() == [TINY_CLASSES[index] for index in probabilities.argmax(axis=1)]
    for row, size in zip(table.itertuples(), [(48, 40), (30, 64), (48, 40)]):
        mask = cv2.imread(str(tmp_path / row.mask_file), cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(str(tmp_path / row.overlay_file), cv2.IMREAD_UNCHANGED)
        assert mask.shape == size and overlay.shape == (*size, 3)
        assert set(np.unique(mask)) <= {0, 255}
        assert row.lesion_area_pixels == np.count_nonzero(mask)
        assert row.lesion_fraction == pytest.approx(np.count_nonzero(mask) / (size[0] * size[1]))


def test_export_and_keras_model_predict_the_same(tiny_model_file, tiny_export, image_folder, tmp_path):
    _, base = tiny_export
    predictor = mtunet.load_predictor(base)  # the model base folder: its highest version
    assert predictor.source.endswith("/1")
    from_export = mtunet.predict_files(predictor, [image_folder], tmp_path / "export", threshold=0.4)
    from_keras = mtunet.predict_files(mtunet.load_predictor(tiny_model_file), [image_folder], tmp_path / "keras",
                                      threshold=0.4)
    assert [file for file, _ in from_export.failed] == [str(image_folder / "broken.png")]
    columns = [f"probability_{name}" for name in TINY_CLASSES] + ["lesion_fraction"]
    np.testing.assert_allclose(from_export.table[columns], from_keras.table[columns], atol=1e-5)
    for name in from_keras.table["mask_file"]:
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / "export" / name)),
                                      cv2.imread(str(tmp_path / "keras" / name)))


def test_predict_refuses_an_empty_folder_a_bad_threshold_and_a_missing_model(tmp_path):
    unused = Predictor(serve=None, class_names=[], source="")
    with pytest.raises(ConfigError, match="holds no image file"):
        mtunet.predict_files(unused, [tmp_path], tmp_path / "out")
    with pytest.raises(ConfigError, match="--threshold 1.5: expected a probability in"):
        mtunet.predict_files(unused, [tmp_path], tmp_path / "out", threshold=1.5)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8), np.uint8))
    outcome = CliRunner().invoke(cli.main, ["predict", str(tmp_path / "nothing.keras"), str(tmp_path),
                                            "--output-dir", str(tmp_path / "out")])
    assert outcome.exit_code == 1 and "nothing.keras not found: expected a .keras model" in outcome.output
