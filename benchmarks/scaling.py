"""Scaling study: training time per epoch and peak memory against image size and against the number of images.

    python benchmarks/scaling.py [--image-sizes 128 224 384 512] [--factors 1 4 16] [--batch-size 8] [--steps 3]
                                 [--memory-limit 0] [--output benchmarks/scaling.png]

Writes folder datasets of 1400 x FACTOR synthetic images (benchmarks/memory.py's ``write_dataset``) to a temporary
folder. Each point runs in a fresh process: ``load_dataset`` (streamed by default, ``--memory-limit 0``), one full
pass over the augmented training pipeline without the model (the input pipeline's epoch), then MobileNetV2
multi-task training (``compile_model``, ``fit``) on that pipeline: one warm-up step, then ``--steps`` timed steps.
A training epoch is too long to run at every point on 2 cores, so its time is extrapolated: seconds per timed step
x steps per epoch. Image sizes are swept on the 1x dataset, dataset sizes at the first image size. Peak memory is
the process's peak resident set size, all of it (TensorFlow, model, activations, pipeline buffers).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from memory import write_dataset  # noqa: E402  (benchmarks/memory.py, beside this script)

BASE_IMAGES = 1400  # the synthetic dataset's size (mtunet.data.synthetic.NUM_PATIENTS x IMAGES_PER_PATIENT)


def measure(data_dir, image_size, batch_size, steps, memory_limit):
    """One point: load time, the input pipeline's epoch, seconds per training step, epoch estimate, peak RSS."""
    from mtunet.data import load_dataset
    from mtunet.models import build_model
    from mtunet.training.config import TrainConfig
    from mtunet.training.loop import compile_model

    start = time.perf_counter()
    data = load_dataset("folder", data_dir=data_dir, image_size=image_size, memory_limit=memory_limit)
    train = data.pipeline("train", batch_size=batch_size, training=True)
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    batches = sum(1 for _ in train)
    pipeline_seconds = time.perf_counter() - start

    model = build_model("mobilenetv2", input_shape=(image_size, image_size, data.info.channels),
                        num_classes=data.info.num_classes, weights=None)
    compile_model(model, TrainConfig(), data.class_weights())
    model.fit(train.take(1), verbose=0, shuffle=False)  # traces the training step; the pipeline shuffles
    start = time.perf_counter()
    model.fit(train.take(steps), verbose=0, shuffle=False)
    step_seconds = (time.perf_counter() - start) / steps
    return {"image_size": image_size, "train_images": int(data.info.split_sizes["train"]), "storage": data.info.storage,
            "load_s": load_seconds, "pipeline_epoch_s": pipeline_seconds, "step_s": step_seconds,
            "epoch_s": step_seconds * batches, "steps_per_epoch": batches,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load_average": os.getloadavg()[0]}


def run_point(data_dir, image_size, args):
    command = [sys.executable, __file__, "--measure", str(data_dir), str(image_size), "--batch-size",
               str(args.batch_size), "--steps", str(args.steps), "--memory-limit", str(args.memory_limit)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    print(f"{result['train_images']:>7} {image_size:>5} {result['storage']:>7} {result['load_s']:>8.1f} "
          f"{result['pipeline_epoch_s']:>10.1f} {result['step_s']:>8.2f} {result['epoch_s']:>10.0f} "
          f"{result['peak_rss_mib']:>9.0f} {result['load_average']:>6.1f}", flush=True)
    return result


def _linear_fit_through_origin(xs, ys):
    slope = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    return [slope * x for x in xs]


def plot(by_size, by_count, path):
    """Two rows (image size, number of images) x two columns (epoch time with a line through 0, peak RSS)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    sweeps = [(by_size, "megapixels per image (side 128 ... 512)",
               lambda point: point["image_size"] ** 2 / 1e6, lambda point: f"{point['image_size']}"),
              (by_count, "training images", lambda point: point["train_images"],
               lambda point: f"{point['train_images']}")]
    for row, (points, label, x_of, name_of) in zip(axes, sweeps):
        xs = [x_of(point) for point in points]
        epochs = [point["epoch_s"] / 60 for point in points]
        row[0].plot(xs, epochs, "o-", label="measured (extrapolated from timed steps)")
        row[0].plot(xs, _linear_fit_through_origin(xs, epochs), "--", color="gray", label="linear through 0")
        row[0].set(xlabel=label, ylabel="training minutes per epoch", title="time per epoch")
        row[0].legend(fontsize=8)
        row[1].plot(xs, [point["peak_rss_mib"] / 1024 for point in points], "o-")
        row[1].set(xlabel=label, ylabel="peak RSS (GiB)", title="peak memory", ylim=(0, None))
        for axis in row:
            for x, point in zip(xs, points):
                axis.annotate(name_of(point), (x, 0), textcoords="offset points", xytext=(0, 4), fontsize=7,
                              ha="center", xycoords=("data", "axes fraction"))
    figure.suptitle("mtunet MobileNetV2 multi-task training on this CPU (synthetic folder datasets, streamed)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[128, 224, 384, 512])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16], help="multiples of 1400 images")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per point")
    parser.add_argument("--memory-limit", type=int, default=0, help="load_dataset's memory_limit (0 streams)")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("scaling.png"))
    parser.add_argument("--measure", nargs=2, metavar=("DATA_DIR", "IMAGE_SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # the child process
        data_dir, image_size = args.measure
        print(json.dumps(measure(data_dir, int(image_size), args.batch_size, args.steps, args.memory_limit)))
        return

    print(f"batch {args.batch_size}, 1 warm-up + {args.steps} timed steps per point, memory_limit "
          f"{args.memory_limit}, {os.cpu_count()} CPU(s)")
    print(f"{'images':>7} {'size':>5} {'storage':>7} {'load s':>8} {'data ep. s':>10} {'step s':>8} "
          f"{'epoch s':>10} {'RSS MiB':>9} {'load':>6}")
    with tempfile.TemporaryDirectory(prefix="mtunet-scaling-") as temporary:
        datasets = {factor: write_dataset(Path(temporary) / f"x{factor}",
                                          BASE_IMAGES * factor) for factor in sorted(set(args.factors) | {1})}
        by_size = [run_point(datasets[1], size, args) for size in args.image_sizes]
        by_count = [by_size[0] if factor == 1 else run_point(datasets[factor], args.image_sizes[0], args)
                    for factor in args.factors]
    plot(by_size, by_count, args.output)
    per_megapixel = [point["step_s"] / (args.batch_size * point["image_size"] ** 2 / 1e6) for point in by_size]
    per_image = [point["epoch_s"] / point["train_images"] for point in by_count]
    print(f"training seconds per megapixel: {', '.join(f'{value:.2f}' for value in per_megapixel)}")
    print(f"training seconds per image at {args.image_sizes[0]}: {', '.join(f'{value:.3f}' for value in per_image)}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
