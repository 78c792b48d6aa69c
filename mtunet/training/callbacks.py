"""The training loop's callbacks: an atomic best-model checkpoint, a stop on a non-finite loss, early stopping and
learning-rate reduction that a resumed run continues, and the per-epoch backup it resumes from."""

import json
import logging
import math
import pathlib
import time

import keras

from mtunet.rundir import BACKUP_METADATA, write_atomically, write_json

logger = logging.getLogger(__name__)

# Adam at the paper's fixed 1e-3 leaves the validation loss of a from-scratch model swinging from epoch to epoch,
# so early stopping keeps an early epoch; halving the rate when the validation loss stalls settles it.
LR_REDUCTION_FACTOR, MIN_LR_FRACTION = 0.5, 0.01


class HistoryLogger(keras.callbacks.CSVLogger):
    """Keras's CSVLogger with epochs counted from 1, as Keras's progress line and summary.json count them."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


class DurationEstimate(keras.callbacks.Callback):
    """Logs, after the first epoch a process trains, how long it took and about how long the remaining ones take."""

    def __init__(self, last_epoch: int):
        super().__init__()
        self.last_epoch, self.started, self.reported = last_epoch, None, False

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.started or time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.reported:
            return
        self.reported = True
        seconds, remaining = time.perf_counter() - self.started, self.last_epoch - epoch - 1
        if remaining:
            logger.info("epoch %d took %.0f s; the remaining %d epoch(s) take about %.0f min (early stopping may end "
                        "the run sooner)", epoch + 1, seconds, remaining, seconds * remaining / 60)


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
