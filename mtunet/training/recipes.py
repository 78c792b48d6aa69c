"""Named training recipes: the options a run starts from, before the options the user gives.

``mtunet`` is ``TrainConfig``'s own defaults (the multi-task U-Net paper's recipe with the changes measured better on
real data, BENCHMARKS.md); ``paper`` reproduces the paper exactly; a preset that comes with its paper's training
(``resformer``) names its recipe, which ``--architecture`` starts from unless ``--recipe`` says otherwise. Free of
Keras and TensorFlow, like ``config.py``, so that ``mtunet train --help`` lists the recipes at once.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named set of ``TrainConfig`` options, with one line for ``--help`` and the reference it follows."""

    name: str
    description: str
    options: dict


RECIPES = {recipe.name: recipe for recipe in (
    Recipe("mtunet", "mtunet's defaults: the paper's recipe with the changes measured on BUS-BRA (BCE + soft Dice "
                     "mask loss, a learning rate halved on plateaus, precise BatchNorm statistics)", {}),
    # every option of the paper's recipe spelled out, so that it stays the paper's whatever mtunet's defaults become
    Recipe("paper", "the multi-task U-Net paper exactly: 5 x BCE + 1 x balanced class cross-entropy, Adam 1e-3, "
                    "batch 32, 50 epochs, early stopping, a constant learning rate, rotation / flip / shear",
           {"weights": "imagenet", "loss_weights": (5.0, 1.0), "seg_loss": "bce", "dice": "image",
            "class_weights": "balanced", "label_smoothing": 0.0, "optimizer": "adam", "learning_rate": 1e-3,
            "weight_decay": 0.0, "batch_size": 32, "epochs": 50, "patience": 10, "reduce_lr_patience": 0,
            "augment": True, "shear": True, "precise_bn": False, "ema_momentum": 0.0}),
    # the ResFormer paper's training: 0.25 x class-weighted cross-entropy + 1 x Dice, AdamW 3e-3 (betas 0.9, 0.999,
    # weight decay 1e-4), batch 8, 100 epochs keeping the lowest validation loss (no early stopping, a constant
    # rate), random initialisation, random rotation and flips both ways (no shear)
    Recipe("resformer", "the ResFormer paper's: 0.25 x balanced class cross-entropy + 1 x Dice, AdamW 3e-3 (weight "
                        "decay 1e-4), batch 8, 100 epochs, no early stopping, flips both ways, no shear",
           {"encoder": "resformer_sequential", "weights": None, "loss_weights": (1.0, 0.25), "seg_loss": "dice",
            "dice": "image", "class_weights": "balanced", "optimizer": "adamw", "learning_rate": 3e-3,
            "weight_decay": 1e-4, "batch_size": 8, "epochs": 100, "patience": 100, "reduce_lr_patience": 0,
            "flip": "horizontal_and_vertical", "shear": False}),
    # Res-MTNet's: Adam 1e-4, cross-entropy with label smoothing (the paper gives no smoothing factor, nor task
    # weights: 0.1 and 1 each here), 224 px; the rest mtunet's
    Recipe("res_mtnet", "Res-MTNet's (Lin, Zhang et al.): fused DenseNet-161 + EfficientNet-B7, Adam 1e-4, "
                        "label smoothing 0.1 (not given in the paper), every task weighing 1, 224 px",
           {"encoder": "densenet161+efficientnetb7", "optimizer": "adam", "learning_rate": 1e-4,
            "label_smoothing": 0.1, "loss_weights": (1.0, 1.0), "image_size": 224}),
    # MTL-DRNet's: lambda_cls x CE + lambda_seg x L_seg with a softmax grade head; the paper gives neither the weights
    # (1 each here), the mask loss (mtunet's BCE + soft Dice), the size (512 px: microaneurysms are a few pixels
    # there), the batch (8) nor the augmentation (flips both ways: a fundus has no up and down that matters)
    Recipe("mtl_drnet", "MTL-DRNet's as far as the paper gives it: softmax grade cross-entropy + mask loss weighing 1 "
                        "each (not given), EfficientNet-B0, 512 px, batch 8, flips both ways",
           {"encoder": "efficientnetb0", "loss_weights": (1.0, 1.0), "ordinal_loss": "softmax", "image_size": 512,
            "batch_size": 8, "flip": "horizontal_and_vertical"}),
)}
