"""Experiments: statistics against scipy and by hand, folds shared by every variant, every file written and re-read,
a killed experiment resumed without retraining what finished, the CLI."""

import json
import math
import pathlib

import keras
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

import cli
import mtunet.experiment
from mtunet.errors import ConfigError
from mtunet.evaluation.stats import describe, paired_comparison, smallest_wilcoxon_p
from mtunet.experiment import Variant, run_experiment, summarize, summary_markdown, task_variants
from mtunet.models import encoders
from mtunet.models.encoders.applications import ApplicationEncoder
from mtunet.training.callbacks import BestModelCheckpoint
from mtunet.training.config import TrainConfig
from mtunet.training.loop import TrainingInterrupted

# === Statistics ===
# per-fold values of two variants on the same 5 folds
FIRST = np.array([0.80, 0.70, 0.75, 0.90, 0.85])
SECOND = np.array([0.70, 0.72, 0.70, 0.80, 0.81])
T_975_DF4 = 2.7764451051977987  # two-sided 95% quantile of Student's t with 4 degrees of freedom (tables)


def test_describe_is_mean_sd_and_t_interval():
    result = describe(FIRST)
    mean, sd = 0.8, math.sqrt(((FIRST - 0.8) ** 2).sum() / 4)  # 0.0790569...
    assert result["n"] == 5
    assert result["mean"] == pytest.approx(mean) and result["sd"] == pytest.approx(sd)
    assert result["ci_low"] == pytest.approx(mean - T_975_DF4 * sd / math.sqrt(5))
    assert result["ci_high"] == pytest.approx(mean + T_975_DF4 * sd / math.sqrt(5))
    assert describe([0.5, float("nan"), 0.7])["n"] == 2  # a fold without a value (AUC of one class) is left out
    single = describe([0.5])
    assert single["mean"] == 0.5 and math.isnan(single["sd"]) and math.isnan(single["ci_low"])


def test_paired_comparison_agrees_with_scipy_and_by_hand():
    result = paired_comparison(FIRST, SECOND)
    differences = FIRST - SECOND  # 0.10, -0.02, 0.05, 0.10, 0.04
    mean, sd = differences.mean(), differences.std(ddof=1)
    assert result["n"] == 5 and result["mean_difference"] == pytest.approx(0.054)
    assert result["sd_difference"] == pytest.approx(sd)
    assert result["ci_low"] == pytest.approx(mean - T_975_DF4 * sd / math.sqrt(5))
    assert result["ci_high"] == pytest.approx(mean + T_975_DF4 * sd / math.sqrt(5))
    assert result["cohens_dz"] == pytest.approx(mean / sd)
    t_test = stats.ttest_rel(FIRST, SECOND)
    assert result["t_statistic"] == pytest.approx(t_test.statistic)
    assert result["t_statistic"] == pytest.approx(mean / (sd / math.sqrt(5)))
    assert result["t_pvalue"] == pytest.approx(t_test.pvalue)
    wilcoxon = stats.wilcoxon(FIRST, SECOND)
    assert result["wilcoxon_statistic"] == pytest.approx(wilcoxon.statistic)
    assert result["wilcoxon_statistic"] == 1.0  # the one negative difference has the smallest rank
    assert result["wilcoxon_pvalue"] == pytest.approx(wilcoxon.pvalue)
    reverse = paired_comparison(SECOND, FIRST)
    assert reverse["mean_difference"] == pytest.approx(-0.054) and reverse["cohens_dz"] == pytest.approx(-mean / sd)


@pytest.mark.parametrize("n", [3, 5, 6, 8])
def test_smallest_wilcoxon_p_is_what_scipy_gives_when_every_difference_has_one_sign(n):
    first = np.arange(1.0, n + 1)
    assert smallest_wilcoxon_p(n) == pytest.approx(stats.wilcoxon(first + np.arange(1, n + 1) * 0.1, first).pvalue)


def test_paired_comparison_of_degenerate_values():
    same = paired_comparison(FIRST, FIRST)
    assert same["mean_difference"] == 0 and same["t_pvalue"] == 1 and same["wilcoxon_pvalue"] == 1
    assert math.isnan(same["cohens_dz"])
    one = paired_comparison([0.5], [0.4])
    assert one["n"] == 1 and one["mean_difference"] == pytest.approx(0.1) and math.isnan(one["t_pvalue"])
    missing = paired_comparison([0.8, float("nan"), 0.7, 0.6], [0.7, 0.5, 0.65, 0.5])  # fold 2 has no pair
    assert missing["n"] == 3 and missing["mean_difference"] == pytest.approx((0.1 + 0.05 + 0.1) / 3)
    with pytest.raises(ValueError, match="same length; received 2 and 3"):
        paired_comparison([1, 2], [1, 2, 3])


def _fake_results(folds=2, seeds=1):
    """results.csv-like rows: multi has every metric, segmentation no label metrics, classification no mask ones."""
    rng = np.random.default_rng(0)
    rows = []
    for fold in range(folds):
        for seed in range(seeds):
            def label():
                return {name: rng.uniform(0.6, 0.9) for name in ("accuracy", "balanced_accuracy", "auc")}

            def mask():
                return {"dice_mean": rng.uniform(0.5, 0.8), "iou_mean": rng.uniform(0.4, 0.7)}

            rows += [{"variant": "multi", "fold": fold, "seed": seed, **label(), **mask()},
                     {"variant": "segmentation", "fold": fold, "seed": seed, **mask()},
                     {"variant": "classification", "fold": fold, "seed": seed, **label()}]
    return pd.DataFrame(rows)


def test_summary_compares_only_the_metrics_both_variants_have_and_averages_seeds_per_fold():
    results = _fake_results(folds=3, seeds=2)
    summary = summarize(results, ["multi", "segmentation", "classification"], folds=3, seeds=2)
    assert set(summary["variants"]["segmentation"]) == {"dice_mean", "iou_mean"}
    assert set(summary["variants"]["classification"]) == {"accuracy", "balanced_accuracy", "auc"}
    pairs = {(row["a"], row["b"], row["metric"]) for row in summary["comparisons"]}
    assert pairs == {("multi", "segmentation", "dice_mean"), ("multi", "segmentation", "iou_mean"),
                     ("multi", "classification", "accuracy"), ("multi", "classification", "balanced_accuracy"),
                     ("multi", "classification", "auc")}
    multi = results[results.variant == "multi"]
    per_fold = multi.groupby("fold")["dice_mean"].mean().to_numpy()  # the mean over each fold's two seeds
    assert summary["variants"]["multi"]["dice_mean"]["per_fold"] == pytest.approx(per_fold)
    assert summary["variants"]["multi"]["dice_mean"]["mean"] == pytest.approx(per_fold.mean())
    segmentation = results[results.variant == "segmentation"].groupby("fold")["dice_mean"].mean().to_numpy()
    comparison = next(row for row in summary["comparisons"] if row["b"] == "segmentation"
                      and row["metric"] == "dice_mean")
    assert comparison["n"] == 3
    assert comparison["t_pvalue"] == pytest.approx(stats.ttest_rel(per_fold, segmentation).pvalue)
    # 3 folds: too few for the tests to mean much, and the Wilcoxon test cannot reach 0.05 (smallest p 0.25)
    assert any("only 3 folds" in warning for warning in summary["warnings"])
    assert any("cannot reach p < 0.05" in warning and "0.25" in warning for warning in summary["warnings"])
    assert not any("one training seed" in warning for warning in summary["warnings"])
    assert any("not corrected for the 5 comparisons" in note for note in summary["notes"])


def test_few_spread_folds_give_an_interval_inside_the_metric_range_with_the_fold_values_shown():
    # the user's case: accuracy 0.506 ± 0.087 over 2 folds, whose t interval is [-0.280, 1.291]
    folds = np.array([0.444, 0.568])
    unbounded = describe(folds, bounds=None)
    assert unbounded["ci_low"] < 0 and unbounded["ci_high"] > 1 and not unbounded["ci_clipped"]
    bounded = describe(folds)
    assert (bounded["ci_low"], bounded["ci_high"]) == (0.0, 1.0) and bounded["ci_clipped"]
    assert "cut at the metric's range [0, 1]" in bounded["ci_method"]
    assert not describe(FIRST)["ci_clipped"]  # 5 close folds: the plain t interval, inside [0, 1]
    results = pd.DataFrame([{"variant": "multi", "fold": fold, "seed": 0, "accuracy": value}
                            for fold, value in enumerate(folds)])
    summary = summarize(results, ["multi"], folds=2, seeds=1)
    for figures in summary["variants"]["multi"].values():
        assert 0 <= figures["ci_low"] <= figures["ci_high"] <= 1
    assert any("cut there for: multi accuracy" in warning for warning in summary["warnings"])
    table_row = next(line for line in summary_markdown(summary, "t", "s").splitlines() if line.startswith("| multi"))
    assert table_row == "| multi | 0.506 ± 0.088 [0.000, 1.000]* (0.444, 0.568) |"


# === Experiments on a tiny encoder ===
# A 5-convolution encoder: what is tested is the experiment's machinery (folds, runs, resume, files), and a
# keras.applications encoder would take a minute per run to trace on 2 CPU cores.
def _tiny_encoder(include_top, weights, input_shape):
    features = inputs = keras.Input(input_shape)
    for level in range(1, 6):
        features = keras.layers.Conv2D(4 * level, 3, strides=2, padding="same", activation="relu",
                                       name=f"tiny_p{level}")(features)
    return keras.Model(inputs, features, name="tiny")


TINY = ApplicationEncoder("tiny", "tf", imagenet_weights=False, constructor=_tiny_encoder,
                          pyramid_layers=tuple(f"tiny_p{level}" for level in range(1, 6)))
VARIANTS = ["multi", "classification"]
RUNS = [f"runs/{variant}/fold{fold}-seed1" for fold in range(2) for variant in VARIANTS]  # in training order


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """A 2-variant, 2-fold experiment killed (Ctrl-C) after epoch 1 of its third run, then resumed.

    Returns ``(directory, dataset folder, runs trained before the kill, runs trained on resume, best.keras
    modification times before resuming)``; a run trained on resume is ``("resume", path)`` or ``("new", path)``.
    """
    from conftest import write_folder_dataset

    root = tmp_path_factory.mktemp("experiment")
    data_dir = write_folder_dataset(root / "data", num_patients=12, images_per_patient=2)
    directory = root / "experiment"
    config = TrainConfig(encoder="tiny", weights=None, dataset="folder", data_dir=str(data_dir), image_size=32,
                         batch_size=8, epochs=2, seed=1, deterministic=True)
    real_train, real_checkpoint = mtunet.experiment.train, BestModelCheckpoint.on_epoch_end
    calls = []

    def counting_train(config=None, *, resume=None):
        path = pathlib.Path(resume if resume is not None else config.output_dir)
        calls.append(("resume" if resume is not None else "new", str(path.relative_to(directory))))
        return real_train(config, resume=resume)

    def kill_in_third_run(self, epoch, logs=None):
        real_checkpoint(self, epoch, logs)
        if len(calls) == 3 and epoch == 0:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setitem(encoders.ENCODERS, "tiny", TINY)
        monkeypatch.setattr(mtunet.experiment, "train", counting_train)
        monkeypatch.setattr(BestModelCheckpoint, "on_epoch_end", kill_in_third_run)
        with pytest.raises(TrainingInterrupted):
            run_experiment(config, task_variants(VARIANTS), folds=2, seeds=1, output_dir=directory)
        before = list(calls)
        mtimes = {run: (directory / run / "best.keras").stat().st_mtime_ns for run in RUNS[:2]}
        assert not (directory / "results.csv").exists() and not (directory / "summary.json").exists()
        calls.clear()
        monkeypatch.setattr(BestModelCheckpoint, "on_epoch_end", real_checkpoint)
        run_experiment(resume=directory)
    return directory, data_dir, before, list(calls), mtimes


def test_killed_experiment_resumes_and_trains_only_what_was_missing(killed_and_resumed):
    directory, _, before, after, mtimes = killed_and_resumed
    assert before == [("new", run) for run in RUNS[:3]]
    # the interrupted run continues from its last finished epoch, the missing one starts; finished ones are kept
    assert after == [("resume", RUNS[2]), ("new", RUNS[3])]
    for run, mtime in mtimes.items():
        assert (directory / run / "best.keras").stat().st_mtime_ns == mtime
    history = pd.read_csv(directory / RUNS[2] / "history.csv")
    assert history["epoch"].tolist() == [1, 2]


def test_experiment_writes_every_file_and_its_numbers_come_from_the_runs(killed_and_resumed):
    directory = killed_and_resumed[0]
    for name in ["experiment.json", "results.csv", "summary.json", "summary.md", "summary.png"]:
        assert (directory / name).is_file(), name
    assert (directory / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = pd.read_csv(directory / "results.csv")
    assert results[["variant", "fold", "seed"]].values.tolist() == [[variant, fold, 1] for fold in range(2)
                                                                    for variant in VARIANTS]
    for row in results.itertuples():
        metrics = json.loads((directory / row.run / "evaluation" / "test" / "metrics.json").read_text())
        assert row.n_images == metrics["n_images"] and row.accuracy == pytest.approx(metrics["accuracy"])
        assert row.auc == pytest.approx(metrics["auc"])
        if row.variant == "multi":
            assert row.dice_mean == pytest.approx(metrics["dice_mean"])
        else:
            assert "dice_mean" not in metrics and math.isnan(row.dice_mean)
    summary = json.loads((directory / "summary.json").read_text())
    assert (summary["folds"], summary["seeds"]) == (2, 1)
    multi = results[results.variant == "multi"]
    assert summary["variants"]["multi"]["accuracy"]["mean"] == pytest.approx(multi["accuracy"].mean())
    assert summary["variants"]["multi"]["accuracy"]["sd"] == pytest.approx(multi["accuracy"].std(ddof=1))
    assert "dice_mean" in summary["variants"]["multi"] and "dice_mean" not in summary["variants"]["classification"]
    assert {row["metric"] for row in summary["comparisons"]} == {"accuracy", "balanced_accuracy", "auc"}
    classification = results[results.variant == "classification"]
    accuracy = next(row for row in summary["comparisons"] if row["metric"] == "accuracy")
    assert accuracy["mean_difference"] == pytest.approx(multi["accuracy"].mean() - classification["accuracy"].mean())
    assert any("only 2 folds" in warning for warning in summary["warnings"])
    markdown = (directory / "summary.md").read_text()
    assert "| multi |" in markdown and "| classification |" in markdown and "## Warnings" in markdown
    assert "| variant | accuracy | balanced accuracy | AUC | Dice | IoU |" in markdown
    classification_row = next(line for line in markdown.splitlines() if line.startswith("| classification |"))
    assert classification_row.endswith("| – | – |")  # no Dice or IoU without a mask head


def test_every_variant_trains_on_the_same_patient_grouped_folds(killed_and_resumed):
    directory, data_dir = killed_and_resumed[:2]
    patient_of = pd.read_csv(data_dir / "labels.csv").set_index("id")["patient"].to_dict()
    tests = {variant: [] for variant in VARIANTS}
    for variant in VARIANTS:
        for fold in range(2):
            splits = json.loads((directory / "runs" / variant / f"fold{fold}-seed1" / "splits.json").read_text())
            assert (splits["fold"], splits["num_folds"], splits["seed"]) == (fold, 2, 1)
            parts = splits["splits"]
            assert sorted(parts["train"] + parts["validation"] + parts["test"]) == sorted(patient_of)
            patients = [{patient_of[example] for example in parts[name]} for name in ("train", "validation", "test")]
            assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
            assert parts["validation"]  # validation comes from the training folds, never from the held-out one
            tests[variant].append(parts)
    assert tests["multi"] == tests["classification"]
    held_out = [example for parts in tests["multi"] for example in parts["test"]]
    assert sorted(held_out) == sorted(patient_of)  # each image held out exactly once


def test_cli_resume_of_a_finished_experiment_trains_nothing(killed_and_resumed, monkeypatch):
    directory = killed_and_resumed[0]
    monkeypatch.setattr(mtunet.experiment, "train", lambda *args, **kwargs: pytest.fail("trained a finished run"))
    monkeypatch.setattr(mtunet.experiment, "evaluate_run", lambda *args: pytest.fail("evaluated a finished run"))
    result = CliRunner().invoke(cli.main, ["experiment", "compare", "--resume", str(directory)])
    assert result.exit_code == 0, result.output
    assert "| multi |" in result.output and "warning: only 2 folds" in result.output
    assert f"experiment directory: {directory}" in result.output


# === Plans and usage errors, without training ===
def test_runs_of_several_seeds_share_the_folds_of_the_base_seed(tmp_path):
    plan = mtunet.experiment._plan(TrainConfig(seed=7), task_variants(["multi"]), tmp_path, folds=3, seeds=2)
    assert [(fold, seed) for _, fold, seed, _ in plan] == [(0, 7), (0, 8), (1, 7), (1, 8), (2, 7), (2, 8)]
    assert {(config.split_seed, config.num_folds) for *_, config in plan} == {(7, 3)}
    assert [config.fold for *_, config in plan] == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("arguments, message", [
    ({"variants": [Variant("a", {"dataset": "folder"})]}, r"changes dataset; every variant must train on the same"),
    ({"variants": [Variant("a=1:1", {}), Variant("a=1_1", {})]}, r"variant names must differ"),
    ({"variants": [Variant("big", {"loss_weights": (-1, 1)})]}, r"variant 'big': --loss-weights -1:1"),
    ({"variants": [Variant("x", {"colour": True})]}, r"unknown training option\(s\) colour"),
    ({"folds": 1}, r"--folds 1: expected an integer of at least 2"),
])
def test_bad_experiments_fail_before_training(tmp_path, arguments, message):
    arguments = {"variants": task_variants(["multi"]), "output_dir": tmp_path / "experiment", **arguments}
    with pytest.raises(ConfigError, match=message):
        run_experiment(TrainConfig(), **arguments)
    assert not (tmp_path / "experiment").exists()


@pytest.mark.parametrize("arguments, message", [
    (["compare", "--variants", "multi,both"], "unknown variant(s) 'both'; expected tasks from: multi, segmentation"),
    (["compare", "--task", "segmentation"], "--task is set by each variant; leave it out"),
    (["ablate", "--vary", "skip=on,off", "--no-skip-connections"], "--no-skip-connections is set by each variant"),
    (["ablate", "--vary", "colour=on,off"], "'colour' is not a training option"),
    (["ablate", "--vary", "loss-weights=1:1,heavy"], "'heavy': expected SEG:CLS, e.g. 5:1"),
    (["ablate", "--vary", "skip=on,,off"], "empty value"),
    (["ablate"], "ablate needs --vary OPTION=VALUE,VALUE,..."),
    (["ablate", "--resume", "somewhere", "--epochs", "3"], "--resume takes no other option (received --epochs)"),
])
def test_cli_usage_errors_are_one_line(arguments, message):
    result = CliRunner().invoke(cli.main, ["experiment", *arguments])
    assert result.exit_code in (1, 2) and message in result.output and "Traceback" not in result.output


def test_cli_vary_reads_values_as_the_train_options_do(tmp_path, monkeypatch):
    received = {}

    def fake_run_experiment(config, variants, **options):
        received.update(config=config, variants=variants, options=options)
        raise ConfigError("stop here")

    monkeypatch.setattr(mtunet.experiment, "run_experiment", fake_run_experiment)
    result = CliRunner().invoke(cli.main, ["experiment", "ablate", "--vary", "skip=on,off", "--vary",
                                           "loss-weights=1:1,5:1", "--weights", "none", "--folds", "3"])
    assert result.exit_code == 1 and "stop here" in result.output
    assert [(variant.name, variant.options) for variant in received["variants"]] == [
        ("skip=on loss-weights=1:1", {"skip_connections": True, "loss_weights": (1.0, 1.0)}),
        ("skip=on loss-weights=5:1", {"skip_connections": True, "loss_weights": (5.0, 1.0)}),
        ("skip=off loss-weights=1:1", {"skip_connections": False, "loss_weights": (1.0, 1.0)}),
        ("skip=off loss-weights=5:1", {"skip_connections": False, "loss_weights": (5.0, 1.0)}),
    ]
    assert received["config"].weights is None and received["options"]["folds"] == 3
    assert received["config"].deterministic  # experiments default to deterministic ops: same seed, same numbers
