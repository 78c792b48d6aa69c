"""How far mtunet's numerics-changing speed options (bfloat16, XLA) move training from float32, on the same data.

    python benchmarks/option_numerics.py [--size 64] [--steps 40] [--batch-size 16] [--options float32,bf16,jit]

Trains the MobileNetV2 multi-task model from the same random initialisation, on the same synthetic images in the
same order, once per option, each in a fresh process, then predicts 64 held-out synthetic images. Prints each
option's final training loss, held-out Dice and accuracy against the ground truth, and its agreement with float32
(Dice between the two thresholded masks, share of equal class predictions). The training bar on real data
(issue 5) is the accuracy check that matters; this is the quick one.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

OPTIONS = {"float32": [], "jit": ["--jit-compile"], "bf16": ["--mixed-precision"],
           "bf16+jit": ["--mixed-precision", "--jit-compile"]}
HELD_OUT = 64


def _examples(size, count, first_patient):
    """``count`` synthetic images, masks and class indices from patient ``first_patient`` on."""
    from mtunet.data import synthetic

    patients = first_patient + count // synthetic.IMAGES_PER_PATIENT
    examples = list(synthetic.synthetic_examples(num_patients=patients, size=size))[
        first_patient * synthetic.IMAGES_PER_PATIENT:]
    images = np.stack([example["image"] for example in examples]).astype("float32")
    masks = (np.stack([example["mask"] for example in examples]) > 0).astype("float32")
    labels = np.array([synthetic.CLASS_NAMES.index(example["label"]) for example in examples])
    return images, masks, labels


def train_and_predict(size, steps, batch_size, jit_compile, mixed_precision, output):
    import keras

    from mtunet.models import build_model
    from mtunet.training.config import TrainConfig
    from mtunet.training.loop import compile_model

    num_classes = 3
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    model = build_model("mobilenetv2", input_shape=(size, size, 1), num_classes=num_classes, weights=None)
    compile_model(model, TrainConfig(jit_compile=jit_compile), class_weights=[1.0] * num_classes)
    images, masks, labels = _examples(size, steps * batch_size // 4, first_patient=HELD_OUT // 2)
    losses = []
    for step in range(steps):
        # the training images cycle in a fixed order: 4 passes over steps/4 distinct batches
        batch = slice((step * batch_size) % len(images), (step * batch_size) % len(images) + batch_size)
        logs = model.train_on_batch(images[batch], {"label": np.eye(num_classes)[labels[batch]], "mask": masks[batch]},
                                    return_dict=True)
        losses.append(float(logs["loss"]))
    test_images, _, _ = _examples(size, HELD_OUT, first_patient=0)
    predictions = model.predict(test_images, batch_size=batch_size, verbose=0)
    np.savez(output, mask=np.asarray(predictions["mask"], "float32"), label=np.asarray(predictions["label"]),
             losses=np.array(losses))


def _dice(first, second):
    """Mean per-image Dice of two binary mask stacks (1 where both are empty)."""
    axes = tuple(range(1, first.ndim))
    intersection = (first * second).sum(axes)
    total = first.sum(axes) + second.sum(axes)
    return float(np.mean(np.where(total > 0, 2 * intersection / np.maximum(total, 1), 1.0)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--options", default=",".join(OPTIONS), help="float32 first, then some of: "
                        f"{', '.join(list(OPTIONS)[1:])}")
    parser.add_argument("--one", nargs=2, metavar=("OPTION", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        option, output = args.one
        train_and_predict(args.size, args.steps, args.batch_size, "--jit-compile" in OPTIONS[option],
                          "--mixed-precision" in OPTIONS[option], output)
        return

    import tempfile

    options = args.options.split(",")
    if options[0] != "float32" or any(option not in OPTIONS for option in options):
        parser.error(f"--options {args.options}: expected float32 first, then some of: {', '.join(OPTIONS)}")
    _, test_masks, test_labels = _examples(args.size, HELD_OUT, first_patient=0)
    results = {}
    with tempfile.TemporaryDirectory() as temporary:
        for option in options:
            output = os.path.join(temporary, f"{option}.npz")
            subprocess.run([sys.executable, __file__, "--size", str(args.size), "--steps", str(args.steps),
                            "--batch-size", str(args.batch_size), "--one", option, output], check=True)
            with np.load(output) as arrays:
                results[option] = {name: arrays[name] for name in arrays.files}
    reference = results["float32"]
    print(f"{args.steps} training steps of batch {args.batch_size} at {args.size} px from the same initialisation; "
          f"{HELD_OUT} held-out images")
    print(f"{'option':<10}{'final loss':>12}{'Dice':>8}{'accuracy':>10}{'Dice vs f32':>13}{'same class':>12}")
    for option, result in results.items():
        masks = (result["mask"] > 0.5).astype("float32")
        classes = result["label"].argmax(-1)
        print(f"{option:<10}{result['losses'][-1]:>12.4f}{_dice(masks, test_masks):>8.3f}"
              f"{np.mean(classes == test_labels):>10.3f}"
              f"{_dice(masks, (reference['mask'] > 0.5).astype('float32')):>13.3f}"
              f"{np.mean(classes == reference['label'].argmax(-1)):>12.3f}")
    print(json.dumps({option: [round(float(loss), 4) for loss in result["losses"]]
                      for option, result in results.items()}))


if __name__ == "__main__":
    main()
