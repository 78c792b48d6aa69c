"""A trained model as TensorFlow serving functions: images of any size in, class and lesion mask at that size out.

The model itself takes square ``(S, S, C)`` raw 0-255 pixels. The serving functions wrap it so that a caller needs
to know nothing about it:

- ``serving_default(images)``: ``uint8`` ``(batch, height, width, 1 | 2 | 3 | 4)`` (gray, gray + alpha, RGB, RGBA),
  one size per call;
- ``predict_encoded(image_bytes)``: ``string`` ``(batch,)`` PNG, JPEG, GIF or BMP files of one size per call, each
  decoded at its own channel count, so that it is converted exactly as ``serving_default`` converts its pixels.

Both return what the model's heads declare (``mtunet.models.Head.serving_outputs``): for the class head
``label_probabilities`` ``(batch, num_classes)`` float32, ``label`` ``(batch,)`` int64 and ``class_name`` ``(batch,)``
string; an ordinal head the same with its CORAL grade (``mtunet.models.heads.ordinal``) as its class index; for
the binary mask ``mask_probabilities`` ``(batch, height, width, 1)`` float32 at the input's own size; for
a multi-class mask ``mask_probabilities`` ``(batch, height, width, K + 1)`` and ``mask_class_map``
``(batch, height, width)`` int64 (0 background, 1..K the mask classes); for a multi-label mask
``mask_probabilities`` ``(batch, height, width, L)``, one sigmoid probability per lesion type.

A model trained with ``--preprocessing fov_crop`` has each image cut to its field of view first
(``field_of_view_boxes``, as ``mtunet.data.images.field_of_view_box`` cut the training images), and its masks put
back into the whole image, 0 outside that field. Images are prepared in the graph exactly as
``mtunet.data.images.letterbox`` prepared the training images: padded with zeros to a centred square, then resized
to ``S`` with area averaging when shrinking and bilinear interpolation when enlarging (``tf.image.resize`` agrees
with OpenCV's to float precision), but kept in float32 rather than rounded to 8 bits. The mask is mapped back the
same way: resized to the square's side (bilinear when enlarging, area when shrinking) and cropped to the image. A
colour image sent to a grayscale model is converted to its BT.601 luminance, a grayscale image sent to a colour
model repeated to RGB, an alpha channel dropped (``mtunet.data.images.to_channels`` is the same conversion outside
the graph).
"""

import dataclasses
import json
import pathlib

import numpy as np
import tensorflow as tf

from mtunet.data.images import FOV_MIN_SHARE, FOV_THRESHOLD, LUMINANCE_WEIGHTS
from mtunet.errors import ConfigError
from mtunet.models import load_model, model_heads, model_spec
from mtunet.rundir import BEST_MODEL_FILE, CONFIG_FILE

SAVED_MODEL_FILE, MODEL_INFO_FILE = "saved_model.pb", "model_info.json"


@dataclasses.dataclass
class TrainedModel:
    """A Keras model with what serving it needs: its class names and facts for ``model_info.json``.

    Attributes:
        model: the functional Keras model (outputs ``"label"`` and/or ``"mask"``).
        class_names: the class of each label index.
        info: JSON-serialisable facts: source, encoder, input size, task, training run and its test metrics.
        heads: ``{output name: mtunet.models.Head}`` of the model as trained (kept when the model is replaced by
            its BatchNorm-folded copy).
        head_class_names: ``{head: class names}`` of the further classification heads (a dataset's
            ``columns.json``).
        preprocessing: the model's ``ModelSpec.preprocessing`` (kept, as ``heads``, for its folded copy).
    """

    model: object
    class_names: list[str]
    info: dict
    heads: dict
    head_class_names: dict = dataclasses.field(default_factory=dict)
    preprocessing: tuple[str, ...] = ()

    def names_of(self, head: str) -> list[str]:
        """The class names of classification head ``head``."""
        return self.class_names if head == "label" else self.head_class_names[head]

    @property
    def image_size(self) -> int:
        return int(self.model.input_shape[1])

    @property
    def channels(self) -> int:
        return int(self.model.input_shape[3])

    @property
    def crops_field_of_view(self) -> bool:
        """Whether the model takes its images cut to their field of view (``--preprocessing fov_crop``)."""
        return "fov_crop" in self.preprocessing


def _test_metrics(run_dir: pathlib.Path) -> dict | None:
    path = run_dir / "evaluation" / "test" / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    shown = ("n_images", "accuracy", "balanced_accuracy", "auc", "macro_f1", "dice_mean", "iou_mean",
             "thresholded_jaccard")
    return {name: metrics[name] for name in shown if name in metrics}


def load_trained_model(model_or_run) -> TrainedModel:
    """Loads a ``.keras`` model or a run directory's ``best.keras`` with its class names and run facts.

    A ``.keras`` file inside a run directory is read with that run's ``config.json``; a ``.keras`` file elsewhere
    gets the class names ``class_0``, ``class_1``, ...
    """
    path = pathlib.Path(model_or_run)
    if path.is_dir():
        run_dir, model_path = path, path / BEST_MODEL_FILE
        if not (run_dir / CONFIG_FILE).is_file() or not model_path.is_file():
            raise ConfigError(f"{path} is not a finished run directory: expected {CONFIG_FILE} and "
                              f"{BEST_MODEL_FILE} in it (or give a .keras file)")
    elif path.is_file() and path.suffix == ".keras":
        model_path = path
        run_dir = path.parent if (path.parent / CONFIG_FILE).is_file() else None
    elif not path.exists():
        raise ConfigError(f"model {path} not found; expected a .keras file saved by mtunet or a run directory")
    else:
        raise ConfigError(f"{path}: expected a .keras model file or a run directory")
    model = load_model(model_path)
    heads, preprocessing = model_heads(model), model_spec(model).preprocessing
    info = {"source": str(model_path.resolve()), "model_name": model.name,
            "input_size": [int(size) for size in model.input_shape[1:]],
            "outputs": list(model.output_names), "heads": [head.get_config() for head in heads.values()],
            "preprocessing_steps": list(preprocessing)}
    classifiers = {name: head.num_classes for name, head in heads.items() if head.class_index_outputs()}
    num_classes = classifiers.pop("label", 0)
    class_names = [f"class_{index}" for index in range(num_classes)]
    head_class_names = {name: [f"class_{index}" for index in range(count)] for name, count in classifiers.items()}
    if run_dir is not None:
        config = json.loads((run_dir / CONFIG_FILE).read_text())
        options = config["options"]
        class_names = list(config["class_names"]) if num_classes else []
        declared = {head["name"]: head["class_names"] for head in config.get("dataset", {}).get("target_heads", [])}
        head_class_names |= {name: list(declared[name]) for name in head_class_names if declared.get(name)}
        info.update({"run": str(run_dir.resolve()), "encoder": options["encoder"], "task": options["task"],
                     "dataset": options["dataset"], "data_dir": options["data_dir"],
                     "versions_at_training": config.get("versions"), "test_metrics": _test_metrics(run_dir)})
    info["class_names"] = class_names
    if head_class_names:
        info["head_class_names"] = head_class_names
    return TrainedModel(model, class_names, info, heads, head_class_names, preprocessing)


def letterbox_images(images, image_size: int):
    """``(B, H, W, C)`` float images padded to a centred square and resized to ``(B, S, S, C)``, ``S = image_size``
    (the in-graph twin of ``mtunet.data.images.letterbox``)."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    side = tf.maximum(height, width)
    square = tf.image.pad_to_bounding_box(images, (side - height) // 2, (side - width) // 2, side, side)
    size = (image_size, image_size)
    return tf.cond(side > image_size, lambda: tf.image.resize(square, size, method="area"),
                   lambda: tf.image.resize(square, size, method="bilinear"))


def unletterbox_masks(masks, height, width):
    """``(B, S, S, K)`` masks of letterboxed images mapped back to the images' own ``(B, height, width, K)``."""
    side = tf.maximum(height, width)
    size = (side, side)
    square = tf.cond(side > tf.shape(masks)[1], lambda: tf.image.resize(masks, size, method="bilinear"),
                     lambda: tf.image.resize(masks, size, method="area"))
    return tf.image.crop_to_bounding_box(square, (side - height) // 2, (side - width) // 2, height, width)


def _span(flags):
    """``(first, length)`` ``(B,)`` of the run from the first to the last True of each row of ``flags`` ``(B, N)``."""
    count = tf.shape(flags)[1]
    positions = tf.range(count)
    first = tf.reduce_min(tf.where(flags, positions, count), axis=1)
    last = tf.reduce_max(tf.where(flags, positions, -1), axis=1)
    return first, last - first + 1


def field_of_view_boxes(images):
    """``(B, 4)`` int32 ``(top, left, height, width)`` of the field of view of each of the float ``(B, H, W, C)``
    0-255 images (the in-graph twin of ``mtunet.data.images.field_of_view_box``)."""
    bright = tf.cast(tf.reduce_max(images, axis=3) > FOV_THRESHOLD, tf.float32)
    rows, columns = tf.reduce_mean(bright, axis=2) > FOV_MIN_SHARE, tf.reduce_mean(bright, axis=1) > FOV_MIN_SHARE
    (top, height), (left, width) = _span(rows), _span(columns)
    shape = tf.shape(images)
    found = tf.reduce_any(rows, axis=1) & tf.reduce_any(columns, axis=1)
    boxes = tf.stack([top, left, height, width], axis=1)
    whole = tf.stack([0, 0, shape[1], shape[2]])
    return tf.where(found[:, None], boxes, whole[None])


def crop_and_letterbox(images, boxes, image_size: int):
    """``(B, S, S, C)``: each of ``images`` ``(B, H, W, C)`` cut to its box of ``boxes`` (``field_of_view_boxes``),
    then letterboxed (``letterbox_images``)."""

    def prepare(arguments):
        image, box = arguments
        cut = tf.image.crop_to_bounding_box(image, box[0], box[1], box[2], box[3])
        return letterbox_images(cut[None], image_size)[0]

    return tf.map_fn(prepare, (images, boxes), fn_output_signature=tf.TensorSpec(
        (image_size, image_size, images.shape[3]), tf.float32))


def uncrop_masks(masks, boxes, height, width):
    """``(B, height, width, K)``: the ``(B, S, S, K)`` masks of ``crop_and_letterbox``'s images mapped back into their
    images, 0 outside the boxes."""

    def restore(arguments):
        mask, box = arguments
        cut = unletterbox_masks(mask[None], box[2], box[3])[0]
        return tf.image.pad_to_bounding_box(cut, box[0], box[1], height, width)

    return tf.map_fn(restore, (masks, boxes), fn_output_signature=tf.TensorSpec((None, None, masks.shape[3]),
                                                                                 tf.float32))


def to_model_channels(images, channels: int):
    """``uint8`` ``(B, H, W, 1 | 2 | 3 | 4)`` images as float32 with the model's ``channels`` (1 or 3), converted as
    ``mtunet.data.images.to_channels`` converts them."""
    given = tf.shape(images)[3]
    tf.debugging.Assert(tf.reduce_any(tf.equal(given, [1, 2, 3, 4])), [
        "images: expected 1 (grayscale), 2 (grayscale + alpha), 3 (RGB) or 4 (RGBA) channels; received", given])
    images = tf.cast(images, tf.float32)
    colour = given >= 3
    if channels == 3:
        images = tf.cond(colour, lambda: images[..., :3], lambda: tf.repeat(images[..., :1], 3, axis=3))
    else:
        weights = tf.constant(LUMINANCE_WEIGHTS, tf.float32)
        images = tf.cond(colour, lambda: tf.reduce_sum(images[..., :3] * weights, axis=3, keepdims=True),
                         lambda: images[..., :1])
    return tf.ensure_shape(images, (None, None, None, channels))


def build_serving_functions(trained: TrainedModel) -> dict:
    """``{"serving_default": fn, "predict_encoded": fn}``: ``tf.function``s with fixed input signatures that call
    ``trained.model`` (see the module's docstring for their inputs and outputs)."""
    model, image_size, channels = trained.model, trained.image_size, trained.channels
    crop = trained.crops_field_of_view
    class_names = {name: tf.constant(trained.names_of(name) or [""], tf.string)
                   for name, head in trained.heads.items() if head.class_index_outputs()}

    def predict(images):
        """Serving outputs of float32 ``(B, H, W, channels)`` images."""
        shape = tf.shape(images)
        if crop:
            boxes = field_of_view_boxes(images)
            outputs = model(crop_and_letterbox(images, boxes, image_size), training=False)
        else:
            outputs = model(letterbox_images(images, image_size), training=False)
        served = {}
        for name, head in trained.heads.items():
            output = tf.cast(outputs[name], tf.float32)
            if head.spatial and crop:
                output = uncrop_masks(output, boxes, shape[1], shape[2])
            elif head.spatial:
                output = unletterbox_masks(output, shape[1], shape[2])
            served.update(head.serving_outputs(output))
            for indices, names in head.class_index_outputs().items():
                served[names] = tf.gather(class_names[name], served[indices])
        return served

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, None), tf.uint8, name="images")])
    def serving_default(images):
        # checked when run (the signature's shape is not): "Shape of tensor images [...] is not compatible with
        # expected shape [?,?,?,?]" for an image sent without its batch axis
        images = tf.ensure_shape(images, (None, None, None, None))
        return predict(to_model_channels(images, channels))

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
    def predict_encoded(image_bytes):
        def decode(data):
            # at the file's own channel count: decode_image(channels=1) would convert colour with other weights
            image = tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False)
            return to_model_channels(image[None], channels)[0]

        first = tf.shape(decode(image_bytes[0]))

        def decode_same_size(data):
            image = decode(data)
            tf.debugging.assert_equal(tf.shape(image), first, message=(
                "predict_encoded: the images of one request must have one height and width; send images of "
                "other sizes in separate requests"))
            return image

        images = tf.map_fn(decode_same_size, image_bytes, fn_output_signature=tf.TensorSpec(
            (None, None, channels), tf.float32))
        return predict(images)

    return {"serving_default": serving_default, "predict_encoded": predict_encoded}


def read_model_info(export_dir) -> dict:
    """The ``model_info.json`` of an exported SavedModel version directory."""
    path = pathlib.Path(export_dir) / MODEL_INFO_FILE
    if not path.is_file():
        raise ConfigError(f"{export_dir} has no {MODEL_INFO_FILE}: expected a SavedModel exported by mtunet")
    return json.loads(path.read_text())


def to_numpy(outputs: dict) -> dict:
    """Serving outputs as numpy arrays, class names (``class_name``, ``<head>_class_name``) decoded to ``str``."""
    arrays = {name: np.asarray(value) for name, value in outputs.items()}
    for name in arrays:
        if name == "class_name" or name.endswith("_class_name"):
            arrays[name] = np.array([value.decode() for value in arrays[name]], dtype=object)
    return arrays
