import cv2
import numpy as np
import pytest

from mtunet.data.images import (MaskError, binarise_mask, class_values, lesion_fraction, letterbox, mask_fractions,
                                prepare_pair, read_image, shrink, to_rgb_or_gray, to_uint8)

# mask, expected lesion pixels: 0/1, 0/255 and anti-aliased masks give the same lesion; a blank mask gives none.
MASKS = [
    (np.array([[0, 1], [1, 0]], np.uint8), [[0, 1], [1, 0]]),
    (np.array([[0, 255], [255, 0]], np.uint8), [[0, 1], [1, 0]]),
    (np.array([[3, 250], [200, 90]], np.uint8), [[0, 1], [1, 0]]),
    (np.array([[0, 65535], [60000, 0]], np.uint16), [[0, 1], [1, 0]]),
    (np.zeros((2, 2), np.uint8), [[0, 0], [0, 0]]),
]


@pytest.mark.parametrize("mask, expected", MASKS)
def test_binarise_mask(mask, expected):
    result = binarise_mask(mask)
    assert result.shape == (2, 2, 1) and result.dtype == np.uint8
    np.testing.assert_array_equal(result[..., 0], expected)


_LABELS = np.array([[0, 1], [2, 1]])
# mask as stored, class values it holds with 2 mask classes: read as stored, whatever the depth or equal channels.
CLASS_MASKS = [
    (_LABELS.astype(np.uint8), _LABELS),
    (_LABELS.astype(np.uint16), _LABELS),
    (_LABELS.astype(np.float32), _LABELS),
    (np.stack([_LABELS.astype(np.uint8)] * 3, axis=2), _LABELS),  # a colour PNG of equal channels
    (np.dstack([_LABELS.astype(np.uint8)] * 3 + [np.full((2, 2), 255, np.uint8)]), _LABELS),  # alpha aside
    (_LABELS.astype(np.uint8)[..., None], _LABELS),  # (H, W, 1), as TFDS decodes it
]

# mask as stored, error message (regex) with 2 mask classes
BAD_CLASS_MASKS = [
    (np.array([[0, 3], [1, 2]], np.uint8), r"^have mask value 3, above the 2 mask classes; expected mask values 0 "
                                           r"\(background\) to 2, one per mask class$"),
    (np.array([[0, 255], [0, 0]], np.uint8), r"^have mask value 255, above the 2 mask classes"),  # a 0/255 mask
    (np.array([[0, -1], [0, 0]], np.int16), r"^have mask value -1, below 0"),
    (np.array([[0, 1.5], [0, 0]], np.float32), r"^have mask values that are not whole numbers"),
    (np.dstack([_LABELS, _LABELS, _LABELS * 0]).astype(np.uint8), r"^are colour masks whose channels differ; "
                                                                   r"expected 1-channel mask values 0"),
]


@pytest.mark.parametrize("mask, expected", CLASS_MASKS)
def test_class_values_are_read_as_stored(mask, expected):
    result = class_values(mask, 2)
    assert result.shape == (2, 2, 1) and result.dtype == np.uint8
    np.testing.assert_array_equal(result[..., 0], expected)


@pytest.mark.parametrize("mask, message", BAD_CLASS_MASKS)
def test_class_values_outside_the_mask_classes_raise(mask, message):
    with pytest.raises(MaskError, match=message) as error:
        class_values(mask, 2)
    assert error.value.problem and error.value.expected.startswith(("mask values", "1-channel mask values"))


def test_lesion_and_mask_class_fractions():
    mask = np.array([[0, 1, 1, 2], [0, 0, 2, 2]], np.uint8)
    assert lesion_fraction(mask, 2) == 5 / 8  # any mask class is lesion
    assert mask_fractions(mask, 2) == [2 / 8, 3 / 8]
    assert mask_fractions(mask, 3) == [2 / 8, 3 / 8, 0.0]
    binary = np.array([[0, 255], [200, 90]], np.uint8)
    assert lesion_fraction(binary) == 0.5 and mask_fractions(binary) == [0.5]  # binary: above half the maximum


def test_letterbox_keeps_aspect_ratio_by_zero_padding():
    image = np.full((20, 40, 1), 200, np.uint8)  # twice as wide as tall
    result = letterbox(image, 16, nearest=True)
    assert result.shape == (16, 16, 1)
    np.testing.assert_array_equal(result[:4], 0)  # 10 of 40 rows above the image, scaled by 16/40
    np.testing.assert_array_equal(result[4:12], 200)
    np.testing.assert_array_equal(result[12:], 0)


def test_to_uint8_stretches_16_bit_images_to_their_range():
    image = np.array([[1000, 2000], [3000, 1000]], np.uint16)  # 12-bit data in a 16-bit container
    np.testing.assert_array_equal(to_uint8(image), [[0, 128], [255, 0]])
    np.testing.assert_array_equal(to_uint8(np.full((2, 2), 7, np.uint16)), 0)
    eight_bit = np.array([[5, 9]], np.uint8)
    np.testing.assert_array_equal(to_uint8(eight_bit), eight_bit)


def test_colour_images_with_equal_channels_are_grayscale():
    gray = np.random.default_rng(0).integers(0, 255, (4, 4), dtype=np.uint8)
    assert to_rgb_or_gray(np.stack([gray] * 3, axis=2)).shape == (4, 4, 1)
    assert to_rgb_or_gray(np.stack([gray] * 3 + [np.full_like(gray, 255)], axis=2)).shape == (4, 4, 1)
    assert to_rgb_or_gray(np.stack([gray, gray, gray // 2], axis=2)).shape == (4, 4, 3)


def test_read_image_gives_rgb_order_and_16_bit_tiff(tmp_path):
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 2] = 255  # OpenCV writes BGR
    cv2.imwrite(str(tmp_path / "red.png"), red)
    assert read_image(tmp_path / "red.png")[0, 0].tolist() == [255, 0, 0]
    deep = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000
    cv2.imwrite(str(tmp_path / "deep.tif"), deep)
    read = read_image(tmp_path / "deep.tif")
    assert read.dtype == np.uint16
    np.testing.assert_array_equal(read, deep)


def test_read_image_returns_none_for_non_images(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "empty.png").write_bytes(b"")
    assert read_image(tmp_path / "broken.png") is None
    assert read_image(tmp_path / "empty.png") is None
    assert read_image(tmp_path / "absent.png") is None


def test_prepare_pair_keeps_image_and_mask_aligned():
    image = np.zeros((32, 64), np.uint16)  # halved exactly, so area and nearest resizing agree
    image[10:20, 20:40] = 4095
    mask = (image > 0).astype(np.uint8) * 255
    prepared_image, prepared_mask = prepare_pair(image, mask, 32)
    assert prepared_image.shape == (32, 32, 1) and prepared_mask.shape == (32, 32, 1)
    assert set(np.unique(prepared_mask)) == {0, 1}
    np.testing.assert_array_equal(prepared_image[prepared_mask == 1], 255)


def test_prepare_pair_resizes_multi_class_masks_nearest_keeping_their_values():
    mask = np.zeros((30, 50), np.uint8)
    mask[5:25, 10:40] = 1
    mask[10:20, 18:32] = 2
    mask[13:17, 23:27] = 3
    image = mask * 60
    _, prepared = prepare_pair(image, mask, 17, num_mask_classes=3)  # an odd scale: 50 -> 17
    assert prepared.shape == (17, 17, 1) and prepared.dtype == np.uint8
    assert set(np.unique(prepared)) == {0, 1, 2, 3}
    _, binary = prepare_pair(image, mask, 17)  # the default binarises: above half of 3
    assert set(np.unique(binary)) == {0, 1}


def test_shrink_keeps_aspect_ratio_never_enlarges_and_keeps_masks_binary():
    image = np.zeros((300, 400, 3), np.uint8)
    image[:, :200] = 200  # left half bright
    shrunk = shrink(image, 100, nearest=False)
    assert shrunk.shape == (75, 100, 3)
    assert shrunk[:, :49].min() == 200 and shrunk[:, 51:].max() == 0
    mask = np.zeros((300, 400, 1), np.uint8)
    mask[100:200, 100:300] = 1
    small = shrink(mask, 40, nearest=True)
    assert small.shape == (30, 40, 1) and set(np.unique(small)) == {0, 1}
    assert small.sum() == 10 * 20  # the 100x200 rectangle at a tenth of the size
    assert shrink(image, 512, nearest=False) is image
