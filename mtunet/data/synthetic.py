"""Synthetic ultrasound-like images with lesion masks, for tests and smoke runs that need no files.

Three classes, told apart by the lesion as in breast ultrasound: ``normal`` (no lesion, an empty mask), ``benign``
(a smooth oval, wider than tall) and ``malignant`` (an irregular, spiculated lesion, taller than wide, with an
acoustic shadow below it). Every patient has ``IMAGES_PER_PATIENT`` images of one class, so that grouped splits
matter. Everything is drawn from a fixed seed: the same examples on every machine.
"""

import cv2
import numpy as np

CLASS_NAMES = ("normal", "benign", "malignant")
CLASS_PROBABILITIES = (0.25, 0.45, 0.30)
NUM_PATIENTS = 96
IMAGES_PER_PATIENT = 2
NATIVE_SIZE = 128
SEED = 20240


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Speckled tissue: smooth bands of brightness times Rayleigh speckle, float 0-255."""
    coarse = rng.normal(size=(8, 8)).astype(np.float32)
    tissue = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    depth = np.linspace(1.0, 0.7, size, dtype=np.float32)[:, None]  # attenuation with depth
    speckle = rng.rayleigh(scale=0.8, size=(size, size)).astype(np.float32)
    return np.clip((130 + 25 * tissue) * depth * speckle, 0, 255)


def _lesion_outline(rng: np.random.Generator, class_name: str, size: int) -> np.ndarray:
    """``(K, 2)`` int polygon of a lesion of ``class_name`` ("benign" or "malignant")."""
    centre = rng.uniform(0.35, 0.65, size=2) * size
    radius = rng.uniform(0.10, 0.18) * size
    angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    if class_name == "benign":
        radii = radius * (1 + 0.05 * np.sin(2 * angles + rng.uniform(0, np.pi)))
        stretch = np.array([1.5, 0.8])  # wider than tall
    else:
        spikes = rng.integers(6, 11)
        radii = radius * (1 + 0.35 * np.abs(np.sin(spikes * angles / 2)) + rng.uniform(-0.15, 0.15, angles.size))
        stretch = np.array([0.8, 1.3])  # taller than wide
    points = centre + radii[:, None] * stretch * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.round(points).astype(np.int32)


def draw_example(rng: np.random.Generator, class_name: str, size: int = NATIVE_SIZE):
    """One ``(image, mask)`` pair, both ``uint8`` ``(size, size, 1)``; the mask is 0/255 and empty for "normal"."""
    image = _background(rng, size)
    mask = np.zeros((size, size), np.uint8)
    if class_name != "normal":
        outline = _lesion_outline(rng, class_name, size)
        cv2.fillPoly(mask, [outline], 255)
        lesion = mask > 0
        image[lesion] *= 0.3 if class_name == "malignant" else 0.45  # hypoechoic
        if class_name == "malignant":
            shadow = np.maximum.accumulate(lesion, axis=0) & ~lesion  # below the lesion
            image[shadow] *= 0.6
    return np.round(image).astype(np.uint8)[..., None], mask[..., None]


def synthetic_examples(num_patients: int = NUM_PATIENTS, size: int = NATIVE_SIZE, seed: int = SEED):
    """Yields ``num_patients * IMAGES_PER_PATIENT`` dicts: ``id``, ``patient``, ``label`` (a class name),
    ``image`` and ``mask`` (``uint8`` ``(size, size, 1)``, mask 0/255)."""
    rng = np.random.default_rng(seed)
    for patient in range(num_patients):
        class_name = CLASS_NAMES[rng.choice(len(CLASS_NAMES), p=CLASS_PROBABILITIES)]
        for view in range(IMAGES_PER_PATIENT):
            image, mask = draw_example(rng, class_name, size)
            yield {
                "id": f"p{patient:03d}_{view}",
                "patient": f"p{patient:03d}",
                "label": class_name,
                "image": image,
                "mask": mask,
            }
