"""``mtunet.run_demo``, the README's main job, at a tiny size: every file it promises, re-read."""

import json

import pandas as pd

from mtunet.demo import DEMO_GRADCAM_IMAGES, DEMO_IMAGES, run_demo


def test_demo_writes_every_file_it_promises(tfds_dir, tmp_path):
    result = run_demo(tmp_path / "run", epochs=1, image_size=32, data_dir=str(tfds_dir))
    run = tmp_path / "run"
    assert result.run.directory == run and (run / "best.keras").is_file() and (run / "summary.json").is_file()

    evaluation = run / "evaluation" / "test"
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["n_images"] == 210 and metrics["balanced_accuracy"] == result.evaluation["balanced_accuracy"]
    # at 32 px the bottleneck is 1 x 1, so the class head's Grad-CAM is taken at the encoder's stride-4 block output
    assert metrics["gradcam"]["layer"] == "block_2_add" and metrics["gradcam"]["images_scored"] == 210
    assert (evaluation / "report.html").is_file()

    assert (run / "export" / "1" / "saved_model.pb").is_file() and result.export.directory == run / "export" / "1"
    predictions = pd.read_csv(run / "predictions" / "predictions.csv")
    assert len(predictions) == DEMO_IMAGES == len(result.images)
    assert all(path.is_file() and path.parent == run / "demo_images" for path in result.images)

    assert result.gallery["index"].samefile(run / "gradcam" / "index.html")
    assert len(result.gallery["images"]) == DEMO_GRADCAM_IMAGES
