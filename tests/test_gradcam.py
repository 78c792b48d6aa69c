"""Grad-CAM and Seg-Grad-CAM against hand-derived maps, the localisation scores on hand-made cases, the gallery CLI."""

import re

import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner

import cli
from mtunet.errors import ConfigError
from mtunet.explain.gradcam import GradCam, localisation_scores, mass_in_lesion, pointing_game
from mtunet.models import MIN_CAM_SIDE
from mtunet.models.encoders import get_encoder

SIZE, CHANNELS, FEATURES, CLASSES = 4, 2, 3, 2


def hand_model(feature_kernel, label_kernel, label_bias, mask_kernel, stride=1):
    """images (4, 4, 2) -> nested "encoder" (1x1 conv "features", no bias) -> "bottleneck" -> global average pool ->
    dense "label_logits" -> softmax "label", and 1x1 conv "mask_logits" -> sigmoid "mask"; the layout of an mtunet
    model, small enough that its Grad-CAM can be derived by hand."""
    encoder_input = keras.Input((SIZE, SIZE, CHANNELS))
    features = keras.layers.Conv2D(FEATURES, 1, strides=stride, use_bias=False, name="features")(encoder_input)
    encoder = keras.Model(encoder_input, {"P5": features}, name="encoder")
    images = keras.Input((SIZE, SIZE, CHANNELS), name="images")
    bottleneck = keras.layers.Identity(name="bottleneck")(encoder(images)["P5"])
    pooled = keras.layers.GlobalAveragePooling2D(name="label_pool")(bottleneck)
    label_logits = keras.layers.Dense(CLASSES, name="label_logits")(pooled)
    mask_logits = keras.layers.Conv2D(1, 1, name="mask_logits")(bottleneck)
    model = keras.Model(images, {"label": keras.layers.Activation("softmax", name="label")(label_logits),
                                 "mask": keras.layers.Activation("sigmoid", name="mask")(mask_logits)})
    encoder.get_layer("features").set_weights([feature_kernel[None, None]])
    model.get_layer("label_logits").set_weights([label_kernel, label_bias])
    model.get_layer("mask_logits").set_weights([mask_kernel[None, None, :, None], np.array([0.3])])
    return model


@pytest.fixture(scope="module")
def weights():
    rng = np.random.default_rng(0)
    return {"feature_kernel": rng.normal(size=(CHANNELS, FEATURES)),
            "label_kernel": rng.normal(size=(FEATURES, CLASSES)),
            "label_bias": np.array([0.5, -0.5]), "mask_kernel": rng.normal(size=FEATURES)}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(0, 255, size=(3, SIZE, SIZE, CHANNELS)).astype(np.float32)


@pytest.mark.parametrize("layer", ["auto", "features"])  # the top-level bottleneck, and the layer inside "encoder"
@pytest.mark.parametrize("stride", [1, 2])                # a 4x4 map, and a 2x2 map upsampled to the 4x4 image
def test_class_heatmap_matches_the_hand_derivation(weights, images, layer, stride):
    # The class score is S_c = sum_k V_kc mean_ij A_ijk + b_c, so dS_c/dA_ijk = V_kc / (h w) everywhere: the channel
    # weights are alpha_k = V_kc / (h w) and the map is ReLU(A V_c) / (h w), A = X W at the sampled pixels.
    model = hand_model(**weights, stride=stride)
    cam = GradCam(model, layer=layer)
    feature = images[:, ::stride, ::stride] @ weights["feature_kernel"]
    area = feature.shape[1] * feature.shape[2]
    maps = {}
    for target in range(CLASSES):
        expected = np.maximum(feature @ weights["label_kernel"][:, target], 0) / area
        expected = np.stack([cv2.resize(item, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) for item in expected])
        maps[target] = cam(images, target_class=target).heatmaps
        np.testing.assert_allclose(maps[target], expected, rtol=1e-4, atol=1e-4 * expected.max())
    assert not np.allclose(maps[0], maps[1])  # another class, another map
    result = cam(images)
    logits = feature.mean(axis=(1, 2)) @ weights["label_kernel"] + weights["label_bias"]
    np.testing.assert_array_equal(result.target_classes, logits.argmax(axis=1))
    np.testing.assert_allclose(result.probabilities, model.predict(images, verbose=0)["label"], rtol=1e-5)
    for index, target in enumerate(result.target_classes):
        np.testing.assert_allclose(result.heatmaps[index], maps[target][index], rtol=1e-6)


def test_seg_gradcam_differentiates_the_summed_mask_logits(weights, images):
    # S = sum_ij (A_ij . U + b): dS/dA_ijk = U_k, so alpha = U and the map is ReLU(A U).
    model = hand_model(**weights)
    result = GradCam(model, head="mask", layer="features")(images)
    expected = np.maximum(images @ weights["feature_kernel"] @ weights["mask_kernel"], 0)
    np.testing.assert_allclose(result.heatmaps, expected, rtol=1e-4, atol=1e-4 * expected.max())
    np.testing.assert_allclose(result.masks, model.predict(images, verbose=0)["mask"][..., 0], rtol=1e-5)
    assert result.target_classes is None


def test_unknown_layer_head_or_class_is_a_clear_error(weights, images):
    model = hand_model(**weights)
    with pytest.raises(ConfigError, match=r"--layer 'nope': no such layer in model .*e\.g\. bottleneck, features, "
                                          r"mask_logits \(4 in all\)"):
        GradCam(model, layer="nope")
    with pytest.raises(ConfigError, match=r"--layer 'label_pool': not a feature map"):
        GradCam(model, layer="label_pool")
    with pytest.raises(ConfigError, match=r"--layer 'mask_logits' does not feed the label head"):
        GradCam(model, layer="mask_logits")
    with pytest.raises(ConfigError, match=r"--head class: model .* has no class head; expected one of its heads: "
                                          r"label, mask"):
        GradCam(model, head="class")
    classifier = keras.Model(model.inputs, model.get_layer("label").output)
    with pytest.raises(ConfigError, match=r"--head mask: model .* has no mask head; expected one of its heads: "
                                          r"label$"):
        GradCam(classifier, head="mask")
    with pytest.raises(ConfigError, match=r"target class 2 out of range: the model has 2 classes \(0-1\)"):
        GradCam(model)(images, target_class=2)


def test_mass_and_pointing_game_on_hand_made_maps():
    masks = np.zeros((5, 4, 4), np.uint8)
    masks[:4, :2, :2] = 1                           # lesion: the top-left quarter; image 4 has none
    heatmaps = np.zeros((5, 4, 4))
    heatmaps[0, 0, 0], heatmaps[0, 3, 3] = 3, 1    # peak inside: 3 of 4 of the mass inside
    heatmaps[1, 0, 0], heatmaps[1, 3, 3] = 1, 3    # peak outside
    heatmaps[2, :, :2] = 2                          # a plateau of 8 maxima, 4 of them inside
    heatmaps[4, 0, 0] = 1                           # no lesion: not scored
    # image 3: an all-zero map counts as uniform: mass = lesion area, every pixel a maximum
    np.testing.assert_allclose(mass_in_lesion(heatmaps, masks), [0.75, 0.25, 0.5, 0.25, np.nan])
    np.testing.assert_allclose(pointing_game(heatmaps, masks[..., None]), [1, 0, 0.5, 0.25, np.nan])


def test_localisation_scores_on_images_whose_answer_is_known():
    # positive weights: the map is proportional to the pixel sum, so it peaks at the brightest pixel
    model = hand_model(np.ones((CHANNELS, FEATURES)), np.ones((FEATURES, CLASSES)), np.zeros(CLASSES),
                       np.ones(FEATURES))
    images = np.zeros((3, SIZE, SIZE, CHANNELS), np.float32)
    masks = np.zeros((3, SIZE, SIZE, 1), np.float32)
    masks[:2, 1:3, 1:3] = 1
    images[0, 1, 1], images[0, 0, 3] = 2, 1         # brightest in the lesion: hit, mass 2/3
    images[1, 1, 1], images[1, 0, 3] = 1, 2         # brightest outside: miss, mass 1/3
    images[2, 0, 0] = 5                             # no lesion: left out
    scores = localisation_scores(model, images, masks, batch_size=2)
    assert scores["pointing_game_hit_rate"] == pytest.approx(0.5)
    assert scores["mass_in_lesion"] == pytest.approx(0.5)
    assert scores["pointing_game_chance"] == pytest.approx(4 / 16)
    assert scores["images_scored"] == 2 and scores["layer"] == "bottleneck" and scores["head"] == "label"
    # the map is the same for every class here; a per-image target (e.g. the true labels) is accepted
    assert localisation_scores(model, images, masks, target_class=[1, 0, 1])["pointing_game_hit_rate"] == 0.5


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A one-epoch run of a MobileNetV2 multi-task U-Net at 32 px on a fake folder dataset."""
    from conftest import write_folder_dataset
    from mtunet.training.loop import train

    root = tmp_path_factory.mktemp("gradcam")
    data_dir = write_folder_dataset(root / "lesions", num_patients=8, images_per_patient=2)
    run = train(encoder="mobilenetv2", weights=None, dataset="folder", data_dir=str(data_dir), image_size=32,
                batch_size=8, epochs=1, output_dir=str(root / "run"))
    return run.directory


def test_nested_encoder_layers_of_an_mtunet_model(run_dir):
    from mtunet.models import load_model

    model = load_model(run_dir / "best.keras")
    # the bottleneck is 1 x 1 at 32 px, so each image's map is one value whose sign before the ReLU is the model's
    # chance: 16 images, so that some maps are not 0 and the comparison below is not between zeros
    images = np.random.default_rng(0).uniform(0, 255, size=(16, 32, 32, 1)).astype(np.float32)
    bottleneck = GradCam(model, layer="bottleneck")(images).heatmaps
    # "bottleneck" is an Identity on the encoder's last layer, out_relu: the same map through the nested model
    np.testing.assert_allclose(GradCam(model, layer="out_relu")(images).heatmaps, bottleneck, rtol=1e-4,
                               atol=1e-4 * bottleneck.max())
    assert bottleneck.shape == (16, 32, 32) and bottleneck.max() > 0
    # at 32 px the bottleneck is 1 x 1, a map that cannot point anywhere: "auto" takes the deepest encoder feature at
    # least MIN_CAM_SIDE cells a side, the stride-4 pyramid level P2 (8 x 8; P3 is 4 x 4)
    auto = GradCam(model)
    assert MIN_CAM_SIDE == 7 and auto.layer == get_encoder("mobilenetv2").pyramid_layers[1]
    assert auto(images[:2]).heatmaps.shape == (2, 32, 32)
    deeper = GradCam(model, head="mask", layer="block_6_expand_relu")(images[:2])
    assert deeper.heatmaps.shape == (2, 32, 32) and deeper.heatmaps.min() >= 0 and deeper.masks.shape == (2, 32, 32)
    # Seg-Grad-CAM's own default: the decoder's stride-2 stage, where the skip connections have brought the detail
    assert GradCam(model, head="mask").layer == "decoder_stage4_conv2_relu"


def test_evaluate_reports_the_localisation_scores_of_its_images(run_dir, tmp_path):
    import json

    from mtunet.data import load_dataset
    from mtunet.evaluation.run import evaluate_run
    from mtunet.models import load_model

    metrics = evaluate_run(run_dir, output_dir=tmp_path, bootstrap_resamples=10)  # Grad-CAM's section by default
    data = load_dataset("folder", data_dir=json.loads((run_dir / "config.json").read_text())["options"]["data_dir"],
                        image_size=32, splits_path=run_dir / "splits.json")
    images, targets = next(iter(data.pipeline("test", batch_size=100, training=False)))
    expected = localisation_scores(load_model(run_dir / "best.keras"), images.numpy(), targets["mask"].numpy())
    saved = json.loads((tmp_path / "metrics.json").read_text())["gradcam"]
    assert saved == pytest.approx(metrics["gradcam"]) and saved == pytest.approx(expected)
    report = (tmp_path / "report.html").read_text()
    assert saved["images_scored"] == metrics["n_images"] and "Grad-CAM localisation" in report
    assert "Grad-CAM mass inside the true lesion (mean)" in report and "pointing game hit rate" in report
    assert "mass_in_lesion" not in report and "pointing_game" not in report


# added to a copy of the gallery: choose an order as a reader would, then record the figures' order
SORT_CHECK = """<script>window.addEventListener("load", () => {
  const order = document.getElementById("order");
  order.value = "%s";
  order.dispatchEvent(new Event("change"));
  document.body.dataset.sorted = [...document.querySelectorAll("#figures figure")].map(
    figure => figure.dataset.index).join(",");
});</script>"""


def test_cli_writes_a_gallery_of_the_test_split(run_dir, tmp_path):
    from test_run_evaluation import _chromium

    result = CliRunner().invoke(cli.main, ["gradcam", str(run_dir), "--num-images", "4"])
    assert result.exit_code == 0, result.output
    gallery = run_dir / "gradcam"
    pngs = sorted(gallery.glob("*.png"))
    assert len(pngs) == 4
    for png in pngs:  # image, heatmap with its colour bar, overlay, true lesion side by side
        figure = cv2.imread(str(png))
        assert figure is not None and figure.shape[:2] == (340, 1100)
    index = (gallery / "index.html").read_text()
    assert all(f'src="{png.name}"' in index for png in pngs)
    assert "pointing game hit rate" in index and "true " in index and "predicted " in index
    assert "bottom row" not in index  # the U-Net decoder has no attention maps to show
    assert "Grad-CAM of the predicted class" in result.output and f"gallery: {gallery / 'index.html'}" in result.output
    for order in ("as listed", "by true class", "by predicted class", "wrong first"):
        assert order in index, order

    figures = re.findall(r'<figure data-index="(\d+)" data-true="(\w+)" data-predicted="(\w+)" '
                         r'data-correct="([01])">', index)
    assert len(figures) == 4
    for key, column in (("correct", 3), ("true", 1)):
        checked = tmp_path / f"{key}.html"
        checked.write_text(index.replace("</body>", SORT_CHECK % key + "</body>"))
        dom = _chromium("--dump-dom", checked.as_uri(), profile=tmp_path / "profile").stdout
        expected = [index for index, *_ in sorted(figures, key=lambda figure: (figure[column], int(figure[0])))]
        assert re.search(r'data-sorted="([\d,]*)"', dom).group(1) == ",".join(expected), dom[-500:]

    # a second gallery never mixes with the first: beside it by default, refused in a folder that holds files
    again = CliRunner().invoke(cli.main, ["gradcam", str(run_dir), "--num-images", "2"])
    assert again.exit_code == 0 and f"gallery: {run_dir / 'gradcam-2' / 'index.html'}" in again.output, again.output
    assert sorted(gallery.glob("*.png")) == pngs and len(list((run_dir / "gradcam-2").glob("*.png"))) == 2
    refused = CliRunner().invoke(cli.main, ["gradcam", str(run_dir), "--output-dir", str(gallery)])
    assert refused.exit_code == 1 and refused.output.startswith(f"Error: --output-dir {gallery}: the folder already "
                                                                "holds files"), refused.output


def test_cli_explains_image_files_and_skips_unreadable_ones(run_dir, tmp_path):
    for name in ("a.png", "b.jpg"):
        cv2.imwrite(str(tmp_path / name), np.random.default_rng(0).integers(0, 255, (50, 40), np.uint8))
    (tmp_path / "corrupt.png").write_bytes(b"not an image")
    output = tmp_path / "out"
    files = [str(tmp_path / name) for name in ("a.png", "corrupt.png", "b.jpg")]
    result = CliRunner().invoke(cli.main, ["gradcam", str(run_dir / "best.keras"), *files, "--output-dir",
                                           str(output), "--head", "mask"])
    assert result.exit_code == 0, result.output
    assert f"skipped {tmp_path / 'corrupt.png'}: not a readable PNG, JPEG, BMP or TIFF image" in result.output
    assert sorted(png.name for png in output.glob("*.png")) == ["000_a.png", "001_b.png"]
    assert "Seg-Grad-CAM" in (output / "index.html").read_text()

    result = CliRunner().invoke(cli.main, ["gradcam", str(run_dir), files[0], "--target-class", "cancer"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: --target-class 'cancer': expected 'predicted' or one of: benign, "
                                     "malignant")
    result = CliRunner().invoke(cli.main, ["gradcam", str(run_dir), str(tmp_path / "corrupt.png")])
    assert result.exit_code == 1 and "none of the 1 image file(s) could be read" in result.output
