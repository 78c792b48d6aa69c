"""The ``mtunet`` command: parses options and calls the ``mtunet`` library.

TensorFlow is imported inside the commands, never at module level, so ``mtunet --help`` and ``--version`` answer
at once. Errors the user can fix (``mtunet.errors.MtunetError``) are printed on one line and exit with status 1.
"""

import collections
import functools
import importlib.metadata
import os

import click

# === Shared options: defined once, the same meaning in every command ===
ENCODER = click.option(
    "--encoder", default="mobilenetv2", show_default=True,
    help="Encoder from the registry (see `mtunet encoders`).",
)
IMAGE_SIZE = click.option(
    "--image-size", type=click.IntRange(min=32), default=224, show_default=True,
    help="Square input size in pixels; a multiple of 32.",
)
NUM_CLASSES = click.option(
    "--num-classes", type=click.IntRange(min=2), default=2, show_default=True, help="Number of diagnosis classes.",
)

DATASET = click.option(
    "--dataset", default="synthetic", show_default=True,
    help="Dataset from the registry: synthetic (generated, no files) or folder (needs --data-dir).",
)
DATA_DIR = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=str), default=None,
    help="folder dataset: the folder with images/, masks/ and labels.csv. TFDS datasets: the TFDS data directory.",
)
SKIP_BAD_FILES = click.option(
    "--skip-bad-files", is_flag=True,
    help="Leave unreadable or inconsistent files out (and list them) instead of stopping with an error.",
)


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def user_errors_as_messages(command):
    """Runs ``command``, turning an ``MtunetError`` into a one-line ``click`` error (exit status 1, or the error's
    ``exit_code``)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _quiet_tensorflow()
        from mtunet.errors import MtunetError

        try:
            return command(*args, **kwargs)
        except MtunetError as error:
            exception = click.ClickException(str(error))
            exception.exit_code = getattr(error, "exit_code", exception.exit_code)
            raise exception from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(importlib.metadata.version("mtunet"), prog_name="mtunet")
def main():
    """Multi-task U-Nets for medical images: a lesion mask and a diagnosis from one network."""


@main.command()
@click.option("--image-size", type=click.IntRange(min=32), default=224, show_default=True,
              help="Input size the parameters are counted at (they do not depend on it).")
@NUM_CLASSES
@user_errors_as_messages
def encoders(image_size, num_classes):
    """List the encoders: parameters of the multi-task model, ImageNet weights, input scaling."""
    from mtunet.encoders import encoder_table
    from mtunet.model import check_input_shape

    check_input_shape((image_size, image_size, 3))
    rows = encoder_table(num_classes=num_classes, image_size=image_size)
    header = f"{'encoder':<16}{'parameters':>14}  {'imagenet':<10}input scaling"
    click.echo(f"multi-task model at {image_size}x{image_size} with {num_classes} classes")
    click.echo(header)
    click.echo("-" * len(header))
    for row in rows:
        click.echo(f"{row['encoder']:<16}{row['parameters']:>14,}  {'yes' if row['imagenet_weights'] else 'no':<10}"
                   f"{row['input_scaling']}")


@main.group()
def data():
    """Look at datasets before training on them."""


def _echo_inspect_report(report: dict) -> None:
    """Prints ``mtunet.data.inspect_dataset``'s report as tables."""
    info = report["info"]
    click.echo(f"dataset {info['name']}: {info['num_classes']} classes, {info['channels']} channel(s), served at "
               f"{info['image_size']}x{info['image_size']} px, decoded examples held in {info['storage']}")
    groups = report["groups"]
    click.echo(f"patients/groups: {groups['total']} (" + ", ".join(f"{split} {groups[split]}" for split in
                                                                 info["split_sizes"])
               + f"); splits grouped by {report['grouping']}")
    names = info["class_names"]
    width = max(12, *(len(name) + 2 for name in names))
    click.echo(f"{'split':<12}" + "".join(f"{name:>{width}}" for name in names) + f"{'total':>10}")
    totals = dict.fromkeys(names, 0)
    for split, size in info["split_sizes"].items():
        counts = info["class_counts"][split]
        totals = {name: totals[name] + counts[name] for name in names}
        click.echo(f"{split:<12}" + "".join(f"{counts[name]:>{width}}" for name in names) + f"{size:>10}")
    click.echo(f"{'total':<12}" + "".join(f"{totals[name]:>{width}}" for name in names)
               + f"{sum(info['split_sizes'].values()):>10}")
    sizes = report["image_sizes"]
    common = ", ".join(f"{height}x{width_} ({count})" for height, width_, count in sizes["most_common"])
    click.echo(f"image sizes as stored (height x width): {sizes['distinct']} distinct, height {sizes['height'][0]}-"
               f"{sizes['height'][1]}, width {sizes['width'][0]}-{sizes['width'][1]}; most common: {common}")
    click.echo(f"{'mask coverage':<14}{'examples':>10}{'empty masks':>13}{'mean lesion':>13}{'min':>8}{'max':>8}")
    for name, coverage in report["mask_coverage"].items():
        click.echo(f"{name:<14}{coverage['examples']:>10}{coverage['empty_masks']:>13}"
                   f"{coverage['mean_lesion_fraction']:>13.1%}{coverage['min_lesion_fraction']:>8.1%}"
                   f"{coverage['max_lesion_fraction']:>8.1%}")
    means = ", ".join(f"{value:.1f}" for value in report["pixel_mean"])
    stds = ", ".join(f"{value:.1f}" for value in report["pixel_std"])
    click.echo(f"pixels of the train split (0-255): mean {means}, std {stds}")
    skipped = info["skipped"]
    if not skipped:
        click.echo("problems: none")
        return
    reasons = collections.Counter(reason for _, reason in skipped)
    click.echo(f"problems: {len(skipped)} file(s) left out: "
               + "; ".join(f"{count} {reason}" for reason, count in reasons.items()))
    for file, reason in skipped:
        click.echo(f"  {file}: {reason}")


@data.command()
@DATASET
@DATA_DIR
@IMAGE_SIZE
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/validation/test split.")
@SKIP_BAD_FILES
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@user_errors_as_messages
def inspect(dataset, data_dir, image_size, seed, skip_bad_files, as_json):
    """Classes, counts per split and class, patients, image sizes, mask coverage and problems of a dataset.

    Without --skip-bad-files, bad files stop it with an error that names them; with it, they are listed.
    """
    import json

    from mtunet.data import inspect_dataset

    report = inspect_dataset(dataset, data_dir=data_dir, image_size=image_size, seed=seed,
                             skip_bad_files=skip_bad_files)
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        _echo_inspect_report(report)


WEIGHTS = click.option(
    "--weights", default="imagenet", show_default=True,
    help="Encoder weights: 'imagenet', 'none' (random initialisation) or the path of a weights file.",
)


def _parse_loss_weights(ctx, param, value):
    try:
        segmentation, classification = (float(part) for part in value.split(":"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected SEG:CLS, e.g. 5:1") from None
    return segmentation, classification


@main.command()
@ENCODER
@WEIGHTS
@click.option("--freeze-encoder", is_flag=True, help="Train the decoder and heads only.")
@click.option("--unfreeze-after", type=click.IntRange(min=1), default=None,
              help="Train the heads with a frozen encoder for N epochs, then fine-tune everything.")
@DATASET
@DATA_DIR
@IMAGE_SIZE
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Global batch size, divided over replicas.")
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Adam learning rate.")
@click.option("--loss-weights", default="5:1", show_default=True, callback=_parse_loss_weights,
              help="SEG:CLS weights of the segmentation and classification losses.")
@click.option("--seg-loss", type=click.Choice(["bce", "dice", "bce_dice"]), default="bce", show_default=True)
@click.option("--class-weights", type=click.Choice(["balanced", "none"]), default="balanced", show_default=True,
              help="Weights of the classification loss per class (scikit-learn's 'balanced').")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True)
@click.option("--task", type=click.Choice(["multi", "segmentation", "classification"]), default="multi",
              show_default=True, help="Both heads, or a single-task baseline.")
@click.option("--no-skip-connections", is_flag=True, help="Decoder without skip connections (ablation).")
@click.option("--no-augment", is_flag=True, help="No rotation, flip or shear of training images.")
@click.option("--flip", type=click.Choice(["horizontal_and_vertical", "horizontal", "vertical", "none"]),
              default="horizontal_and_vertical", show_default=True,
              help="Flips of the augmentation; 'horizontal' for ultrasound, whose skin side is at the top.")
@click.option("--patience", type=click.IntRange(min=1), default=10, show_default=True,
              help="Epochs without a better validation loss before early stopping.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of splits, initialisation, augmentation.")
@click.option("--deterministic", is_flag=True, help="Deterministic TensorFlow ops (slower).")
@click.option("--mixed-precision", is_flag=True, help="mixed_float16 on GPU, mixed_bfloat16 on TPU and CPU.")
@click.option("--jit-compile", is_flag=True, help="Compile the training step with XLA.")
@click.option("--strategy", type=click.Choice(["auto", "default", "mirrored", "tpu", "multi_worker"]),
              default="auto", show_default=True)
@click.option("--output-dir", type=click.Path(), default=None,
              help="The run directory [default: runs/<date>-<encoder>-<dataset>].")
@SKIP_BAD_FILES
@click.option("--resume", "resume_dir", type=click.Path(), default=None,
              help="Continue the run in this directory from its last finished epoch (no other option).")
@click.pass_context
@user_errors_as_messages
def train(ctx, resume_dir, no_skip_connections, no_augment, **options):
    """Train a multi-task U-Net (or a single-task baseline) and write a run directory."""
    from mtunet.training import TrainConfig, train as run_training

    if resume_dir is not None:
        given = [name for name in ctx.params if name != "resume_dir"
                 and ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(f"--resume takes no other option (received --{given[0].replace('_', '-')})")
        run = run_training(resume=resume_dir)
    else:
        options["weights"] = None if options["weights"] == "none" else options["weights"]
        config = TrainConfig(skip_connections=not no_skip_connections, augment=not no_augment, **options)
        run = run_training(config)
    metrics = ", ".join(f"{name} {value:.4f}" for name, value in run.best_metrics.items())
    click.echo(f"best epoch {run.best_epoch}: validation {metrics}")
    click.echo(f"run directory: {run.directory}")


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--split", default="test", show_default=True, help="Split of the run's splits.json to evaluate.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Mask probability above which a pixel is lesion.")
@click.option("--empty-masks", type=click.Choice(["one", "exclude"]), default="one", show_default=True,
              help="Images whose true and predicted masks are both empty: Dice 1, or left out (nnU-Net).")
@click.option("--output-dir", type=click.Path(), default=None, help="[default: RUN_DIR/evaluation/<split>]")
@user_errors_as_messages
def evaluate(run_dir, split, threshold, empty_masks, output_dir):
    """Evaluate a run's best model on a split it never trained on: metrics.json and predictions.npz."""
    from mtunet.evaluation import evaluate_run

    results = evaluate_run(run_dir, split=split, threshold=threshold, empty=empty_masks, output_dir=output_dir)
    shown = ["accuracy", "balanced_accuracy", "auc", "dice_mean", "iou_mean", "thresholded_jaccard"]
    click.echo(f"{split}: {results['n_images']} images; "
               + ", ".join(f"{name} {results[name]:.4f}" for name in shown if name in results))


@main.command()
@click.option("--output-dir", type=click.Path(), default=None,
              help="The run directory [default: runs/<date>-mobilenetv2-synthetic].")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@user_errors_as_messages
def demo(output_dir, epochs):
    """Train MobileNetV2 from scratch on the built-in synthetic dataset (64 px), then evaluate it on its test split."""
    from mtunet.evaluation import evaluate_run
    from mtunet.training import TrainConfig, train as run_training

    run = run_training(TrainConfig(encoder="mobilenetv2", weights=None, dataset="synthetic", image_size=64,
                                   epochs=epochs, output_dir=output_dir))
    results = evaluate_run(run.directory)
    click.echo(f"test split: {results['n_images']} images, accuracy {results['accuracy']:.3f}, balanced accuracy "
               f"{results['balanced_accuracy']:.3f}, Dice {results['dice_mean']:.3f}")
    click.echo(f"run directory: {run.directory} (metrics: {run.directory / 'evaluation' / 'test' / 'metrics.json'}, "
               f"curves: {run.directory / 'curves.png'})")
