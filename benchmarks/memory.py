"""Peak memory of loading a folder dataset and serving one augmented training epoch, in memory and streamed, for
growing numbers of images: streamed, memory must not grow with the number of images.

    python benchmarks/memory.py [--sizes 1000 4000] [--image-size 224]

Writes folder datasets of synthetic images (128 px PNGs) to a temporary folder and measures each case in a fresh
Python process (peak resident set size, ``ru_maxrss``).
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

import cv2
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


def write_dataset(root: Path, num_images: int) -> Path:
    """``num_images`` synthetic examples in the folder layout under ``root``."""
    from mtunet.data import synthetic

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for example in synthetic.synthetic_examples(num_patients=num_images // synthetic.IMAGES_PER_PATIENT):
        cv2.imwrite(str(root / "images" / f"{example['id']}.png"), example["image"])
        cv2.imwrite(str(root / "masks" / f"{example['id']}.png"), example["mask"])
        rows.append({"id": example["id"], "label": example["label"], "patient": example["patient"]})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def measure(data_dir: str, image_size: int, memory_limit: int | None) -> dict:
    """Loads ``data_dir``, serves one augmented training epoch; the storage used, times and peak memory."""
    from mtunet.data import load_dataset

    start = time.perf_counter()
    dataset = load_dataset("folder", data_dir=data_dir, image_size=image_size, memory_limit=memory_limit)
    pipeline = dataset.pipeline("train", batch_size=32, training=True)
    prepared = time.perf_counter()
    images = sum(int(batch.shape[0]) for batch, _ in pipeline)
    served = time.perf_counter()
    return {"storage": dataset.info.storage, "train_images": images, "load_s": prepared - start,
            "epoch_s": served - prepared, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000], help="numbers of images")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--measure", nargs=2, metavar=("DATA_DIR", "MEMORY_LIMIT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # the child process
        data_dir, memory_limit = args.measure
        print(json.dumps(measure(data_dir, args.image_size, None if memory_limit == "default" else int(memory_limit))))
        return

    print(f"folder datasets of synthetic 128 px PNGs served at {args.image_size}x{args.image_size}, batch 32, one "
          f"augmented training epoch, {os.cpu_count()} CPU(s)")
    with tempfile.TemporaryDirectory() as temporary:
        for num_images in args.sizes:
            data_dir = write_dataset(Path(temporary) / f"n{num_images}", num_images)
            for memory_limit in ("default", "0"):
                output = subprocess.run(
                    [sys.executable, __file__, "--image-size", str(args.image_size), "--measure", str(data_dir),
                     memory_limit], check=True, capture_output=True, text=True, cwd=REPO).stdout
                result = json.loads(output.strip().splitlines()[-1])
                print(f"{num_images:>6} images  {result['storage']:<7} load {result['load_s']:6.1f} s  epoch "
                      f"{result['epoch_s']:6.1f} s  peak RSS {result['peak_rss_mib']:6.0f} MiB")


if __name__ == "__main__":
    main()
