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

import cv2
import keras
import numpy as np
import tensorflow as tf

from mtunet.data.images import FOV_MIN_SHARE, FOV_THRESHOLD, model_input
from mtunet.data.synthetic import synthetic_examples
from mtunet.deploy.folding import fold_batchnorm
from mtunet.deploy.serving import MODEL_INFO_FILE, TrainedModel, build_serving_functions, load_trained_model, to_numpy
from mtunet.errors import ConfigError, ExportError
from mtunet.evaluation.metrics import overlap_per_image
from mtunet.options import EXPORT_FORMATS
from mtunet.rundir import versions

logger = logging.getLogger(__name__)

TOLERANCE = 1e-4  # largest absolute difference allowed between the reloaded SavedModel and the Keras model
ENCODED_TOLERANCE = 1e-6  # ... between an encoded file's answer and its raw pixels' answer
# ... between their regression values, in standard deviations of the training targets: unlike probabilities they are
# not squashed, so the float32 rounding of folded batch norm reaches them amplified by the output layer's weights
REGRESSION_TOLERANCE = 1e-3
TFLITE_VARIANTS = ("float32", "float16", "dynamic_range")
PREPROCESSING = ("raw 0-255 pixels; converted to the model's channels (colour to BT.601 luminance, gray repeated to "
                 "RGB, alpha dropped), padded with zeros to a centred square and resized to the input size (area "
                 "averaging when shrinking, bilinear when enlarging), as mtunet prepared the training images")
FIELD_OF_VIEW_CROP = (f"; before padding, cut to the field of view of a fundus photograph (the rows and columns with "
                      f"more than {FOV_MIN_SHARE:.0%} of their pixels above {FOV_THRESHOLD}; "
                      "mtunet.data.images.field_of_view_box), masks put back with 0 outside it")

# Run by a fresh interpreter with nothing but TensorFlow, as TF Serving sees the model: it reloads the SavedModel,
# sends each request to its signature (raw pixels to serving_default, the files' bytes to predict_encoded) and saves
# what they return. Keys are "request|signature" for raw images, "request|signature|index" for one encoded file.
_RELOAD_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf

export_dir, samples_path, results_path = sys.argv[1:4]
loaded = tf.saved_model.load(export_dir)
requests = {}
with np.load(samples_path) as samples:
    for key in samples.files:
        request, signature, *index = key.split("|")
        requests.setdefault((request, signature), []).append((int(index[0]) if index else 0, samples[key]))
results = {}
for (request, signature), parts in requests.items():
    parts = [value for _, value in sorted(parts, key=lambda part: part[0])]
    if signature == "serving_default":
        outputs = loaded.signatures[signature](images=tf.constant(parts[0]))
    else:
        outputs = loaded.signatures["predict_encoded"](image_bytes=tf.constant([part.tobytes() for part in parts]))
    for name, value in outputs.items():
        value = value.numpy()
        results[f"{request}|{signature}|{name}"] = value.astype(str) if value.dtype == object else value
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


def sample_requests(count: int = 2) -> dict[str, np.ndarray]:
    """``{name: uint8 (count, H, W, C)}``: synthetic ultrasound-like images as gray, RGB and RGBA requests, of sizes
    neither square nor a model's input size (odd ones among them), the RGB ones framed in black as fundus photographs
    are, so that comparing on them also exercises the channel conversion, the in-graph padding and resizing, and the
    field-of-view crop of a model that has one."""
    examples = synthetic_examples(num_patients=count, seed=0)
    gray = np.stack([next(examples)["image"][:, 14:114] for _ in range(count)])
    colour = np.concatenate([gray, 255 - gray, gray // 2], axis=3)[:, 5:82, 3:96]
    rgb = np.pad(colour, ((0, 0), (6, 6), (9, 9), (0, 0)))
    alpha = np.broadcast_to(np.arange(45, dtype=np.uint8)[None, None, :, None] * 5, (count, 61, 45, 1))
    rgba = np.concatenate([colour[:, :61, :45], alpha], axis=3)
    return {f"{name} {images.shape[1]}x{images.shape[2]}": images
            for name, images in (("gray", gray), ("RGB", rgb), ("RGBA", rgba))}


ENCODINGS = {"PNG": ".png", "BMP": ".bmp"}  # the files the self-check sends to predict_encoded, lossless both


def _encode(image: np.ndarray, suffix: str) -> np.ndarray:
    """The bytes of an RGB(A) or gray ``uint8`` image written as a ``suffix`` file (OpenCV writes BGR(A))."""
    conversions = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}
    if image.shape[2] in conversions:
        image = cv2.cvtColor(image, conversions[image.shape[2]])
    return cv2.imencode(suffix, image)[1]


def reload_in_fresh_process(export_dir, requests: dict) -> dict:
    """``{request: {signature: outputs}}`` of the SavedModel in ``export_dir`` on each ``{request: uint8 images}``,
    computed by a new Python process that imports only TensorFlow: ``serving_default`` on the pixels,
    ``predict_encoded (PNG)`` and ``predict_encoded (BMP)`` on them written as files."""
    samples = {}
    for request, images in requests.items():
        samples[f"{request}|serving_default"] = images
        for encoding, suffix in ENCODINGS.items():
            for index, image in enumerate(images):
                samples[f"{request}|predict_encoded ({encoding})|{index}"] = _encode(image, suffix)
    with tempfile.TemporaryDirectory() as scratch:
        samples_path, results_path = pathlib.Path(scratch) / "samples.npz", pathlib.Path(scratch) / "results.npz"
        np.savez(samples_path, **samples)
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        process = subprocess.run([sys.executable, "-I", "-c", _RELOAD_SCRIPT, str(export_dir), str(samples_path),
                                  str(results_path)], capture_output=True, text=True, env=environment)
        if process.returncode:
            raise ExportError(f"the exported SavedModel in {export_dir} failed to reload and run in a fresh process:"
                              f"\n{process.stderr[-3000:]}")
        with np.load(results_path) as arrays:
            outputs = {}
            for key in arrays.files:
                request, signature, name = key.split("|")
                outputs.setdefault(request, {}).setdefault(signature, {})[name] = arrays[key]
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
    requests = sample_requests()
    serve = build_serving_functions(trained)["serving_default"]
    references = {request: to_numpy(serve(tf.constant(images))) for request, images in requests.items()}
    # a regression head's values are compared on their standardised scale
    scales = {name: head.std for name, head in trained.heads.items() if head.type == "regression"}
    checks = check_agreement(references, reload_in_fresh_process(directory, requests), scales)
    return {"images": f"{len(next(iter(requests.values())))} synthetic images each as {', '.join(requests)} px, "
                      f"raw and as {' and '.join(ENCODINGS)} files",
            "tolerance": TOLERANCE, "encoded_tolerance": ENCODED_TOLERANCE, "signatures": checks,
            "batchnorm_folded": folded}


def _compare(reference: dict, other: dict, scales=None) -> dict:
    """``{"max_abs_diff": ..., "same_class": ...}`` of two dicts of serving outputs (probabilities compared by value,
    class indices and names exactly), with ``class_map_agreement`` (share of equal pixels) for class maps and
    ``max_standardised_diff`` for the values of ``scales`` (``{output: scale per column}``), in units of their
    scale."""
    scales = scales or {}
    numeric = [name for name, value in reference.items() if np.issubdtype(value.dtype, np.floating)]
    difference = max(float(np.max(np.abs(reference[name] - other[name]))) for name in numeric if name not in scales)
    maps = [name for name in reference if name.endswith("_class_map")]
    classes = [name for name in reference if name not in numeric and name not in maps]
    same = all(np.array_equal(reference[name], other[name]) for name in classes)
    figures = {"max_abs_diff": difference, "same_class": bool(same)}
    if scales:
        figures["max_standardised_diff"] = max(float(np.max(np.abs(reference[name] - other[name]) / np.asarray(
            scale))) for name, scale in scales.items())
    for name in maps:
        figures[f"{name}_agreement"] = float(np.mean(reference[name] == other[name]))
    return figures


def _worst(figures: list[dict]) -> dict:
    """The least agreement of several ``_compare`` results: the largest difference, any other class, the lowest
    class map agreement."""
    worst = {}
    for name in figures[0]:
        values = [figure[name] for figure in figures]
        worst[name] = max(values) if "diff" in name else min(values)
    return worst


def check_agreement(references: dict, reloaded: dict, scales=None) -> dict:
    """``{signature: {"max_abs_diff", "same_class", ...}}``, the worst over the requests, of the reloaded SavedModel's
    outputs (``{request: {signature: outputs}}``) against the Keras model's ``{request: outputs}``, with
    ``max_abs_diff_to_serving_default`` for the encoded signatures; the outputs of ``scales`` (``{output: scale per
    column}``, a regression head's standard deviations) are compared in units of their scale
    (``max_standardised_diff``). Raises ``ExportError`` if a signature differs from the Keras model by ``TOLERANCE``
    or more (``REGRESSION_TOLERANCE`` for standardised values) or in a class, or an encoded file's answer differs
    from its raw pixels' by ``ENCODED_TOLERANCE`` or more."""
    signatures = next(iter(reloaded.values()))
    checks = {}
    for signature in signatures:
        checks[signature] = _worst([_compare(references[request], reloaded[request][signature], scales)
                                    for request in references])
        if signature != "serving_default":
            to_default = _worst([_compare(reloaded[request]["serving_default"], reloaded[request][signature], scales)
                                 for request in references])
            checks[signature]["max_abs_diff_to_serving_default"] = max(
                to_default["max_abs_diff"], to_default.get("max_standardised_diff", 0.0))
    for signature, check in checks.items():
        if check.get("max_standardised_diff", 0.0) >= REGRESSION_TOLERANCE:
            raise ExportError(f"self-check failed: signature {signature} of the reloaded SavedModel gives regression "
                              f"values {check['max_standardised_diff']:.3g} standard deviations away from the Keras "
                              f"model's (allowed: below {REGRESSION_TOLERANCE:g}); nothing was exported")
        if check["max_abs_diff"] >= TOLERANCE or not check["same_class"]:
            raise ExportError(f"self-check failed: signature {signature} of the reloaded SavedModel differs from the "
                              f"Keras model by {check['max_abs_diff']:.3g} (allowed: below {TOLERANCE:g}), same "
                              f"class: {check['same_class']}; nothing was exported")
        if check.get("max_abs_diff_to_serving_default", 0.0) >= ENCODED_TOLERANCE:
            raise ExportError(f"self-check failed: signature {signature} of the reloaded SavedModel answers "
                              f"{check['max_abs_diff_to_serving_default']:.3g} away from serving_default on the same "
                              f"pixels (allowed: below {ENCODED_TOLERANCE:g}); nothing was exported")
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
    requests = sample_requests()
    images = np.stack([model_input(image, size, channels, crop_fov=trained.crops_field_of_view)
                       for request in requests.values() for image in request])
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
            softmax_mask = "mask" in trained.heads and trained.heads["mask"].type == "multiclass_mask"
            if "mask" in outputs and softmax_mask:
                figure["mask_class_agreement"] = float(np.mean(outputs["mask"].argmax(-1)
                                                               == reference["mask"].argmax(-1)))
            elif "mask" in outputs:
                # a multi-label mask's channels one by one, as images of their own
                dice, _ = overlap_per_image(np.moveaxis(reference["mask"], -1, 1) > 0.5,
                                            np.moveaxis(outputs["mask"], -1, 1) > 0.5)
                figure["mask_dice_mean"] = float(dice.mean())
            figures[variant] = figure
    return {"input": f"float32 (batch, {size}, {size}, {channels}) raw 0-255 pixels, already converted to the "
                     "model's channels and letterboxed (mtunet.data.images.model_input)",
            "outputs": list(reference), "compared_on": f"{len(images)} synthetic images ({', '.join(requests)})",
            "variants": figures}


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
            info["preprocessing"] = f"in the graph: {PREPROCESSING}{FIELD_OF_VIEW_CROP * trained.crops_field_of_view}"
            info["self_check"] = _write_saved_model(trained, temporary)
        else:
            info["preprocessing"] = f"by the caller: {PREPROCESSING}{FIELD_OF_VIEW_CROP * trained.crops_field_of_view}"
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
