"""Turning decoded image and mask arrays of any size and bit depth into the fixed-size ``uint8`` arrays a pipeline
serves.

Conventions, shared by every dataset source:

- Images keep their aspect ratio: each is padded with zeros to a centred square, then resized to ``image_size``.
  (Squashing would change lesion shape, e.g. the taller-than-wide orientation that suggests malignancy.)
- Images of more than 8 bits (16-bit PNG/TIFF, float) are stretched from their own minimum and maximum to 0-255, so
  that 12-bit data stored in 16 bits is not near-black.
- Colour images whose channels are all equal count as grayscale.
- A binary mask (one mask class, ``BINARY_MASK_CLASSES``): a pixel is lesion when its value is above half the mask's
  maximum (so 0/1, 0/255 and anti-aliased masks all work); an all-zero mask is an image without lesion.
- A multi-class mask (``K >= 2`` mask classes) is a map of class values, read as stored: 0 background, ``i`` the
  ``i``-th mask class. Any other value, or a colour mask whose channels differ, raises ``MaskError``.
- A multi-label mask (L lesion types that may overlap) is one binary mask per lesion type, each read as a binary mask
  is, stored as channel ``l`` of an ``(S, S, L)`` mask (``prepare_multilabel_mask``); a lesion type the data gives no
  mask for has ``MISSING_MASK_VALUE`` in every pixel of its channel.
- Masks are resized with nearest-neighbour interpolation, so they keep their values.
- Fundus photographs may be cropped to their field of view first (``crop_fov``, ``field_of_view_box``): to the rows
  and columns of which more than ``FOV_MIN_SHARE`` of the pixels have a channel above ``FOV_THRESHOLD``, so that
  the black surround does not take the model's pixels; the mask is cropped with its image.
- A model is given an image with its own channel count (``to_channels``): a colour image sent to a grayscale model
  becomes its BT.601 luminance, a grayscale image sent to a colour model is repeated to RGB, alpha is dropped. The
  serving graph (``mtunet.deploy.serving.to_model_channels``) applies the same weights.
"""

import cv2
import numpy as np

# The mask classes of a binary dataset: mask value 1 is lesion, 0 background.
BINARY_MASK_CLASSES = ("lesion",)
# Every pixel of a missing mask (an image the data gives no mask for) holds this value, which no mask class has; the
# pipeline serves such a mask as all MISSING_MASK_TARGET (``mtunet.data.pipeline``).
MISSING_MASK_VALUE = 255
MISSING_MASK_TARGET = -1.0
# The field of view of a fundus photograph: pixels brighter than FOV_THRESHOLD (of 255) in some channel; a row or
# column belongs to it when more than FOV_MIN_SHARE of its pixels are, so that stray bright pixels in the black
# surround (JPEG noise, a burnt-in label) do not widen the crop.
FOV_THRESHOLD = 10
FOV_MIN_SHARE = 0.02
# RGB to gray as ITU-R BT.601 weighs the channels (OpenCV's and Pillow's conversion, without their rounding)
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)


class MaskError(ValueError):
    """A mask that does not hold the dataset's mask values: ``problem`` and ``expected`` say why, in the words of
    ``mtunet.data.problems.Problems.add``."""

    def __init__(self, problem: str, expected: str):
        super().__init__(f"{problem}; expected {expected}")
        self.problem, self.expected = problem, expected


def read_image(path) -> np.ndarray | None:
    """Decodes the image file at ``path`` (PNG, JPEG, BMP or TIFF, any bit depth) as stored; None if unreadable.

    Returns ``(H, W)`` for grayscale or ``(H, W, C)`` with channels in RGB(A) order.
    """
    try:
        encoded = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    image = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED) if encoded.size else None
    if image is None:
        return None
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def has_unsupported_layout(image: np.ndarray) -> bool:
    """Whether ``image`` has a layout other than ``(H, W)`` or ``(H, W, 1, 3 or 4 channels)``."""
    return not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``image`` as ``uint8`` 0-255: 8-bit data unchanged, anything else stretched from its own min and max."""
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float64)
    low, high = image.min(), image.max()
    if high == low:
        return np.zeros(image.shape, np.uint8)
    return np.round((image - low) * (255.0 / (high - low))).astype(np.uint8)


def to_rgb_or_gray(image: np.ndarray) -> np.ndarray:
    """``(H, W, 1)`` if ``image`` is grayscale (or colour with equal channels), else ``(H, W, 3)`` RGB; drops alpha."""
    if image.ndim == 2:
        return image[..., None]
    image = image[..., :3]
    if image.shape[2] == 1 or (np.array_equal(image[..., 0], image[..., 1])
                               and np.array_equal(image[..., 0], image[..., 2])):
        return image[..., :1]
    return image


def letterbox(image: np.ndarray, image_size: int, *, nearest: bool) -> np.ndarray:
    """Pads ``image`` ``(H, W, C)`` with zeros to a centred square and resizes it to ``(image_size, image_size, C)``.

    ``nearest=True`` uses nearest-neighbour interpolation (for masks); otherwise area averaging when shrinking and
    bilinear when enlarging.
    """
    height, width, channels = image.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = np.zeros((side, side, channels), image.dtype)
    square[top:top + height, left:left + width] = image
    if nearest:
        interpolation = cv2.INTER_NEAREST
    else:
        interpolation = cv2.INTER_AREA if side > image_size else cv2.INTER_LINEAR
    resized = cv2.resize(square, (image_size, image_size), interpolation=interpolation)
    return resized.reshape(image_size, image_size, channels)


def shrink(image: np.ndarray, max_side: int, *, nearest: bool) -> np.ndarray:
    """``image`` ``(H, W[, C])`` resized so that its longer side is at most ``max_side``, aspect ratio kept (never
    enlarged). ``nearest=True`` for masks; otherwise area averaging."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)
    return resized.reshape(size[1], size[0], *image.shape[2:])


def binarise_mask(mask: np.ndarray) -> np.ndarray:
    """``(H, W, 1)`` ``uint8`` of 0/1 from a mask of any depth: lesion where the value exceeds half the maximum.

    A colour mask is reduced to its brightest channel first.
    """
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    return (mask > mask.max() / 2).astype(np.uint8)[..., None]


def class_values(mask: np.ndarray, num_mask_classes: int) -> np.ndarray:
    """``(H, W, 1)`` ``uint8`` class values of a multi-class mask as stored (``(H, W)`` or ``(H, W, C)`` of any depth).

    A colour mask whose channels (alpha aside) are all equal is read from its first channel. Raises ``MaskError`` for
    a colour mask whose channels differ, or a value that is not a whole number from 0 to ``num_mask_classes``.
    """
    expected = f"mask values 0 (background) to {num_mask_classes}, one per mask class"
    if mask.ndim == 3:
        channels = mask[..., :3]
        if np.any(channels != channels[..., :1]):
            raise MaskError("are colour masks whose channels differ", "1-channel " + expected)
        mask = channels[..., 0]
    if not np.issubdtype(mask.dtype, np.integer) and not np.array_equal(mask, np.round(mask)):
        raise MaskError("have mask values that are not whole numbers", expected)
    low, high = mask.min(), mask.max()
    if high > num_mask_classes:
        raise MaskError(f"have mask value {int(high)}, above the {num_mask_classes} mask classes", expected)
    if low < 0:
        raise MaskError(f"have mask value {int(low)}, below 0", expected)
    return mask.astype(np.uint8)[..., None]


def mask_values(mask: np.ndarray, num_mask_classes: int = 1) -> np.ndarray:
    """``(H, W, 1)`` ``uint8`` of a mask as stored: 0/1 (``binarise_mask``) when ``num_mask_classes`` is 1, else class
    values 0 to ``num_mask_classes`` (``class_values``, which raises ``MaskError``)."""
    if num_mask_classes == 1:
        return binarise_mask(mask)
    return class_values(mask, num_mask_classes)


def field_of_view_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the field of view of ``image`` ``(H, W, C)`` of 0-255 pixels (see the
    module's docstring); the whole image when no row or column is bright enough. The serving graph's twin is
    ``mtunet.deploy.serving.field_of_view_boxes``."""
    bright = np.asarray(image).max(axis=2) > FOV_THRESHOLD
    rows = np.flatnonzero(bright.mean(axis=1) > FOV_MIN_SHARE)
    columns = np.flatnonzero(bright.mean(axis=0) > FOV_MIN_SHARE)
    if not rows.size or not columns.size:
        return 0, 0, image.shape[0], image.shape[1]
    return int(rows[0]), int(columns[0]), int(rows[-1] - rows[0] + 1), int(columns[-1] - columns[0] + 1)


def crop_to_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``image`` ``(H, W[, C])`` cut to ``box`` ``(top, left, height, width)``."""
    top, left, height, width = box
    return image[top:top + height, left:left + width]


def prepare_pair(image: np.ndarray, mask: np.ndarray, image_size: int, num_mask_classes: int = 1, *,
                 crop_fov: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A decoded image and its mask as ``uint8`` ``(S, S, 1 or 3)`` and ``(S, S, 1)``, ``S = image_size``: the mask
    of 0/1 when ``num_mask_classes`` is 1 (the default), else of class values 0 to ``num_mask_classes``
    (see ``mask_values``); both cut to the image's field of view first with ``crop_fov``."""
    image = to_rgb_or_gray(to_uint8(image))
    mask = mask_values(mask, num_mask_classes)
    if crop_fov:
        box = field_of_view_box(image)
        image, mask = crop_to_box(image, box), crop_to_box(mask, box)
    return letterbox(image, image_size, nearest=False), letterbox(mask, image_size, nearest=True)


def prepare_image(image: np.ndarray, image_size: int, *, crop_fov: bool = False) -> np.ndarray:
    """A decoded image as ``uint8`` ``(S, S, 1 or 3)``, ``S = image_size``, as ``prepare_pair`` prepares it."""
    image = to_rgb_or_gray(to_uint8(image))
    if crop_fov:
        image = crop_to_box(image, field_of_view_box(image))
    return letterbox(image, image_size, nearest=False)


def served_channels_present(masks) -> np.ndarray:
    """``(batch, channels)`` whether each channel of each served mask ``(batch, H, W, channels)`` is one: a missing
    channel is all ``MISSING_MASK_TARGET``, so its first pixel tells (``mtunet.models.losses.mask_present`` in
    ``keras.ops``)."""
    return np.asarray(masks)[:, 0, 0, :] >= 0


def served_mask_present(masks) -> np.ndarray:
    """``(batch,)`` whether each served mask ``(batch, H, W[, channels])`` is one, in some channel at least (see
    ``served_channels_present``)."""
    masks = np.asarray(masks)
    return (masks[:, 0, 0].reshape(len(masks), -1) >= 0).any(axis=1)


def missing_mask(image_size: int, channels: int = 1) -> np.ndarray:
    """The stored mask of an image without one: ``(S, S, channels)`` ``uint8`` all ``MISSING_MASK_VALUE``."""
    return np.full((image_size, image_size, channels), MISSING_MASK_VALUE, np.uint8)


def prepare_multilabel_mask(masks, image_size: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """``(S, S, L)`` ``uint8`` multi-label mask of the L decoded binary masks ``masks`` (any depth, one per lesion
    type, None for a lesion type without one): channel ``l`` holds ``masks[l]`` as ``prepare_pair`` prepares a binary
    mask (0/1), cut to ``box`` (its image's ``field_of_view_box``) first where given, or all ``MISSING_MASK_VALUE``
    where ``masks[l]`` is None."""
    prepared = missing_mask(image_size, len(masks))
    for channel, mask in enumerate(masks):
        if mask is not None:
            binary = binarise_mask(mask) if box is None else crop_to_box(binarise_mask(mask), box)
            prepared[..., channel] = letterbox(binary, image_size, nearest=True)[..., 0]
    return prepared


def lesion_fraction(mask: np.ndarray, num_mask_classes: int = 1) -> float:
    """Share of the pixels of ``mask`` (as stored, any depth) that are lesion: of any non-zero value of
    ``mask_values``."""
    if num_mask_classes == 1:
        return float(binarise_mask(mask).mean())
    return float(np.mean(class_values(mask, num_mask_classes) > 0))


def mask_fractions(mask: np.ndarray, num_mask_classes: int = 1) -> list[float]:
    """Share of the pixels of ``mask`` (as stored) holding each mask value 1 to ``num_mask_classes`` (see
    ``mask_values``): ``[lesion_fraction(mask)]`` for a binary mask."""
    if num_mask_classes == 1:
        return [lesion_fraction(mask)]
    values = class_values(mask, num_mask_classes)
    counts = np.bincount(values.ravel(), minlength=num_mask_classes + 1)[1:]
    return (counts / values.size).tolist()


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """``float32`` ``(..., H, W, channels)`` of ``(..., H, W, 1 | 2 | 3 | 4)`` pixels (gray, gray + alpha, RGB, RGBA)
    for a model of ``channels`` (1 or 3): colour to luminance (``LUMINANCE_WEIGHTS``), gray repeated, alpha dropped."""
    image = image.astype(np.float32)
    colour = image.shape[-1] >= 3
    if channels == 3:
        return image[..., :3] if colour else np.repeat(image[..., :1], 3, axis=-1)
    if not colour:
        return image[..., :1]
    return np.sum(image[..., :3] * np.array(LUMINANCE_WEIGHTS, np.float32), axis=-1, keepdims=True)


def model_input(image: np.ndarray, image_size: int, channels: int, *, crop_fov: bool = False) -> np.ndarray:
    """``float32`` ``(S, S, channels)``: a ``(H, W, 1 | 2 | 3 | 4)`` image of 0-255 pixels as the serving graph gives
    it to the model (``to_channels``, cut to its field of view with ``crop_fov``, then ``letterbox`` unrounded);
    what a caller of a TFLite export does first."""
    image = to_channels(image, channels)
    if crop_fov:
        image = crop_to_box(image, field_of_view_box(image))
    return letterbox(image, image_size, nearest=False)


def expand_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """``(S, S, 1 or 3)`` ``image`` with ``channels`` channels: a grayscale image repeated to 3 if ``channels`` is 3."""
    return np.repeat(image, channels // image.shape[2], axis=2)
