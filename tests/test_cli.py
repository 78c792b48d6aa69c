"""The mtunet command: instant help and version, the encoders table, one-line user errors."""

import os
import re
import subprocess
import sys

from click.testing import CliRunner

import cli
from mtunet.models.encoders import ENCODERS


def test_help_and_version_do_not_import_tensorflow():
    # a fresh interpreter is the only way to see what importing and running the CLI pulls in
    code = ("import sys, cli\n"
            "for args in (['--help'], ['--version']):\n"
            "    try:\n"
            "        cli.main(args)\n"
            "    except SystemExit as exit:\n"
            "        assert exit.code == 0, exit.code\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "encoders" in result.stdout and "mtunet, version 0.1.0" in result.stdout
    assert result.stdout.strip().endswith("False False")


TENSORFLOW_START_UP = ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers", "cuInit")


def test_commands_hide_tensorflows_start_up_lines_unless_verbose():
    # TensorFlow's C++ code writes them to the process's standard error: only a separate process shows them
    def run(*arguments):
        environment = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
        return subprocess.run([sys.executable, "-c", "import cli; cli.main()", *arguments], capture_output=True,
                              text=True, env=environment, check=True)

    quiet = run("architectures")
    assert "attention_unet" in quiet.stdout
    assert not [line for line in TENSORFLOW_START_UP if line in quiet.stderr], quiet.stderr
    loud = run("--verbose", "architectures")
    assert "attention_unet" in loud.stdout and [line for line in TENSORFLOW_START_UP if line in loud.stderr]


def test_progress_lines_are_shown_once_when_a_library_configures_the_root_logger():
    # a module-level logging.info() in any library calls logging.basicConfig(), which gives the root a handler
    code = ("import logging, cli; cli._show_progress_messages(); logging.info('library'); "
            "logging.getLogger('mtunet.deploy.export').info('exported saved_model to models/1')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stderr.splitlines() == ["exported saved_model to models/1"]


def test_encoders_lists_every_registered_encoder():
    result = CliRunner().invoke(cli.main, ["encoders", "--image-size", "32"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[3:]}
    assert list(rows) == list(ENCODERS) and len(rows) == 16
    assert rows["densenet161"][2] == "no" and rows["mobilenetv2"][2] == "yes" and rows["resformer_parallel"][2] == "no"
    parameters = {name: int(row[1].replace(",", "")) for name, row in rows.items()}
    assert parameters["mobilenetv2"] < parameters["vgg16"] < parameters["efficientnetb7"]


def test_invalid_image_size_is_a_one_line_error():
    result = CliRunner().invoke(cli.main, ["encoders", "--image-size", "100"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: input_shape (100, 100, 3): height and width must be multiples of 32 "
                                     "and at least 32; the nearest valid size to 100 is 96 or 128")
    assert "Traceback" not in result.output


def test_architectures_lists_presets_and_every_registered_part():
    from mtunet.models import DECODERS, HEADS, PRESETS, SKIPS

    result = CliRunner().invoke(cli.main, ["architectures"])
    assert result.exit_code == 0, result.output
    names = {line.split()[0] for line in result.output.splitlines() if line.startswith("  ")}
    assert names == set(PRESETS) | set(ENCODERS) | set(SKIPS) | set(DECODERS) | set(HEADS)
    assert re.search(r"^  attention_unet +decoder attention_unet, skip identity", result.output, re.MULTILINE)
    assert re.search(r"^  resformer +decoder resformer, skip dfe", result.output, re.MULTILINE)


def test_train_options_have_the_library_choices_and_defaults():
    # the CLI's options are the library's: the same choices as mtunet.options and TrainConfig's defaults
    import dataclasses

    from mtunet import options
    from mtunet.evaluation.metrics import EMPTY_MASK_RULES
    from mtunet.models import PRESETS, TASKS
    from mtunet.training.config import TrainConfig

    import click

    context = click.Context(cli.train)
    parameters = {parameter.name: parameter for parameter in cli.train.params}
    defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    for name, parameter in parameters.items():
        parsed_by_callbacks = ("loss_weights", "allow_missing", "preprocessing")
        if name in defaults and name not in parsed_by_callbacks:
            assert parameter.get_default(context) == defaults[name], name
    assert parameters["loss_weights"].get_default(context) == "{:g}:{:g}".format(*defaults["loss_weights"])
    assert list(parameters["task"].type.choices) == list(TASKS) == list(options.TASKS)
    assert list(parameters["seg_loss"].type.choices) == list(options.SEGMENTATION_LOSSES)
    assert list(parameters["dice"].type.choices) == list(options.DICE_VARIANTS)
    assert list(parameters["strategy"].type.choices) == list(options.STRATEGIES)
    assert list(parameters["flip"].type.choices) == list(options.FLIP_MODES)
    assert list(parameters["ordinal_loss"].type.choices) == list(options.ORDINAL_LOSSES)
    assert tuple(EMPTY_MASK_RULES) == options.EMPTY_MASK_RULES
    assert parameters["architecture"].default in PRESETS


def test_unknown_architecture_or_decoder_is_a_one_line_error(tmp_path):
    for option, value, expected in [("--architecture", "transunet", "unet, attention_unet, resformer, res_mtnet, "
                                                                     "mtl_drnet"),
                                    ("--decoder", "fpn", "unet, attention_unet, resformer")]:
        result = CliRunner().invoke(cli.main, ["train", option, value, "--output-dir", str(tmp_path / value)])
        assert result.exit_code == 1, result.output
        assert result.output.strip() == (f"Error: {option} {value!r}: expected one of: {expected}")
        assert not (tmp_path / value).exists()
