"""Grad-CAM (Selvaraju et al., 2017) of the class head, Seg-Grad-CAM (Vinogradova et al., 2020) of the mask head, and
how well the heatmaps fall on the true lesion (Grad-CAM mass inside it, the pointing game).

Neither Keras nor TensorFlow ships Grad-CAM, so it is written here: ``tf.GradientTape`` gives the gradients of the
pre-softmax score with respect to a feature map ``A`` (``(h, w, K)``); the channel weights are their spatial means
``alpha_k = mean_ij dS/dA_ijk``; the heatmap is ``ReLU(sum_k alpha_k A_k)``, upsampled bilinearly to the image.

Examples::

    cam = GradCam(model)                          # the class head, at the encoder's bottleneck
    result = cam(images)                          # images: raw 0-255 pixels (N, H, W, C)
    result.heatmaps                               # (N, H, W), >= 0
    localisation_scores(model, images, masks)     # {"pointing_game_hit_rate": ..., ...}
    evaluate_run(run_dir, sections=[gradcam_section])  # the same scores in metrics.json and report.html
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from mtunet.errors import ConfigError
from mtunet.evaluation.report import ReportSection
from mtunet.models import gradcam_layer, model_heads

@dataclasses.dataclass
class GradCamResult:
    """Grad-CAM of a batch of N images of H x W pixels.

    Attributes:
        heatmaps: ``(N, H, W)`` float32, ``ReLU(sum_k alpha_k A_k)`` upsampled to the image; not normalised.
        target_classes: ``(N,)`` class index explained per image (None for the mask head).
        probabilities: ``(N, num_classes)`` softmax of the class head (None without one).
        masks: ``(N, H, W)`` lesion probabilities of the mask head (None without one).
    """

    heatmaps: np.ndarray
    target_classes: np.ndarray | None
    probabilities: np.ndarray | None
    masks: np.ndarray | None


def feature_layer_names(model) -> list[str]:
    """Names of the layers, nested models included, whose output is a feature map ``(batch, h, w, channels)``."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            names += feature_layer_names(layer)
        elif not isinstance(layer, keras.layers.InputLayer) and _is_feature_map(layer):
            names.append(layer.name)
    return names


def _is_feature_map(layer) -> bool:
    try:
        return len(layer.output.shape) == 4
    except (AttributeError, ValueError):  # a layer called more than once, or never
        return False


def _layer_path(model, name) -> list:
    """``[layer]``, or ``[nested model, ..., layer]`` for a layer inside nested models; None if there is none."""
    for layer in model.layers:
        if layer.name == name:
            return [layer]
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            inner = _layer_path(layer, name)
            if inner:
                return [layer, *inner]
    return None


def _with_feature(model, path):
    """A model on the layers (and weights) of ``model`` returning ``(model's outputs, output of path[-1])``.

    A nested model's inner tensors are not connected to the outer graph, so for a layer inside one the outer graph is
    rebuilt (``clone_model`` reusing every layer) with that nested model replaced by one that also returns the layer.
    """
    if len(path) == 1:
        return keras.Model(model.inputs, (model.output, path[0].output))
    nested, captured = path[0], []
    exposed = _with_feature(nested, path[1:])

    def call_function(layer, *args, **kwargs):
        if layer is not nested:
            return layer(*args, **kwargs)
        outputs, feature = exposed(*args, **kwargs)
        captured.append(feature)
        return outputs

    rebuilt = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call_function)
    return keras.Model(rebuilt.inputs, (rebuilt.output, captured[0]))


class GradCam:
    """Grad-CAM of one head of a model at one feature layer; the gradient model is built once, on shared weights.

    Args:
        model: a model built by mtunet, taking raw 0-255 pixels.
        layer: ``"auto"`` (the layer the head declares: for the class head the bottleneck, or the deepest encoder
            feature at least ``mtunet.models.MIN_CAM_SIDE`` cells a side when the bottleneck is smaller; for a mask
            head the decoder's last stage at stride 2) or the name of any layer with a ``(batch, h, w, channels)``
            output, also inside the nested ``encoder``.
        head: the name of the head explained: a classification head such as ``"label"`` (the class score before
            the softmax), an ordinal head (its K - 1 threshold logits summed: its shared score, what raises the
            grade), a regression head (its standardised value) or ``"mask"`` (Seg-Grad-CAM: the mask logits
            summed over every pixel; for a multi-class mask, those of one class; for a multi-label mask, those of
            every lesion type or of one).

    Raises:
        ConfigError: an unknown head or layer, a head the model does not have, or a layer that does not feed it.
    """

    def __init__(self, model, *, layer: str = "auto", head: str = "label"):
        heads = model_heads(model)
        if head not in heads:
            raise ConfigError(f"--head {head}: model {model.name!r} has no {head} head; expected one of its heads: "
                              f"{', '.join(heads)}")
        logit_layers = {name: model.get_layer(explained.logits_layer) for name, explained in heads.items()}
        self.model, self.head, self.kind = model, head, heads[head].type
        default = gradcam_layer(model, head)
        self.layer = default if layer == "auto" else layer
        path = _layer_path(model, self.layer)
        if path is None or not _is_feature_map(path[-1]):
            valid = feature_layer_names(model)
            convolutions = [name for name in valid if isinstance(_layer_path(model, name)[-1], keras.layers.Conv2D)]
            shown = [default, *convolutions[:: max(1, len(convolutions) // 6)][:6]]
            raise ConfigError(
                f"--layer {layer!r}: {'no such layer' if path is None else 'not a feature map'} in model "
                f"{model.name!r}; expected 'auto' or a layer with a (batch, height, width, channels) output, e.g. "
                f"{', '.join(shown)} ({len(valid)} in all)")
        explained = keras.Model(model.inputs, logit_layers[head].output)
        if all(layer is not path[0] for layer in explained.layers):
            raise ConfigError(f"--layer {self.layer!r} does not feed the {head} head of model {model.name!r}; "
                              "choose a layer before it (e.g. the default 'auto')")
        logits = keras.Model(model.inputs, {name: layer.output for name, layer in logit_layers.items()})
        self._gradient_model = _with_feature(logits, path)

    def __call__(self, images, target_class="predicted") -> GradCamResult:
        """Grad-CAM of ``images``, raw 0-255 pixels ``(N, H, W, C)``.

        ``target_class``: for the class head ``"predicted"`` (each image's most probable class), a class index, or
        one index per image; for a multi-class mask ``"predicted"`` (each image's most predicted lesion class) or a
        mask value 1..K (or one per image); for a multi-label mask ``"predicted"`` (every lesion type's logits
        summed) or the channel 0..L-1 of one lesion type; for a regression head ``"predicted"`` (the sum of its
        standardised values) or the index of one of its targets; a binary mask takes only ``"predicted"``.
        """
        if self.kind == "binary_mask" and not (isinstance(target_class, str) and target_class == "predicted"):
            raise ConfigError("--target-class applies to the class heads, regression heads, multi-class and "
                              "multi-label masks only")
        images = tf.convert_to_tensor(images, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(images)  # so that the tape records the path from the feature map even in a frozen encoder
            logits, feature = self._gradient_model(images, training=False)
            logits = {name: tf.cast(value, tf.float32) for name, value in logits.items()}
            explained, targets = logits[self.head], None
            if self.kind == "classification":
                targets = self._target_classes(explained, target_class)
                score = tf.reduce_sum(tf.gather(explained, targets, batch_dims=1))
            elif self.kind in ("regression", "multilabel_mask") and not isinstance(target_class, str):
                if not 0 <= int(target_class) < explained.shape[-1]:
                    raise ConfigError(f"target_class {target_class} out of range: head {self.head} has "
                                      f"{explained.shape[-1]} channels (0-{explained.shape[-1] - 1})")
                # one of the head's values (an index of its targets, a lesion type's channel) rather than their sum
                score = tf.reduce_sum(explained[..., int(target_class)])
            elif self.kind == "multiclass_mask":
                targets = self._target_mask_classes(explained, target_class)
                score = tf.reduce_sum(tf.gather(explained, targets, axis=3, batch_dims=1))
            else:
                score = tf.reduce_sum(explained)
        # images are independent in inference mode, so the gradient of the batch's summed score is each image's own
        gradients = tape.gradient(score, feature)
        if gradients is None:
            raise ConfigError(f"--layer {self.layer!r} does not feed the {self.head} head; choose a layer before it")
        gradients = tf.cast(gradients, tf.float32)
        feature = tf.cast(feature, tf.float32)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        heatmaps = tf.nn.relu(tf.reduce_sum(weights * feature, axis=-1, keepdims=True))
        heatmaps = tf.image.resize(heatmaps, images.shape[1:3], method="bilinear")[..., 0]
        mask = None
        # a sigmoid mask's lesion probability, a softmax mask's share of all lesion classes, or a multi-label mask's
        # most probable lesion type's
        if "mask" in logits:
            mask_type = model_heads(self.model)["mask"].type
            if mask_type == "binary_mask":
                mask = tf.sigmoid(logits["mask"])[..., 0]
            elif mask_type == "multilabel_mask":
                mask = tf.reduce_max(tf.sigmoid(logits["mask"]), axis=-1)
            else:
                mask = 1.0 - tf.nn.softmax(logits["mask"])[..., 0]
        return GradCamResult(
            heatmaps=heatmaps.numpy(),
            target_classes=targets,
            probabilities=(keras.ops.convert_to_numpy(model_heads(self.model)["label"].probabilities(logits["label"]))
                           if "label" in logits else None),
            masks=None if mask is None else mask.numpy(),
        )

    @staticmethod
    def _target_mask_classes(logits, target_class) -> np.ndarray:
        """Per image, the mask class explained: the foreground class most predicted, or the one(s) asked for."""
        count, num_classes = logits.shape[0], logits.shape[-1]
        if isinstance(target_class, str):
            if target_class != "predicted":
                raise ConfigError(f"target_class {target_class!r}: expected 'predicted' or a mask class 1..K")
            predicted = np.argmax(logits.numpy(), axis=-1).reshape(count, -1)
            areas = np.stack([(predicted == value).sum(axis=1) for value in range(1, num_classes)], axis=1)
            return areas.argmax(axis=1) + 1
        targets = np.broadcast_to(np.asarray(target_class), (count,)).astype(np.int64)
        if targets.min() < 1 or targets.max() >= num_classes:
            raise ConfigError(f"mask class {targets.min() if targets.min() < 1 else targets.max()} out of range: the "
                              f"mask has classes 1-{num_classes - 1} (0 is the background)")
        return targets

    @staticmethod
    def _target_classes(logits, target_class) -> np.ndarray:
        count, num_classes = logits.shape
        if isinstance(target_class, str):
            if target_class != "predicted":
                raise ConfigError(f"target_class {target_class!r}: expected 'predicted' or a class index")
            return np.argmax(logits.numpy(), axis=1)
        targets = np.broadcast_to(np.asarray(target_class), (count,)).astype(np.int64)
        if targets.min() < 0 or targets.max() >= num_classes:
            raise ConfigError(f"target class {targets.min() if targets.min() < 0 else targets.max()} out of range: "
                              f"the model has {num_classes} classes (0-{num_classes - 1})")
        return targets


def _as_maps(heatmaps, masks):
    heatmaps = np.asarray(heatmaps, np.float64)
    masks = np.asarray(masks).reshape(heatmaps.shape) > 0.5
    if heatmaps.ndim != 3:
        raise ValueError(f"expected heatmaps (N, H, W); received shape {heatmaps.shape}")
    return heatmaps, masks


def mass_in_lesion(heatmaps, masks) -> np.ndarray:
    """Per image, the share of the heatmap's total inside the true lesion.

    ``heatmaps`` ``(N, H, W)`` non-negative, ``masks`` ``(N, H, W[, 1])`` of 0/1. An all-zero heatmap counts as
    uniform (its share is the lesion's area fraction); an image without lesion gives NaN.
    """
    heatmaps, masks = _as_maps(heatmaps, masks)
    total = heatmaps.sum(axis=(1, 2))
    inside = np.where(total > 0, (heatmaps * masks).sum(axis=(1, 2)) / np.where(total > 0, total, 1),
                      masks.mean(axis=(1, 2)))
    return np.where(masks.any(axis=(1, 2)), inside, np.nan)


def pointing_game(heatmaps, masks) -> np.ndarray:
    """Per image, 1 if the heatmap's maximum lies in the true lesion, else 0 (Zhang et al., 2016, without tolerance).

    When several pixels share the maximum (a plateau, e.g. after upsampling a 2 x 2 map), the score is the share of
    them inside the lesion: the expected hit of picking one at random. An image without lesion gives NaN.
    """
    heatmaps, masks = _as_maps(heatmaps, masks)
    peaks = heatmaps == heatmaps.max(axis=(1, 2), keepdims=True)
    hits = (peaks & masks).sum(axis=(1, 2)) / peaks.sum(axis=(1, 2))
    return np.where(masks.any(axis=(1, 2)), hits, np.nan)


def _localisation(cam: GradCam, batches) -> dict:
    """Localisation scores over ``(images, true masks, target_class)`` batches; see ``localisation_scores``. A
    multi-label mask ``(N, H, W, L)`` counts the pixels of any lesion type as lesion."""
    mass, hits, area = [], [], []
    for images, masks, target_class in batches:
        heatmaps = cam(images, target_class=target_class).heatmaps
        masks = np.asarray(masks)
        masks = masks.max(axis=-1) if masks.ndim == 4 else masks  # a missing channel (-1) is no lesion
        mass.append(mass_in_lesion(heatmaps, masks))
        hits.append(pointing_game(heatmaps, masks))
        area.append((masks.reshape(len(masks), -1) > 0.5).mean(axis=1))
    mass, hits, area = np.concatenate(mass), np.concatenate(hits), np.concatenate(area)
    scored = ~np.isnan(hits)
    mean = (lambda values: float(np.mean(values[scored]))) if scored.any() else (lambda values: float("nan"))
    return {"mass_in_lesion": mean(mass), "pointing_game_hit_rate": mean(hits), "pointing_game_chance": mean(area),
            "images_scored": int(scored.sum()), "layer": cam.layer, "head": cam.head}


def localisation_scores(model, images, masks, *, layer: str = "auto", head: str = "label",
                        target_class="predicted", batch_size: int = 32) -> dict:
    """How well Grad-CAM falls on the true lesions: a sanity check that the model looks where the lesion is.

    Args:
        model: an mtunet model.
        images: raw 0-255 pixels ``(N, H, W, C)``.
        masks: true lesion masks ``(N, H, W[, 1])`` of 0/1; images without lesion are left out of the scores.
        layer, head: as for ``GradCam``.
        target_class: ``"predicted"``, a class index, or one index per image (e.g. the true labels).
        batch_size: images per Grad-CAM batch.

    Returns:
        ``mass_in_lesion`` (mean share of the heatmap inside the lesion), ``pointing_game_hit_rate`` (share of images
        whose heatmap maximum lies in the lesion), ``pointing_game_chance`` (the hit rate of a random point: the mean
        lesion area fraction), ``images_scored``, ``layer``, ``head``.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks; expected one mask per image")
    per_image = not isinstance(target_class, (str, int, np.integer))
    targets = np.asarray(target_class) if per_image else target_class
    batches = ((images[start:start + batch_size], masks[start:start + batch_size],
                targets[start:start + batch_size] if per_image else targets)
               for start in range(0, len(images), batch_size))
    return _localisation(GradCam(model, layer=layer, head=head), batches)


def gradcam_section(context, *, layer: str = "auto", head: str | None = None):
    """A report section of ``mtunet.evaluate_run``: the localisation scores of the evaluated images, key ``gradcam``.

    ``evaluate_run(run_dir, sections=[gradcam_section])``. ``head`` None: the class head, or the mask head of a
    segmentation-only model. The heatmaps explain each image's predicted class.
    """
    if head is None:
        heads = model_heads(context.model)
        classifiers = [name for name, explained in heads.items() if explained.loss_role == "classification"]
        head = classifiers[0] if classifiers else next(iter(heads))
    cam = GradCam(context.model, layer=layer, head=head)
    scores = _localisation(cam, ((images, targets["mask"], "predicted") for images, targets in context.batches()))
    what = {"classification": "the predicted class's score",
            "ordinal": "the grade's score (the ordinal head's summed threshold logits)",
            "regression": "the summed standardised values"}.get(cam.kind, "the summed mask logits (Seg-Grad-CAM)")
    return ReportSection(
        key="gradcam", title="Grad-CAM localisation", metrics=scores,
        text=f"Grad-CAM of {what} at layer {cam.layer}, on the images with a lesion: the mean share of the heatmap "
             "inside the true lesion, and the pointing game (the heatmap's maximum lies in the lesion), against "
             "chance (a random point: the mean lesion area).")
