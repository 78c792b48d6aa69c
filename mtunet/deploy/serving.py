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

Images are prepared in the graph exactly as ``mtunet.data.images.letterbox`` prepared the training images: padded
with zeros to a centred square, then resized to ``S`` with area averaging when shrinking and bilinear interpolation
when enlarging (``tf.image.resize`` agrees with OpenCV's to float precision), but kept in float32 rather than
rounded to 8 bits. The mask is mapped back the same way: resized to the square's side (bilinear when enlarging, area
when shrinking) and cropped to the image. A colour image sent to a grayscale model is converted to its BT.601
luminance, a grayscale image sent to a colour model repeated to RGB, an alpha channel dropped
(``mtunet.data.images.to_channels`` is the same conversion outside the graph).
"""

import dataclasses
import json
import pathlib

import numpy as np
import tensorflow as tf

from mtunet.data.images import LUMINANCE_WEIGHTS
from mtunet.errors import ConfigError
from mtunet.models import load_model, model_heads
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
    """

    model: object
    class_names: list[str]
    info: dict
    heads: dict
    head_class_names: dict = dataclasses.field(default_factory=dict)

    def names_of(self, head: str) -> list[str]:
        """The class names of classification head ``head``."""
        return self.class_names if head == "label" else self.head_class_names[head]

    @property
    def image_size(self) -> int:
        return int(self.model.input_shape[1])

    @property
    def channels(self) -> int:
        return int(self.model.input_shape[3])


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
    heads = model_heads(model)
    info = {"source": str(model_path.resolve()), "model_name": model.name,
            "input_size": [int(size) for size in model.input_shape[1:]],
            "outputs": list(model.output_names), "heads": [head.get_config() for head in heads.values()]}
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
    return TrainedModel(model, class_names, info, heads, head_class_names)


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
    """``(B, S, S, 1)`` masks of letterboxed images mapped back to the images' own ``(B, height, width, 1)``."""
    side = tf.maximum(height, width)
    size = (side, side)
    square = tf.cond(side > tf.shape(masks)[1], lambda: tf.image.resize(masks, size, method="bilinear"),
                     lambda: tf.image.resize(masks, size, method="area"))
    return tf.image.crop_to_bounding_box(square, (side - height) // 2, (side - width) // 2, height, width)


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
    class_names = {name: tf.constant(trained.names_of(name) or [""], tf.string)
                   for name, head in trained.heads.items() if head.class_index_outputs()}

    def predict(images):
        """Serving outputs of float32 ``(B, H, W, channels)`` images."""
        shape = tf.shape(images)
        outputs = model(letterbox_images(images, image_size), training=False)
        served = {}
        for name, head in trained.heads.items():
            output = tf.cast(outputs[name], tf.float32)
            if head.spatial:
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
