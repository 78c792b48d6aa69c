"""Training: the paper's 5:1 class-balanced multi-task recipe, single-task baselines, resumable run directories."""

import csv
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import pathlib
import tempfile

import keras
import tensorflow as tf

from mtunet.data.augment import FLIP_MODES
from mtunet.distribute import STRATEGIES, is_chief, select_strategy
from mtunet.errors import ConfigError, MtunetError
from mtunet.losses import SEGMENTATION_LOSSES, SegmentationLoss, WeightedCategoricalCrossentropy
from mtunet.metrics import MeanDice, MeanIoU
from mtunet.model import TASKS, build_model, check_input_shape

logger = logging.getLogger(__name__)

# Adam at the paper's fixed 1e-3 leaves the validation loss of a from-scratch model swinging from epoch to epoch,
# so early stopping keeps an early epoch; halving the rate when the validation loss stalls settles it.
LR_REDUCTION_FACTOR, MIN_LR_FRACTION = 0.5, 0.01

CONFIG_FILE, SPLITS_FILE, HISTORY_FILE, BEST_MODEL_FILE = "config.json", "splits.json", "history.csv", "best.keras"
SUMMARY_FILE, CURVES_FILE, BACKUP_DIR, LOG_DIR = "summary.json", "curves.png", "backup", "logs"


class TrainingDivergedError(MtunetError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(MtunetError):
    """Training was stopped with Ctrl-C after the last finished epoch was saved."""


@dataclasses.dataclass
class TrainConfig:
    """Every option of a training run; the defaults reproduce the paper.

    ``loss_weights`` is ``(segmentation, classification)``; ``output_dir`` is the run directory itself (default
    ``runs/<date>-<encoder>-<dataset>``). ``fold`` and ``num_folds`` hold fold ``fold`` (0-based) of a patient-grouped
    K-fold split out as the test split; ``split_seed`` seeds the split (None: ``seed``), so that runs trained with
    different seeds can share their splits.
    """

    encoder: str = "mobilenetv2"
    weights: str | None = "imagenet"
    freeze_encoder: bool = False
    unfreeze_after: int | None = None
    dataset: str = "synthetic"
    data_dir: str | None = None
    image_size: int = 224
    batch_size: int = 32
    epochs: int = 50
    learning_rate: float = 1e-3
    loss_weights: tuple[float, float] = (5.0, 1.0)
    seg_loss: str = "bce"
    class_weights: str = "balanced"
    label_smoothing: float = 0.0
    task: str = "multi"
    skip_connections: bool = True
    augment: bool = True
    flip: str = "horizontal_and_vertical"
    patience: int = 10
    reduce_lr_patience: int = 3
    seed: int = 0
    split_seed: int | None = None
    fold: int | None = None
    num_folds: int | None = None
    deterministic: bool = False
    mixed_precision: bool = False
    jit_compile: bool = False
    strategy: str = "auto"
    output_dir: str | None = None
    skip_bad_files: bool = False

    def validate(self):
        """Raises ``ConfigError`` naming the first invalid option or combination."""
        check_input_shape((self.image_size, self.image_size, 3))
        seg_weight, cls_weight = self.loss_weights
        if seg_weight < 0 or cls_weight < 0 or seg_weight + cls_weight == 0:
            raise ConfigError(f"--loss-weights {seg_weight:g}:{cls_weight:g}: weights must be non-negative and not "
                              "both zero")
        choices = {"task": (self.task, TASKS), "seg_loss": (self.seg_loss, SEGMENTATION_LOSSES),
                   "class_weights": (self.class_weights, ("balanced", "none")), "strategy": (self.strategy, STRATEGIES),
                   "flip": (self.flip, FLIP_MODES)}
        for option, (value, valid) in choices.items():
            if value not in valid:
                raise ConfigError(f"--{option.replace('_', '-')} {value!r}: expected one of: {', '.join(valid)}")
        if self.reduce_lr_patience < 0:
            raise ConfigError(f"--reduce-lr-patience {self.reduce_lr_patience}: expected 0 (constant learning rate) "
                              "or a positive number of epochs")
        if self.batch_size < 1 or self.epochs < 1 or self.learning_rate <= 0:
            raise ConfigError("--batch-size, --epochs and --learning-rate must be positive")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing {self.label_smoothing}: expected a value in [0, 1)")
        if self.unfreeze_after is not None and not 0 < self.unfreeze_after < self.epochs:
            raise ConfigError(f"--unfreeze-after {self.unfreeze_after}: expected an epoch between 1 and "
                              f"{self.epochs - 1} (--epochs {self.epochs})")

    @classmethod
    def from_options(cls, options: dict) -> "TrainConfig":
        """A config from options as stored in JSON (``loss_weights`` may be a list); ``ConfigError`` names unknown
        options."""
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; expected options of TrainConfig")
        options = dict(options)
        if "loss_weights" in options:
            options["loss_weights"] = tuple(options["loss_weights"])
        return cls(**options)

    def default_output_dir(self) -> pathlib.Path:
        dataset = self.dataset.replace("/", "-")  # a builder config, e.g. isic2018/task1_512
        return pathlib.Path("runs") / f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{self.encoder}-{dataset}"


@dataclasses.dataclass
class Run:
    """A finished training run: its directory, options, per-epoch history and best epoch (1-based)."""

    directory: pathlib.Path
    config: TrainConfig
    history: list[dict]
    best_epoch: int
    best_metrics: dict

    @property
    def best_model_path(self) -> pathlib.Path:
        return self.directory / BEST_MODEL_FILE


def write_atomically(path: pathlib.Path, write):
    """Calls ``write(temporary_path)`` then renames it to ``path``, so ``path`` is never left half-written."""
    path = pathlib.Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix="".join(path.suffixes))
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates the file private to its owner
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path, content):
    def write(temporary):
        with open(temporary, "w") as file:
            json.dump(content, file, indent=2, default=str)

    write_atomically(path, write)


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever the validation loss improves, atomically.

    Keras's ModelCheckpoint writes the ``.keras`` file in place, so a kill during the write would leave a corrupt
    ``best.keras``; this writes a temporary file and renames it.
    """

    def __init__(self, path, best=math.inf, monitor="val_loss"):
        super().__init__()
        self.path, self.best, self.monitor = pathlib.Path(path), best, monitor
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value) or value >= self.best:
            return
        self.best, self.best_epoch = value, epoch + 1
        write_atomically(self.path, self.model.save)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite and remembers the epoch (1-based)."""

    def __init__(self):
        super().__init__()
        self.epoch, self.failed_epoch = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failed_epoch = self.epoch + 1
            self.model.stop_training = True


def compile_model(model, config, class_weights):
    """Compiles ``model`` with the losses, loss weights, metrics, optimiser and XLA setting of ``config``."""
    seg_weight, cls_weight = config.loss_weights
    losses, loss_weights, metrics = {}, {}, {}
    # Keras prefixes metric names with the output's name only when there are several outputs; naming them here
    # keeps history.csv's columns (label_accuracy, mask_dice, ...) the same for single-task baselines.
    prefix = {name: "" if len(model.output_names) > 1 else f"{name}_" for name in model.output_names}
    if "label" in model.output_names:
        losses["label"] = WeightedCategoricalCrossentropy(class_weights, config.label_smoothing)
        loss_weights["label"] = cls_weight
        metrics["label"] = [keras.metrics.CategoricalAccuracy(name=f"{prefix['label']}accuracy"),
                            keras.metrics.AUC(name=f"{prefix['label']}auc")]
    if "mask" in model.output_names:
        losses["mask"] = SegmentationLoss(config.seg_loss)
        loss_weights["mask"] = seg_weight
        metrics["mask"] = [MeanDice(name=f"{prefix['mask']}dice"), MeanIoU(name=f"{prefix['mask']}iou")]
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=losses, loss_weights=loss_weights,
                  metrics=metrics, jit_compile=config.jit_compile)


def _read_history(path) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as file:
        return [{key: (int(value) if key == "epoch" else float(value)) for key, value in row.items()}
                for row in csv.DictReader(file)]


def _truncate_history(path, epochs):
    """Keeps the first ``epochs`` rows of history.csv: a row written after the last backup is trained again."""
    rows = _read_history(path)
    if len(rows) <= epochs:
        return
    with open(path, newline="") as file:
        lines = file.readlines()

    def write(temporary):
        with open(temporary, "w", newline="") as file:
            file.writelines(lines[: epochs + 1])

    write_atomically(path, write)


def _backup_epoch(backup_dir) -> int:
    metadata = pathlib.Path(backup_dir) / "training_metadata.json"
    return json.loads(metadata.read_text())["epoch"] if metadata.exists() else 0


def plot_curves(history: list[dict], path):
    """Writes loss, accuracy and Dice per epoch, training and validation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, title) for name, title in [("loss", "loss"), ("label_accuracy", "accuracy"),
                                                ("mask_dice", "Dice")] if history and name in history[0]]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    epochs = [row["epoch"] + 1 for row in history]
    for axis, (name, title) in zip(axes[0], panels):
        axis.plot(epochs, [row[name] for row in history], marker="o", label="training")
        axis.plot(epochs, [row[f"val_{name}"] for row in history], marker="o", label="validation")
        axis.set(title=title, xlabel="epoch")
        axis.legend()
    figure.tight_layout()
    write_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
    plt.close(figure)


def data_fingerprint(data) -> str:
    """SHA-256 over every split's example ids and labels: the same data gives the same fingerprint."""
    digest = hashlib.sha256()
    for split in ("train", "validation", "test"):
        digest.update(json.dumps([split, list(map(str, data.ids(split))), data.labels(split).tolist()]).encode())
    return digest.hexdigest()


def versions() -> dict:
    """Versions of mtunet, TensorFlow and Keras, as recorded in config.json and model_info.json."""
    import mtunet

    return {"mtunet": mtunet.__version__, "tensorflow": tf.__version__, "keras": keras.__version__}


def _select_outputs(dataset, output_names):
    return dataset.map(lambda image, targets: (image, {name: targets[name] for name in output_names}))


def load_config(run_dir) -> TrainConfig:
    """Reads the options of the run in ``run_dir``."""
    path = pathlib.Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {CONFIG_FILE} not found")
    return TrainConfig.from_options(json.loads(path.read_text())["options"])


def train(config: TrainConfig | None = None, *, resume=None, **options) -> Run:
    """Trains a model and returns the finished run.

    Args:
        config: the options; or give them as keyword arguments (``train(encoder="vgg16", epochs=5)``).
        resume: a run directory to continue from its last finished epoch, with the options it was started with.

    Files written to the run directory: config.json, splits.json, history.csv, logs/ (TensorBoard), best.keras
    (best validation loss), backup/ (the state to resume from), curves.png, summary.json (written last: its
    presence means the run finished).
    """
    from mtunet.data import load_dataset

    if resume is not None:
        if config is not None or options:
            raise ConfigError("--resume takes the options of the run it resumes; give no other training option")
        run_dir = pathlib.Path(resume)
        config = load_config(run_dir)
        if (run_dir / SUMMARY_FILE).exists():
            raise ConfigError(f"run {run_dir} has already finished ({SUMMARY_FILE} exists); nothing to resume")
    else:
        config = config or TrainConfig(**options)
        run_dir = pathlib.Path(config.output_dir) if config.output_dir else config.default_output_dir()
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"--output-dir {run_dir} already exists and is not empty; choose another directory or "
                              f"continue it with --resume {run_dir}")
    config.validate()
    chief = is_chief()
    run_dir.mkdir(parents=True, exist_ok=True)

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = select_strategy(config.strategy)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(f"--batch-size {config.batch_size} is not divisible by the "
                          f"{strategy.num_replicas_in_sync} replicas of --strategy {config.strategy}")
    if config.mixed_precision:
        on_gpu = bool(tf.config.list_logical_devices("GPU"))
        keras.mixed_precision.set_global_policy("mixed_float16" if on_gpu else "mixed_bfloat16")

    splits_path = run_dir / SPLITS_FILE
    split_seed = config.seed if config.split_seed is None else config.split_seed
    data = load_dataset(config.dataset, data_dir=config.data_dir, image_size=config.image_size, seed=split_seed,
                        splits_path=splits_path if splits_path.exists() else None, fold=config.fold,
                        num_folds=config.num_folds, skip_bad_files=config.skip_bad_files)
    info = data.info
    class_weights = data.class_weights() if config.class_weights == "balanced" else None
    if chief:
        if not splits_path.exists():
            write_atomically(splits_path, data.splits.save)
        write_json(run_dir / CONFIG_FILE, {
            "options": dataclasses.asdict(config), "versions": versions(), "dataset": info.to_dict(),
            "class_names": list(info.class_names), "split_seed": split_seed,
            "data_fingerprint": data_fingerprint(data),
            "class_weights": None if class_weights is None else [float(w) for w in class_weights],
        })

    with strategy.scope():
        model = build_model(config.encoder, input_shape=(config.image_size, config.image_size, info.channels),
                            num_classes=info.num_classes, weights=config.weights,
                            skip_connections=config.skip_connections, task=config.task,
                            freeze_encoder=config.freeze_encoder or config.unfreeze_after is not None)
    output_names = list(model.output_names)
    train_data = _select_outputs(data.pipeline("train", batch_size=config.batch_size, training=True,
                                               augment=config.augment, seed=config.seed, flip=config.flip),
                                 output_names)
    validation_data = _select_outputs(data.pipeline("validation", batch_size=config.batch_size, training=False),
                                      output_names)

    history_path = run_dir / HISTORY_FILE
    previous = _read_history(history_path)
    checkpoint = BestModelCheckpoint(run_dir / BEST_MODEL_FILE,
                                     best=min((row["val_loss"] for row in previous), default=math.inf))
    nan_guard = StopOnNonFiniteLoss()
    # (frozen encoder?, last epoch of the phase): heads first, then fine-tuning, when --unfreeze-after is given
    phases = ([(True, config.unfreeze_after), (False, config.epochs)] if config.unfreeze_after
              else [(config.freeze_encoder, config.epochs)])
    stopped_early = False
    for index, (frozen, last_epoch) in enumerate(phases, start=1):
        backup_dir = run_dir / BACKUP_DIR / f"phase{index}"
        done = max(_backup_epoch(backup_dir), _backup_epoch(run_dir / BACKUP_DIR / f"phase{index - 1}"))
        if done >= last_epoch or stopped_early:
            continue
        if index > 1 and not (backup_dir / "training_metadata.json").exists() and done:
            # resumed between phases: start fine-tuning from the weights the previous phase ended with
            model.load_weights(run_dir / BACKUP_DIR / f"phase{index - 1}" / "final.weights.h5")
        _truncate_history(history_path, done)
        model.get_layer("encoder").trainable = not frozen
        with strategy.scope():
            compile_model(model, config, class_weights)
        callbacks = [keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
                     keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                                   restore_best_weights=True),
                     nan_guard]
        if chief:
            # the history row before the checkpoint: a kill between the two repeats the epoch, and the resumed run
            # truncates the history to the backup
            callbacks[:0] = [keras.callbacks.CSVLogger(history_path, append=True)]
        if config.reduce_lr_patience:
            # first, so that the epoch's learning rate, which it adds to the logs, reaches history.csv
            callbacks[:0] = [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=LR_REDUCTION_FACTOR,
                                                               patience=config.reduce_lr_patience,
                                                               min_lr=config.learning_rate * MIN_LR_FRACTION)]
            callbacks += [keras.callbacks.TensorBoard(run_dir / LOG_DIR, profile_batch=0), checkpoint]
        try:
            model.fit(train_data, validation_data=validation_data, epochs=last_epoch, initial_epoch=done,
                      callbacks=callbacks)
        except KeyboardInterrupt:
            raise TrainingInterrupted(f"training interrupted; the last finished epoch is saved: continue with "
                                      f"mtunet train --resume {run_dir}") from None
        if nan_guard.failed_epoch is not None:
            raise TrainingDivergedError(
                f"the loss became NaN or infinite in epoch {nan_guard.failed_epoch}; likely causes: a learning rate "
                f"too high (try --learning-rate {config.learning_rate / 10:g}), float16 overflow with "
                f"--mixed-precision, or corrupt input data; the last good model is {run_dir / BEST_MODEL_FILE}")
        stopped_early = model.stop_training
        if chief:
            model.save_weights(backup_dir / "final.weights.h5")

    history = _read_history(history_path)
    best = min(history, key=lambda row: row["val_loss"])
    run = Run(run_dir, config, history, best["epoch"] + 1,
              {key[4:]: value for key, value in best.items() if key.startswith("val_")})
    if chief:
        plot_curves(history, run_dir / CURVES_FILE)
        write_json(run_dir / SUMMARY_FILE, {"best_epoch": run.best_epoch, "best_validation_metrics": run.best_metrics,
                                             "epochs_trained": len(history), "stopped_early": stopped_early})
    return run
