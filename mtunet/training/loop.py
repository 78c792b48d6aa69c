"""The training loop: the paper's 5:1 class-balanced multi-task recipe, single-task baselines, resumable run
directories."""

import dataclasses
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

from mtunet.data import load_dataset
from mtunet.errors import ConfigError, MtunetError
from mtunet.evaluation.plots import save_png, training_curves_figure
from mtunet.models import LossSettings, ModelSpec, build_model_from_spec, make_spec, model_heads, set_encoder_trainable
from mtunet.rundir import (
    BACKUP_DIR, BEST_MODEL_FILE, CONFIG_FILE, CURVES_FILE, HISTORY_FILE, LOG_DIR, SPLITS_FILE, SUMMARY_FILE,
    best_history_row, read_history, versions, write_atomically, write_json,
)
from mtunet.training.averaging import AveragingAdam, SwapInAveragedWeights
from mtunet.training.batchnorm import PreciseBatchNorm
from mtunet.training.callbacks import (
    BestModelCheckpoint, DurationEstimate, EpochBackup, HistoryLogger, ResumableEarlyStopping,
    ResumableReduceLROnPlateau, StopOnNonFiniteLoss, read_backup, restore_backup,
)
from mtunet.training.config import TrainConfig, load_config
from mtunet.training.distribute import is_chief, select_strategy

logger = logging.getLogger(__name__)


class TrainingDivergedError(MtunetError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(MtunetError):
    """Training was stopped with Ctrl-C after the last finished epoch was saved."""

    exit_code = 130  # the shell's status of a process ended by SIGINT


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


def head_loss_weights(loss_weights, heads: dict) -> dict[str, float]:
    """``{head name: weight}`` from ``TrainConfig.loss_weights``: ``(segmentation, classification)`` weighs the heads
    by role (a regression head 1), ``{head name: weight}`` by name (a head not named 1). ``ConfigError`` for a name
    that is not a head."""
    if isinstance(loss_weights, dict):
        unknown = sorted(set(loss_weights) - set(heads))
        if unknown:
            raise ConfigError(f"--loss-weights names {', '.join(map(repr, unknown))}, not a head of the model; "
                              f"expected some of: {', '.join(heads)}")
        return {name: float(loss_weights.get(name, 1.0)) for name in heads}
    weight_of_role = dict(zip(("segmentation", "classification"), map(float, loss_weights)))
    return {name: weight_of_role.get(head.loss_role, 1.0) for name, head in heads.items()}


def compile_model(model, config, class_weights):
    """Compiles ``model`` with its heads' losses and metrics, the loss weights, optimiser and XLA setting of
    ``config``; ``class_weights`` are the ``"label"`` head's (one per class), ``{head name: weights}`` or None."""
    heads = model_heads(model)
    if class_weights is None:
        class_weights = {}
    elif not isinstance(class_weights, dict):
        class_weights = {"label": class_weights}
    settings = LossSettings(config.seg_loss, config.dice,
                            {name: tuple(float(w) for w in weights) for name, weights in class_weights.items()},
                            config.label_smoothing)
    # Keras prefixes metric names with the output's name only when there are several outputs; naming them here
    # keeps history.csv's columns (label_accuracy, mask_dice, ...) the same for single-task baselines.
    prefix = "" if len(heads) > 1 else f"{next(iter(heads))}_"
    losses = {name: head.loss(settings) for name, head in heads.items()}
    loss_weights = head_loss_weights(config.loss_weights, heads)
    metrics = {name: head.metrics(prefix) for name, head in heads.items()}
    if config.ema_momentum:
        optimizer = AveragingAdam(config.learning_rate, ema_momentum=config.ema_momentum)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(config.learning_rate)
    model.compile(optimizer=optimizer, loss=losses, loss_weights=loss_weights,
                  metrics=metrics, jit_compile=config.jit_compile)


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


def data_fingerprint(data) -> str:
    """SHA-256 over every split's example ids, labels, further targets and which images lack a mask (which lesion
    types' masks, for multi-label masks): the same data gives the same fingerprint."""
    digest = hashlib.sha256()
    for split in ("train", "validation", "test"):
        digest.update(json.dumps([split, list(map(str, data.ids(split))), data.labels(split).tolist()]).encode())
        if data.info.missing_masks:
            digest.update(json.dumps(["mask_present", data.mask_present(split).tolist()]).encode())
        if data.info.multilabel_masks:
            digest.update(json.dumps(["channels_present", data.channels_present(split).tolist()]).encode())
        for name, values in sorted(data.targets(split).items()):
            digest.update(json.dumps([name, values.tolist()]).encode())
    return digest.hexdigest()


def _select_targets(dataset, heads):
    """``dataset``'s batches with, for each head, the target it learns from under the head's name."""
    return dataset.map(lambda image, targets: (image, {name: targets[head.target] for name, head in heads.items()}))


def target_head_configs(info, statistics: dict, ordinal_loss: str = "softmax") -> list[dict]:
    """The head configs that learn ``info.target_heads``: a classification head per categorical target, a regression
    head per continuous one, standardised by ``statistics`` (``LoadedDataset.target_statistics()``), and per ordinal
    target a classification head (``ordinal_loss="softmax"``) or an ordinal head (``"coral"``)."""
    configs = []
    for head in info.target_heads:
        if head.continuous:
            mean, std = statistics[head.name]
            configs.append({"type": "regression", "name": head.name, "targets": list(head.columns), "mean": mean,
                            "std": std})
        else:
            head_type = "ordinal" if head.kind == "ordinal" and ordinal_loss == "coral" else "classification"
            configs.append({"type": head_type, "name": head.name, "num_classes": len(head.class_names)})
    return configs


def model_spec_for(config: TrainConfig, info, statistics=None) -> ModelSpec:
    """The architecture ``config`` asks for, sized for the data described by ``info`` (a ``DatasetInfo``); a
    multi-task model also learns the data's further targets (``target_head_configs`` of ``statistics`` and
    ``config.ordinal_loss``). Ordinal labels (``info.label_kind``) get an ordinal head with
    ``ordinal_loss="coral"``."""
    extra_heads = (target_head_configs(info, statistics or {}, config.ordinal_loss) if config.task == "multi"
                   else [])
    return make_spec(config.architecture, encoder=config.encoder, decoder=config.decoder, skip=config.skip,
                     input_shape=(config.image_size, config.image_size, info.channels), num_classes=info.num_classes,
                     mask_classes=info.mask_classes, multilabel_masks=info.multilabel_masks, task=config.task,
                     skip_connections=config.skip_connections, extra_heads=extra_heads,
                     preprocessing=config.preprocessing,
                     label_head="ordinal" if info.label_kind == "ordinal" and config.ordinal_loss == "coral"
                     else "classification")


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
        config = config or TrainConfig.from_recipe(**options)
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
                               seed=config.seed, flip=config.flip, shear=config.shear, drop_remainder=replicas > 1)
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
    previous = read_history(work_dir / HISTORY_FILE)
    callbacks = [averaging, precise_bn, reduce_lr, nan_guard,
                 HistoryLogger(work_dir / HISTORY_FILE, append=True),
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
        callbacks = [DurationEstimate(last_epoch)] + _callbacks(
            self.work_dir, backup_dir, ResumableEarlyStopping(config.patience, restored), reduce_lr, nan_guard,
            precise_bn, averaging)
        # shuffle=False: the tf.data pipeline shuffles; Keras warns that its own shuffle=True is ignored otherwise
        self.model.fit(self.train_data, validation_data=self.validation_data, epochs=last_epoch,
                       initial_epoch=initial_epoch, callbacks=callbacks, shuffle=False)
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
        config: the options; or give them as keyword arguments (``train(encoder="vgg16", epochs=5)``), which start
            from the preset's recipe (``TrainConfig.from_recipe``: ``train(architecture="resformer")`` trains with
            the ResFormer paper's options).
        resume: a run directory to continue from its last finished epoch, with the options it was started with; the
            data must be the same (its fingerprint in config.json).

    Files written to the run directory: config.json, splits.json, history.csv, logs/ (TensorBoard), best.keras
    (best validation loss), backup/ (the state to resume from), curves.png, summary.json (written last: its
    presence means the run finished). On a cluster (``TF_CONFIG``) only the chief writes them.

    Raises:
        TrainingInterrupted: on Ctrl-C; every finished epoch is saved and ``resume`` continues.
        TrainingDivergedError: when the loss becomes NaN or infinite.
    """
    config, run_dir = _start_or_resume(config, resume, options)
    strategy = _set_up_tensorflow(config)
    splits_path = run_dir / SPLITS_FILE
    split_seed = config.seed if config.split_seed is None else config.split_seed
    # a new run's splits come from --splits-file where given, and are then written to its splits.json
    data = load_dataset(config.dataset, data_dir=config.data_dir, image_size=config.image_size, seed=split_seed,
                        splits_path=splits_path if splits_path.exists() else config.splits_file, fold=config.fold,
                        num_folds=config.num_folds, skip_bad_files=config.skip_bad_files,
                        allow_missing=config.allow_missing, crop_fov="fov_crop" in config.preprocessing)
    fingerprint = data_fingerprint(data)
    if resume is not None and json.loads((run_dir / CONFIG_FILE).read_text())["data_fingerprint"] != fingerprint:
        raise ConfigError(f"--resume {run_dir}: the data of --dataset {config.dataset} changed since the run started "
                          f"(its examples or labels differ from the fingerprint in {CONFIG_FILE}); resume with the "
                          "same data or start a new run")
    info = data.info
    class_weights = None
    if config.class_weights == "balanced":
        class_weights = {"label": data.class_weights()}
        if config.task == "multi":
            class_weights |= data.target_class_weights()
    spec = model_spec_for(config, info, data.target_statistics() if config.task == "multi" else None)
    with strategy.scope():  # before anything is written: a model that cannot be built leaves no run behind
        model = build_model_from_spec(spec, weights=config.weights,
                                      freeze_encoder=config.freeze_encoder or config.unfreeze_after is not None)
    head_loss_weights(config.loss_weights, model_heads(model))  # a --loss-weights name that is not a head, likewise
    logger.info("training %s (%s encoder, %d px, %s parameters) on %s%s: %d train and %d validation images, up to %d "
                "epochs at batch %d; run directory %s", spec.preset or "a custom model", spec.encoder,
                config.image_size, f"{model.count_params():,}", config.dataset,
                f" at {config.data_dir}" if config.data_dir else "", info.split_sizes["train"],
                info.split_sizes["validation"], config.epochs, config.batch_size, run_dir)
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
                "class_weights": None if class_weights is None else [float(w) for w in class_weights["label"]],
                "target_class_weights": {name: [float(w) for w in weights] for name, weights in
                                         (class_weights or {}).items() if name != "label"},
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

        history = read_history(work_dir / HISTORY_FILE)
        best = best_history_row(history)
        run = Run(run_dir, config, history, best["epoch"],
                  {key[4:]: value for key, value in best.items() if key.startswith("val_")})
        save_png(training_curves_figure(history), work_dir / CURVES_FILE)
        write_json(work_dir / SUMMARY_FILE, {"best_epoch": run.best_epoch, "best_validation_metrics": run.best_metrics,
                                              "epochs_trained": len(history), "stopped_early": stopped_early})
    finally:
        if not chief:
            shutil.rmtree(work_dir, ignore_errors=True)
    return run
