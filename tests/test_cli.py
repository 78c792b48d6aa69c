"""The mtunet command: instant help and version, the encoders table, one-line user errors."""

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


def test_encoders_lists_every_registered_encoder():
    result = CliRunner().invoke(cli.main, ["encoders", "--image-size", "32"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[3:]}
    assert list(rows) == list(ENCODERS) and len(rows) == 14
    assert rows["densenet161"][2] == "no" and rows["mobilenetv2"][2] == "yes"
    parameters = {name: int(row[1].replace(",", "")) for name, row in rows.items()}
    assert parameters["mobilenetv2"] < parameters["vgg16"] < parameters["efficientnetb7"]


def test_invalid_image_size_is_a_one_line_error():
    result = CliRunner().invoke(cli.main, ["encoders", "--image-size", "100"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: input_shape (100, 100, 3): height and width must be multiples of 32 "
                                     "and at least 32; the nearest valid size to 100 is 96 or 128")
    assert "Traceback" not in result.output
