"""``run_demo``: the README's main job in one call. It trains a MobileNetV2 multi-task U-Net from scratch on the
built-in synthetic dataset, evaluates it on its test split, exports it as a SavedModel, predicts a few test images
with the export and writes a Grad-CAM gallery of test images.

Examples::

    result = mtunet.run_demo("runs/demo")
    result.evaluation["balanced_accuracy"], result.evaluation["gradcam"]["pointing_game_hit_rate"]
"""

from __future__ import annotations

import dataclasses
import pathlib
import typing

if typing.TYPE_CHECKING:  # TensorFlow is imported when the demo runs, so the CLI can read the defaults at once
    from mtunet.deploy.export import ExportResult
    from mtunet.deploy.predict import PredictionResult
    from mtunet.training.loop import Run

DEMO_IMAGE_SIZE = 64
DEMO_EPOCHS = 20  # at 10 the class head had barely learned (test balanced accuracy 0.40, 3 classes)
DEMO_IMAGES = 4  # test images the demo predicts with its exported model
DEMO_GRADCAM_IMAGES = 8  # test images in the demo's Grad-CAM gallery


@dataclasses.dataclass
class DemoResult:
    """What ``run_demo`` wrote.

    Attributes:
        run: the training run (``run.directory`` holds everything below).
        evaluation: the test split's metrics (``metrics.json`` in ``evaluation["output_dir"]``), Grad-CAM's
            localisation scores under ``"gradcam"``.
        export: the SavedModel (``RUN_DIR/export/1``).
        images: the test images predicted with the export, PNGs at the dataset's native size (``RUN_DIR/demo_images``).
        predictions: their predictions (``RUN_DIR/predictions``).
        gallery: the Grad-CAM gallery's ``index`` (``RUN_DIR/gradcam/index.html``) and ``images``.
    """

    run: Run
    evaluation: dict
    export: ExportResult
    images: list[pathlib.Path]
    predictions: PredictionResult
    gallery: dict


def run_demo(output_dir=None, *, epochs: int = DEMO_EPOCHS, image_size: int = DEMO_IMAGE_SIZE,
             data_dir=None) -> DemoResult:
    """Runs the demo into the run directory ``output_dir`` (default ``runs/<date>-mobilenetv2-synthetic``).

    Args:
        output_dir: the run directory; it must not exist or be empty.
        epochs: training epochs.
        image_size: side of the square training images (a multiple of 32).
        data_dir: the TFDS data directory the synthetic dataset is prepared in (None: TFDS's default).

    Raises:
        ConfigError: ``output_dir`` is not empty, or an invalid ``epochs`` or ``image_size``.
    """
    from mtunet.data.splits import Splits
    from mtunet.data.synthetic import write_example_images
    from mtunet.deploy.export import export_model
    from mtunet.deploy.predict import load_predictor, predict_files
    from mtunet.evaluation.run import evaluate_run
    from mtunet.explain.gallery import prepare_gallery
    from mtunet.rundir import SPLITS_FILE
    from mtunet.training.config import TrainConfig
    from mtunet.training.loop import train

    run = train(TrainConfig(encoder="mobilenetv2", weights=None, dataset="synthetic", data_dir=data_dir,
                            image_size=image_size, epochs=epochs, output_dir=output_dir))
    evaluation = evaluate_run(run.directory)
    exported = export_model(run.directory, run.directory / "export")
    test_ids = Splits.load(run.directory / SPLITS_FILE)["test"]
    images = write_example_images(test_ids[:DEMO_IMAGES], run.directory / "demo_images")
    predictions = predict_files(load_predictor(exported.directory), images, run.directory / "predictions")
    gallery = prepare_gallery(run.directory, split="test", num_images=DEMO_GRADCAM_IMAGES).write()
    return DemoResult(run, evaluation, exported, images, predictions, gallery)
