"""Training and inference throughput: images per second of a multi-task model's training step and of its forward
pass on a batch, and peak memory, per architecture preset and encoder.

    python benchmarks/training.py [--architectures unet,attention_unet] [--encoders all|mobilenetv2,vgg16,...]
                                  [--image-sizes 128,224] [--batch-size 16] [--steps 10] [--jit-compile]
                                  [--mixed-precision]

By default the unet preset on every encoder of the registry at 128 and 224 px. Random images in memory (the input
pipeline is measured by benchmarks/pipeline.py), each preset's training recipe (``TrainConfig.from_recipe``: for unet
the paper's loss, 5 x BCE + class-weighted cross-entropy, and Adam; for resformer 1 x Dice + 0.25 x cross-entropy and
AdamW); timed steps and forward passes follow 3 warm-up ones that trace and compile. Each configuration runs in a
fresh process so that peak resident memory is its own; one that fails (e.g. out of memory) is reported as such and
the sweep goes on. Prints a Markdown table.
"""

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WARMUP_STEPS = 3


def measure(architecture, encoder, image_size, batch_size, steps, jit_compile, mixed_precision):
    """``{"images_per_second", "inference_images_per_second", "peak_rss_mib"}`` of ``steps`` training steps and
    ``steps`` forward passes after the warm-up."""
    import keras
    import numpy as np

    from mtunet.models import build_model
    from mtunet.training.config import TrainConfig
    from mtunet.training.loop import compile_model

    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_model(encoder, architecture=architecture, input_shape=(image_size, image_size, 3), num_classes=2,
                        weights=None)
    compile_model(model, TrainConfig.from_recipe(architecture, jit_compile=jit_compile), class_weights=[1.0, 1.0])
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    targets = {"label": np.eye(2, dtype="float32")[rng.integers(0, 2, batch_size)],
               "mask": (rng.random((batch_size, image_size, image_size, 1)) > 0.5).astype("float32")}
    for _ in range(WARMUP_STEPS):
        model.train_on_batch(images, targets)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, targets)
    seconds = time.perf_counter() - start
    for _ in range(WARMUP_STEPS):
        model.predict_on_batch(images)
    start = time.perf_counter()
    for _ in range(steps):
        model.predict_on_batch(images)
    inference_seconds = time.perf_counter() - start
    return {"images_per_second": steps * batch_size / seconds,
            "inference_images_per_second": steps * batch_size / inference_seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architectures", default="unet", help="comma-separated presets (mtunet architectures)")
    parser.add_argument("--encoders", default="all",
                        help="comma-separated encoder names (fused ones as A+B), or 'all' (the registry)")
    parser.add_argument("--image-sizes", default="128,224")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: PRESET:ENCODER:SIZE, measured in this process
    args = parser.parse_args()

    if args.one:
        architecture, encoder, size = args.one.split(":")
        print(json.dumps(measure(architecture, encoder, int(size), args.batch_size, args.steps, args.jit_compile,
                                 args.mixed_precision)))
        return
    from mtunet.models import ENCODERS, PRESETS
    from mtunet.models.spec import encoder_names

    architectures = args.architectures.split(",")
    encoders = list(ENCODERS) if args.encoders == "all" else args.encoders.split(",")
    for architecture in architectures:  # an unknown name fails here, listing the valid ones, before any measurement
        PRESETS.get(architecture)
    for encoder in encoders:  # fused encoders as A+B
        for name in encoder_names(encoder):
            ENCODERS.get(name)
    sizes = [int(size) for size in args.image_sizes.split(",")]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s); batch {args.batch_size}, "
          f"{args.steps} timed steps after {WARMUP_STEPS} warm-up; jit_compile={args.jit_compile}, "
          f"mixed_precision={args.mixed_precision}")
    print("\n| architecture | encoder | size | training images/s | inference images/s | peak RSS |\n"
          "|---|---|---:|---:|---:|---:|")
    for architecture, encoder, size in itertools.product(architectures, encoders, sizes):
        command = [sys.executable, __file__, "--one", f"{architecture}:{encoder}:{size}", "--batch-size",
                   str(args.batch_size), "--steps", str(args.steps)]
        command += ["--jit-compile"] * args.jit_compile + ["--mixed-precision"] * args.mixed_precision
        finished = subprocess.run(command, capture_output=True, text=True)
        row = f"| {architecture} | {encoder} | {size} |"
        if finished.returncode:
            reason = (finished.stderr.strip().splitlines() or [f"exit status {finished.returncode}"])[-1]
            print(f"{row} failed: {reason[:80]} | | |", flush=True)
            continue
        result = json.loads(finished.stdout.strip().splitlines()[-1])
        print(f"{row} {result['images_per_second']:.1f} | {result['inference_images_per_second']:.1f} | "
              f"{result['peak_rss_mib']:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
