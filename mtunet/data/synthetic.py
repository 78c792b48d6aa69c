"""Synthetic breast-ultrasound-like images with exact lesion masks, for tests and runs that need no files.

Every image has one lesion, dark against speckled tissue, of one of three classes told apart the way breast
ultrasound tells them apart (BI-RADS descriptors), never by a single global cue:

- ``cyst``: round to slightly oval, smooth sharp margin with a thin bright wall, little speckle inside (nearly
  anechoic), brighter tissue below it (posterior enhancement).
- ``fibroadenoma``: oval and wider than tall, gently lobulated but sharp margin, homogeneous speckle inside, little
  change below it; rarely a few bright specks (calcifications).
- ``carcinoma``: irregular and spiculated, as tall as wide or taller, blurred margin with a bright halo,
  heterogeneous inside, in half of them bright specks (microcalcifications), a shadow below it.

Lesion size, position, tilt and contrast are drawn from the same ranges for every class; about one lesion in six is
small and one in six faint. Overall brightness (gain) varies far more from image to image than any lesion changes
it. Each patient has ``IMAGES_PER_PATIENT`` views of one lesion (its shape and texture jittered, its place and the
tissue around it new), so that splitting by image would leak. Examples are drawn from ``np.random`` generators
seeded by ``(seed, patient)``: the same seed gives the same bytes (with the same NumPy and OpenCV versions).
"""

from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES = ("cyst", "fibroadenoma", "carcinoma")
CLASS_PROBABILITIES = (0.3, 0.35, 0.35)
NUM_PATIENTS = 700  # 1400 images: about 980 / 210 / 210 in mtunet's default 70/15/15 patient split
IMAGES_PER_PATIENT = 2
NATIVE_SIZE = 128
SEED = 20240
SMALL_FRACTION = 0.15  # lesions of 3.5-6% of the image side in radius (else 7-17%)
FAINT_FRACTION = 0.15  # lesions 12-25% darker than their surroundings (else 35-80%)
RIM_AND_CORE_CLASSES = ("rim", "core")  # mask values 1 and 2 with rim_and_core=True
CORE_DEPTH = 0.35  # core: lesion pixels farther from the margin than this share of the lesion's greatest depth
CORE_BRIGHTNESS = 2.2  # the core's echo level over the rim's: a clear step against the speckle

# Per class, ranges a patient's lesion is drawn from: width/height ratio; amplitude of the outline's harmonics (of the
# given orders); number and height of spicules; margin blur (sigma in pixels at 128 px); share of the tissue's speckle
# kept inside; coarse inner heterogeneity; bright wall at the margin; bright halo around it; brightness change below
# it (+ brighter). Ranges overlap between classes: no single trait gives the class away.
_CLASSES = {
    "cyst": dict(aspect=(0.85, 1.3), harmonic=(0.0, 0.05), orders=(2, 3), spikes=(0, 0), spike=(0.0, 0.0),
                 blur=(0.4, 0.9), speckle=(0.05, 0.4), coarse=(0.0, 0.05), wall=(0.1, 0.4), halo=(0.0, 0.0),
                 posterior=(0.25, 0.6), calcified=0.0),
    "fibroadenoma": dict(aspect=(1.3, 2.2), harmonic=(0.03, 0.12), orders=(2, 3, 4), spikes=(0, 0),
                         spike=(0.0, 0.0), blur=(0.5, 1.1), speckle=(0.5, 1.0), coarse=(0.0, 0.2),
                         wall=(0.0, 0.15), halo=(0.0, 0.0), posterior=(-0.05, 0.2), calcified=0.1),
    "carcinoma": dict(aspect=(0.6, 1.1), harmonic=(0.04, 0.12), orders=(3, 4, 5, 6, 7), spikes=(3, 12),
                      spike=(0.1, 0.35), blur=(0.8, 1.8), speckle=(0.7, 1.0), coarse=(0.1, 0.35),
                      wall=(0.0, 0.0), halo=(0.1, 0.4), posterior=(-0.6, -0.2), calcified=0.5),
}
_ANGLES = np.linspace(0, 2 * np.pi, 180, endpoint=False)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """``(size, size)`` float32 noise of about unit spread that varies over ``size / cells`` pixels."""
    coarse = rng.normal(size=(cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _tissue(rng: np.random.Generator, size: int) -> np.ndarray:
    """Mean echo level of lesion-free tissue, float32 ``(size, size)``: a bright skin line, layers, lobules, a random
    gain and attenuation with depth."""
    depth = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None]
    layers = cv2.resize(rng.normal(size=(6, 1)).astype(np.float32), (1, size), interpolation=cv2.INTER_CUBIC)
    level = 1.0 + 0.18 * layers + 0.15 * _smooth_noise(rng, size, 6) + 0.08 * _smooth_noise(rng, size, 16)
    level += 0.8 * np.exp(-depth / 0.03)  # skin line at the top
    gain = rng.uniform(60.0, 150.0)
    attenuation = 1.0 - rng.uniform(0.1, 0.45) * depth
    return np.maximum(gain * level * attenuation, 1.0)


def _speckle(rng: np.random.Generator, size: int) -> np.ndarray:
    """Multiplicative speckle of mean about 1: Rayleigh noise with a grain of about 1.5 pixels."""
    speckle = rng.rayleigh(scale=1.0, size=(size, size)).astype(np.float32)
    speckle = cv2.GaussianBlur(speckle, (0, 0), 0.7)
    return speckle / 1.2533  # mean of Rayleigh(1)


def _lesion_traits(rng: np.random.Generator, class_name: str) -> dict:
    """What a patient's lesion looks like in every view: size, contrast, shape and texture."""
    spec = _CLASSES[class_name]
    small = rng.random() < SMALL_FRACTION
    faint = rng.random() < FAINT_FRACTION
    orders = np.array(spec["orders"])
    spikes = rng.integers(spec["spikes"][0], spec["spikes"][1] + 1)
    return {
        "radius": rng.uniform(0.035, 0.06) if small else rng.uniform(0.07, 0.17),
        "contrast": rng.uniform(0.12, 0.25) if faint else rng.uniform(0.35, 0.8),
        "aspect": rng.uniform(*spec["aspect"]),
        "orders": orders,
        "amplitudes": rng.uniform(*spec["harmonic"], size=orders.size),
        "phases": rng.uniform(0, 2 * np.pi, size=orders.size),
        "spike_angles": rng.uniform(0, 2 * np.pi, size=spikes),
        "spike_heights": rng.uniform(*spec["spike"], size=spikes),
        "calcifications": rng.random() < spec["calcified"],
        **{trait: rng.uniform(*spec[trait]) for trait in ("blur", "speckle", "coarse", "wall", "halo", "posterior")},
    }


def _outline(rng: np.random.Generator, traits: dict, size: int) -> np.ndarray:
    """``(K, 1, 2)`` int32 polygon of one view of the lesion, placed at random in the image."""
    jitter = rng.normal(0.0, 0.02, size=_ANGLES.size)
    profile = 1.0 + jitter + np.sum(
        traits["amplitudes"][:, None]
        * np.cos(traits["orders"][:, None] * _ANGLES + traits["phases"][:, None] + rng.normal(0, 0.3)), axis=0)
    for angle, height in zip(traits["spike_angles"], traits["spike_heights"]):
        distance = np.angle(np.exp(1j * (_ANGLES - angle - rng.normal(0, 0.1))))
        profile += height * np.exp(-0.5 * (distance / 0.08) ** 2)  # a narrow spicule
    radius = traits["radius"] * size * rng.uniform(0.9, 1.1)
    aspect = traits["aspect"] * rng.uniform(0.93, 1.07)
    x = radius * np.sqrt(aspect) * profile * np.cos(_ANGLES)
    y = radius / np.sqrt(aspect) * profile * np.sin(_ANGLES)
    tilt = np.deg2rad(rng.uniform(-20, 20))
    x, y = x * np.cos(tilt) - y * np.sin(tilt), x * np.sin(tilt) + y * np.cos(tilt)
    extent_x, extent_y = np.abs(x).max(), np.abs(y).max()
    centre_x = rng.uniform(extent_x + 2, size - extent_x - 2)
    centre_y = rng.uniform(max(extent_y + 2, 0.12 * size), size - extent_y - 2)  # below the skin line
    points = np.stack([centre_x + x, centre_y + y], axis=1)
    return np.round(points * 16).astype(np.int32)[:, None, :]  # 4 fractional bits for cv2


def _core(mask: np.ndarray) -> np.ndarray:
    """``(size, size)`` bool: the pixels of the lesion ``mask`` deeper than ``CORE_DEPTH`` of its greatest depth."""
    depth = cv2.distanceTransform((mask > 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return depth > CORE_DEPTH * depth.max()


def _draw_view(rng: np.random.Generator, traits: dict, size: int = NATIVE_SIZE, rim_and_core: bool = False):
    """One view of a lesion: ``(image, mask)``, both ``uint8`` ``(size, size, 1)``, mask 0/255 marking the lesion;
    with ``rim_and_core``, a core ``CORE_BRIGHTNESS`` times brighter than the rest of the lesion and a mask of 0
    background, 1 rim, 2 core.

    ``traits`` come from ``_lesion_traits``; distances are scaled from 128 px to ``size``.
    """
    scale = size / NATIVE_SIZE
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [_outline(rng, traits, size)], 255, lineType=cv2.LINE_8, shift=4)
    lesion = (mask > 0).astype(np.float32)
    inside = cv2.GaussianBlur(lesion, (0, 0), traits["blur"] * scale)  # soft margin around the exact outline

    tissue = _tissue(rng, size)
    surrounding = float(tissue[mask > 0].mean())
    noise = _smooth_noise(rng, size, 24)
    texture = 1.0 + traits["coarse"] * (noise - noise[mask > 0].mean())  # heterogeneous, as dark on average
    level = tissue * (1 - inside) + surrounding * (1 - traits["contrast"]) * texture * inside
    if rim_and_core:
        core = _core(mask)
        soft_core = cv2.GaussianBlur(core.astype(np.float32), (0, 0), 0.5 * scale)
        level *= 1 + (CORE_BRIGHTNESS - 1) * soft_core * lesion
    ring = np.clip(cv2.GaussianBlur(lesion, (0, 0), 2.5 * scale) - lesion, 0, None)  # just outside the margin
    edge = np.clip(cv2.GaussianBlur(lesion, (0, 0), 0.8 * scale) * (1 - lesion) * 2, 0, 1)
    level += surrounding * (traits["halo"] * 2 * ring + traits["wall"] * edge)
    if traits["calcifications"]:  # a few bright specks inside
        ys, xs = np.nonzero(mask)
        for index in rng.choice(ys.size, size=min(ys.size // 40, rng.integers(1, 4)), replace=False):
            cv2.circle(level, (int(xs[index]), int(ys[index])), max(1, round(scale)), (1.8 * surrounding,), -1)

    below = np.maximum.accumulate(lesion, axis=0) - lesion  # the columns under the lesion
    rows_below = np.cumsum(below, axis=0)
    fade = np.exp(-rows_below / (0.35 * size))
    posterior = 1 + traits["posterior"] * cv2.GaussianBlur(below * fade, (0, 0), 1.5 * scale)

    speckle = _speckle(rng, size)
    speckle = 1 + (speckle - 1) * (1 - inside * (1 - traits["speckle"]))
    image = np.clip(level * posterior * speckle, 0, 255)
    if rim_and_core:
        mask = np.where(core, 2, np.where(mask > 0, 1, 0)).astype(np.uint8)
    return np.round(image).astype(np.uint8)[..., None], mask[..., None]


def synthetic_examples(num_patients: int = NUM_PATIENTS, size: int = NATIVE_SIZE, seed: int = SEED, *,
                       rim_and_core: bool = False):
    """Yields ``num_patients * IMAGES_PER_PATIENT`` dicts in id order: ``id``, ``patient``, ``label`` (a class
    name), ``image`` and ``mask`` (``uint8`` ``(size, size, 1)``, mask 0/255).

    ``rim_and_core=True`` (the ``synthetic_multiclass`` dataset) draws the lesion's core (``_core``) ``CORE_BRIGHTNESS``
    times brighter than its rim, and gives masks of the mask classes ``RIM_AND_CORE_CLASSES``: 0 background, 1 rim,
    2 core. The core is found from the outline alone, with no random draw, so ids, patients, classes, outlines and the
    image outside the lesion are those of ``rim_and_core=False``.
    """
    for patient in range(num_patients):
        rng = np.random.default_rng([seed, patient])
        class_name = CLASS_NAMES[rng.choice(len(CLASS_NAMES), p=CLASS_PROBABILITIES)]
        traits = _lesion_traits(rng, class_name)
        for view in range(IMAGES_PER_PATIENT):
            image, mask = _draw_view(rng, traits, size, rim_and_core)
            yield {
                "id": f"p{patient:04d}_{view}",
                "patient": f"p{patient:04d}",
                "label": class_name,
                "image": image,
                "mask": mask,
            }


def write_example_images(ids, folder, seed: int = SEED) -> list:
    """Writes the images (not the masks) of the examples ``ids`` of ``synthetic_examples(seed=seed)`` as
    ``<folder>/<id>.png`` at their native size and returns the paths, in the order of ``ids``."""
    wanted = set(ids)
    last_patient = max(int(example_id[1:].split("_")[0]) for example_id in wanted)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for example in synthetic_examples(num_patients=last_patient + 1, seed=seed):
        if example["id"] in wanted:
            cv2.imwrite(str(folder / f"{example['id']}.png"), example["image"])
    return [folder / f"{example_id}.png" for example_id in ids]
