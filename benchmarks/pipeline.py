"""Input pipeline throughput: training-split images per second with augmentation, after a warm-up epoch.

    python benchmarks/pipeline.py [--image-size 224] [--batch-size 32] [--epochs 3] [--busbra PATH]
                                  [--memory-limit BYTES]

Measures the synthetic dataset and, when its folder exists, BUS-BRA in the folder layout. Prints how long drawing the
synthetic images takes, one line per dataset, and the peak resident memory of the process. ``--memory-limit 0``
streams both datasets from tf.data cache files instead of holding them in memory.
"""

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


def time_synthetic_drawing() -> float:
    """Seconds to draw the default synthetic dataset with numpy and OpenCV (no TFDS)."""
    from mtunet.data import synthetic

    start = time.perf_counter()
    for _ in synthetic.synthetic_examples():
        pass
    return time.perf_counter() - start


def measure(name, data_dir, *, image_size, batch_size, epochs, memory_limit):
    """``(load seconds, images per second, training examples, storage)`` for one dataset."""
    from mtunet.data import load_dataset

    start = time.perf_counter()
    dataset = load_dataset(name, data_dir=data_dir, image_size=image_size, memory_limit=memory_limit)
    # for a streamed dataset, the first pipeline of a split decodes it into its cache file
    pipeline = dataset.pipeline("train", batch_size=batch_size, training=True, augment=True)
    load_seconds = time.perf_counter() - start
    for _ in pipeline:  # warm-up: traces the functions and fills the prefetch buffer
        pass
    images = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch, _ in pipeline:
            images += int(batch.shape[0])
    rate = images / (time.perf_counter() - start)
    return load_seconds, rate, dataset.info.split_sizes["train"], dataset.info.storage


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up epoch")
    parser.add_argument("--busbra", type=Path, default=REPO / ".." / "shared" / "data" / "busbra",
                        help="BUS-BRA in the folder layout (skipped if absent)")
    parser.add_argument("--memory-limit", type=int, default=None,
                        help="bytes of decoded examples held in memory (default: the library's; 0 streams)")
    args = parser.parse_args()

    print(f"drawing the synthetic images: {time_synthetic_drawing():.1f} s")
    with tempfile.TemporaryDirectory() as tfds_dir:
        runs = [("synthetic", tfds_dir)]
        if args.busbra.is_dir():
            runs.append(("folder", args.busbra))
        else:
            print(f"BUS-BRA not found at {args.busbra}: measuring synthetic only")
        print(f"train split, augmented, {args.image_size}x{args.image_size}, batch {args.batch_size}, "
              f"{args.epochs} timed epochs after 1 warm-up, {os.cpu_count()} CPU(s)")
        for name, data_dir in runs:
            load_seconds, rate, examples, storage = measure(name, data_dir, image_size=args.image_size,
                                                            batch_size=args.batch_size, epochs=args.epochs,
                                                            memory_limit=args.memory_limit)
            label = name if name == "synthetic" else f"folder ({Path(data_dir).name})"
            print(f"{label:<18} {examples:>5} train images  {storage:<6}  load {load_seconds:6.1f} s  "
                  f"{rate:8.1f} images/s")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
