"""The paper's downloaded datasets through mtunet's registry, API and CLI (each builder's own tests are in
datasets/<name>/): builder configs, missing downloads, mtunet data prepare and inspect."""

import pytest
from click.testing import CliRunner

from cli import main
from mtunet.data import DATASETS, builder_testing, load_dataset, prepare_dataset
from mtunet.data.builders import DATASETS_DIR
from mtunet.data.manual import Source, read_table
from mtunet.errors import ConfigError, DataError

LGG_DOWNLOAD = DATASETS_DIR / "lgg" / "dummy_data"  # the lgg builder's fake download, only read


def test_the_downloaded_datasets_are_registered_with_their_builders():
    downloaded = [spec.name for spec in DATASETS.values() if spec.manual_download]
    assert downloaded == ["isic2017", "isic2018", "jsrt", "lgg", "panda", "siim_acr"]
    assert all(DATASETS[name].needs_data_dir for name in downloaded)
    assert all((DATASETS_DIR / name / f"{name}_dataset_builder.py").is_file() for name in downloaded)


def test_configs_are_named_tfds_style_and_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"^unknown config 'large' of dataset 'lgg'; expected one of: tumor, "
                                          r"histology$"):
        load_dataset("lgg/large", data_dir=LGG_DOWNLOAD)
    with pytest.raises(ConfigError, match=r"^dataset 'folder' has no configs; received 'folder/x'$"):
        load_dataset("folder/x", data_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^dataset 'folder' is not prepared from a download; expected one of: "
                                          r"isic2017, isic2018, jsrt, lgg, panda, siim_acr$"):
        prepare_dataset("folder", tmp_path)
    with pytest.raises(ConfigError, match=r"name different configs"):
        prepare_dataset("lgg/tumor", LGG_DOWNLOAD, config="histology")


def test_a_missing_download_folder_is_one_error_naming_the_readme(tmp_path):
    with builder_testing.tfds_default_dir(tmp_path / "tfds"), pytest.raises(DataError) as error:
        load_dataset("siim_acr/png_512", data_dir=tmp_path / "nowhere")
    assert str(error.value) == (f"download folder {tmp_path / 'nowhere'} does not exist or is empty; expected the "
                                f"files listed in {DATASETS_DIR / 'siim_acr' / 'README.md'}")


def test_cli_prepare_then_inspect_reads_the_prepared_records(tmp_path):
    runner = CliRunner()
    with builder_testing.tfds_default_dir(tmp_path / "tfds"):
        result = runner.invoke(main, ["data", "prepare", "lgg", "--manual-dir", str(LGG_DOWNLOAD)])
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[-4:] == [  # after TFDS's lines; its progress bars go to stderr
            f"lgg/tumor 1.0.0: 28 examples in {tmp_path / 'tfds' / 'lgg' / 'tumor' / '1.0.0'}",
            "left out: 2 example(s)",
            "  TCGA_CS_4944_19960912_1: no mask TCGA_CS_4944_19960912/TCGA_CS_4944_19960912_1_mask.tif",
            "  TCGA_DU_4945_19960913_2: image cannot be read as a 3-channel TIFF"]
        # inspect reads the records alone: the download is not needed any more
        result = runner.invoke(main, ["data", "inspect", "--dataset", "lgg", "--data-dir", str(tmp_path / "moved"),
                                      "--image-size", "32"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == ["dataset lgg: 2 classes, 3 channel(s), served at 32x32 px, decoded examples held in memory",
                         "patients/groups: 10 (train 6, validation 2, test 2); splits grouped by patient"]
    assert lines[2].split() == ["split", "no_tumor", "tumor", "total"]
    assert lines[-3:] == [
        "problems: 2 file(s) left out: 1 no mask TCGA_CS_4944_19960912/TCGA_CS_4944_19960912_1_mask.tif; 1 image "
        "cannot be read as a 3-channel TIFF",
        "  TCGA_CS_4944_19960912_1: no mask TCGA_CS_4944_19960912/TCGA_CS_4944_19960912_1_mask.tif",
        "  TCGA_DU_4945_19960913_2: image cannot be read as a 3-channel TIFF"]


def test_cli_missing_file_is_one_line_without_traceback(tmp_path):
    (tmp_path / "download" / "kaggle_3m").mkdir(parents=True)
    with builder_testing.tfds_default_dir(tmp_path / "tfds"):
        result = CliRunner().invoke(main, ["data", "prepare", "lgg/histology", "--manual-dir",
                                           str(tmp_path / "download")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr == (f"Error: {tmp_path}/download/kaggle_3m/data.csv not found: expected kaggle_3m/data.csv "
                             "from the Kaggle dataset mateuszbuda/lgg-mri-segmentation (archive.zip) "
                             "(https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation)\n")


def test_a_run_of_a_builder_config_gets_a_flat_default_directory():
    from mtunet.training.config import TrainConfig

    directory = TrainConfig(dataset="isic2018/task1_512").default_output_dir()
    assert directory.parent.name == "runs" and directory.name.endswith("-mobilenetv2-isic2018-task1_512")


@pytest.mark.parametrize("separator", [",", ";"])
def test_a_table_is_read_with_commas_or_with_the_semicolons_of_a_resaved_spreadsheet(tmp_path, separator):
    path = tmp_path / "data.csv"
    path.write_text(separator.join(["Patient", "histological_type"]) + "\n"
                    + separator.join(["TCGA_CS_4941", " 1"]) + "\n")
    table = read_table(path, ["Patient", "histological_type"], Source("data.csv", "lgg.zip", "https://example.org"))
    assert table.to_dict("records") == [{"Patient": "TCGA_CS_4941", "histological_type": "1"}]


def test_a_table_without_the_expected_columns_names_file_columns_and_download(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("Patient,grade\nTCGA_CS_4941,1\n")
    with pytest.raises(DataError, match=r"data.csv has no column\(s\) histological_type; expected the columns "
                                        r"Patient, histological_type of lgg.zip \(https://example.org\)"):
        read_table(path, ["Patient", "histological_type"], Source("data.csv", "lgg.zip", "https://example.org"))
