"""Export a trained model: a TF Serving SavedModel that checks itself in a fresh process, or TFLite files.

Both formats are written as a numbered version folder ``OUTPUT_DIR/<version>/`` (TF Serving's layout: it serves the
highest number) with ``model_info.json`` in it. The folder is filled under a hidden temporary name and renamed only
once every file is written and checked, so a version folder is either complete or absent, and an existing version is
never replaced.
"""

import dataclasses
import datetime
import functools
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from mtunet.data.images import letterbox
from mtunet.data.synthetic import synthetic_examples
from mtunet.deploy.folding import fold_batchnorm
from mtunet.deploy.serving import MODEL_INFO_FILE, TrainedModel, build_serving_functions, load_trained_model, to_numpy
from mtunet.errors import ConfigError, ExportError
from mtunet.evaluation.metrics import overlap_per_image
from mtunet.options import EXPORT_FORMATS
from mtunet.rundir import versions

logger = logging.getLogger(__name__)

TOLERANCE = 1e-4  # largest absolute difference allowed between the reloaded SavedModel and the Keras model
TFLITE_VARIANTS = ("float32", "float16", "dynamic_range")
PREPROCESSING = ("raw 0-255 pixels; padded with zeros to a centred square and resized to the input size (area "
                 "averaging when shrinking, bilinear when enlarging), as mtunet prepared the training images")

# Run by a fresh interpreter with nothing but TensorFlow, as TF Serving sees the model: it reloads the SavedModel, calls
# both signatures on the sample images (PNG-encoded for predict_encoded) and saves what they return.
_RELOAD_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf

export_dir, samples_path, results_path = sys.argv[1:4]
images = np.load(samples_path)["images"]
loaded = tf.saved_model.load(export_dir)
inputs = {"serving_default": {"images": tf.constant(images)},
          "predict_encoded": {"image_bytes": tf.stack([tf.io.encode_png(image) for image in images])}}
results = {}
for signature, arguments in inputs.items():
    for name, value in loaded.signatures[signature](**arguments).items():
        value = value.numpy()
        results[f"{signature}/{name}"] = value.astype(str) if value.dtype == object else value
np.savez(results_path, **results)
"""


@dataclasses.dataclass
class ExportResult:
    """What ``export_model`` wrote and how well it agrees with the Keras model.

    Attributes:
        directory: the version folder, ``OUTPUT_DIR/<version>``.
        format: ``"saved_model"`` or ``"tflite"``.
        info: the content of its ``model_info.json`` (agreement figures under ``"self_check"`` or ``"tflite"``).
    """

    directory: pathlib.Path
    format: str
    info: dict


def sample_images(trained: TrainedModel, count: int = 2) -> np.ndarray:
    """``count`` synthetic ultrasound-like images, ``uint8`` ``(count, 128, 100, channels)``: neither square nor of
    the model's input size, so that comparing on them also exercises the in-graph padding and resizing."""
    examples = synthetic_examples(num_patients=count, seed=0)
    images = [next(examples)["image"][:, 14:114] for _ in range(count)]
    return np.repeat(np.stack(images), trained.channels, axis=3)


def _compare(reference: dict, other: dict) -> dict:
    """``{"max_abs_diff": ..., "same_class": ...}`` of two dicts of serving outputs (probabilities compared by value,
    class indices and names exactly), with ``class_map_agreement`` (share of equal pixels) for class maps."""
    numeric = [name for name, value in reference.items() if np.issubdtype(value.dtype, np.floating)]
    difference = max(float(np.max(np.abs(reference[name] - other[name]))) for name in numeric)
    maps = [name for name in reference if name.endswith("_class_map")]
    classes = [name for name in reference if name not in numeric and name not in maps]
    same = all(np.array_equal(reference[name], other[name]) for name in classes)
    figures = {"max_abs_diff": difference, "same_class": bool(same)}
    for name in maps:
        figures[f"{name}_agreement"] = float(np.mean(reference[name] == other[name]))
    return figures


def reload_in_fresh_process(export_dir, images: np.ndarray) -> dict:
    """``{signature: outputs}`` of both signatures of the SavedModel in ``export_dir`` on ``images``, computed by a new
    Python process that imports only TensorFlow."""
    with tempfile.TemporaryDirectory() as scratch:
        samples, results = pathlib.Path(scratch) / "samples.npz", pathlib.Path(scratch) / "results.npz"
        np.savez(samples, images=images)
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        process = subprocess.run([sys.executable, "-I", "-c", _RELOAD_SCRIPT, str(export_dir), str(samples),
                                  str(results)], capture_output=True, text=True, env=environment)
        if process.returncode:
            raise ExportError(f"the exported SavedModel in {export_dir} failed to reload and run in a fresh process:"
                              f"\n{process.stderr[-3000:]}")
        with np.load(results) as arrays:
            outputs = {}
            for key in arrays.files:
                signature, name = key.split("/")
                outputs.setdefault(signature, {})[name] = arrays[key]
    return outputs


def _write_saved_model(trained: TrainedModel, directory: pathlib.Path) -> dict:
    """Writes the SavedModel with both signatures into ``directory``, checks it and returns the check's figures."""
    folded_model, folded = fold_batchnorm(trained.model)
    served = dataclasses.replace(trained, model=folded_model)
    archive = keras.export.ExportArchive()
    archive.track(served.model)
    for name, function in build_serving_functions(served).items():
        archive.add_endpoint(name, function)
    archive.write_out(str(directory), verbose=False)

    # the reference is the model as trained, so the check covers the folding too
    images = sample_images(trained)
    reference = to_numpy(build_serving_functions(trained)["serving_default"](tf.constant(images)))
    checks = check_agreement(reference, reload_in_fresh_process(directory, images))
    return {"images": f"{len(images)} synthetic images of {images.shape[1]}x{images.shape[2]} px",
            "tolerance": TOLERANCE, "signatures": checks, "batchnorm_folded": folded}


def check_agreement(reference: dict, reloaded: dict) -> dict:
    """``{signature: {"max_abs_diff", "same_class"}}`` of the reloaded SavedModel's outputs against the Keras model's
    ``reference``; raises ``ExportError`` if a signature differs by ``TOLERANCE`` or more or in a class."""
    checks = {signature: _compare(reference, outputs) for signature, outputs in reloaded.items()}
    for signature, check in checks.items():
        if check["max_abs_diff"] >= TOLERANCE or not check["same_class"]:
            raise ExportError(f"self-check failed: signature {signature} of the reloaded SavedModel differs from the "
                              f"Keras model by {check['max_abs_diff']:.3g} (allowed: below {TOLERANCE:g}), same "
                              f"class: {check['same_class']}; nothing was exported")
    return checks


def _convert_tflite(saved_model_dir, variant: str) -> bytes:

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # alone: dynamic-range int8 weights
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _run_tflite(content: bytes, images: np.ndarray) -> dict:
    """``{"label": ..., "mask": ...}`` of a TFLite model on ``images``, one image at a time."""

    runner = tf.lite.Interpreter(model_content=content).get_signature_runner()
    outputs = [runner(images=image[None]) for image in images]
    return {name: np.concatenate([output[name] for output in outputs]) for name in outputs[0]}


def _write_tflite(trained: TrainedModel, directory: pathlib.Path, variants) -> dict:
    """Writes ``model_<variant>.tflite`` files into ``directory`` and returns their size and agreement figures."""

    size, channels = trained.image_size, trained.channels
    images = np.stack([letterbox(image, size, nearest=False) for image in sample_images(trained, 4)])
    images = images.astype(np.float32)
    reference = {name: np.asarray(value) for name, value in trained.model(images, training=False).items()}
    figures = {}
    with tempfile.TemporaryDirectory() as saved_model_dir:
        # keras's own LiteRT export writes a fresh SavedModel for each call; one SavedModel serves all variants
        archive = keras.export.ExportArchive()
        archive.track(trained.model)
        # one image per call, as on a device: with a batch of unknown size, the decoder's nearest-neighbour upsampling
        # (ops.repeat) loses the static channel count that TFLite's built-in convolution needs
        archive.add_endpoint("serving_default", functools.partial(trained.model.__call__, training=False),
                             input_signature=[tf.TensorSpec((1, size, size, channels), tf.float32, name="images")])
        archive.write_out(saved_model_dir, verbose=False)
        for variant in variants:
            content = _convert_tflite(saved_model_dir, variant)
            path = directory / f"model_{variant}.tflite"
            path.write_bytes(content)
            outputs = _run_tflite(content, images)
            figure = {"file": path.name, "size_bytes": len(content)}
            for name in outputs:
                figure[f"{name}_max_abs_diff"] = float(np.max(np.abs(outputs[name] - reference[name])))
            if "label" in outputs:
                figure["same_class"] = int(np.sum(outputs["label"].argmax(1) == reference["label"].argmax(1)))
            if "mask" in outputs and outputs["mask"].shape[-1] > 1:
                figure["mask_class_agreement"] = float(np.mean(outputs["mask"].argmax(-1)
                                                               == reference["mask"].argmax(-1)))
            elif "mask" in outputs:
                dice, _ = overlap_per_image(reference["mask"] > 0.5, outputs["mask"] > 0.5)
                figure["mask_dice_mean"] = float(dice.mean())
            figures[variant] = figure
    return {"input": f"float32 (batch, {size}, {size}, {channels}) raw 0-255 pixels, already letterboxed",
            "outputs": list(reference), "compared_on": f"{len(images)} synthetic images", "variants": figures}


def _check_version(output_dir: pathlib.Path, version) -> pathlib.Path:
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ConfigError(f"--version must be a positive integer; received {version!r}")
    target = output_dir / str(version)
    if target.exists():
        taken = [int(path.name) for path in output_dir.iterdir() if path.name.isdigit()]
        raise ConfigError(f"{target} already exists: an exported version is never overwritten; choose "
                          f"--version {max(taken, default=version) + 1} (TF Serving serves the highest version)")
    return target


def export_model(model_or_run, output_dir, *, version: int = 1, format: str = "saved_model",
                 tflite_variants=TFLITE_VARIANTS) -> ExportResult:
    """Exports a ``.keras`` model or a run directory's best model to ``output_dir/<version>/``.

    Args:
        model_or_run: a ``.keras`` file or a run directory.
        output_dir: the model base folder TF Serving is pointed at; created if missing.
        version: the version folder's number; refused if it exists.
        format: ``"saved_model"``: a SavedModel with the signatures ``serving_default`` and ``predict_encoded``
            (see ``mtunet.deploy.serving``), every BatchNormalization that follows a convolution folded into it
            (``mtunet.deploy.folding.fold_batchnorm``); reloaded in a fresh process and compared with the Keras model,
            raising ``ExportError`` on a difference of ``TOLERANCE`` or more. ``"tflite"``: one ``.tflite`` file per
            variant in ``tflite_variants`` (``"float32"``, ``"float16"``, ``"dynamic_range"``), each compared with
            the Keras model (size, largest difference, same class, mask Dice).
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"--format {format!r}: expected one of: {', '.join(EXPORT_FORMATS)}")
    unknown = [variant for variant in tflite_variants if variant not in TFLITE_VARIANTS]
    if unknown or not tflite_variants:
        raise ConfigError(f"TFLite variants {list(tflite_variants)}: expected some of {', '.join(TFLITE_VARIANTS)}")
    output_dir = pathlib.Path(output_dir)
    target = _check_version(output_dir, version)
    trained = load_trained_model(model_or_run)
    output_dir.mkdir(parents=True, exist_ok=True)
    info = {**trained.info, "format": format, "version": int(version), "image_size": trained.image_size,
            "channels": trained.channels, "exported_at": datetime.datetime.now().isoformat(timespec="seconds"),
            "exported_with": versions()}
    temporary = pathlib.Path(tempfile.mkdtemp(dir=output_dir, prefix=f".{version}.partial-"))
    try:
        if format == "saved_model":
            info["preprocessing"] = f"in the graph: {PREPROCESSING}"
            info["self_check"] = _write_saved_model(trained, temporary)
        else:
            info["preprocessing"] = f"by the caller: {PREPROCESSING}"
            info["tflite"] = _write_tflite(trained, temporary, tflite_variants)
        (temporary / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2, default=str))
        os.chmod(temporary, 0o777 & ~_umask())  # mkdtemp makes the folder private to its owner
        os.rename(temporary, target)  # fails rather than replace a version folder made meanwhile
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    logger.info("exported %s to %s", format, target)
    return ExportResult(target, format, info)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
