"""The ResFormer's parts: the Swin block against a token-by-token NumPy computation (windows, relative position bias,
shifted-window mask, padding), the dilated feature enhancement (DFE) skip module, and the encoder's two variants
(every encoder's shared checks at 64 px are in test_model.py)."""

import keras
import numpy as np
import pytest

from mtunet.models import build_model
from mtunet.models.encoders.swin import MASKED_LOGIT, SwinBlock, window_regions
from mtunet.models.skips import SKIPS
from mtunet.models.skips.dfe import ChannelPooling
from mtunet.training.config import TrainConfig
from mtunet.training.loop import compile_model


def _layer_norm(x, gamma, beta, epsilon=1e-5):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + epsilon) * gamma + beta


def _gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    return np.exp(x) / np.exp(x).sum(-1, keepdims=True)


def swin_block_numpy(block: SwinBlock, x: np.ndarray) -> np.ndarray:
    """The block's output computed one token at a time: each token attends to the tokens of its window (of the
    padded, rolled map) that lie in its own region, with the bias of their relative offset."""
    window, shift, heads = block.window, block.shift, block.num_heads
    _, height, width, channels = x.shape
    padded_height, padded_width = block.padded
    head_channels = channels // heads
    table = np.asarray(block.relative_bias_table)

    def weight(layer, kind):
        return np.asarray(getattr(getattr(block, layer), kind))

    normed = _layer_norm(x, weight("norm1", "gamma"), weight("norm1", "beta"))
    padded = np.zeros((x.shape[0], padded_height, padded_width, channels), "float64")
    padded[:, :height, :width] = normed
    rolled = np.roll(padded, (-shift, -shift), axis=(1, 2))
    regions = window_regions(padded_height, padded_width, window, shift) if shift else \
        np.zeros((padded_height, padded_width), "int64")
    qkv = rolled @ weight("qkv", "kernel") + weight("qkv", "bias")
    query, key, value = np.split(qkv, 3, axis=-1)
    attended = np.zeros_like(rolled)
    for row in range(padded_height):
        for column in range(padded_width):
            top, left = row // window * window, column // window * window
            others = [(r, c) for r in range(top, top + window) for c in range(left, left + window)]
            for head in range(heads):
                part = slice(head * head_channels, (head + 1) * head_channels)
                q = query[:, row, column, part] * head_channels ** -0.5
                logits = np.stack([
                    (q * key[:, r, c, part]).sum(-1)
                    + table[(row - r + window - 1) * (2 * window - 1) + (column - c + window - 1), head]
                    + (MASKED_LOGIT if regions[r, c] != regions[row, column] else 0.0)
                    for r, c in others], axis=-1)
                attention = _softmax(logits)
                attended[:, row, column, part] = sum(attention[:, [index]] * value[:, r, c, part]
                                                     for index, (r, c) in enumerate(others))
    projected = attended @ weight("projection", "kernel") + weight("projection", "bias")
    x = x + np.roll(projected, (shift, shift), axis=(1, 2))[:, :height, :width]
    hidden = _gelu(_layer_norm(x, weight("norm2", "gamma"), weight("norm2", "beta")) @ weight("mlp_hidden", "kernel")
                   + weight("mlp_hidden", "bias"))
    return x + hidden @ weight("mlp_output", "kernel") + weight("mlp_output", "bias")


def _random_block(shape, **options):
    keras.utils.set_random_seed(0)
    block = SwinBlock(name="swin", **options)
    block.build(shape)
    rng = np.random.default_rng(1)
    for variable in block.weights:  # random biases and norms too, so that every term is checked
        variable.assign(rng.normal(0, 0.5, variable.shape).astype("float32"))
    return block


@pytest.mark.parametrize("shape, options, expected_window, expected_shift", [
    ((2, 6, 6, 4), {"num_heads": 2, "window_size": 3, "shifted": False}, 3, 0),   # 4 windows
    ((2, 6, 6, 4), {"num_heads": 2, "window_size": 3, "shifted": True}, 3, 1),    # shifted, masked
    ((1, 5, 7, 4), {"num_heads": 1, "window_size": 3, "shifted": True}, 3, 1),    # padded to 6 x 9
    ((1, 4, 4, 4), {"num_heads": 2, "window_size": 7, "shifted": True}, 4, 0),    # map within one window
])
def test_swin_block_matches_a_token_by_token_computation(shape, options, expected_window, expected_shift):
    block = _random_block(shape, **options)
    x = np.random.default_rng(2).normal(size=shape).astype("float32")
    output = keras.ops.convert_to_numpy(block(x))
    assert (block.window, block.shift) == (expected_window, expected_shift)
    assert output.shape == shape
    np.testing.assert_allclose(output, swin_block_numpy(block, x.astype("float64")), rtol=1e-4, atol=1e-4)


def test_a_shifted_window_never_attends_across_the_border():
    # 6 x 6 map, windows of 3, shift 1: after the roll, the bottom-right window holds tokens from all four corners
    # of the image; token (5, 5) of the rolled map is image token (0, 0), whose region is its own.
    block = _random_block((1, 6, 6, 4), num_heads=1, window_size=3, shifted=True)
    for variable in (block.mlp_output.kernel, block.mlp_output.bias):  # the output is then the attention's alone
        variable.assign(np.zeros(variable.shape, "float32"))
    x = np.random.default_rng(3).normal(size=(1, 6, 6, 4)).astype("float32")
    base = keras.ops.convert_to_numpy(block(x))
    changed = x.copy()
    changed[0, 5, 5] = [3.0, -2.0, 0.5, 4.0]  # image token (5, 5): in the same rolled window as (0, 0), another region
    moved = keras.ops.convert_to_numpy(block(changed))
    np.testing.assert_allclose(moved[0, 0, 0], base[0, 0, 0], atol=1e-5)
    assert np.abs(moved[0, 4, 4] - base[0, 4, 4]).max() > 1e-3  # (4, 4) shares (5, 5)'s region and window


def _dfe_model(shape=(20, 20, 8)):
    keras.utils.set_random_seed(0)
    feature = keras.Input(shape)
    output = SKIPS.get("dfe").apply(feature, name="skip_P2")
    return keras.Model(feature, output)


def test_dfe_keeps_the_features_shape_with_three_dilated_branches():
    model = _dfe_model()
    assert model.output.shape == (None, 20, 20, 8)
    rates = {layer.name: layer.dilation_rate for layer in model.layers
             if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3)}
    assert rates == {"skip_P2_d6_conv": (6, 6), "skip_P2_d12_conv": (12, 12), "skip_P2_d18_conv": (18, 18)}
    assert model.get_layer("skip_P2_attention_map").kernel_size == (7, 7)


def test_dfe_multiplies_the_summed_branches_by_the_spatial_attention_map():
    model = _dfe_model()
    probe = keras.Model(model.input, [model.get_layer("skip_P2_d6_project_bn").output,
                                      model.get_layer("skip_P2_d12_project_bn").output,
                                      model.get_layer("skip_P2_d18_project_bn").output,
                                      model.get_layer("skip_P2_attention_map").output, model.output])
    feature = np.random.default_rng(0).normal(size=(2, 20, 20, 8)).astype("float32")
    *branches, attention, output = (np.asarray(value) for value in probe(feature))
    enhanced = np.maximum(sum(branches), 0.0)
    assert attention.shape == (2, 20, 20, 1) and ((attention > 0) & (attention < 1)).all()
    np.testing.assert_allclose(output, enhanced * attention, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ChannelPooling()(enhanced)),
                               np.stack([enhanced.mean(-1), enhanced.max(-1)], axis=-1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["sequential", "parallel"])
def test_resformer_encoder_gives_four_levels_and_trains_at_224_px(variant):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = build_model(f"resformer_{variant}", input_shape=(224, 224, 3), num_classes=2, weights=None, skip="dfe",
                        decoder_filters=(16, 16, 16, 16, 8))
    encoder = model.get_layer("encoder")
    assert {level: tuple(feature.shape[1:]) for level, feature in encoder.output.items()} == {
        "P1": (112, 112, 64), "P2": (56, 56, 128), "P3": (28, 28, 256), "P4": (14, 14, 512)}
    assert [encoder.get_layer(f"level{level}_swin_wmsa").num_heads for level in range(1, 5)] == [2, 4, 8, 16]
    swin_input = encoder.get_layer("level2_swin_wmsa").input
    if variant == "sequential":  # the Swin pair reads the ResNet block's output
        assert swin_input is encoder.get_layer("level2_resnet1_relu").output
    else:  # both branches read the level's input and are summed
        assert swin_input is encoder.get_layer("level2_merge").output
        assert encoder.get_layer("level2_sum").input[0] is encoder.get_layer("level2_resnet1_relu").output
    # Adam at mtunet's default 1e-3 makes this from-scratch transformer's loss jump after 3 steps on one batch
    compile_model(model, TrainConfig(seg_loss="bce_dice", learning_rate=1e-4), class_weights=None)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    targets = {"label": np.eye(2, dtype="float32")[[0, 1]],
               "mask": (rng.random((2, 224, 224, 1)) > 0.5).astype("float32")}
    losses = [model.train_on_batch(images, targets, return_dict=True)["loss"] for _ in range(3)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_resformer_preset_has_the_papers_decoder_class_head_and_recipe(tmp_path):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = build_model(architecture="resformer", encoder="resformer_parallel", input_shape=(64, 64, 3),
                        num_classes=3, weights=None)
    # multi-scale class head: the pooled P3 (256) and P4 (512) concatenated, a hidden layer of 256, then the logits
    assert model.get_layer("label_pool").output.shape[-1] == 256 + 512
    assert model.get_layer("label_hidden").units == 256 and model.get_layer("label_logits").units == 3
    # a DFE module on every skip, one conv block per decoder stage at the widths of the encoder's levels
    assert {layer.name for layer in model.layers if layer.name.endswith("_attention_map")} == {
        f"skip_P{level}_attention_map" for level in (1, 2, 3)}
    stages = {stage: model.get_layer(f"decoder_stage{stage}_conv1_conv").filters for stage in (2, 3, 4, 5)}
    assert stages == {2: 256, 3: 128, 4: 64, 5: 32}
    assert not any(layer.name.startswith("decoder_stage1") or layer.name.endswith("_conv2_conv")
                   for layer in model.layers)
    config = TrainConfig.from_recipe("resformer", epochs=3)
    assert (config.optimizer, config.learning_rate, config.weight_decay, config.batch_size) == ("adamw", 3e-3, 1e-4, 8)
    assert (config.loss_weights, config.seg_loss, config.shear, config.epochs) == ((1.0, 0.25), "dice", False, 3)
    assert TrainConfig.from_recipe("unet") == TrainConfig()
    compile_model(model, config, class_weights=None)
    assert isinstance(model.optimizer, keras.optimizers.AdamW) and model.optimizer.weight_decay == 1e-4
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    targets = {"label": np.eye(3, dtype="float32")[[0, 2]], "mask": np.zeros((2, 64, 64, 1), "float32")}
    assert np.isfinite(model.train_on_batch(images, targets, return_dict=True)["loss"])
    model.save(tmp_path / "resformer.keras")
    reloaded = keras.saving.load_model(tmp_path / "resformer.keras", compile=False)
    for name, output in model.predict(images, verbose=0).items():
        np.testing.assert_allclose(reloaded.predict(images, verbose=0)[name], output, rtol=1e-5, atol=1e-5)


def test_the_recipe_yields_to_given_options_and_to_option_errors(monkeypatch):
    from click.testing import CliRunner

    import cli
    import mtunet.training.loop
    from mtunet.data.augment import Augmenter
    from mtunet.errors import ConfigError

    received = []
    monkeypatch.setattr(mtunet.training.loop, "train", lambda config: received.append(config) or 1 / 0)
    CliRunner().invoke(cli.main, ["train", "--architecture", "resformer", "--batch-size", "4"])
    assert (received[0].batch_size, received[0].optimizer, received[0].encoder) == (4, "adamw", "resformer_sequential")
    with pytest.raises(ConfigError, match="--weight-decay 0.1: expected 0, or a positive value with --optimizer adamw"):
        TrainConfig(weight_decay=0.1).validate()
    assert [type(layer).__name__ for layer in Augmenter(flip="horizontal_and_vertical", shear=False).layers] == [
        "RandomFlip", "RandomRotation"]
