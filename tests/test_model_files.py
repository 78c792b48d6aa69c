"""Model files a user may hand to mtunet: each entry point that loads one answers in one line naming the file and
why it cannot be used, and a file holding Python code is never run."""

import json
import zipfile

import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner

import cli
from mtunet.deploy.serving import load_trained_model
from mtunet.errors import ConfigError
from mtunet.models import load_model

RAN = "mtunet-test-lambda-ran"


def _rewrite(source, target, **members):
    """A copy of the .keras archive ``source`` with some members replaced (``{"config.json": text}``)."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for name in original.namelist():
            copy.writestr(name, members.pop(name, None) or original.read(name))
        for name, text in members.items():
            copy.writestr(name, text)
    return target


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, tiny_model_file):
    """``{kind: (path, the one-line reason expected)}`` of model files mtunet must refuse."""
    folder = tmp_path_factory.mktemp("bad_models")
    junk = folder / "junk.keras"
    junk.write_text("not a zip")
    empty_zip = folder / "empty.keras"
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("readme.txt", "no model here")

    inputs = keras.Input((32, 32, 1))
    # the Lambda's function would write a marker file if it ever ran
    marker = str(folder / RAN)
    evil = keras.Model(inputs, keras.layers.Lambda(lambda x: (open(marker, "w").close(), x)[1])(inputs))
    evil.save(folder / "evil.keras")
    (folder / RAN).unlink()  # Keras ran the function once, tracing the model it built

    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    plain.save(folder / "plain.keras")

    config = json.loads(zipfile.ZipFile(tiny_model_file).read("config.json"))
    config.update(class_name="ModelOfAFutureKeras", registered_name="future>ModelOfAFutureKeras", module=None)
    newer = _rewrite(tiny_model_file, folder / "newer.keras", **{
        "config.json": json.dumps(config), "metadata.json": json.dumps({"keras_version": "9.0.0"})})
    return {
        "junk": (junk, f"model {junk} is not a .keras archive"),
        "empty_zip": (empty_zip, f"model {empty_zip} is not a .keras archive"),
        "python_code": (folder / "evil.keras", f"model {folder / 'evil.keras'} holds Python code (a Lambda layer"),
        "newer_keras": (newer, f"model {newer} was written by Keras 9.0.0, newer than the installed "
                               f"{keras.__version__}"),
        "not_mtunet": (folder / "plain.keras", f"model {folder / 'plain.keras'} is a Keras model without mtunet's "
                                               "outputs"),
        "missing": (folder / "missing.keras", f"model {folder / 'missing.keras'} not found"),
    }


@pytest.mark.parametrize("kind", ["junk", "empty_zip", "python_code", "newer_keras", "not_mtunet", "missing"])
def test_load_model_refuses_a_bad_file_in_one_line(bad_models, kind):
    path, reason = bad_models[kind]
    with pytest.raises(ConfigError) as caught:
        load_model(path)
    message = str(caught.value)
    assert message.startswith(reason) and "\n" not in message, message
    with pytest.raises(ConfigError, match="^" + reason.replace("(", r"\(").replace(".", r"\.")):
        load_trained_model(path)
    assert not (path.parent / RAN).exists()  # the Lambda never ran


def test_every_command_that_loads_a_model_answers_in_one_line(bad_models, tmp_path):
    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), np.full((40, 40), 90, np.uint8))
    path, reason = bad_models["python_code"]
    commands = [["predict", str(path), str(image), "--output-dir", str(tmp_path / "predicted")],
                ["gradcam", str(path), str(image), "--output-dir", str(tmp_path / "gradcam")],
                ["export", str(path), "--output-dir", str(tmp_path / "export")]]
    for arguments in commands:
        result = CliRunner().invoke(cli.main, arguments)
        assert result.exit_code == 1, (arguments, result.output)
        assert result.output.strip() == f"Error: {reason}" + result.output.strip().split(reason, 1)[1], result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
    assert not (path.parent / RAN).exists()
    assert not (tmp_path / "predicted").exists() and not (tmp_path / "export").exists()
