"""Several heads per image: the regression head, missing targets in every loss, the residual shared layer, two
encoders fused, and loss weights by head name, each against a hand computation."""

import numpy as np
import pytest
import keras
from sklearn.metrics import mean_absolute_error

from mtunet.errors import ConfigError
from mtunet.models import ModelSpec, build_model_from_spec, load_model, make_spec, model_heads
from mtunet.models.heads import build_head
from mtunet.models.layers import PixelPreprocessing
from mtunet.models.losses import StandardisedRegressionLoss, WeightedCategoricalCrossentropy
from mtunet.models.metrics import PresentMeanAbsoluteError
from mtunet.training.config import TrainConfig
from mtunet.training.loop import compile_model, head_loss_weights

SIZE = 32


def _images(count=4, channels=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE, channels)).astype("float32")


def test_class_loss_ignores_missing_labels():
    y_true = np.array([[0, 1], [0, 0], [1, 0]], "float32")  # the second example has no label
    y_pred = np.array([[0.2, 0.8], [0.5, 0.5], [0.6, 0.4]], "float32")
    smoothing, weights = 0.2, [2.0, 0.5]
    targets = y_true[[0, 2]] * (1 - smoothing) + smoothing / 2
    per_example = -(targets * np.log(y_pred[[0, 2]])).sum(axis=1) * np.array([0.5, 2.0])
    loss = WeightedCategoricalCrossentropy(weights, label_smoothing=smoothing)(y_true, y_pred)
    np.testing.assert_allclose(float(loss), per_example.mean(), rtol=1e-5)


@pytest.mark.parametrize("kind", ["mse", "huber"])
def test_regression_loss_is_standardised_and_ignores_nan_targets(kind):
    y_true = np.array([[10.0, np.nan], [30.0, 2.0], [np.nan, -1.0]], "float32")
    y_pred = np.array([[14.0, 9.0], [10.0, 2.5], [0.0, 1.0]], "float32")
    mean, std = [20.0, 0.0], [4.0, 0.5]
    present = ~np.isnan(y_true)
    error = ((y_pred - np.nan_to_num(y_true)) / std)[present]  # 1, -5, 1, 4
    per_value = error ** 2 if kind == "mse" else np.where(np.abs(error) <= 1, 0.5 * error ** 2, np.abs(error) - 0.5)
    loss = StandardisedRegressionLoss(mean, std, kind)(y_true, y_pred)
    np.testing.assert_allclose(float(loss), per_value.mean(), rtol=1e-5)
    assert float(StandardisedRegressionLoss(mean, std, kind)(np.full_like(y_true, np.nan), y_pred)) == 0.0


def test_regression_mae_skips_missing_values_as_sklearn_on_the_present_ones():
    y_true = np.array([[10.0, np.nan], [30.0, 2.0], [np.nan, -1.0]], "float32")
    y_pred = np.array([[14.0, 9.0], [10.0, 2.5], [0.0, 1.0]], "float32")
    metric = PresentMeanAbsoluteError()
    metric.update_state(y_true[:2], y_pred[:2])
    metric.update_state(y_true[2:], y_pred[2:])
    present = ~np.isnan(y_true)
    assert float(metric.result()) == pytest.approx(mean_absolute_error(y_true[present], y_pred[present]))


def test_regression_head_config_errors_name_the_head():
    def spec(**options):
        head = {"type": "regression", "name": "size", "targets": ["mm"], **options}
        return ModelSpec(encoder="mobilenetv2", input_shape=(SIZE, SIZE, 1), heads=(head,), decoder=None).validate()

    with pytest.raises(ConfigError, match="regression head 'size': mean and std need one value per target"):
        spec(mean=[1.0, 2.0])
    with pytest.raises(ConfigError, match="regression head 'size': std must be positive"):
        spec(std=[0.0])
    with pytest.raises(ConfigError, match="unknown regression loss 'l1'; expected one of: mse, huber"):
        spec(loss="l1")
    with pytest.raises(ConfigError, match="head 'size' reads the shared layer; the spec has none"):
        spec(levels=["shared"])


@pytest.fixture(scope="module")
def fused():
    """A Res-MTNet-like model at 32 px: MobileNetV2 + EfficientNet-B0 fused, a shared layer, two class heads and a
    regression head, no decoder."""
    keras.utils.set_random_seed(0)
    spec = make_spec("res_mtnet", encoder="mobilenetv2+efficientnetb0", input_shape=(SIZE, SIZE, 3), num_classes=3,
                     task="classification", extra_heads=[
                         {"type": "classification", "name": "state", "num_classes": 2},
                         {"type": "regression", "name": "size", "targets": ["mm"], "mean": [15.0], "std": [5.0]}])
    return spec, build_model_from_spec(spec, weights=None)


def test_fused_encoders_each_read_the_image_with_their_own_scaling(fused):
    spec, model = fused
    assert spec.encoders == ("mobilenetv2", "efficientnetb0") and spec.decoder is None
    assert [layer.scaling for layer in model.layers if isinstance(layer, PixelPreprocessing)] == ["tf", "none"]
    images = _images()
    first, second = model.get_layer("encoder"), model.get_layer("encoder_2")
    expected = np.concatenate([first.predict(images / 127.5 - 1.0, verbose=0)["P5"],
                               second.predict(images, verbose=0)["P5"]], axis=-1)
    bottleneck = keras.Model(model.inputs, model.get_layer("bottleneck").output).predict(images, verbose=0)
    np.testing.assert_allclose(bottleneck, expected, rtol=1e-4, atol=1e-4)
    assert list(model_heads(model)) == ["label", "state", "size"]


def test_shared_layer_is_a_residual_map_of_the_pooled_bottleneck(fused):
    _, model = fused
    images = _images(seed=1)
    pooled, shared = keras.Model(model.inputs, [model.get_layer("shared_pool").output,
                                                model.get_layer("shared").output]).predict(images, verbose=0)
    kernel, bias = model.get_layer("shared_dense").get_weights()
    projection = model.get_layer("shared_projection").get_weights()[0]
    np.testing.assert_allclose(shared, np.maximum(pooled @ kernel + bias, 0) + pooled @ projection,
                               rtol=1e-4, atol=1e-4)
    for name in ("label", "state", "size"):
        assert model.get_layer(f"{name}_dropout").input is model.get_layer("shared").output


def test_fused_model_trains_with_missing_targets_and_reloads_identically(fused, tmp_path):
    _, model = fused
    rng = np.random.default_rng(2)
    images = _images(8, seed=2)
    labels = np.eye(3, dtype="float32")[rng.integers(0, 3, 8)]
    state = np.eye(2, dtype="float32")[rng.integers(0, 2, 8)]
    state[::3] = 0.0  # missing labels
    size = rng.normal(15.0, 5.0, (8, 1)).astype("float32")
    size[1] = np.nan
    targets = {"label": labels, "state": state, "size": size}
    compile_model(model, TrainConfig(loss_weights={"size": 2.0, "label": 0.5}, learning_rate=1e-4), None)
    before = model.get_layer("size_logits").get_weights()[0].copy()
    for _ in range(3):
        losses = model.train_on_batch(images, targets, return_dict=True)
    # a NaN target that reached a loss or its gradient would turn every weight it touches into NaN
    assert all(np.isfinite(value) for value in losses.values())
    after = model.get_layer("size_logits").get_weights()[0]
    assert np.isfinite(after).all() and not np.array_equal(after, before)
    assert all(np.isfinite(weights).all() for weights in model.get_weights())
    model.save(tmp_path / "fused.keras")
    reloaded = load_model(tmp_path / "fused.keras")
    expected, actual = model.predict(images, verbose=0), reloaded.predict(images, verbose=0)
    for name in ("label", "state", "size"):
        np.testing.assert_array_equal(actual[name], expected[name])


def test_fusion_errors_name_the_encoders():
    with pytest.raises(ConfigError, match="encoders mobilenetv2, resformer_sequential cannot be fused: their "
                                          "pyramids differ in depth"):
        ModelSpec(encoder="mobilenetv2+resformer_sequential", input_shape=(SIZE, SIZE, 3), decoder=None,
                  heads=({"type": "classification", "name": "label", "num_classes": 2},)).validate()
    spec = make_spec("res_mtnet", encoder="mobilenetv2+efficientnetb0", input_shape=(SIZE, SIZE, 3), num_classes=2,
                     task="classification")
    with pytest.raises(ConfigError, match=r"the fused encoders mobilenetv2, efficientnetb0 need one weights entry "
                                          r"each \(joined by \+, e.g. a.weights.h5\+none\); received 1"):
        build_model_from_spec(spec, weights="encoder.weights.h5")


def test_fused_encoders_load_one_weights_file_each_joined_by_plus(fused, tmp_path):
    spec, _ = fused
    rng = np.random.default_rng(0)
    files = []
    for name, application in (("mobilenetv2", keras.applications.MobileNetV2),
                              ("efficientnetb0", keras.applications.EfficientNetB0)):
        backbone = application(input_shape=(SIZE, SIZE, 3), include_top=False, weights=None)
        backbone.set_weights([rng.normal(size=w.shape).astype("float32") for w in backbone.get_weights()])
        files.append((tmp_path / f"{name}.weights.h5", backbone.get_weights()))
        backbone.save_weights(files[-1][0])
    model = build_model_from_spec(spec, weights=f"{files[0][0]}+none")
    for saved, loaded in zip(files[0][1], model.get_layer("encoder").get_weights()):
        np.testing.assert_array_equal(saved, loaded)
    assert not any(np.array_equal(saved, loaded) for saved, loaded in zip(
        files[1][1], model.get_layer("encoder_2").get_weights()) if saved.size > 1)
    model = build_model_from_spec(spec, weights=[None, files[1][0]])
    for saved, loaded in zip(files[1][1], model.get_layer("encoder_2").get_weights()):
        np.testing.assert_array_equal(saved, loaded)


def test_loss_weights_by_role_or_by_head_name():
    spec = make_spec("unet", encoder="mobilenetv2", input_shape=(SIZE, SIZE, 3), num_classes=2, extra_heads=[
        {"type": "regression", "name": "area", "targets": ["fraction"]}])
    heads = {config["name"]: build_head(config) for config in spec.heads}
    assert head_loss_weights((5.0, 1.0), heads) == {"label": 1.0, "mask": 5.0, "area": 1.0}
    assert head_loss_weights({"mask": 3.0, "area": 0.5}, heads) == {"label": 1.0, "mask": 3.0, "area": 0.5}
    with pytest.raises(ConfigError, match="--loss-weights names 'lable', not a head of the model; expected some "
                                          "of: label, mask, area"):
        head_loss_weights({"lable": 2.0}, heads)
    with pytest.raises(ConfigError, match=r"--loss-weights mask=0,area=0: weights must be non-negative and not all"):
        TrainConfig(loss_weights={"mask": 0.0, "area": 0.0}).validate()


def test_loss_weight_of_an_unknown_head_stops_training_before_anything_is_written(tmp_path):
    from conftest import write_folder_dataset
    from mtunet.training.loop import train

    data_dir = write_folder_dataset(tmp_path / "lesions", num_patients=8, images_per_patient=2)
    with pytest.raises(ConfigError, match="--loss-weights names 'lesion', not a head of the model"):
        train(encoder="mobilenetv2", weights=None, dataset="folder", data_dir=str(data_dir), image_size=SIZE,
              epochs=1, loss_weights={"lesion": 2.0}, output_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
