"""Named training recipes: the paper's exactly, mtunet's defaults, a preset's own, and given options on top."""

import pytest
from click.testing import CliRunner

import cli
import mtunet
import mtunet.training.loop
from mtunet.errors import ConfigError
from mtunet.training.config import TrainConfig


def test_the_paper_recipe_is_the_papers_whatever_the_defaults():
    config = TrainConfig.from_recipe(recipe="paper")
    assert config.recipe == "paper"
    # the multi-task U-Net paper: 5 x BCE + 1 x balanced CCE, Adam 1e-3, batch 32, 50 epochs, early stopping,
    # rotation / flip / shear, ImageNet weights, nothing the paper does not do
    assert (config.loss_weights, config.seg_loss, config.class_weights, config.label_smoothing) == (
        (5.0, 1.0), "bce", "balanced", 0.0)
    assert (config.optimizer, config.learning_rate, config.batch_size, config.epochs) == ("adam", 1e-3, 32, 50)
    assert (config.reduce_lr_patience, config.precise_bn, config.ema_momentum) == (0, False, 0.0)
    assert (config.augment, config.shear, config.weights) == (True, True, "imagenet")


UNKNOWN_RECIPE = r"--recipe 'nnunet': expected one of: mtunet, paper, resformer, res_mtnet, mtl_drnet"


def test_mtunet_is_the_default_recipe_and_a_preset_names_its_own():
    assert list(mtunet.RECIPES) == ["mtunet", "paper", "resformer", "res_mtnet", "mtl_drnet"]
    assert TrainConfig().recipe == TrainConfig.from_recipe().recipe == "mtunet"
    assert TrainConfig.from_recipe() == TrainConfig()
    assert (TrainConfig().seg_loss, TrainConfig().dice) == ("bce_dice", "image")
    resformer = TrainConfig.from_recipe("resformer")
    assert (resformer.recipe, resformer.optimizer, resformer.seg_loss) == ("resformer", "adamw", "dice")
    res_mtnet = TrainConfig.from_recipe("res_mtnet")
    assert (res_mtnet.recipe, res_mtnet.encoder, res_mtnet.learning_rate, res_mtnet.label_smoothing) == (
        "res_mtnet", "densenet161+efficientnetb7", 1e-4, 0.1)
    mtl_drnet = TrainConfig.from_recipe("mtl_drnet")
    assert (mtl_drnet.recipe, mtl_drnet.encoder, mtl_drnet.loss_weights, mtl_drnet.image_size,
            mtl_drnet.ordinal_loss) == ("mtl_drnet", "efficientnetb0", (1.0, 1.0), 512, "softmax")
    # a recipe named replaces the preset's
    assert TrainConfig.from_recipe("resformer", recipe="paper").optimizer == "adam"
    with pytest.raises(ConfigError, match=UNKNOWN_RECIPE):
        TrainConfig.from_recipe(recipe="nnunet")
    with pytest.raises(ConfigError, match=UNKNOWN_RECIPE):
        TrainConfig(recipe="nnunet").validate()


def test_cli_recipe_is_stored_and_given_options_replace_its_own(monkeypatch):
    received = []
    monkeypatch.setattr(mtunet.training.loop, "train", lambda config: received.append(config) or 1 / 0)
    CliRunner().invoke(cli.main, ["train", "--recipe", "paper", "--epochs", "3"])
    CliRunner().invoke(cli.main, ["train", "--seg-loss", "bce"])
    paper, default = received
    assert (paper.recipe, paper.seg_loss, paper.reduce_lr_patience, paper.epochs) == ("paper", "bce", 0, 3)
    assert (default.recipe, default.seg_loss, default.reduce_lr_patience) == ("mtunet", "bce", 3)
    result = CliRunner().invoke(cli.main, ["train", "--help"])
    assert "--recipe [mtunet|paper|resformer|res_mtnet|mtl_drnet]" in result.output
