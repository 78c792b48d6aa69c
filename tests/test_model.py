"""build_model: every registered encoder, every task, skips on/off, serialisation, weights, input checks."""

import numpy as np
import pytest
import keras

import mtunet
from mtunet.models.encoders import ENCODERS, SCRATCH_BN_MOMENTUM

SIZE = 64
NUM_CLASSES = 3
# Tiny decoder so that 14 encoders build and run quickly; the encoders themselves are full size.
DECODER_FILTERS = (16, 16, 8, 8, 8)


def _build(encoder, **kwargs):
    kwargs = {"input_shape": (SIZE, SIZE, 3), "num_classes": NUM_CLASSES, "weights": None,
              "decoder_filters": DECODER_FILTERS, **kwargs}
    return mtunet.build_model(encoder, **kwargs)


def _images(batch=2, channels=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, SIZE, SIZE, channels)).astype("float32")


def _concat_layers(model):
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]


@pytest.fixture(scope="module", params=sorted(ENCODERS))
def multi_model(request):
    keras.backend.clear_session()
    return request.param, _build(request.param)


def test_multi_task_outputs(multi_model):
    # (2, 64, 64, 3) -> label (2, 3) softmax, mask (2, 64, 64, 1) sigmoid
    _, model = multi_model
    assert model.output_names == ["label", "mask"]
    assert model.output_shape == [(None, NUM_CLASSES), (None, SIZE, SIZE, 1)]
    outputs = model.predict(_images(), verbose=0)
    assert outputs["label"].shape == (2, NUM_CLASSES)
    np.testing.assert_allclose(outputs["label"].sum(axis=1), 1.0, atol=1e-5)
    assert outputs["mask"].shape == (2, SIZE, SIZE, 1)
    assert outputs["mask"].min() >= 0.0 and outputs["mask"].max() <= 1.0


def test_decoder_concatenates_one_encoder_feature_per_stage(multi_model):
    encoder, model = multi_model
    # stages 1-4 take P4..P1 (an encoder of depth 4 has no stage 1: its P4 is the bottleneck); stage 5 (full
    # resolution) has no encoder feature of its scale
    first = 6 - ENCODERS[encoder].depth
    assert _concat_layers(model) == [f"decoder_stage{i}_concat" for i in range(first, 5)]
    features = model.get_layer("encoder").output
    for stage, level in list(zip(range(1, 5), ["P4", "P3", "P2", "P1"]))[first - 1:]:
        concat_inputs = model.get_layer(f"decoder_stage{stage}_concat").input
        assert concat_inputs[1].shape == features[level].shape


def test_bottleneck_and_stages_are_named(multi_model):
    encoder, model = multi_model
    depth = ENCODERS[encoder].depth
    assert model.get_layer("bottleneck").output.shape[1:3] == (SIZE // 2 ** depth, SIZE // 2 ** depth)
    for stage, stride in list(zip(range(1, 6), [16, 8, 4, 2, 1]))[5 - depth:]:
        assert model.get_layer(f"decoder_stage{stage}_conv2_relu").output.shape[1:3] == (SIZE // stride,) * 2


def test_config_round_trip_gives_identical_predictions(multi_model):
    _, model = multi_model
    clone = type(model).from_config(model.get_config())
    assert clone.spec == model.spec
    clone.set_weights(model.get_weights())
    images = _images()
    expected, actual = model.predict(images, verbose=0), clone.predict(images, verbose=0)
    for name in ("label", "mask"):
        np.testing.assert_array_equal(actual[name], expected[name])


def test_keras_file_round_trip_gives_identical_predictions(multi_model, tmp_path):
    _, model = multi_model
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    images = _images(seed=1)
    expected, actual = model.predict(images, verbose=0), reloaded.predict(images, verbose=0)
    for name in ("label", "mask"):
        np.testing.assert_array_equal(actual[name], expected[name])


def test_randomly_initialised_encoder_uses_fast_batchnorm_statistics(multi_model):
    _, model = multi_model
    encoder_layers = model.get_layer("encoder").layers
    momenta = {layer.momentum for layer in encoder_layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta in (set(), {SCRATCH_BN_MOMENTUM})  # VGG16 has no BatchNormalization


@pytest.mark.parametrize("encoder", ["mobilenetv2", "vgg16", "densenet121", "efficientnetb0"])
def test_single_task_baselines(encoder):
    keras.backend.clear_session()
    segmentation = _build(encoder, task="segmentation", num_classes=None)
    assert segmentation.output_names == ["mask"]
    assert segmentation.predict(_images(), verbose=0)["mask"].shape == (2, SIZE, SIZE, 1)
    classification = _build(encoder, task="classification")
    assert classification.output_names == ["label"]
    assert classification.predict(_images(), verbose=0)["label"].shape == (2, NUM_CLASSES)
    assert not any(layer.name.startswith("decoder_") for layer in classification.layers)
    # same encoder in every task: identical encoder parameter count
    multi = _build(encoder)
    assert (classification.get_layer("encoder").count_params() == segmentation.get_layer("encoder").count_params()
            == multi.get_layer("encoder").count_params())


@pytest.mark.parametrize("encoder", ["mobilenetv2", "vgg16"])
def test_without_skip_connections_decoder_has_no_concatenation(encoder):
    keras.backend.clear_session()
    with_skips, without_skips = _build(encoder), _build(encoder, skip_connections=False)
    assert _concat_layers(without_skips) == []
    assert without_skips.output_shape == with_skips.output_shape
    assert without_skips.count_params() < with_skips.count_params()


def test_vgg16_declares_a_centre_block_and_others_do_not():
    assert [name for name, spec in ENCODERS.items() if spec.needs_center_block] == ["vgg16"]
    vgg = _build("vgg16")
    assert vgg.get_layer("decoder_center2_conv").output.shape[-1] == vgg.get_layer("encoder").output["P5"].shape[-1]


def test_grayscale_input_is_adapted_inside_the_model():
    model = _build("mobilenetv2", input_shape=(SIZE, SIZE, 1))
    gray = _images(channels=1)
    outputs = model.predict(gray, verbose=0)
    assert outputs["label"].shape == (2, NUM_CLASSES) and outputs["mask"].shape == (2, SIZE, SIZE, 1)
    # the grayscale model is the RGB model fed with the channel repeated three times
    rgb = _build("mobilenetv2")
    rgb.set_weights(model.get_weights())
    rgb_outputs = rgb.predict(np.repeat(gray, 3, axis=-1), verbose=0)
    np.testing.assert_allclose(outputs["mask"], rgb_outputs["mask"], atol=1e-6)


@pytest.mark.parametrize(
    "scaling, pixel_rgb, expected",
    [
        ("tf", (0, 127.5, 255), (-1.0, 0.0, 1.0)),
        ("torch", (0.485 * 255, 0.456 * 255, 0.406 * 255), (0.0, 0.0, 0.0)),
        ("caffe", (123.68, 116.779, 103.939), (0.0, 0.0, 0.0)),  # BGR order, ImageNet mean removed
        ("caffe", (10, 20, 30), (30 - 103.939, 20 - 116.779, 10 - 123.68)),
        ("none", (10, 20, 30), (10, 20, 30)),
    ],
)
def test_pixel_preprocessing_matches_keras_applications(scaling, pixel_rgb, expected):
    from mtunet.models.layers import PixelPreprocessing

    image = np.full((1, 2, 2, 3), pixel_rgb, dtype="float32")
    scaled = keras.ops.convert_to_numpy(PixelPreprocessing(scaling)(image))
    np.testing.assert_allclose(scaled[0, 0, 0], expected, atol=1e-4)
    reference = {"tf": keras.applications.mobilenet_v2.preprocess_input,
                 "torch": keras.applications.densenet.preprocess_input,
                 "caffe": keras.applications.vgg16.preprocess_input}.get(scaling)
    if reference is not None:
        np.testing.assert_allclose(scaled, reference(image.copy()), atol=1e-4)


def test_uint8_input_is_accepted():
    model = _build("mobilenetv2")
    images = _images()
    from_uint8 = model.predict(images.astype("uint8"), verbose=0)
    from_float = model.predict(images.astype("uint8").astype("float32"), verbose=0)
    np.testing.assert_allclose(from_uint8["mask"], from_float["mask"], atol=1e-6)


@pytest.mark.parametrize(
    "input_shape, message",
    [
        ((100, 128, 3), r"input_shape \(100, 128, 3\).*multiples of 32.*nearest valid size to 100 is 96 or 128"),
        ((16, 16, 3), r"at least 32.*nearest valid size to 16 is 32"),
        ((64, 70, 3), r"nearest valid size to 70 is 64 or 96"),
        ((64, 64, 2), r"expected 1 \(grayscale\) or 3 \(RGB\) channels"),
        ((64, 64), r"must be \(height, width, channels\)"),
    ],
)
def test_invalid_input_shape_raises_with_nearest_sizes(input_shape, message):
    with pytest.raises(mtunet.ConfigError, match=message):
        _build("mobilenetv2", input_shape=input_shape)


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(mtunet.ConfigError, match=r"unknown encoder 'resnet50'; expected one of: vgg16, mobilenetv2, "
                                                 r"densenet121.*efficientnetb7"):
        _build("resnet50")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "detection"}, r"unknown task 'detection'"),
        ({"num_classes": 1}, r"num_classes must be at least 2 for task 'multi'; received 1"),
        ({"num_classes": None, "task": "classification"}, r"num_classes must be at least 2"),
        ({"decoder_filters": (16, 8)}, r"decoder_filters needs 5 values"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _build("mobilenetv2", **kwargs)


def test_encoder_weights_file_is_loaded(tmp_path):
    backbone = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), include_top=False, weights=None)
    rng = np.random.default_rng(0)
    backbone.set_weights([rng.normal(size=w.shape).astype("float32") for w in backbone.get_weights()])
    path = tmp_path / "mobilenetv2_encoder.weights.h5"
    backbone.save_weights(path)
    model = _build("mobilenetv2", weights=str(path))
    for saved, loaded in zip(backbone.get_weights(), model.get_layer("encoder").get_weights()):
        np.testing.assert_array_equal(saved, loaded)


def test_missing_weights_file_is_a_config_error(tmp_path):
    with pytest.raises(mtunet.ConfigError, match=r"weights file '.*nowhere.h5' not found"):
        _build("mobilenetv2", weights=str(tmp_path / "nowhere.h5"))


def test_densenet161_has_no_imagenet_weights():
    with pytest.raises(mtunet.WeightsUnavailableError, match=r"no ImageNet weights for encoder 'densenet161'"):
        _build("densenet161", weights="imagenet")


def test_offline_imagenet_download_fails_with_one_clear_message(tmp_path, monkeypatch):
    import urllib.error
    import keras.src.utils.file_utils as file_utils

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached weights
    monkeypatch.setattr(file_utils, "urlretrieve", refuse)
    with pytest.raises(mtunet.WeightsUnavailableError,
                       match=r"could not download the ImageNet weights of 'mobilenetv2'.*weights=None.*local"):
        _build("mobilenetv2", weights="imagenet")


def test_offline_training_start_leaves_no_run_behind_and_speaks_cli(tmp_path, monkeypatch):
    import urllib.error

    import keras.src.utils.file_utils as file_utils
    from click.testing import CliRunner

    import cli
    from conftest import write_folder_dataset

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "urlretrieve", refuse)
    data_dir = write_folder_dataset(tmp_path / "lesions", num_patients=12)
    common = ["train", "--dataset", "folder", "--data-dir", str(data_dir), "--image-size", "32", "--epochs", "1",
              "--batch-size", "8", "--output-dir", str(tmp_path / "try")]
    result = CliRunner().invoke(cli.main, common)
    assert result.exit_code == 1 and "train from scratch with --weights none" in result.output, result.output
    assert "weights=None" not in result.output and not (tmp_path / "try").exists()
    result = CliRunner().invoke(cli.main, [*common, "--weights", "none"])  # the rerun is not refused
    assert result.exit_code == 0, result.output
    assert (tmp_path / "try" / "summary.json").is_file()


def test_freeze_encoder_leaves_only_decoder_and_heads_trainable():
    model = _build("mobilenetv2", freeze_encoder=True)
    assert model.get_layer("encoder").trainable_weights == []
    assert model.get_layer("label_logits").trainable and model.get_layer("mask_logits").trainable


def test_saved_compiled_model_loads_in_a_fresh_process(tmp_path):
    import subprocess
    import sys

    from mtunet.training.config import TrainConfig
    from mtunet.training.loop import compile_model

    model = _build("mobilenetv2")
    compile_model(model, TrainConfig(), class_weights=[1.0, 2.0, 1.0])
    model.save(tmp_path / "best.keras")
    code = (f"import mtunet; m = mtunet.load_model({str(tmp_path / 'best.keras')!r}); "
            "print(m.output_names, m.loss['label'].class_weights)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "['label', 'mask'] [1.0, 2.0, 1.0]"
