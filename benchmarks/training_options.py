"""mtunet's training speed options against its defaults, alternated in one run: XLA, bfloat16, threads, oneDNN.

    python benchmarks/training_options.py [--size 128] [--threads 2] [--rounds 3] [--steps 2]
                                          [--variants default,jit,bf16,bf16+jit,inter1,no-onednn]

Each variant is a training worker of benchmarks/compare_smp.py (MobileNetV2 multi-task, random weights, batch 16,
``compile_model`` + ``train_on_batch``) in its own process, warmed up, then the variants take turns (the order
reversed every round) so that load from other jobs hits them alike. Prints images/s (median step), CPU ms per image,
the ratio to ``default`` and peak RSS. Numerics are not checked here: see BENCHMARKS.md for each option's effect.
"""

import argparse
import os
import statistics
import sys
import tempfile

from compare_smp import alternate, start_workers

# name -> (worker options, environment variables)
VARIANTS = {
    "default": ([], {}),
    "jit": (["--jit-compile"], {}),
    "bf16": (["--mixed-precision"], {}),
    "bf16+jit": (["--mixed-precision", "--jit-compile"], {}),
    "inter1": (["--inter-op-threads", "1"], {}),
    "no-onednn": ([], {"TF_ENABLE_ONEDNN_OPTS": "0"}),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="training steps per variant per round")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"from: {', '.join(VARIANTS)}")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; expected some of: {', '.join(VARIANTS)}")

    load_before = "/".join(f"{value:.1f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="training-options-") as log_dir:
        workers = start_workers({
            name: {"python": sys.executable, "library": "mtunet", "mode": "train", "size": args.size,
                   "batch_size": args.batch_size, "threads": args.threads, "log_dir": log_dir,
                   "options": VARIANTS[name][0], "environment": VARIANTS[name][1]}
            for name in names})
        times = alternate(workers, ["train"], args.rounds, args.steps)
        peaks = {name: worker.finish() for name, worker in workers.items()}
    load = f"{load_before} -> {'/'.join(f'{value:.1f}' for value in os.getloadavg())}"
    print(f"mtunet training {args.size}x{args.size}, batch {args.batch_size}, {args.threads} thread(s), "
          f"{args.rounds} rounds x {args.steps} steps alternated; load average {load}")
    print(f"{'variant':<12}{'images/s':>10}{'vs default':>12}{'CPU ms/image':>14}{'peak RSS MiB':>14}")
    rates = {name: args.batch_size / statistics.median(times[name, "train"]["seconds"]) for name in names}
    for name in names:
        cpu = 1000 * statistics.median(times[name, "train"]["cpu_seconds"]) / args.batch_size
        relative = f"{rates[name] / rates[names[0]]:.2f}x"
        print(f"{name:<12}{rates[name]:>10.2f}{relative:>12}{cpu:>14.1f}{peaks[name]:>14.0f}")


if __name__ == "__main__":
    main()
