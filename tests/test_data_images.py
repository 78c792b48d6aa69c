import cv2
import numpy as np
import pytest

from mtunet.data.images import (binarise_mask, letterbox, prepare_pair, read_image, shrink, to_rgb_or_gray,
                                to_uint8)

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
