"""What the seeded fake-download generators of ``datasets/<name>/<name>_fake_data.py`` share: drawing fake lesions
and tissue, and the record of what a fake download holds, which the builder tests check the prepared examples
against (``mtunet.data.builder_testing``). NumPy and OpenCV only, so that a generator runs without TensorFlow."""

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass
class FakeExample:
    """What a fake download holds for one example: ``image`` and ``mask`` (bool) as written before any lossy
    encoding, at their downloaded size, the class name ``label`` and the ``patient`` (group) the builder must give."""

    label: str
    patient: str
    image: np.ndarray
    mask: np.ndarray


@dataclasses.dataclass
class FakeDownload:
    """A generator's record of a fake download: the usable ``examples`` by id, and ``left_out``: ``{id: words the
    builder's reason must contain}``."""

    examples: dict[str, FakeExample] = dataclasses.field(default_factory=dict)
    left_out: dict[str, str] = dataclasses.field(default_factory=dict)


def fake_lesion(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``(height, width)`` bool: one filled ellipse somewhere in the middle of the image."""
    mask = np.zeros((height, width), np.uint8)
    centre = (int(rng.integers(width // 3, 2 * width // 3 + 1)), int(rng.integers(height // 3, 2 * height // 3 + 1)))
    axes = (int(rng.integers(max(2, width // 8), max(3, width // 4))),
            int(rng.integers(max(2, height // 8), max(3, height // 4))))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    return mask.astype(bool)


def fake_tissue(rng: np.random.Generator, mask: np.ndarray, channels: int) -> np.ndarray:
    """``(H, W, channels)`` ``uint8``: a smooth noisy background with channels of different brightness, darker where
    ``mask`` is set (so a swapped channel order or a misplaced mask shows)."""
    height, width = mask.shape
    gradient = np.linspace(0, 40, width)[None, :] + np.linspace(0, 30, height)[:, None]
    base = 120 + gradient + rng.normal(0, 6, (height, width)) - 70 * mask
    offsets = np.array([40, 0, -40][:channels] if channels == 3 else [0])
    return np.clip(base[..., None] + offsets, 0, 255).astype(np.uint8)
