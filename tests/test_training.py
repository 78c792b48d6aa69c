"""Training runs: files of the run directory, every task, resume after a kill, determinism, usage errors."""

import csv
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import keras
from click.testing import CliRunner

import cli
from mtunet.errors import ConfigError, DataError
from mtunet.training.config import TrainConfig, load_config
from mtunet.training.loop import TrainingDivergedError, TrainingInterrupted, train

RUN_FILES = ["config.json", "splits.json", "history.csv", "best.keras", "curves.png", "summary.json"]


def _options(data_dir, output_dir, **overrides):
    options = dict(encoder="mobilenetv2", weights=None, dataset="folder", data_dir=str(data_dir), image_size=32,
                   batch_size=8, epochs=2, output_dir=str(output_dir))
    return {**options, **overrides}


def _history(run_dir):
    with open(run_dir / "history.csv", newline="") as file:
        return list(csv.DictReader(file))


def _encoder_kernels(run_dir, phase):
    """The encoder's convolution kernels at the end of ``phase`` (from its backup)."""
    backup = run_dir / "backup" / f"phase{phase}"
    model = keras.saving.load_model(run_dir / "best.keras")
    model.load_weights(backup / json.loads((backup / "training_metadata.json").read_text())["weights"])
    return [weight.numpy() for weight in model.get_layer("encoder").weights if weight.path.endswith("kernel")]


def _encoder_trained_in_phase2(run_dir) -> bool:
    return any(not np.array_equal(before, after)
               for before, after in zip(_encoder_kernels(run_dir, 1), _encoder_kernels(run_dir, 2)))


def _wait_for_backup(child, run_dir, epochs):
    """Waits until the training ``child`` has saved ``epochs`` finished epochs in ``run_dir``."""
    metadata = run_dir / "backup" / "phase1" / "training_metadata.json"
    deadline = time.monotonic() + 600
    while not (metadata.exists() and json.loads(metadata.read_text())["epoch"] >= epochs):
        assert child.poll() is None and time.monotonic() < deadline, "training ended before it could be stopped"
        time.sleep(0.2)


def _digest(weights):
    return hashlib.sha256(b"".join(np.ascontiguousarray(weight).tobytes() for weight in weights)).hexdigest()


class ScriptedValidation(keras.callbacks.Callback):
    """Put first among a phase's callbacks: replaces the validation loss of epoch i by ``losses[i]`` and presses
    Ctrl-C (raises KeyboardInterrupt) when epoch ``interrupt_at`` (0-based) begins."""

    def __init__(self, losses, interrupt_at=None):
        super().__init__()
        self.losses, self.interrupt_at = losses, interrupt_at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.interrupt_at:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.losses[epoch]


def _script_validation(monkeypatch, losses, interrupt_at=None):
    from mtunet.training import loop as training

    original = training._callbacks
    monkeypatch.setattr(training, "_callbacks",
                        lambda *args: [ScriptedValidation(losses, interrupt_at), *original(*args)])


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    from conftest import write_folder_dataset

    return write_folder_dataset(tmp_path_factory.mktemp("data") / "lesions", num_patients=16, images_per_patient=3)


def test_short_run_lowers_the_loss_and_writes_every_file(dataset_dir, tmp_path):
    run = train(**_options(dataset_dir, tmp_path / "run", epochs=3, seed=3, deterministic=True, reduce_lr_patience=1))
    for name in RUN_FILES:
        assert (run.directory / name).is_file(), name
    assert (run.directory / "logs").is_dir() and any((run.directory / "logs").rglob("events.out.tfevents*"))
    history = _history(run.directory)
    assert len(history) == 3
    assert float(history[-1]["mask_loss"]) < float(history[0]["mask_loss"])
    assert min(float(row["loss"]) for row in history[1:]) < float(history[0]["loss"])
    # the learning rate halves after each epoch that did not lower the best validation loss (patience 1)
    best_loss, expected_rate = float("inf"), 1e-3
    for row in history:
        assert float(row["learning_rate"]) == pytest.approx(expected_rate)
        if float(row["val_loss"]) < best_loss - 1e-4:
            best_loss = float(row["val_loss"])
        else:
            expected_rate /= 2
    config = json.loads((run.directory / "config.json").read_text())
    assert config["options"]["loss_weights"] == [5.0, 1.0]
    assert config["class_names"] == ["benign", "malignant"]
    assert set(config["versions"]) == {"mtunet", "tensorflow", "keras"} and len(config["data_fingerprint"]) == 64
    summary = json.loads((run.directory / "summary.json").read_text())
    best_row = min(history, key=lambda row: float(row["val_loss"]))
    assert summary["best_epoch"] == int(best_row["epoch"]) == run.best_epoch  # one numbering, from 1
    assert summary["best_validation_metrics"]["mask_dice"] == pytest.approx(float(best_row["val_mask_dice"]))
    best = keras.saving.load_model(run.best_model_path)
    assert best.output_names == ["label", "mask"]
    assert load_config(run.directory) == run.config

    # the same seed, deterministically, gives the same numbers
    train(**_options(dataset_dir, tmp_path / "again", epochs=3, seed=3, deterministic=True, reduce_lr_patience=1))
    assert (tmp_path / "again" / "history.csv").read_text() == (run.directory / "history.csv").read_text()


def test_from_scratch_model_agrees_in_inference_and_training_mode(dataset_dir, tmp_path):
    # the verified pitfall: keras.applications' BatchNorm momentum leaves a from-scratch model collapsed at inference
    from mtunet.data import load_dataset

    run = train(**_options(dataset_dir, tmp_path / "run", epochs=12, batch_size=4, augment=False, patience=12))
    model = keras.saving.load_model(run.best_model_path)
    data = load_dataset("folder", data_dir=str(dataset_dir), image_size=32, splits_path=run.directory / "splits.json")
    images = np.concatenate([batch[0] for batch in data.pipeline("train", batch_size=64, training=False)])
    inference = {name: keras.ops.convert_to_numpy(value) for name, value in model(images, training=False).items()}
    training_mode = {name: keras.ops.convert_to_numpy(value) for name, value in model(images, training=True).items()}
    # a collapsed model predicts an empty (or full) mask in inference mode whatever training mode predicts
    assert np.abs(inference["mask"] - training_mode["mask"]).mean() < 0.1
    assert np.corrcoef(inference["mask"].ravel(), training_mode["mask"].ravel())[0, 1] > 0.9
    # at 32 px the bottleneck is 1 x 1, so training-mode BatchNorm normalises the class features across the images of
    # the batch and the class probabilities legitimately differ between modes; a collapsed class head shows as one
    # class for every image in inference mode
    assert len(np.unique(inference["label"].argmax(axis=1))) == 2


@pytest.mark.parametrize("task, outputs", [("segmentation", ["mask"]), ("classification", ["label"])])
def test_single_task_baselines_train(dataset_dir, tmp_path, task, outputs):
    run = train(**_options(dataset_dir, tmp_path / task, epochs=1, task=task))
    assert keras.saving.load_model(run.best_model_path).output_names == outputs
    columns = _history(run.directory)[0].keys()
    assert ("val_mask_dice" in columns) == ("mask" in outputs)
    assert ("val_label_accuracy" in columns) == ("label" in outputs)


def test_unfreeze_after_trains_heads_then_everything(dataset_dir, tmp_path):
    run = train(**_options(dataset_dir, tmp_path / "run", epochs=2, unfreeze_after=1))
    assert len(_history(run.directory)) == 2
    assert _encoder_trained_in_phase2(run.directory)


def test_resume_after_the_process_is_killed(dataset_dir, tmp_path):
    run_dir = tmp_path / "run"
    script = textwrap.dedent(f"""
        from mtunet.training.loop import train
        train(**{_options(dataset_dir, run_dir, epochs=4)!r})
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_backup(child, run_dir, 2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (run_dir / "summary.json").exists()

    train(resume=run_dir)
    epochs = [int(row["epoch"]) for row in _history(run_dir)]
    assert epochs == [1, 2, 3, 4]
    assert (run_dir / "summary.json").is_file()
    with pytest.raises(ConfigError, match=r"has already finished"):
        train(resume=run_dir)


def test_ctrl_c_stops_after_saving_says_how_to_resume_and_resume_finishes(dataset_dir, tmp_path):
    run_dir = tmp_path / "run"
    arguments = ["train", "--dataset", "folder", "--data-dir", str(dataset_dir), "--weights", "none", "--image-size",
                 "32", "--batch-size", "8", "--epochs", "4", "--output-dir", str(run_dir)]
    with open(tmp_path / "stderr", "w+") as stderr:
        # Ctrl-C as in a terminal: a process started in the background by a non-interactive shell (as CI may start
        # the suite) inherits SIGINT ignored. The child waits after its first backup, so the Ctrl-C lands in the
        # middle of the run however slow this process is to send it (without the wait a busy CI machine let the
        # child finish all epochs first).
        entry = ("import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                 "from mtunet.quiet import start_tensorflow; start_tensorflow()\n"  # as the CLI, before the patch
                 "from mtunet.training.callbacks import EpochBackup\n"
                 "save = EpochBackup.on_epoch_end\n"
                 "def save_then_wait(self, epoch, logs=None):\n"
                 "    save(self, epoch, logs)\n"
                 "    if epoch == 0: time.sleep(600)\n"
                 "EpochBackup.on_epoch_end = save_then_wait\n"
                 "import cli; cli.main()")
        child = subprocess.Popen([sys.executable, "-c", entry, *arguments],
                                 stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            _wait_for_backup(child, run_dir, 1)
            child.send_signal(signal.SIGINT)
            child.wait(timeout=300)
        finally:
            child.kill()
        stderr.seek(0)
        message = stderr.read()
    assert child.returncode == 130, message
    assert f"continue with: mtunet train --resume {run_dir}" in message and "Traceback" not in message
    # what the terminal showed: mtunet's start line and time estimate, not TensorFlow's or Keras's chatter
    assert re.search(r"^training unet \(mobilenetv2 encoder, 32 px, [\d,]+ parameters\) on folder at \S+: \d+ train "
                     rf"and \d+ validation images, up to 4 epochs at batch 8; run directory {re.escape(str(run_dir))}$",
                     message, re.MULTILINE), message
    assert re.search(r"^epoch 1 took \d+ s; the remaining 3 epoch\(s\) take about \d+ min", message, re.MULTILINE)
    for chatter in ("absl::InitializeLog", "oneDNN custom operations", "cuda drivers", "cuInit", "shuffle=True"):
        assert chatter not in message, chatter
    assert not (run_dir / "summary.json").exists()

    run = train(resume=run_dir)
    assert [int(row["epoch"]) for row in _history(run_dir)] == [1, 2, 3, 4] and len(run.history) == 4


def test_early_stopping_state_survives_resume(dataset_dir, tmp_path, monkeypatch):
    # patience 2: the best epoch is the 2nd, so the run stops after the 4th. A resumed run that forgot the early
    # stopping state would take the 4th epoch's 0.7 as its best, then improve, and train all 6 epochs.
    losses = [1.0, 0.5, 0.6, 0.7, 0.4, 0.3]
    run_dir = tmp_path / "run"
    options = _options(dataset_dir, run_dir, epochs=6, patience=2, reduce_lr_patience=2, augment=False)
    _script_validation(monkeypatch, losses, interrupt_at=3)
    with pytest.raises(TrainingInterrupted, match=rf"3 finished epoch\(s\).*mtunet train --resume {run_dir}$"):
        train(**options)
    state = json.loads((run_dir / "backup" / "phase1" / "training_metadata.json").read_text())
    assert state["early_stopping"] == {"wait": 1, "best": 0.5, "best_epoch": 1}
    assert state["reduce_lr"] == {"wait": 1, "best": 0.5, "cooldown_counter": 0}

    from mtunet.training import loop as training

    monkeypatch.undo()
    models, original = [], training.compile_model
    monkeypatch.setattr(training, "compile_model", lambda model, *args: (models.append(model), original(model, *args)))
    _script_validation(monkeypatch, losses)
    run = train(resume=run_dir)
    assert [float(row["val_loss"]) for row in _history(run_dir)] == losses[:4]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped_early"] and summary["best_epoch"] == run.best_epoch == 2
    # the run ends with the weights of its best epoch, the 2nd, saved as best.keras before the interruption
    assert _digest(models[-1].get_weights()) == _digest(keras.saving.load_model(run.best_model_path).get_weights())
    # the learning-rate reduction kept its count too: the 4th epoch is its 2nd without improvement, so it halved
    assert float(models[-1].optimizer.learning_rate) == pytest.approx(5e-4)


class RecordWeights(keras.callbacks.Callback):
    """Put last among a phase's callbacks: appends the first and last trainable variables to ``record`` when an epoch
    begins, after every training batch, when validation begins and when an epoch ends; presses Ctrl-C when epoch
    ``interrupt_at`` begins."""

    def __init__(self, record, interrupt_at=None):
        super().__init__()
        self.record, self.interrupt_at = record, interrupt_at

    def _append(self, key):
        variables = self.model.trainable_weights
        self.record.setdefault(key, []).append([variables[0].numpy(), variables[-1].numpy()])

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.interrupt_at:
            raise KeyboardInterrupt
        self._append("epoch_begin")

    def on_train_batch_end(self, batch, logs=None):
        self._append("trained")

    def on_test_begin(self, logs=None):
        self._append("validated")

    def on_epoch_end(self, epoch, logs=None):
        self._append("epoch_end")


def test_weight_average_is_validated_kept_and_resumed(dataset_dir, tmp_path, monkeypatch):
    from mtunet.training import loop as training

    record, run_dir = {}, tmp_path / "run"
    original = training._callbacks

    def record_weights(interrupt_at=None):
        monkeypatch.setattr(training, "_callbacks",
                            lambda *args: [*original(*args), RecordWeights(record, interrupt_at)])

    record_weights(interrupt_at=2)
    with pytest.raises(TrainingInterrupted, match=r"2 finished epoch"):
        train(**_options(dataset_dir, run_dir, epochs=3, ema_momentum=0.5, augment=False))
    trained_before_interruption = record["trained"][-1]
    record_weights()
    run = train(resume=run_dir)

    # an independent average of the weights after every step, warmed up as TensorFlow's ExponentialMovingAverage
    steps_per_epoch = len(record["trained"]) // 3
    average, averages = None, []
    for step, weights in enumerate(record["trained"]):
        momentum = 0.0 if step == 0 else min(0.5, (1 + step) / (10 + step))
        average = [np.asarray(w, np.float64) if a is None else momentum * a + (1 - momentum) * w
                   for a, w in zip(average or [None] * len(weights), weights)]
        averages.append(average)
    assert steps_per_epoch >= 3  # the momentum reaches its cap of 0.5 at step 8, within the 3 epochs
    for epoch, (validated, at_end) in enumerate(zip(record["validated"], record["epoch_end"], strict=True)):
        for seen, kept, expected in zip(validated, at_end, averages[(epoch + 1) * steps_per_epoch - 1]):
            np.testing.assert_allclose(seen, expected, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(kept, expected, rtol=1e-4, atol=1e-6)
    # training goes on from the trained weights, after the interruption too, not from the average (Keras swaps the two
    # by additions, so they come back rounded)
    ends_of_epochs = record["trained"][steps_per_epoch - 1::steps_per_epoch]
    assert not np.allclose(record["epoch_end"][0][0], ends_of_epochs[0][0], rtol=1e-3)
    for begun, trained in zip(record["epoch_begin"][1:], ends_of_epochs):
        for b, t in zip(begun, trained):
            np.testing.assert_allclose(b, t, rtol=1e-5, atol=1e-6)
    for b, t in zip(record["epoch_begin"][2], trained_before_interruption):
        np.testing.assert_allclose(b, t, rtol=1e-5, atol=1e-6)
    # best.keras is the average at the end of the best epoch, and loads in a process that did not train it
    best = keras.saving.load_model(run.best_model_path).trainable_weights
    for kept, expected in zip([best[0].numpy(), best[-1].numpy()], record["epoch_end"][run.best_epoch - 1]):
        np.testing.assert_array_equal(kept, expected)
    script = f"from mtunet.models import load_model; print(type(load_model({str(run.best_model_path)!r}).optimizer))"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0 and "AveragingAdam" in loaded.stdout, loaded.stderr[-2000:]


def test_resume_between_phases_and_refusal_of_changed_data(folder_dataset, tmp_path, monkeypatch):
    from mtunet.training import loop as training

    data_dir = folder_dataset(num_patients=12, images_per_patient=2)
    run_dir = tmp_path / "run"
    original = training.compile_model
    calls = []

    def interrupt_before_fine_tuning(model, *args):
        calls.append(_digest(model.get_weights()))  # the weights each phase starts from
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(model, *args)

    monkeypatch.setattr(training, "compile_model", interrupt_before_fine_tuning)
    with pytest.raises(TrainingInterrupted, match=r"1 finished epoch"):
        train(**_options(data_dir, run_dir, epochs=2, unfreeze_after=1))
    assert len(_history(run_dir)) == 1 and not (run_dir / "backup" / "phase2").exists()

    labels = (data_dir / "labels.csv").read_text()
    (data_dir / "labels.csv").write_text(labels.replace("benign", "malignant", 1))
    changed = (rf"^--resume {run_dir}: the data of --dataset folder changed since the run started .*config.json\); "
               r"resume with the same data or start a new run$")
    with pytest.raises(ConfigError, match=changed):
        train(resume=run_dir)
    (data_dir / "labels.csv").write_text(labels)

    monkeypatch.setattr(training, "compile_model", lambda model, *args: (calls.append(_digest(model.get_weights())),
                                                                         original(model, *args)))
    run = train(resume=run_dir)
    assert calls[2] == calls[1], "fine-tuning must start from the weights the frozen phase ended with"
    assert [int(row["epoch"]) for row in run.history] == [1, 2]
    assert json.loads((run_dir / "backup" / "phase2" / "training_metadata.json").read_text())["epoch"] == 2
    assert _encoder_trained_in_phase2(run_dir)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


# Trains in a child process and prints a digest of the model's final trainable weights.
WORKER_SCRIPT = """
import hashlib, sys
import numpy as np
from mtunet.training import loop as training

models, original = [], training.compile_model
training.compile_model = lambda model, *args: (models.append(model), original(model, *args))
training.train(**OPTIONS)
weights = [variable.numpy() for variable in models[-1].trainable_weights]
print("DIGEST", hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in weights)).hexdigest())
"""


def test_multi_worker_training_gives_every_worker_the_same_weights_and_one_run_directory(dataset_dir, tmp_path):
    run_dir, scratch = tmp_path / "run", tmp_path / "tmp"
    scratch.mkdir()
    options = _options(dataset_dir, run_dir, epochs=1, strategy="multi_worker", augment=False)
    script = WORKER_SCRIPT.replace("OPTIONS", repr(options))
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        environment = {**os.environ, "TMPDIR": str(scratch),
                       "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen([sys.executable, "-c", script], env=environment, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    digests = [[line.split()[1] for line in output.splitlines() if line.startswith("DIGEST")][0] for output in outputs]
    assert digests[0] == digests[1]
    # the chief (worker 0) wrote one run: one history row, one TensorBoard writer, the weights it ended with
    assert len(_history(run_dir)) == 1
    assert len(list((run_dir / "logs" / "train").glob("events.out.tfevents*"))) == 1
    best = keras.saving.load_model(run_dir / "best.keras")
    assert _digest([variable.numpy() for variable in best.trainable_weights]) == digests[0]
    assert list(scratch.iterdir()) == [], "the other worker's scratch directory must be removed"


def test_mirrored_strategy_over_two_cpu_devices(dataset_dir, tmp_path):
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from mtunet.errors import ConfigError
        from mtunet.training.loop import train
        try:
            train(**{_options(dataset_dir, tmp_path / "odd", batch_size=7, strategy="mirrored")!r})
        except ConfigError as error:
            print("ERROR", error)
        run = train(**{_options(dataset_dir, tmp_path / "run", epochs=1, strategy="mirrored")!r})
        print("EPOCHS", len(run.history))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ERROR --batch-size 7 is not divisible by the 2 replicas of --strategy mirrored" in result.stdout
    assert "EPOCHS 1" in result.stdout and not (tmp_path / "odd").exists()


def test_nan_loss_stops_with_the_epoch_and_keeps_the_last_good_model(dataset_dir, tmp_path, monkeypatch):
    from mtunet.training import loop as training

    class PoisonedAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for weight in self.model.get_layer("label_logits").weights:
                weight.assign(np.full(weight.shape, np.nan, "float32"))

    original_stop = training.StopOnNonFiniteLoss
    monkeypatch.setattr(training, "StopOnNonFiniteLoss",
                        lambda: type("Poisoning", (PoisonedAfterFirstEpoch, original_stop), {})())
    with pytest.raises(TrainingDivergedError, match=r"NaN or infinite in epoch 2.*--learning-rate.*best.keras"):
        train(**_options(dataset_dir, tmp_path / "run", epochs=3))
    assert keras.saving.load_model(tmp_path / "run" / "best.keras").output_names == ["label", "mask"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss_weights": (0.0, 0.0)}, r"--loss-weights 0:0: weights must be non-negative and not all zero"),
        ({"image_size": 48}, r"nearest valid size to 48 is 32 or 64"),
        ({"unfreeze_after": 2, "epochs": 2}, r"--unfreeze-after 2: expected an epoch between 1 and 1"),
        ({"seg_loss": "focal"}, r"--seg-loss 'focal': expected one of: bce, dice, bce_dice"),
        ({"dice": "pixel"}, r"--dice 'pixel': expected one of: image, image_scaled, batch, lesion"),
        ({"encoder": "resnet"}, r"unknown encoder 'resnet'"),
        ({"reduce_lr_patience": -1}, r"--reduce-lr-patience -1: expected 0 \(constant learning rate\)"),
        ({"ema_momentum": 1.0}, r"--ema-momentum 1.0: expected a value in \[0, 1\) \(0: no averaging\)"),
    ],
)
def test_invalid_options_are_config_errors(dataset_dir, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(**_options(dataset_dir, tmp_path / "run", **overrides))


def test_one_class_dataset_is_refused(tmp_path):
    from conftest import write_folder_dataset

    data_dir = write_folder_dataset(tmp_path / "one", classes=("benign",))
    with pytest.raises(DataError, match=r"has only the class\(es\) \['benign'\]; expected at least 2 classes"):
        train(**_options(data_dir, tmp_path / "run"))


def test_cli_train_usage_errors_are_one_line(dataset_dir, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    runner = CliRunner()
    cases = [
        (["--loss-weights", "5-1"], "Invalid value for '--loss-weights': '5-1': expected SEG:CLS, e.g. 5:1"),
        (["--loss-weights", "0:0"], "Error: --loss-weights 0:0: weights must be non-negative and not all zero"),
        (["--output-dir", str(tmp_path / "busy")], "already exists and is not empty"),
        (["--resume", str(tmp_path / "nowhere")], "is not a run directory: config.json not found"),
        (["--resume", str(tmp_path / "busy"), "--epochs", "3"], "--resume takes no other option (received --epochs)"),
    ]
    for arguments, message in cases:
        common = ["--dataset", "folder", "--data-dir", str(dataset_dir), "--weights", "none", "--image-size", "32"]
        if arguments[0] == "--resume":
            common = []
        result = runner.invoke(cli.main, ["train", *common, *arguments])
        assert result.exit_code in (1, 2), (arguments, result.output)
        assert message in result.output, (arguments, result.output)
        assert "Traceback" not in result.output


def test_cli_train_reports_best_epoch_and_run_directory(dataset_dir, tmp_path):
    result = CliRunner().invoke(cli.main, [
        "train", "--dataset", "folder", "--data-dir", str(dataset_dir), "--weights", "none", "--image-size", "32",
        "--batch-size", "8", "--epochs", "1", "--output-dir", str(tmp_path / "run"), "--no-augment",
        "--class-weights", "none", "--loss-weights", "1:1",
    ])
    assert result.exit_code == 0, result.output
    assert "best epoch 1: validation" in result.output and f"run directory: {tmp_path / 'run'}" in result.output
    options = load_config(tmp_path / "run")
    assert options == TrainConfig(**{**_options(dataset_dir, tmp_path / "run", epochs=1), "augment": False,
                                     "class_weights": "none", "loss_weights": (1.0, 1.0)})
