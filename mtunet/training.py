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
import shutil
import tempfile

import keras
import tensorflow as tf

from mtunet.averaging import AveragingAdam, SwapInAveragedWeights
from mtunet.batchnorm import PreciseBatchNorm
from mtunet.distribute import is_chief, select_strategy
from mtunet.errors import ConfigError, MtunetError
from mtunet.models import (
    DECODERS, PRESETS, SKIPS, TASKS, LossSettings, ModelSpec, build_model_from_spec, check_input_shape, make_spec,
    model_heads, set_encoder_trainable,
)
from mtunet.options import CLASS_WEIGHTS, FLIP_MODES, SEGMENTATION_LOSSES, STRATEGIES
from mtunet.rundir import (
    BACKUP_DIR, BACKUP_METADATA, BEST_MODEL_FILE, CONFIG_FILE, CURVES_FILE, HISTORY_FILE, LOG_DIR, SPLITS_FILE,
    SUMMARY_FILE, versions, write_atomically, write_json,
)

logger = logging.getLogger(__name__)

# Adam at the paper's fixed 1e-3 leaves the validation loss of a from-scratch model swinging from epoch to epoch,
# so early stopping keeps an early epoch; halving the rate when the validation loss stalls settles it.
LR_REDUCTION_FACTOR, MIN_LR_FRACTION = 0.5, 0.01


class TrainingDivergedError(MtunetError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(MtunetError):
    """Training was stopped with Ctrl-C after the last finished epoch was saved."""

    exit_code = 130  # the shell's status of a process ended by SIGINT


@dataclasses.dataclass
class TrainConfig:
    """Every option of a training run; the defaults reproduce the paper.

    The model is preset ``architecture`` with ``encoder`` and, where given, ``decoder`` and ``skip`` instead of the
    preset's (``mtunet.PRESETS``, ``mtunet.DECODERS``, ``mtunet.SKIPS``).

    ``loss_weights`` is ``(segmentation, classification)``; ``output_dir`` is the run directory itself (default
    ``runs/<date>-<encoder>-<dataset>``). ``fold`` and ``num_folds`` hold fold ``fold`` (0-based) of a patient-grouped
    K-fold split out as the test split; ``split_seed`` seeds the split (None: ``seed``), so that runs trained with
    different seeds can share their splits.
    """

    architecture: str = "unet"
    encoder: str = "mobilenetv2"
    decoder: str | None = None
    skip: str | None = None
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
    flip: str = "horizontal"
    patience: int = 10
    reduce_lr_patience: int = 3
    seed: int = 0
    split_seed: int | None = None
    fold: int | None = None
    num_folds: int | None = None
    deterministic: bool = False
    mixed_precision: bool = False
    jit_compile: bool = False
    precise_bn: bool = True
    ema_momentum: float = 0.0
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
        choices = {"architecture": (self.architecture, PRESETS), "task": (self.task, TASKS),
                   "seg_loss": (self.seg_loss, SEGMENTATION_LOSSES),
                   "class_weights": (self.class_weights, CLASS_WEIGHTS), "strategy": (self.strategy, STRATEGIES),
                   "flip": (self.flip, FLIP_MODES)}
        for option, (value, valid) in choices.items():
            if value not in valid:
                raise ConfigError(f"--{option.replace('_', '-')} {value!r}: expected one of: {', '.join(valid)}")
        overrides = {"decoder": (self.decoder, DECODERS), "skip": (self.skip, SKIPS)}
        for option, (value, valid) in overrides.items():
            if value is not None and value not in valid:
                raise ConfigError(f"--{option.replace('_', '-')} {value!r}: expected one of: {', '.join(valid)}")
        if self.reduce_lr_patience < 0:
            raise ConfigError(f"--reduce-lr-patience {self.reduce_lr_patience}: expected 0 (constant learning rate) "
                              "or a positive number of epochs")
        if self.batch_size < 1 or self.epochs < 1 or self.learning_rate <= 0:
            raise ConfigError("--batch-size, --epochs and --learning-rate must be positive")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ConfigError(f"--ema-momentum {self.ema_momentum}: expected a value in [0, 1) (0: no averaging)")
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


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping on the validation loss, best weights restored at the end, that a resumed run continues.

    Keras's EarlyStopping starts afresh at every ``fit``: a resumed run would forget how many epochs it has waited,
    its best validation loss and its best weights. ``restored`` (``state()`` plus ``"best_weights"``, a list of
    arrays as ``model.get_weights()`` returns) is taken up when training begins.
    """

    STATE = ("wait", "best", "best_epoch")

    def __init__(self, patience, restored=None):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True)
        self.restored = restored

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.restored is not None:
            self.wait, self.best, self.best_epoch = (self.restored[name] for name in self.STATE)
            self.best_weights = self.restored["best_weights"]

    def state(self) -> dict:
        """The counters to restore, as JSON values."""
        return {"wait": int(self.wait), "best": None if self.best is None else float(self.best),
                "best_epoch": int(self.best_epoch)}


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """Halves the learning rate after ``patience`` epochs without a better validation loss; a resumed run continues
    its count (Keras's callback starts afresh at every ``fit``; the rate itself is restored with the optimizer)."""

    STATE = ("wait", "best", "cooldown_counter")

    def __init__(self, patience, learning_rate, restored=None):
        super().__init__(monitor="val_loss", factor=LR_REDUCTION_FACTOR, patience=patience,
                         min_lr=learning_rate * MIN_LR_FRACTION)
        self.restored = restored

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.restored is not None:
            self.wait, self.best, self.cooldown_counter = (self.restored[name] for name in self.STATE)

    def state(self) -> dict:
        """The counters to restore, as JSON values."""
        return {"wait": int(self.wait), "best": None if self.best is None else float(self.best),
                "cooldown_counter": int(self.cooldown_counter)}


class EpochBackup(keras.callbacks.Callback):
    """After every finished epoch, saves what resuming needs: model and optimizer weights, the number of finished
    epochs, whether early stopping ended the phase, the early-stopping state and its best weights.

    Written by hand because keras.callbacks.BackupAndRestore overwrites its weights file in place (a kill during the
    write leaves no usable backup) and keeps no callback state. Here each epoch's weights go to a new file, written
    atomically; ``training_metadata.json``, replaced atomically after them, is the commit point naming the files it
    needs, and older files are removed only then. An epoch whose loss is not finite is not saved.
    """

    def __init__(self, directory, early_stopping: ResumableEarlyStopping,
                 reduce_lr: ResumableReduceLROnPlateau | None = None):
        super().__init__()
        self.directory, self.early_stopping, self.reduce_lr = pathlib.Path(directory), early_stopping, reduce_lr

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        weights = f"epoch{epoch + 1}.weights.h5"
        write_atomically(self.directory / weights, self.model.save_weights)
        best_weights = f"epoch{self.early_stopping.best_epoch + 1}.weights.h5"
        write_json(self.directory / BACKUP_METADATA, {
            "epoch": epoch + 1, "stopped_early": bool(self.model.stop_training), "weights": weights,
            "best_weights": best_weights, "early_stopping": self.early_stopping.state(),
            "reduce_lr": None if self.reduce_lr is None else self.reduce_lr.state()})
        for path in self.directory.glob("*.weights.h5"):
            if path.name not in (weights, best_weights):
                path.unlink()


def read_backup(directory) -> dict | None:
    """The metadata of the last epoch ``EpochBackup`` saved in ``directory``, or None if it saved none."""
    path = pathlib.Path(directory) / BACKUP_METADATA
    return json.loads(path.read_text()) if path.exists() else None


def restore_backup(model, directory) -> dict | None:
    """Loads the weights (and optimizer state) of the last epoch saved in ``directory`` into the compiled ``model``.

    Returns the early-stopping state to give ``ResumableEarlyStopping`` (with its best weights, and under
    ``"reduce_lr"`` the state of ``ResumableReduceLROnPlateau``), or None if the directory holds no backup.
    """
    backup = read_backup(directory)
    if backup is None:
        return None
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(pathlib.Path(directory) / backup["best_weights"])
    best_weights = model.get_weights()
    model.load_weights(pathlib.Path(directory) / backup["weights"])
    return {**backup["early_stopping"], "best_weights": best_weights, "reduce_lr": backup.get("reduce_lr")}


def compile_model(model, config, class_weights):
    """Compiles ``model`` with its heads' losses and metrics, the loss weights, optimiser and XLA setting of
    ``config``."""
    seg_weight, cls_weight = config.loss_weights
    weight_of_role = {"segmentation": seg_weight, "classification": cls_weight}
    settings = LossSettings(config.seg_loss, None if class_weights is None else tuple(float(w) for w in class_weights),
                            config.label_smoothing)
    heads = model_heads(model)
    # Keras prefixes metric names with the output's name only when there are several outputs; naming them here
    # keeps history.csv's columns (label_accuracy, mask_dice, ...) the same for single-task baselines.
    prefix = "" if len(heads) > 1 else f"{next(iter(heads))}_"
    losses = {name: head.loss(settings) for name, head in heads.items()}
    loss_weights = {name: weight_of_role[head.loss_role] for name, head in heads.items()}
    metrics = {name: head.metrics(prefix) for name, head in heads.items()}
    optimizer = (AveragingAdam(config.learning_rate, ema_momentum=config.ema_momentum) if config.ema_momentum
                 else keras.optimizers.Adam(config.learning_rate))
    model.compile(optimizer=optimizer, loss=losses, loss_weights=loss_weights,
                  metrics=metrics, jit_compile=config.jit_compile)


def _read_history(path) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as file:
        return [{key: (int(value) if key == "epoch" else float(value)) for key, value in row.items()}
                for row in csv.DictReader(file)]


def _truncate_history(path, epochs):
    """Keeps the header and the first ``epochs`` rows of history.csv: rows written after the last backup (perhaps
    half-written by a kill) belong to epochs that are trained again."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as file:
        lines = file.readlines()
    if not epochs:
        os.remove(path)
    elif len(lines) > epochs + 1:
        def write(temporary):
            with open(temporary, "w", newline="") as file:
                file.writelines(lines[: epochs + 1])

        write_atomically(path, write)


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


def _select_targets(dataset, heads):
    """``dataset``'s batches with, for each head, the target it learns from under the head's name."""
    return dataset.map(lambda image, targets: (image, {name: targets[head.target] for name, head in heads.items()}))


def model_spec_for(config: TrainConfig, info) -> ModelSpec:
    """The architecture ``config`` asks for, sized for the data described by ``info`` (a ``DatasetInfo``)."""
    return make_spec(config.architecture, encoder=config.encoder, decoder=config.decoder, skip=config.skip,
                     input_shape=(config.image_size, config.image_size, info.channels), num_classes=info.num_classes,
                     mask_classes=info.mask_classes, task=config.task, skip_connections=config.skip_connections)


def load_config(run_dir) -> TrainConfig:
    """Reads the options of the run in ``run_dir``."""
    path = pathlib.Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {CONFIG_FILE} not found")
    return TrainConfig.from_options(json.loads(path.read_text())["options"])


def _start_or_resume(config, resume, options) -> tuple[TrainConfig, pathlib.Path]:
    """The options and run directory of a new run, or of the run in ``resume``; checks that the directory fits."""
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
        # on a shared file system other workers of a cluster may see the chief's first files already
        if is_chief() and run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"--output-dir {run_dir} already exists and is not empty; choose another directory or "
                              f"continue it with --resume {run_dir}")
    config.validate()
    return config, run_dir


def _set_up_tensorflow(config) -> tf.distribute.Strategy:
    """Creates the distribution strategy (first: MultiWorkerMirroredStrategy must precede other TensorFlow work),
    then seeds, determinism and the mixed-precision policy."""
    strategy = select_strategy(config.strategy)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(f"--batch-size {config.batch_size} is not divisible by the "
                          f"{strategy.num_replicas_in_sync} replicas of --strategy {config.strategy}")
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    if config.mixed_precision:
        on_gpu = bool(tf.config.list_logical_devices("GPU"))
        keras.mixed_precision.set_global_policy("mixed_float16" if on_gpu else "mixed_bfloat16")
    return strategy


def _working_directory(run_dir, chief) -> pathlib.Path:
    """Where this process writes: the run directory on the chief. Other workers of a cluster run the same saving code
    (tf.distribute wants every worker to take part in saving) into a scratch directory that the caller removes,
    seeded with the run's history and backup when they exist (a shared file system), so that they resume alike."""
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="mtunet-worker-"))
    if (run_dir / HISTORY_FILE).exists():
        shutil.copy(run_dir / HISTORY_FILE, scratch / HISTORY_FILE)
    if (run_dir / BACKUP_DIR).exists():
        shutil.copytree(run_dir / BACKUP_DIR, scratch / BACKUP_DIR)
    return scratch


def _pipelines(data, config, replicas, heads) -> tuple[tf.data.Dataset, tf.data.Dataset, tf.data.Dataset]:
    """The training, validation and BatchNorm-statistics pipelines, with the targets of ``heads``; the last
    is the training split in order, not augmented, like the images the model will be used on.

    With several replicas, each global batch is split between them, and a replica given no example fails. So the
    training pipeline drops its last partial batch (a different one every epoch, and static shapes for TPUs), and the
    validation pipeline drops its last batch only when it is too small to give every replica an example.
    """
    remainder = data.info.split_sizes["validation"] % config.batch_size
    drop_validation = 0 < remainder < replicas
    if drop_validation:
        logger.warning("validation leaves out its last %d example(s): fewer than the %d replicas", remainder, replicas)
    train_data = data.pipeline("train", batch_size=config.batch_size, training=True, augment=config.augment,
                               seed=config.seed, flip=config.flip, drop_remainder=replicas > 1)
    validation_data = data.pipeline("validation", batch_size=config.batch_size, training=False,
                                    drop_remainder=drop_validation)
    statistics_data = data.pipeline("train", batch_size=config.batch_size, training=False)
    return tuple(_select_targets(pipeline, heads) for pipeline in (train_data, validation_data, statistics_data))


def _phases(config) -> list[tuple[bool, int]]:
    """``(encoder frozen?, last epoch)`` of each phase: with ``--unfreeze-after``, the heads first, then everything."""
    if config.unfreeze_after:
        return [(True, config.unfreeze_after), (False, config.epochs)]
    return [(config.freeze_encoder, config.epochs)]


def _callbacks(work_dir, backup_dir, early_stopping, reduce_lr, nan_guard, precise_bn,
               averaging) -> list[keras.callbacks.Callback]:
    """The callbacks of one phase (``reduce_lr``, ``precise_bn`` and ``averaging`` may be None). Their order
    matters: ``averaging`` first, so that the others see the averaged weights, ``precise_bn`` estimating their
    statistics before each validation; then at the end of an epoch the learning-rate reduction (it adds the epoch's
    rate to the logs, for history.csv), the history row before the backup (a kill between the two repeats the epoch,
    and the resumed run truncates the history to the backup), and early stopping and the rate reduction before the
    backup, which saves their state."""
    previous = _read_history(work_dir / HISTORY_FILE)
    callbacks = [averaging, precise_bn, reduce_lr, nan_guard,
                 keras.callbacks.CSVLogger(work_dir / HISTORY_FILE, append=True),
                 early_stopping,
                 EpochBackup(backup_dir, early_stopping, reduce_lr),
                 keras.callbacks.TensorBoard(work_dir / LOG_DIR, profile_batch=0),
                 BestModelCheckpoint(work_dir / BEST_MODEL_FILE,
                                     best=min((row["val_loss"] for row in previous), default=math.inf))]
    return [callback for callback in callbacks if callback is not None]


@dataclasses.dataclass
class _Training:
    """A model with its data and options, trained phase after phase into ``work_dir``."""

    model: keras.Model
    strategy: tf.distribute.Strategy
    config: TrainConfig
    class_weights: object
    train_data: tf.data.Dataset
    validation_data: tf.data.Dataset
    statistics_data: tf.data.Dataset
    work_dir: pathlib.Path

    def run_phases(self) -> bool:
        """Trains every phase not finished yet, each from its backup if it has one; returns whether early stopping
        ended the run. A phase starts from the weights the previous one ended with (its early-stopping best weights,
        which EarlyStopping restores at the end of ``fit``; read from its backup after a resume between phases)."""
        stopped_early, done, handover = False, 0, None
        for index, (frozen, last_epoch) in enumerate(_phases(self.config), start=1):
            if stopped_early:
                break
            backup_dir = self.work_dir / BACKUP_DIR / f"phase{index}"
            backup = read_backup(backup_dir)
            if backup is not None and (backup["epoch"] >= last_epoch or backup["stopped_early"]):
                stopped_early, done = backup["stopped_early"], backup["epoch"]
                handover = backup_dir / backup["best_weights"]
                continue
            if backup is None and handover is not None:
                self.model.load_weights(handover)
            stopped_early = self.fit_phase(backup_dir, frozen, backup["epoch"] if backup else done, last_epoch)
            done, handover = last_epoch, None
        return stopped_early

    def fit_phase(self, backup_dir, frozen, initial_epoch, last_epoch) -> bool:
        """Trains epochs ``initial_epoch + 1`` to ``last_epoch`` (or until early stopping, returning True)."""
        config = self.config
        _truncate_history(self.work_dir / HISTORY_FILE, initial_epoch)
        set_encoder_trainable(self.model, not frozen)
        with self.strategy.scope():
            compile_model(self.model, config, self.class_weights)
            restored = restore_backup(self.model, backup_dir)
        nan_guard = StopOnNonFiniteLoss()
        reduce_lr = (ResumableReduceLROnPlateau(config.reduce_lr_patience, config.learning_rate,
                                                restored and restored["reduce_lr"])
                     if config.reduce_lr_patience else None)
        # TPUs run the model only inside the compiled training and validation steps, not eagerly in a callback.
        precise_bn = (PreciseBatchNorm(self.statistics_data)
                      if config.precise_bn and not isinstance(self.strategy, tf.distribute.TPUStrategy) else None)
        averaging = SwapInAveragedWeights(resumed=restored is not None) if config.ema_momentum else None
        callbacks = _callbacks(self.work_dir, backup_dir, ResumableEarlyStopping(config.patience, restored), reduce_lr,
                               nan_guard, precise_bn, averaging)
        self.model.fit(self.train_data, validation_data=self.validation_data, epochs=last_epoch,
                       initial_epoch=initial_epoch, callbacks=callbacks)
        if nan_guard.failed_epoch is not None:
            raise TrainingDivergedError(
                f"the loss became NaN or infinite in epoch {nan_guard.failed_epoch}; likely causes: a learning rate "
                f"too high (try --learning-rate {config.learning_rate / 10:g}), float16 overflow with "
                f"--mixed-precision, or corrupt input data; the last good model is {self.work_dir / BEST_MODEL_FILE}")
        return self.model.stop_training


def _finished_epochs(work_dir) -> int:
    backups = [read_backup(path) for path in (work_dir / BACKUP_DIR).glob("phase*")]
    return max((backup["epoch"] for backup in backups if backup), default=0)


def train(config: TrainConfig | None = None, *, resume=None, **options) -> Run:
    """Trains a model and returns the finished run.

    Args:
        config: the options; or give them as keyword arguments (``train(encoder="vgg16", epochs=5)``).
        resume: a run directory to continue from its last finished epoch, with the options it was started with; the
            data must be the same (its fingerprint in config.json).

    Files written to the run directory: config.json, splits.json, history.csv, logs/ (TensorBoard), best.keras
    (best validation loss), backup/ (the state to resume from), curves.png, summary.json (written last: its
    presence means the run finished). On a cluster (``TF_CONFIG``) only the chief writes them.

    Raises:
        TrainingInterrupted: on Ctrl-C; every finished epoch is saved and ``resume`` continues.
        TrainingDivergedError: when the loss becomes NaN or infinite.
    """
    from mtunet.data import load_dataset

    config, run_dir = _start_or_resume(config, resume, options)
    strategy = _set_up_tensorflow(config)
    splits_path = run_dir / SPLITS_FILE
    split_seed = config.seed if config.split_seed is None else config.split_seed
    data = load_dataset(config.dataset, data_dir=config.data_dir, image_size=config.image_size, seed=split_seed,
                        splits_path=splits_path if splits_path.exists() else None, fold=config.fold,
                        num_folds=config.num_folds, skip_bad_files=config.skip_bad_files)
    fingerprint = data_fingerprint(data)
    if resume is not None and json.loads((run_dir / CONFIG_FILE).read_text())["data_fingerprint"] != fingerprint:
        raise ConfigError(f"--resume {run_dir}: the data of --dataset {config.dataset} changed since the run started "
                          f"(its examples or labels differ from the fingerprint in {CONFIG_FILE}); resume with the "
                          "same data or start a new run")
    info = data.info
    class_weights = data.class_weights() if config.class_weights == "balanced" else None
    spec = model_spec_for(config, info)
    with strategy.scope():  # before anything is written: a model that cannot be built leaves no run behind
        model = build_model_from_spec(spec, weights=config.weights,
                                      freeze_encoder=config.freeze_encoder or config.unfreeze_after is not None)
    chief = is_chief()
    work_dir = _working_directory(run_dir, chief)
    try:
        if chief:
            if not splits_path.exists():
                write_atomically(splits_path, data.splits.save)
            write_json(run_dir / CONFIG_FILE, {
                "options": dataclasses.asdict(config), "model": spec.to_dict(), "versions": versions(),
                "dataset": info.to_dict(), "class_names": list(info.class_names), "split_seed": split_seed,
                "data_fingerprint": fingerprint,
                "class_weights": None if class_weights is None else [float(w) for w in class_weights],
            })
        training = _Training(model, strategy, config, class_weights,
                             *_pipelines(data, config, strategy.num_replicas_in_sync, model_heads(model)),
                             work_dir)
        try:
            stopped_early = training.run_phases()
        except KeyboardInterrupt:
            raise TrainingInterrupted(
                f"training interrupted; its {_finished_epochs(work_dir)} finished epoch(s) are saved in {run_dir}; "
                f"continue with: mtunet train --resume {run_dir}") from None

        history = _read_history(work_dir / HISTORY_FILE)
        best = min(history, key=lambda row: row["val_loss"])
        run = Run(run_dir, config, history, best["epoch"] + 1,
                  {key[4:]: value for key, value in best.items() if key.startswith("val_")})
        plot_curves(history, work_dir / CURVES_FILE)
        write_json(work_dir / SUMMARY_FILE, {"best_epoch": run.best_epoch, "best_validation_metrics": run.best_metrics,
                                              "epochs_trained": len(history), "stopped_early": stopped_early})
    finally:
        if not chief:
            shutil.rmtree(work_dir, ignore_errors=True)
    return run
