"""The ``mtunet`` command: parses options and calls the ``mtunet`` library.

TensorFlow is imported inside the commands, never at module level, so ``mtunet --help`` and ``--version`` answer
at once. Errors the user can fix (``mtunet.errors.MtunetError``) are printed on one line and exit with status 1.
"""

import collections
import dataclasses
import functools
import importlib.metadata
import itertools
import logging

import click

from mtunet.demo import DEMO_EPOCHS, DEMO_IMAGE_SIZE
from mtunet.options import (
    CLASS_WEIGHTS, DICE_VARIANTS, EMPTY_MASK_RULES, EVALUATION_SPLITS, EXPORT_FORMATS, FLIP_MODES, MISSING_TARGETS,
    OPTIMIZERS, ORDINAL_LOSSES, PREPROCESSING, SEGMENTATION_LOSSES, STRATEGIES, TASKS, command_line_spelling,
)
from mtunet.training.config import TrainConfig
from mtunet.training.recipes import RECIPES

# The defaults of the training options are TrainConfig's, so that the CLI and the Python API cannot drift apart.
TRAIN_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainConfig)}

# === Shared options: defined once, the same meaning in every command ===
RECIPE = click.option(
    "--recipe", type=click.Choice(RECIPES), default=None,
    help="Where the options not given come from: " + "; ".join(
        f"{recipe.name}: {recipe.description}" for recipe in RECIPES.values())
         + ". Default: the architecture's own (resformer's for --architecture resformer), else mtunet; the defaults "
           "shown below are mtunet's.",
)
ARCHITECTURE = click.option(
    "--architecture", default=TRAIN_DEFAULTS["architecture"], show_default=True,
    help="Architecture preset (see `mtunet architectures`): unet, attention_unet, resformer, ...; --encoder, "
         "--decoder and --skip replace its parts. A preset with a published recipe (resformer) starts from it "
         "(see --recipe) instead of the defaults shown here.",
)
ENCODER = click.option(
    "--encoder", default=TRAIN_DEFAULTS["encoder"], show_default=True,
    help="Encoder from the registry (see `mtunet encoders`), or two joined by + to fuse them (Res-MTNet).",
)
DECODER = click.option(
    "--decoder", default=None, help="Decoder from the registry instead of the preset's (see `mtunet architectures`).",
)
SKIP = click.option(
    "--skip", default=None,
    help="Skip module on every pyramid level instead of the preset's (see `mtunet architectures`).",
)
IMAGE_SIZE = click.option(
    "--image-size", type=click.IntRange(min=32), default=TRAIN_DEFAULTS["image_size"], show_default=True,
    help="Square input size in pixels; a multiple of 32.",
)
NUM_CLASSES = click.option(
    "--num-classes", type=click.IntRange(min=2), default=2, show_default=True, help="Number of diagnosis classes.",
)

DATASET = click.option(
    "--dataset", default=TRAIN_DEFAULTS["dataset"], show_default=True,
    help="Dataset from the registry: synthetic (generated, no files), folder, or a downloaded one: isic2017, "
         "isic2018, lgg, panda, siim_acr (NAME/CONFIG picks a builder config, e.g. isic2018/task1_512).",
)
DATA_DIR = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=str), default=None,
    help="folder: the folder with images/, masks/ and labels.csv. isic2017, isic2018, lgg, panda, siim_acr: the "
         "download (prepared into $TFDS_DATA_DIR on first use). synthetic: the TFDS data directory.",
)
SKIP_BAD_FILES = click.option(
    "--skip-bad-files", is_flag=True,
    help="Leave unreadable or inconsistent files out (and list them) instead of stopping with an error.",
)


def _comma_list(choices, what: str):
    """A click callback parsing a comma-separated list of some of ``choices`` (each a ``what``) into a tuple."""

    def parse(ctx, param, value):
        names = tuple(part.strip() for part in value.split(",") if part.strip()) if value else ()
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise click.BadParameter(f"{value!r}: unknown {what} {unknown[0]!r}; expected some of: "
                                     f"{', '.join(choices)}, comma-separated")
        return names

    return parse


ALLOW_MISSING = click.option(
    "--allow-missing", default="", callback=_comma_list(MISSING_TARGETS, "target"), metavar="TARGETS",
    help="Targets some images may lack (folder dataset), comma-separated: 'mask' keeps images without a mask file, "
         "'label' rows with an empty label; they train the other heads only and are left out of that head's "
         "metrics.",
)
PREPROCESS = click.option(
    "--preprocessing", default="", callback=_comma_list(PREPROCESSING, "step"), metavar="STEPS",
    help="How images are prepared for fundus photographs, comma-separated: 'fov_crop' cuts each image (and its "
         "mask) to its field of view before resizing, 'ben_graham' is Ben Graham's local colour normalisation; the "
         "model keeps them, so evaluate, predict, Grad-CAM and the export apply them too.",
)


class _EchoHandler(logging.Handler):
    """Log records as plain lines on the command's stderr (click's, so that it is the stream of the moment)."""

    def emit(self, record):
        click.echo(self.format(record), err=True)


def _show_progress_messages():
    """mtunet's INFO log (the start line of a training run, which run of an experiment trains) on stderr, once.

    Not passed on to the root logger: a library's module-level ``logging.info`` call gives the root a handler of its
    own (``logging.basicConfig``), which would print every line a second time."""
    package = logging.getLogger("mtunet")
    if not any(isinstance(handler, _EchoHandler) for handler in package.handlers):
        package.addHandler(_EchoHandler())
        package.setLevel(logging.INFO)
        package.propagate = False


def user_errors_as_messages(command):
    """Runs ``command``, turning an ``MtunetError`` into a one-line ``click`` error (exit status 1, or the error's
    ``exit_code``)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from mtunet.errors import MtunetError
        from mtunet.quiet import start_tensorflow

        verbose = click.get_current_context().find_root().params.get("verbose", False)
        _show_progress_messages()
        start_tensorflow(verbose=verbose)

        try:
            with command_line_spelling():
                return command(*args, **kwargs)
        except MtunetError as error:
            exception = click.ClickException(str(error))
            exception.exit_code = getattr(error, "exit_code", exception.exit_code)
            raise exception from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(importlib.metadata.version("mtunet"), prog_name="mtunet")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own start-up and log messages too.")
def main(verbose):
    """Multi-task U-Nets for medical images: a lesion mask and a diagnosis from one network."""


@main.command()
@click.option("--image-size", type=click.IntRange(min=32), default=TRAIN_DEFAULTS["image_size"], show_default=True,
              help="Input size the parameters are counted at (they do not depend on it).")
@NUM_CLASSES
@user_errors_as_messages
def encoders(image_size, num_classes):
    """List the encoders: parameters of the multi-task model, ImageNet weights, input scaling."""
    from mtunet.models import check_input_shape
    from mtunet.models.catalog import encoder_table

    check_input_shape((image_size, image_size, 3))
    rows = encoder_table(num_classes=num_classes, image_size=image_size)
    width = max(len(row["encoder"]) for row in rows) + 2
    header = f"{'encoder':<{width}}{'parameters':>12}  {'imagenet':<10}input scaling"
    click.echo(f"multi-task model at {image_size}x{image_size} with {num_classes} classes")
    click.echo(header)
    click.echo("-" * len(header))
    for row in rows:
        click.echo(f"{row['encoder']:<{width}}{row['parameters']:>12,}  "
                   f"{'yes' if row['imagenet_weights'] else 'no':<10}{row['input_scaling']}")


@main.command()
@user_errors_as_messages
def architectures():
    """List the architecture presets and the registered encoders, skip modules, decoders and head types."""
    from mtunet.models.catalog import architecture_table

    tables = architecture_table()
    width = max(len(row["name"]) for rows in tables.values() for row in rows) + 2
    click.echo("presets (--architecture):")
    for row in tables["presets"]:
        click.echo(f"  {row['name']:<{width}}decoder {row['decoder']}, skip {row['skip']}: {row['description']}")
    for kind, option in (("encoders", "--encoder"), ("skips", "--skip"), ("decoders", "--decoder"),
                         ("heads", None)):
        click.echo(f"{'skip modules' if kind == 'skips' else kind}" + (f" ({option}):" if option else ":"))
        for row in tables[kind]:
            click.echo(f"  {row['name']:<{width}}{row['description']}")


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
               + ("); splits as the dataset was published" if report["grouping"] == "published"
                  else f"); splits grouped by {report['grouping']}"))
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
    for target, counted in (("mask", "mask coverage counts"), ("label", "the class counts are")):
        missing = info.get(f"missing_{target}s")
        if missing:
            click.echo(f"images without a {target}: {sum(missing.values())} (" + ", ".join(
                f"{split} {count}" for split, count in missing.items()) + f"); {counted} the others")
    first = max(14, *(len(name) + 1 for name in report["mask_coverage"]))
    click.echo(f"{'mask coverage':<{first}}{'examples':>10}{'empty masks':>13}{'mean lesion':>13}{'min':>8}{'max':>8}")
    for name, coverage in report["mask_coverage"].items():
        click.echo(f"{name:<{first}}{coverage['examples']:>10}{coverage['empty_masks']:>13}"
                   f"{coverage['mean_lesion_fraction']:>13.1%}{coverage['min_lesion_fraction']:>8.1%}"
                   f"{coverage['max_lesion_fraction']:>8.1%}")
    if report["lesion_types"]:
        first = max(14, *(len(name) + 1 for name in report["lesion_types"]))
        click.echo(f"{'lesion type':<{first}}{'with mask':>10}{'empty masks':>13}{'mean lesion':>13}")
        for name, lesion in report["lesion_types"].items():
            click.echo(f"{name:<{first}}{lesion['present']:>10}{lesion['empty_masks']:>13}"
                       f"{lesion['mean_lesion_fraction']:>13.1%}")
    means = ", ".join(f"{value:.1f}" for value in report["pixel_mean"])
    stds = ", ".join(f"{value:.1f}" for value in report["pixel_std"])
    click.echo(f"pixels of the train split (0-255): mean {means}, std {stds}")
    for name, head in report["target_heads"].items():
        for column, facts in head["columns"].items():
            shown = (", ".join(f"{value} {count}" for value, count in facts["classes"].items()) if "classes" in facts
                     else f"mean {facts['mean']:.4g}, std {facts['std']:.4g}, {facts['min']:.4g}-{facts['max']:.4g}"
                     if facts["present"] else "no value")
            click.echo(f"head {name} ({head['kind']}), column {column}: {facts['present']} of {head['examples']} "
                       f"with a value; {shown}")
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
@ALLOW_MISSING
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@user_errors_as_messages
def inspect(dataset, data_dir, image_size, seed, skip_bad_files, allow_missing, as_json):
    """Classes, counts per split and class, patients, image sizes, mask coverage and problems of a dataset.

    Without --skip-bad-files, bad files are listed, every one grouped by kind, and the exit status is 1; with it,
    they are left out of the figures and listed.
    """
    import json

    from mtunet.data import inspect_dataset
    from mtunet.data.problems import BadFilesError

    try:
        report = inspect_dataset(dataset, data_dir=data_dir, image_size=image_size, seed=seed,
                                 skip_bad_files=skip_bad_files, allow_missing=allow_missing)
    except BadFilesError as error:  # inspect's job is to find them: every one, grouped by kind
        click.echo(f"{len(error.problems)} bad file(s) in {error.where}:")
        for (problem, expected), files in error.kinds().items():
            click.echo(f"  {len(files)} {problem} (expected {expected}):")
            for file in files:
                click.echo(f"    {file}")
        raise click.ClickException(f"{len(error.problems)} bad file(s) in {error.where}, listed above; fix them, "
                                   "or pass --skip-bad-files to leave them out") from None
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        _echo_inspect_report(report)


@data.command()
@click.argument("name")
@click.option("--manual-dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="The folder holding the dataset's download, laid out as datasets/NAME/README.md says.")
@click.option("--config", default=None, help="Builder config, e.g. task1_512 [default: the dataset's default].")
@user_errors_as_messages
def prepare(name, manual_dir, config):
    """Build the TFDS records of a downloaded dataset (isic2017, isic2018, lgg, panda, siim_acr) once, with progress.

    The records go to the TFDS data directory ($TFDS_DATA_DIR, default ~/tensorflow_datasets); train, evaluate and
    data inspect with --dataset NAME then read them instead of the download. Examples that cannot be used are left
    out and listed.
    """
    from mtunet.data import left_out, prepare_dataset

    builder = prepare_dataset(name, manual_dir, config=config)
    click.echo(f"{builder.name}/{builder.builder_config.name} {builder.info.version}: "
               f"{builder.info.splits['train'].num_examples} examples in {builder.data_dir}")
    skipped = left_out(builder.info)
    click.echo(f"left out: {len(skipped)} example(s)" if skipped else "left out: none")
    for example_id, reason in skipped:
        click.echo(f"  {example_id}: {reason}")


WEIGHTS = click.option(
    "--weights", default=TRAIN_DEFAULTS["weights"], show_default=True,
    help="Encoder weights: 'imagenet', 'none' (random initialisation) or the path of a weights file; for fused "
         "encoders (--encoder A+B) one entry per encoder joined by + (e.g. a.weights.h5+none), or one for both.",
)


def _parse_loss_weights(ctx, param, value):
    try:
        if "=" in value:
            pairs = [part.split("=") for part in value.split(",")]
            if any(len(pair) != 2 or not pair[0].strip() for pair in pairs):
                raise ValueError
            return {name.strip(): float(weight) for name, weight in pairs}
        segmentation, classification = (float(part) for part in value.split(":"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected SEG:CLS, e.g. 5:1, or head=weight pairs, e.g. "
                                 "mask=5,label=1,area=2") from None
    return segmentation, classification


def _train_option(field: str, declaration: str | None = None, **attributes):
    """The click option of ``TrainConfig`` field ``field`` (``--field-name`` unless ``declaration`` is given), with
    the field's default."""
    declaration = declaration or f"--{field.replace('_', '-')}"
    return click.option(declaration, field, default=TRAIN_DEFAULTS[field], show_default=True, **attributes)


# The options of a training run, shared by `train` and `experiment`: the same names, types and defaults everywhere.
TRAIN_OPTIONS = [
    RECIPE,
    ARCHITECTURE,
    ENCODER,
    DECODER,
    SKIP,
    WEIGHTS,
    click.option("--freeze-encoder", is_flag=True, help="Train the decoder and heads only."),
    click.option("--unfreeze-after", type=click.IntRange(min=1), default=None,
                 help="Train the heads with a frozen encoder for N epochs, then fine-tune everything."),
    DATASET,
    DATA_DIR,
    IMAGE_SIZE,
    _train_option("batch_size", type=click.IntRange(min=1), help="Global batch size, divided over replicas."),
    _train_option("epochs", type=click.IntRange(min=1)),
    _train_option("learning_rate", type=click.FloatRange(min=0, min_open=True), help="The optimiser's learning rate."),
    _train_option("optimizer", type=click.Choice(OPTIMIZERS)),
    _train_option("weight_decay", type=click.FloatRange(min=0), help="Decoupled weight decay of --optimizer adamw."),
    click.option("--loss-weights", default=":".join(f"{weight:g}" for weight in TRAIN_DEFAULTS["loss_weights"]),
                 show_default=True, callback=_parse_loss_weights,
                 help="SEG:CLS weights of the segmentation and classification losses (a regression head weighs "
                      "1), or head=weight pairs, e.g. mask=5,label=1,area=2 (a head not named weighs 1)."),
    _train_option("seg_loss", type=click.Choice(SEGMENTATION_LOSSES)),
    _train_option("dice", type=click.Choice(DICE_VARIANTS),
                  help="What the Dice term of --seg-loss dice|bce_dice is computed over: each image (smoothing 1, "
                       "or 1%% of its pixels: image_scaled), the whole batch (nnU-Net's batch Dice), or the images "
                       "with a lesion only (lesion)."),
    _train_option("class_weights", type=click.Choice(CLASS_WEIGHTS),
                  help="Weights of the classification loss per class (scikit-learn's 'balanced')."),
    _train_option("label_smoothing", type=click.FloatRange(0, 1, max_open=True)),
    _train_option("ordinal_loss", type=click.Choice(ORDINAL_LOSSES),
                  help="Loss of the heads of ordinal targets (columns.json kind ordinal): softmax cross-entropy, or "
                       "CORAL (rank-consistent thresholds; the grade is the number of P(y > k) above 0.5)."),
    _train_option("task", type=click.Choice(TASKS), help="Both heads, or a single-task baseline."),
    click.option("--no-skip-connections", is_flag=True, help="Decoder without skip connections (ablation)."),
    click.option("--no-augment", is_flag=True, help="No rotation, flip or shear of training images."),
    click.option("--no-shear", is_flag=True, help="Augment by rotation and flips only."),
    _train_option("flip", type=click.Choice(FLIP_MODES),
                  help="Flips of the augmentation; left-right only by default (ultrasound, X-ray and MRI have an up "
                       "and a down); 'horizontal_and_vertical' for dermoscopy."),
    _train_option("patience", type=click.IntRange(min=1),
                  help="Epochs without a better validation loss before early stopping."),
    _train_option("reduce_lr_patience", type=click.IntRange(min=0),
                  help="Halve the learning rate after N epochs without a better validation loss (0: constant rate)."),
    _train_option("seed", type=int, help="Seed of splits, initialisation, augmentation."),
    _train_option("deterministic", "--deterministic/--no-deterministic",
                  help="Deterministic TensorFlow ops (slower): the same seed gives the same numbers."),
    click.option("--mixed-precision", is_flag=True, help="mixed_float16 on GPU, mixed_bfloat16 on TPU and CPU."),
    click.option("--jit-compile", is_flag=True, help="Compile the training step with XLA."),
    _train_option("precise_bn", "--precise-bn/--no-precise-bn",
                  help="Re-estimate BatchNorm statistics on the training images before each validation."),
    _train_option("ema_momentum", type=click.FloatRange(0, 1, max_open=True),
                  help="Validate, keep and export an exponential moving average of the weights with this momentum, "
                       "warmed up over the first steps (0: the weights as trained)."),
    _train_option("strategy", type=click.Choice(STRATEGIES)),
    SKIP_BAD_FILES,
    ALLOW_MISSING,
    PREPROCESS,
    click.option("--splits-file", type=click.Path(dir_okay=False, exists=True, path_type=str), default=None,
                 help="Train on the splits of this splits.json (e.g. another run's, or one with fewer training "
                      "images) instead of making them."),
]


def train_options(command):
    """Adds ``TRAIN_OPTIONS`` to ``command``, in the order listed."""
    for option in reversed(TRAIN_OPTIONS):
        command = option(command)
    return command


def train_config_options(parameters: dict) -> dict:
    """``TrainConfig`` keyword arguments from (some of) the parameters of ``TRAIN_OPTIONS``."""
    options = dict(parameters)
    if "no_skip_connections" in options:
        options["skip_connections"] = not options.pop("no_skip_connections")
    if "no_augment" in options:
        options["augment"] = not options.pop("no_augment")
    if "no_shear" in options:
        options["shear"] = not options.pop("no_shear")
    if options.get("weights") == "none":
        options["weights"] = None
    return options


def recipe_config(ctx, parameters: dict) -> TrainConfig:
    """The ``TrainConfig`` of the options among ``parameters`` that the user (or the command's default map) set, the
    others from ``--recipe`` or the preset's recipe (``TrainConfig.from_recipe``): ``--architecture resformer`` trains
    with the ResFormer paper's options unless told otherwise."""
    given = {name: value for name, value in parameters.items()
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
    return TrainConfig.from_recipe(**train_config_options(given))


def _given_options(ctx, names=None) -> list[str]:
    """The options among ``names`` (default: all but --resume) that the user gave rather than left at default."""
    names = [name for name in ctx.params if name != "resume_dir"] if names is None else names
    defaults = (None, click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP)
    return [f"--{name.replace('_', '-')}" for name in names if ctx.get_parameter_source(name) not in defaults]


def _refuse_options_with_resume(ctx) -> None:
    given = _given_options(ctx)
    if given:
        raise click.UsageError(f"--resume takes no other option (received {given[0]})")


@main.command()
@train_options
@click.option("--output-dir", type=click.Path(), default=None,
              help="The run directory [default: runs/<date>-<encoder>-<dataset>].")
@click.option("--resume", "resume_dir", type=click.Path(), default=None,
              help="Continue the run in this directory from its last finished epoch (no other option).")
@click.pass_context
@user_errors_as_messages
def train(ctx, resume_dir, **options):
    """Train a multi-task U-Net (or a single-task baseline) and write a run directory."""
    from mtunet.training.loop import train as run_training

    if resume_dir is not None:
        _refuse_options_with_resume(ctx)
        run = run_training(resume=resume_dir)
    else:
        run = run_training(recipe_config(ctx, options))
    metrics = ", ".join(f"{name} {value:.4f}" for name, value in run.best_metrics.items())
    click.echo(f"best epoch {run.best_epoch}: validation {metrics}")
    click.echo(f"run directory: {run.directory}")


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--split", type=click.Choice(EVALUATION_SPLITS), default=None,
              help="Split to evaluate [default: test of the run's splits.json; all for another --dataset].")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="A .keras model to evaluate instead of RUN_DIR/best.keras.")
@click.option("--dataset", default=None,
              help="Evaluate on this dataset instead of the run's (same class names, same order).")
@DATA_DIR
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Mask probability above which a pixel is lesion.")
@click.option("--empty", type=click.Choice(EMPTY_MASK_RULES), default="one", show_default=True,
              help="Images whose true and predicted masks are both empty: Dice 1, or left out (nnU-Net).")
@click.option("--bootstrap-resamples", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Resamples of the 95% bootstrap confidence intervals.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="[default: RUN_DIR/evaluation/<split>, or RUN_DIR/evaluation/<dataset>[-<data dir>]/<split>]")
@user_errors_as_messages
def evaluate(run_dir, **options):
    """Evaluate a run's model on a split it never trained on: metrics.json, plots and report.html."""
    from mtunet.evaluation.run import evaluate_run

    results = evaluate_run(run_dir, **options)
    _echo_evaluation(results)


def _echo_evaluation(results: dict) -> None:
    shown = ["accuracy", "balanced_accuracy", "auc", "dice_mean", "iou_mean", "thresholded_jaccard"]
    intervals = results.get("confidence_intervals", {})

    def figure(name):
        interval = intervals.get(name)
        bounds = (f" [{interval['low']:.3f}, {interval['high']:.3f}]"
                  if interval and interval["low"] is not None and interval["high"] is not None else "")
        return f"{name} {results[name]:.4f}{bounds}"

    unit = f"; 95% bootstrap intervals over {intervals['units']} {intervals['unit']}s" if "unit" in intervals else ""
    click.echo(f"{results['split']}: {results['n_images']} images{unit}; "
               + ", ".join(figure(name) for name in shown if results.get(name) is not None))
    click.echo(f"report: {results['output_dir']}/report.html (metrics.json, predictions.npz and plots beside it)")


def _echo_export(result) -> None:
    """Prints where ``mtunet.export_model`` wrote and how well the export agrees with the Keras model."""
    info = result.info
    if result.format == "saved_model":
        check = info["self_check"]
        click.echo(f"SavedModel written to {result.directory} (signatures: serving_default, predict_encoded); "
                   f"reloaded in a fresh process on {check['images']}: largest difference from the Keras model "
                   + ", ".join(f"{name} {figures['max_abs_diff']:.2g}" for name, figures in check["signatures"].items())
                   + f" (allowed below {check['tolerance']:g})")
        return
    tflite = info["tflite"]
    click.echo(f"TFLite models written to {result.directory}; input {tflite['input']}; compared with the Keras model "
               f"on {tflite['compared_on']}:")
    shown = {"label_max_abs_diff": "label max |difference| {:.2g}", "same_class": "same class on {} images",
             "mask_max_abs_diff": "mask max |difference| {:.2g}", "mask_dice_mean": "mask Dice {:.4f}"}
    for figures in tflite["variants"].values():
        agreement = ", ".join(text.format(figures[name]) for name, text in shown.items() if name in figures)
        click.echo(f"  {figures['file']}: {figures['size_bytes'] / 2 ** 20:.2f} MiB; {agreement}")


@main.command()
@click.argument("model_or_run", type=click.Path())
@click.option("--output-dir", required=True, type=click.Path(file_okay=False),
              help="Model base folder: the export goes to OUTPUT_DIR/<version>/.")
@click.option("--version", "model_version", type=click.IntRange(min=1), default=1, show_default=True,
              help="Version number; an existing version is never overwritten.")
@click.option("--format", "export_format", type=click.Choice(EXPORT_FORMATS), default="saved_model",
              show_default=True, help="TF Serving SavedModel, or TFLite float32 / float16 / dynamic-range files.")
@user_errors_as_messages
def export(model_or_run, output_dir, model_version, export_format):
    """Export a .keras model or a run's best model for TF Serving (checked in a fresh process) or TFLite."""
    from mtunet.deploy.export import export_model

    _echo_export(export_model(model_or_run, output_dir, version=model_version, format=export_format))


def _predict_with_progress(model_or_export, inputs, output_dir, threshold, batch_size):
    """Runs ``mtunet.predict_files`` with a progress bar; returns its result."""
    from mtunet.deploy.predict import list_images, load_predictor, predict_files

    files = list_images(inputs)
    predictor = load_predictor(model_or_export)
    with click.progressbar(length=len(files), label="predicting", file=click.get_text_stream("stderr")) as bar:
        return predict_files(predictor, files, output_dir, threshold=threshold, batch_size=batch_size,
                             progress=bar.update)


@main.command()
@click.argument("model_or_export", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--output-dir", required=True, type=click.Path(file_okay=False),
              help="Where predictions.csv, the masks and the overlays go.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Mask probability above which a pixel is lesion.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@user_errors_as_messages
def predict(model_or_export, inputs, output_dir, threshold, batch_size):
    """Predict image files or folders with a .keras model, a run directory or an exported SavedModel.

    Writes predictions.csv, and a mask and an overlay PNG per image at its own size. Unreadable files are skipped,
    named, and make the exit status 1.
    """
    result = _predict_with_progress(model_or_export, inputs, output_dir, threshold, batch_size)
    counts = result.table["predicted_class"].value_counts() if "predicted_class" in result.table else {}
    classes = f"; predicted {', '.join(f'{name} {count}' for name, count in counts.items())}" if len(counts) else ""
    click.echo(f"{len(result.table)} image(s) predicted: {result.csv_path} (masks and overlays beside it){classes}")
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} file(s) could not be read and have no prediction: "
                                   + "; ".join(f"{file} ({reason})" for file, reason in result.failed))


@main.command()
@click.argument("run_or_model", type=click.Path())
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--split", default="test", show_default=True,
              help="Split of the run's splits.json to explain when no IMAGES are given (true masks shown).")
@click.option("--output-dir", type=click.Path(), default=None,
              help="[default: RUN_DIR/gradcam, or gradcam/ beside the model file]")
@click.option("--num-images", type=click.IntRange(min=1), default=None,
              help="At most N images [default: every IMAGES file, or 16 of the split].")
@click.option("--target-class", default="predicted", show_default=True,
              help="Class whose score is explained: 'predicted' (each image's own) or a class name.")
@click.option("--layer", default="auto", show_default=True,
              help="Feature map: 'auto' (the encoder's bottleneck, or a finer encoder feature when the bottleneck is "
                   "under 7 x 7) or the name of any layer, also inside the encoder.")
@click.option("--head", default="label", show_default=True,
              help="The head explained: label (Grad-CAM of the class score) or mask (Seg-Grad-CAM of the mask "
                   "logits summed over the image; of one class, --target-class, for a multi-class mask).")
@click.pass_context
@user_errors_as_messages
def gradcam(ctx, run_or_model, images, split, output_dir, num_images, target_class, layer, head):
    """Grad-CAM heatmaps of a run's test split or of IMAGES files: one PNG per image and an index.html gallery.

    RUN_OR_MODEL is a run directory (its best.keras and class names) or a .keras model file. Unreadable IMAGES are
    reported and skipped.
    """
    from mtunet.explain.gallery import prepare_gallery

    if images and ctx.get_parameter_source("split") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("give either --split or IMAGES, not both")
    gallery = prepare_gallery(run_or_model, images=images or None, split=split, output_dir=output_dir,
                              num_images=num_images, target_class=target_class, layer=layer, head=head)
    for file, reason in gallery.skipped:
        click.echo(f"skipped {file}: {reason}", err=True)
    with click.progressbar(length=len(gallery.examples), label="Grad-CAM") as bar:
        summary = gallery.write(progress=bar.update)
    if "pointing_game_hit_rate" in summary:
        click.echo(f"Grad-CAM mass inside the true lesion {summary['mass_in_lesion']:.3f}, pointing game "
                   f"hit rate {summary['pointing_game_hit_rate']:.3f}")
    click.echo(f"{gallery.heatmap_description()} at layer {gallery.cam.layer}, {len(summary['images'])} image(s) of "
               f"{gallery.source}; gallery: {summary['index']}")


@main.command()
@click.option("--output-dir", type=click.Path(), default=None,
              help="The run directory [default: runs/<date>-mobilenetv2-synthetic].")
@click.option("--epochs", type=click.IntRange(min=1), default=DEMO_EPOCHS, show_default=True)
@click.option("--image-size", type=click.IntRange(min=32), default=DEMO_IMAGE_SIZE, show_default=True,
              help="Square training size in pixels; a multiple of 32.")
@user_errors_as_messages
def demo(output_dir, epochs, image_size):
    """Train MobileNetV2 from scratch on the built-in synthetic dataset, evaluate it on its test split, export it as a
    SavedModel, predict a few test images with the export and write a Grad-CAM gallery of test images."""
    from mtunet.data.synthetic import NATIVE_SIZE
    from mtunet.demo import run_demo

    result = run_demo(output_dir, epochs=epochs, image_size=image_size)
    click.echo(f"run directory: {result.run.directory}")
    _echo_evaluation(result.evaluation)
    gradcam = result.evaluation.get("gradcam")
    if gradcam:
        click.echo(f"Grad-CAM of the class head ({gradcam['layer']}): pointing game hit rate "
                   f"{gradcam['pointing_game_hit_rate']:.3f} (chance {gradcam['pointing_game_chance']:.3f})")
    _echo_export(result.export)
    click.echo(f"exported model: {result.export.directory}; {len(result.predictions.table)} test images at their "
               f"native {NATIVE_SIZE} px ({result.images[0].parent}) predicted with it: {result.predictions.csv_path} "
               "(masks and overlays beside it)")
    click.echo(f"Grad-CAM gallery: {result.gallery['index']}")


@main.group()
def experiment():
    """K-fold experiments: variants trained and evaluated on the same patient-grouped folds, with paired tests."""


# --vary names that are not a train option's own name
VARY_ALIASES = {"skip": "skip-connections"}


def _vary_option(command, name):
    """``(option, inverted)``: the train option ``--NAME`` of ``command``, or the flag ``--no-NAME`` (inverted)."""
    name = VARY_ALIASES.get(name, name)
    for option in command.params:
        if isinstance(option, click.Option) and option.name != "resume_dir":
            if f"--{name}" in option.opts:
                return option, False
            if option.is_flag and f"--no-{name}" in option.opts:
                return option, True
    return None, False


def _parse_vary(ctx, param, specs):
    """``[(variant name, {parameter: value})]``: the product of every ``--vary OPTION=VALUE,VALUE,...``, each value
    read exactly as the train option reads it (``on``/``off`` for flags); no variant without ``--vary``."""
    if not specs:
        return []
    axes = []
    for spec in specs:
        name, _, values = spec.partition("=")
        name = name.strip().removeprefix("--")
        if not name or not values:
            raise click.BadParameter(f"{spec!r}: expected OPTION=VALUE,VALUE,..., e.g. skip=on,off")
        option, inverted = _vary_option(ctx.command, name)
        if option is None or option.name in ("folds", "seeds", "output_dir", "vary"):
            raise click.BadParameter(f"{spec!r}: {name!r} is not a training option; expected one of `mtunet train`'s "
                                     f"options without the dashes, e.g. skip, loss-weights, encoder")
        axis = []
        for text in values.split(","):
            text = text.strip()
            if not text:
                raise click.BadParameter(f"{spec!r}: empty value; expected OPTION=VALUE,VALUE,...")
            try:
                value = option.type_cast_value(ctx, text)
                if option.callback is not None:
                    value = option.callback(ctx, option, value)
            except click.BadParameter as error:
                raise click.BadParameter(f"{spec!r}: {error.message}") from None
            axis.append((f"{name}={text}", {option.name: (not value) if inverted else value}))
        axes.append(axis)
    return [(" ".join(label for label, _ in combination),
             {key: value for _, parameters in combination for key, value in parameters.items()})
            for combination in itertools.product(*axes)]


def experiment_command(command):
    """The options every experiment command shares, after the train options."""
    for option in reversed([
        click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
                     help="Patient-grouped, class-stratified folds; each is held out for test once."),
        click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Trainings per variant and fold, with seeds SEED, SEED+1, ... (the folds come from SEED)."),
        click.option("--output-dir", type=click.Path(), default=None,
                     help="The experiment directory [default: experiments/<date>-<dataset>]."),
        click.option("--resume", "resume_dir", type=click.Path(), default=None,
                     help="Finish the experiment in this directory; finished runs are not retrained (no other "
                          "option)."),
        click.pass_context,
        user_errors_as_messages,
    ]):
        command = option(command)
    return train_options(command)


def _run_experiment(ctx, variants, parameters):
    """Runs (or, with --resume, finishes) the experiment and prints its variant table and files."""
    from mtunet.experiment import SUMMARY_MARKDOWN, Variant, run_experiment

    resume_dir = parameters.pop("resume_dir")
    folds, seeds, output_dir = parameters.pop("folds"), parameters.pop("seeds"), parameters.pop("output_dir")
    if resume_dir is not None:
        _refuse_options_with_resume(ctx)
        result = run_experiment(resume=resume_dir)
    else:
        varied = sorted({name for _, options in variants for name in options})
        given = _given_options(ctx, varied)
        if given:
            raise click.UsageError(f"{given[0]} is set by each variant; leave it out")
        config = recipe_config(ctx, parameters)
        result = run_experiment(config, [Variant(name, train_config_options(options)) for name, options in variants],
                                folds=folds, seeds=seeds, output_dir=output_dir)
    markdown = (result.directory / SUMMARY_MARKDOWN).read_text()
    click.echo(markdown.split("\n## ")[0].strip())
    for warning in result.summary["warnings"]:
        click.echo(f"warning: {warning}")
    click.echo(f"experiment directory: {result.directory} (results.csv, summary.md, summary.json, summary.png)")


# experiments promise the same numbers for the same seed, so their runs use deterministic ops unless told otherwise
DETERMINISTIC_BY_DEFAULT = {"default_map": {"deterministic": True}}


@experiment.command(context_settings=DETERMINISTIC_BY_DEFAULT)
@click.option("--variants", default="multi,segmentation,classification", show_default=True,
              help="Comma-separated tasks to compare: the multi-task model and its single-task baselines.")
@experiment_command
def compare(ctx, variants, **parameters):
    """Compare the multi-task model with its single-task baselines on the same K folds.

    Every variant x fold x seed is an ordinary run directory under EXPERIMENT_DIR/runs/, evaluated on its held-out
    fold; results.csv, summary.md / summary.json (mean ± sd, 95% CI, paired t-test and Wilcoxon test, Cohen's d)
    and summary.png are written when all are done.
    """
    from mtunet.experiment import task_variants

    tasks = [task.strip() for task in variants.split(",") if task.strip()]
    _run_experiment(ctx, [(variant.name, variant.options) for variant in task_variants(tasks)], parameters)


@experiment.command(context_settings=DETERMINISTIC_BY_DEFAULT)
@click.option("--vary", multiple=True, callback=_parse_vary, metavar="OPTION=VALUE,VALUE,...",
              help="A training option and its values, e.g. skip=on,off or loss-weights=1:1,5:1,1:5; repeat to vary "
                   "several (every combination).")
@experiment_command
def ablate(ctx, vary, **parameters):
    """Train variants of one configuration that differ in the --vary options, on the same K folds.

    Every variant x fold x seed is an ordinary run directory under EXPERIMENT_DIR/runs/, evaluated on its held-out
    fold; results.csv, summary.md / summary.json and summary.png are written when all are done.
    """
    if not vary and parameters["resume_dir"] is None:
        raise click.UsageError("ablate needs --vary OPTION=VALUE,VALUE,... (e.g. --vary skip=on,off)")
    _run_experiment(ctx, vary, parameters)
