"""mtunet against segmentation_models_pytorch (smp) on the same multi-task U-Net, side by side, on this machine.

    python benchmarks/compare_smp.py --smp-python /work/benchvenv/bin/python [--threads 2] [--sizes 128,224]
                                     [--inference-size 224] [--rounds 4] [--steps 2] [--jit-compile]
                                     [--mixed-precision] [--saved-model PATH] [--inter-op-threads N]

mtunet runs under the Python that runs this script (TensorFlow); smp under ``--smp-python``, a separate virtual
environment made from ``benchmarks/requirements-smp.txt`` (torch is never a dependency of mtunet). Both build the
same model as far as both allow: MobileNetV2 encoder with random weights taking its skips from the block outputs
(16 / 24 / 32 / 96 channels), U-Net decoder with channels (256, 128, 64, 32, 16) and nearest-neighbour upsampling
(smp's default), a 3x3 one-channel mask head, a pooled dropout-dense class head on the deepest feature (2 classes),
loss 5 x BCE + class-weighted cross-entropy, Adam 1e-3, batch 16; the script prints both models' parameter counts.
mtunet's training step also updates its metrics (accuracy, AUC, Dice, IoU), as in ``mtunet train``.

Each scenario (training at each size, inference) starts one fresh process per library, so its peak resident memory is
its own; both are limited to ``--threads`` intra-op and inter-op threads (and OMP_NUM_THREADS, with
OMP_WAIT_POLICY=PASSIVE unless set). After warm-up the script alternates the two, ``--rounds`` times, swapping which
goes first, so that load from other jobs hits both alike; figures are medians over every timed step. Inference:
mtunet's exported SavedModel (``--saved-model``, else the model exported here with ``keras.Model.export`` after
``fold_batchnorm``, as ``mtunet export`` does) against smp in eval mode under ``torch.inference_mode``.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

NUM_CLASSES = 2
DECODER_CHANNELS = (256, 128, 64, 32, 16)
SEGMENTATION_WEIGHT, CLASSIFICATION_WEIGHT = 5.0, 1.0
TRAIN_WARMUP, BATCH_WARMUP, SINGLE_WARMUP = 3, 3, 10


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(step, count):
    """``{"seconds": [...], "cpu_seconds": [...]}``: wall-clock and process CPU time of each of ``count`` calls."""
    times = {"seconds": [], "cpu_seconds": []}
    for _ in range(count):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        times["seconds"].append(time.perf_counter() - start)
        times["cpu_seconds"].append(time.process_time() - cpu_start)
    return times


class MtunetWorker:
    """mtunet's training step (``compile_model`` + ``train_on_batch``) or its exported SavedModel."""

    def __init__(self, mode, size, batch_size, threads, options):
        import numpy as np
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(options["inter_op_threads"] or threads)
        import keras

        from mtunet.deploy.folding import fold_batchnorm
        from mtunet.models import build_model
        from mtunet.training.config import TrainConfig
        from mtunet.training.loop import compile_model

        if options["mixed_precision"]:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = build_model("mobilenetv2", input_shape=(size, size, 3), num_classes=NUM_CLASSES, weights=None)
        self.parameters = model.count_params()
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (batch_size, size, size, 3)).astype("float32")
        if mode == "train":
            compile_model(model, TrainConfig(jit_compile=options["jit_compile"]),
                          class_weights=[1.0] * NUM_CLASSES)
            self.images = tf.constant(images)
            self.targets = {
                "label": tf.constant(np.eye(NUM_CLASSES, dtype="float32")[rng.integers(0, NUM_CLASSES, batch_size)]),
                "mask": tf.constant((rng.random((batch_size, size, size, 1)) > 0.5).astype("float32")),
            }
            self.steps = {"train": lambda: model.train_on_batch(self.images, self.targets)}
            _timed(self.steps["train"], TRAIN_WARMUP)
            return
        saved_model = options["saved_model"]
        if saved_model is None:
            saved_model = tempfile.mkdtemp(prefix="mtunet-savedmodel-")
            fold_batchnorm(model)[0].export(saved_model, format="tf_saved_model", verbose=False)
        self.saved_model = tf.saved_model.load(saved_model)  # its variables live as long as this reference
        serve = self.saved_model.signatures["serving_default"]
        (input_name,) = serve.structured_input_signature[1]
        batch, single = {input_name: tf.constant(images)}, {input_name: tf.constant(images[:1])}
        # .numpy() waits for the result, as reading smp's output tensor does
        self.steps = {"batch": lambda: [output.numpy() for output in serve(**batch).values()],
                      "single": lambda: [output.numpy() for output in serve(**single).values()]}
        _timed(self.steps["batch"], BATCH_WARMUP)
        _timed(self.steps["single"], SINGLE_WARMUP)


class SmpWorker:
    """smp's ``Unet(aux_params=...)``: a plain PyTorch training step, or eval mode under ``torch.inference_mode``."""

    def __init__(self, mode, size, batch_size, threads, options):
        import torch
        import segmentation_models_pytorch as smp

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(options["inter_op_threads"] or threads)
        torch.manual_seed(0)
        training = mode == "train"
        # logits while training (BCEWithLogits, cross-entropy), probabilities in inference, as mtunet's outputs
        model = smp.Unet("mobilenet_v2", encoder_weights=None, decoder_channels=DECODER_CHANNELS,
                         classes=1, activation=None if training else "sigmoid",
                         aux_params={"classes": NUM_CLASSES, "dropout": 0.3,
                                     "activation": None if training else "softmax"})
        self.parameters = sum(parameter.numel() for parameter in model.parameters())
        # the model has no preprocessing layer: it gets images already scaled to [-1, 1], as MobileNetV2 expects
        images = torch.rand(batch_size, 3, size, size) * 2 - 1
        if training:
            model.train()
            masks = (torch.rand(batch_size, 1, size, size) > 0.5).float()
            labels = torch.randint(0, NUM_CLASSES, (batch_size,))
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            segmentation_loss = torch.nn.BCEWithLogitsLoss()
            classification_loss = torch.nn.CrossEntropyLoss(weight=torch.ones(NUM_CLASSES))

            def train_step():
                optimizer.zero_grad(set_to_none=True)
                mask_logits, label_logits = model(images)
                loss = (SEGMENTATION_WEIGHT * segmentation_loss(mask_logits, masks)
                        + CLASSIFICATION_WEIGHT * classification_loss(label_logits, labels))
                loss.backward()
                optimizer.step()
                return loss.item()

            self.steps = {"train": train_step}
            _timed(train_step, TRAIN_WARMUP)
            return
        model.eval()

        def predict(batch):
            with torch.inference_mode():
                return [output.numpy() for output in model(batch)]

        single = images[:1].clone()
        self.steps = {"batch": lambda: predict(images), "single": lambda: predict(single)}
        _timed(self.steps["batch"], BATCH_WARMUP)
        _timed(self.steps["single"], SINGLE_WARMUP)


def serve_worker(library, mode, size, batch_size, threads, options):
    """Builds and warms up one worker, then answers ``STEP COUNT`` lines on stdin with per-call seconds (JSON)."""
    # anything the libraries print (export messages, logs) goes to stderr; stdout carries only the protocol
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    worker = (MtunetWorker if library == "mtunet" else SmpWorker)(mode, size, batch_size, threads, options)
    protocol.write(json.dumps({"parameters": worker.parameters}) + "\n")
    for line in sys.stdin:
        step, count = line.split()
        if step == "quit":
            protocol.write(json.dumps({"peak_rss_mib": _peak_rss_mib()}) + "\n")
            return
        protocol.write(json.dumps(_timed(worker.steps[step], int(count))) + "\n")


class WorkerProcess:
    """One worker in its own process, driven through its stdin and stdout."""

    def __init__(self, python, library, mode, size, *, batch_size, threads, log_dir, options=(), environment=None,
                 name=None):
        """Starts ``python compare_smp.py --worker LIBRARY MODE SIZE [options]`` with ``environment`` added."""
        command = [python, os.path.abspath(__file__), "--worker", library, mode, str(size),
                   "--batch-size", str(batch_size), "--threads", str(threads), *options]
        # Passive OpenMP waiting (unless OMP_WAIT_POLICY is set): torch's spinning threads otherwise wait for peers
        # that other jobs have descheduled; on a loaded 2-core machine that made smp's single-image latency 1.4 s
        # instead of 0.18 s. TensorFlow's thread pool is not OpenMP and is unaffected.
        environment = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "OMP_NUM_THREADS": str(threads),
                       "MKL_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": "2", **(environment or {})}
        self.name = name or f"{library} {mode} {size}"
        self.log_path = os.path.join(log_dir, f"{self.name.replace(' ', '-').replace('/', '-')}.log")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        text=True, bufsize=1, env=environment)
        self.parameters = self._reply()["parameters"]

    def _reply(self):
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.log.close()
            with open(self.log_path) as log:
                tail = log.read()[-3000:]
            raise RuntimeError(f"worker '{self.name}' exited with {self.process.returncode}:\n{tail}")
        return json.loads(line)

    def run(self, step, count):
        self.process.stdin.write(f"{step} {count}\n")
        return self._reply()

    def finish(self):
        self.process.stdin.write("quit 0\n")
        peak = self._reply()["peak_rss_mib"]
        self.process.wait()
        self.log.close()
        return peak


def alternate(workers, steps, rounds, count):
    """Per-call wall-clock and CPU seconds of each worker and step, ``count`` calls each in turn, swapping the order.

    Returns ``{(worker, step): {"seconds": [...], "cpu_seconds": [...]}}``.
    """
    times = {(name, step): {"seconds": [], "cpu_seconds": []} for name in workers for step in steps}
    order = list(workers)
    for _ in range(rounds):
        for name in order:
            for step in steps:
                for key, values in workers[name].run(step, count).items():
                    times[name, step][key] += values
        order.reverse()
    return times


def start_workers(specifications):
    """``{name: WorkerProcess(**keywords)}`` for ``{name: keywords}``; kills those started if one fails."""
    workers = {}
    try:
        for name, keywords in specifications.items():
            workers[name] = WorkerProcess(name=name, **keywords)
    except BaseException:
        for worker in workers.values():
            worker.process.kill()
        raise
    return workers


def start_pair(args, mode, size, log_dir):
    common = {"mode": mode, "size": size, "batch_size": args.batch_size, "threads": args.threads, "log_dir": log_dir}
    threads = ["--inter-op-threads", str(args.inter_op_threads)] if args.inter_op_threads else []
    options = threads + ["--jit-compile"] * args.jit_compile + ["--mixed-precision"] * args.mixed_precision
    options += ["--saved-model", args.saved_model] if args.saved_model else []
    return start_workers({"mtunet": {"python": sys.executable, "library": "mtunet", "options": options, **common},
                          "smp": {"python": args.smp_python, "library": "smp", "options": threads, **common}})


def print_row(figure, ours, theirs, higher_is_better, load):
    speedup = ours / theirs if higher_is_better else theirs / ours
    print(f"{figure:<44}{ours:>10.2f}{theirs:>10.2f}{ours / theirs:>12.2f}{speedup:>9.2f}x  {load}", flush=True)


def _load():
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smp-python", default=os.environ.get("SMP_PYTHON", "python3"),
                        help="Python of the virtual environment with torch and smp (default: $SMP_PYTHON)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--sizes", default="128,224", help="training image sizes (\"\": inference only)")
    parser.add_argument("--inference-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two libraries")
    parser.add_argument("--steps", type=int, default=2, help="training steps per library per round")
    parser.add_argument("--batches", type=int, default=3, help="inference batches per library per round")
    parser.add_argument("--singles", type=int, default=15, help="single-image calls per library per round")
    parser.add_argument("--jit-compile", action="store_true", help="mtunet: XLA-compiled training step")
    parser.add_argument("--mixed-precision", action="store_true", help="mtunet: mixed_bfloat16")
    parser.add_argument("--saved-model", help="mtunet: a SavedModel exported for --inference-size (its "
                        "serving_default signature is called; default: the random model exported here)")
    parser.add_argument("--inter-op-threads", type=int, help="inter-op threads (default: --threads)")
    parser.add_argument("--worker", nargs=3, metavar=("LIBRARY", "MODE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        library, mode, size = args.worker
        serve_worker(library, mode, int(size), args.batch_size, args.threads,
                     {"jit_compile": args.jit_compile, "mixed_precision": args.mixed_precision,
                      "saved_model": args.saved_model, "inter_op_threads": args.inter_op_threads})
        return

    print(f"{os.cpu_count()} CPU(s), {args.threads} thread(s) each; batch {args.batch_size}; mtunet "
          f"jit_compile={args.jit_compile} mixed_precision={args.mixed_precision}; {args.rounds} alternating rounds",
          flush=True)
    print(f"\n{'figure':<44}{'mtunet':>10}{'smp':>10}{'mtunet/smp':>12}{'speed-up':>10}  load avg 1/5/15 min")
    rows, memory = [], []
    with tempfile.TemporaryDirectory(prefix="compare-smp-") as log_dir:
        for size in [int(size) for size in args.sizes.split(",") if size]:
            load_before = _load()
            workers = start_pair(args, "train", size, log_dir)
            times = alternate(workers, ["train"], args.rounds, args.steps)
            for name, worker in workers.items():
                memory.append((f"training {size}", name, worker.finish(), worker.parameters))
            load = f"{load_before} -> {_load()}"
            rows.append((f"training {size}x{size} (images/s)",
                         *(args.batch_size / statistics.median(times[name, "train"]["seconds"])
                           for name in ("mtunet", "smp")), True, load))
            rows.append((f"training {size}x{size} (CPU ms per image)",
                         *(1000 * statistics.median(times[name, "train"]["cpu_seconds"]) / args.batch_size
                           for name in ("mtunet", "smp")), False, load))
            for row in rows[-2:]:
                print_row(*row)
        size = args.inference_size
        load_before = _load()
        workers = start_pair(args, "infer", size, log_dir)
        times = alternate(workers, ["batch", "single"], args.rounds, 1)
        extra = alternate(workers, ["single"], args.rounds, args.singles - 1)
        for name, worker in workers.items():
            memory.append((f"inference {size}", name, worker.finish(), worker.parameters))
        load = f"{load_before} -> {_load()}"
        batch = {name: args.batch_size / statistics.median(times[name, "batch"]["seconds"]) for name in workers}
        single = {name: sorted(times[name, "single"]["seconds"] + extra[name, "single"]["seconds"])
                  for name in workers}
        median = {name: 1000 * statistics.median(values) for name, values in single.items()}
        p95 = {name: 1000 * values[round(0.95 * (len(values) - 1))] for name, values in single.items()}
        rows.append((f"inference {size}x{size}, batch {args.batch_size} (images/s)", batch["mtunet"], batch["smp"],
                     True, load))
        rows.append((f"latency {size}x{size}, 1 image, median (ms)", median["mtunet"], median["smp"], False, load))
        rows.append((f"latency {size}x{size}, 1 image, p95 (ms)", p95["mtunet"], p95["smp"], False, load))
        for row in rows[-3:]:
            print_row(*row)

    print(f"\n{'scenario':<16}{'library':<10}{'peak RSS MiB':>14}{'parameters':>14}")
    for scenario, name, peak, parameters in memory:
        print(f"{scenario:<16}{name:<10}{peak:>14.0f}{parameters:>14,}")
    for scenario in dict.fromkeys(scenario for scenario, *_ in memory):
        peaks = {name: peak for row_scenario, name, peak, _ in memory if row_scenario == scenario}
        print(f"{scenario:<16}peak RSS mtunet/smp {peaks['mtunet'] / peaks['smp']:.2f}")


if __name__ == "__main__":
    main()
