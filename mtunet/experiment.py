"""K-fold experiments: variants of one training configuration trained on the same patient-grouped, stratified folds,
each evaluated on its held-out fold, then summarised with paired statistics across folds.

An experiment directory holds experiment.json (the plan), runs/<variant>/fold<k>-seed<s>/ (ordinary run directories,
each with its evaluation/test/metrics.json), and, once every run is done, results.csv, summary.json, summary.md and
summary.png.
"""

import dataclasses
import datetime
import itertools
import json
import logging
import math
import pathlib
import re
import shutil

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mtunet.errors import ConfigError
from mtunet.evaluation.run import evaluate_run
from mtunet.evaluation.stats import CONFIDENCE, describe, paired_comparison, smallest_wilcoxon_p
from mtunet.models import TASKS
from mtunet.rundir import CONFIG_FILE, SUMMARY_FILE, write_atomically, write_json
from mtunet.training.config import TrainConfig
from mtunet.training.loop import train

logger = logging.getLogger(__name__)

EXPERIMENT_FILE, RESULTS_FILE, RUNS_DIR = "experiment.json", "results.csv", "runs"
SUMMARY_JSON, SUMMARY_MARKDOWN, SUMMARY_PLOT = "summary.json", "summary.md", "summary.png"
FORMAT_VERSION = 1

# metric of metrics.json -> its name in tables and plots
SUMMARY_METRICS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "auc": "AUC",
                   "dice_mean": "Dice", "iou_mean": "IoU"}
# Options a variant may not change: they decide the data and its folds (which every variant must share), or the
# experiment sets them for each run.
FIXED_OPTIONS = ("dataset", "data_dir", "skip_bad_files", "allow_missing", "splits_file", "seed", "split_seed", "fold",
                 "num_folds", "output_dir")
# The paired tests need at least this many folds to be able to reach p < 0.05 and to mean something.
RECOMMENDED_FOLDS = 5
COHENS_D = "d_z: the mean of the paired per-fold differences divided by their standard deviation (ddof 1)"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One arm of an experiment: a name and the training options it changes, e.g.
    ``Variant("skip=off", {"skip_connections": False})``."""

    name: str
    options: dict


def task_variants(tasks=TASKS) -> list[Variant]:
    """The multi-task model and its single-task baselines, one variant per task (``"multi"``, ``"segmentation"``,
    ``"classification"``); ``ConfigError`` for an unknown task."""
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(map(repr, unknown))}; expected tasks from: "
                          f"{', '.join(TASKS)}")
    return [Variant(task, {"task": task}) for task in tasks]


@dataclasses.dataclass
class Experiment:
    """A finished experiment: its directory, one row per variant x fold x seed, and the summary (summary.json)."""

    directory: pathlib.Path
    results: pd.DataFrame
    summary: dict


def _slug(name: str) -> str:
    """A folder name for a variant name (``loss-weights=5:1`` -> ``loss-weights=5_1``)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_")


def _check_variants(variants) -> None:
    if not variants:
        raise ConfigError("an experiment needs at least one variant")
    names = [variant.name for variant in variants]
    slugs = [_slug(name) for name in names]
    if not all(slugs):
        raise ConfigError(f"every variant needs a name with a letter or digit; received {names}")
    if len(set(slugs)) < len(slugs):
        raise ConfigError(f"variant names must differ (also as folder names); received {', '.join(names)}")
    for variant in variants:
        fixed = sorted(set(variant.options) & set(FIXED_OPTIONS))
        if fixed:
            raise ConfigError(f"variant {variant.name!r} changes {', '.join(fixed)}; every variant must train on the "
                              f"same data and folds, so these options are the experiment's: "
                              f"{', '.join(FIXED_OPTIONS)}")


def _plan(config: TrainConfig, variants, directory: pathlib.Path, folds: int, seeds: int) -> list[tuple]:
    """``[(variant name, fold, seed, TrainConfig of the run)]``, fold by fold, so that a stopped experiment has whole
    folds done. The folds come from the base seed; each run trains with its own seed."""
    base = dataclasses.asdict(config)
    runs = []
    for fold, seed, variant in itertools.product(range(folds), range(config.seed, config.seed + seeds), variants):
        run_dir = directory / RUNS_DIR / _slug(variant.name) / f"fold{fold}-seed{seed}"
        try:
            run_config = TrainConfig.from_options({**base, **variant.options, "seed": seed,
                                                   "split_seed": config.seed, "fold": fold, "num_folds": folds,
                                                   "output_dir": str(run_dir)})
            run_config.validate()
        except ConfigError as error:
            raise ConfigError(f"variant {variant.name!r}: {error}") from None
        runs.append((variant.name, fold, seed, run_config))
    return runs


def _train_and_evaluate(run_config: TrainConfig) -> dict:
    """Trains the run unless it finished (its summary.json exists), resuming a half-finished one, then evaluates it on
    its held-out fold unless its metrics.json exists. Returns the metrics."""
    run_dir = pathlib.Path(run_config.output_dir)
    metrics_path = run_dir / "evaluation" / "test" / "metrics.json"
    if (run_dir / SUMMARY_FILE).exists():
        if metrics_path.exists():
            return json.loads(metrics_path.read_text())
    else:
        keras.backend.clear_session()  # free the previous run's model
        if (run_dir / CONFIG_FILE).exists():
            logger.info("resuming run %s", run_dir)
            train(resume=run_dir)
        else:
            if run_dir.exists():  # stopped before its config was written: it holds at most splits.json
                shutil.rmtree(run_dir)
            logger.info("training run %s", run_dir)
            train(run_config)
    return evaluate_run(run_dir)


def _numbers(metrics: dict, prefix: str = "") -> dict:
    """Every number of a metrics.json, nested keys joined with dots (``per_class.benign.recall``); lists are left
    out."""
    row = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            row.update(_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            row[f"{prefix}{key}"] = value
    return row


def _results_table(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    first = ["variant", "fold", "seed", "n_images", *[name for name in SUMMARY_METRICS if name in table]]
    return table[first + [name for name in table if name not in first and name != "run"] + ["run"]]


def _json_ready(value):
    """NaN and infinities as None (JSON has neither); numpy numbers as Python numbers."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def summarize(results: pd.DataFrame, variants: list[str], *, folds: int, seeds: int) -> dict:
    """Per variant and metric: mean, sd and 95% t interval across folds; per pair of variants and shared metric: the
    paired comparison of ``mtunet.evaluation.stats.paired_comparison``; warnings when folds or seeds are too few.

    A fold's value is the mean over its seeds: seeds are repeated trainings of the same fold, not more data, so the
    tests pair the ``folds`` per-fold values. A metric a variant has no value for (Dice of a classification-only
    model, accuracy of a segmentation-only model) is left out of its summary and of its comparisons.
    """
    metrics = [name for name in SUMMARY_METRICS if name in results]
    per_fold = results.groupby(["variant", "fold"])[metrics].mean()
    values = {}
    for variant in variants:
        table = per_fold.loc[variant].reindex(range(folds))
        values[variant] = {name: table[name].to_numpy(float) for name in metrics if table[name].notna().any()}
    summary_variants = {
        variant: {name: {**describe(fold_values), "per_fold": fold_values.tolist()}
                  for name, fold_values in values[variant].items()}
        for variant in variants
    }
    comparisons = [
        {"a": first, "b": second, "metric": name, **paired_comparison(values[first][name], values[second][name])}
        for first, second in itertools.combinations(variants, 2)
        for name in metrics if name in values[first] and name in values[second]
    ]
    warnings = []
    if folds < RECOMMENDED_FOLDS:
        warnings.append(f"only {folds} folds: the t-test and the 95% intervals rest on {folds} values per variant and "
                        f"cannot check the normality they assume; use at least {RECOMMENDED_FOLDS} folds")
    if smallest_wilcoxon_p(folds) > 0.05:
        warnings.append(f"with {folds} folds the Wilcoxon signed-rank test cannot reach p < 0.05 (its smallest "
                        f"two-sided p-value is {smallest_wilcoxon_p(folds):.3g}); it needs at least 6 folds")
    if seeds == 1:
        warnings.append("one training seed per fold: the per-fold values include the run-to-run variation of a single "
                        "initialisation; --seeds 3 or more averages it out")
    warnings += [f"{row['a']} vs {row['b']}, {row['metric']}: only {row['n']} of {folds} folds have a value for both"
                 for row in comparisons if row["n"] < folds]
    clipped = [f"{variant} {SUMMARY_METRICS[name]}" for variant, described in summary_variants.items()
               for name, figures in described.items() if figures["ci_clipped"]]
    if clipped:
        warnings.append(f"the t interval reached past [0, 1] and was cut there for: {', '.join(clipped)}; so few, so "
                        "spread folds give no useful interval: read the per-fold values")
    notes = [("the folds share training data, so per-fold results are not independent and the tests' p-values are "
              "optimistic (Nadeau & Bengio, 2003)")]
    if len(comparisons) > 1:
        notes.append(f"p-values are not corrected for the {len(comparisons)} comparisons")
    return {
        "folds": folds, "seeds": seeds, "confidence": CONFIDENCE,
        "unit": "fold: each fold's value is the mean over its seeds",
        "difference": "a - b", "cohens_d": COHENS_D, "metrics": metrics,
        "variants": summary_variants, "comparisons": comparisons, "warnings": warnings, "notes": notes,
    }


def _format(value, digits=3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _format_p(value) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3g}"


def summary_markdown(summary: dict, title: str, setup: str) -> str:
    """summary.md: the variant table (mean ± sd [95% CI]), the paired comparisons, warnings and notes."""
    names = [SUMMARY_METRICS[name] for name in summary["metrics"]]
    few_folds = summary["folds"] < RECOMMENDED_FOLDS
    lines = [f"# {title}", "", setup, "",
             (f"{summary['folds']} folds x {summary['seeds']} seed(s); mean ± sd [95% CI] across folds "
              f"({summary['unit']}); the interval is the t interval of the mean, cut at [0, 1] (marked *)"
              + ("; with fewer than 5 folds the per-fold values follow in parentheses" if few_folds else "")
              + "."), "",
             "| variant | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for variant, metrics in summary["variants"].items():
        cells = [f"{_format(m['mean'])} ± {_format(m['sd'])} [{_format(m['ci_low'])}, {_format(m['ci_high'])}]"
                 + ("*" if m.get("ci_clipped") else "")
                 + (" (" + ", ".join(_format(value) for value in m["per_fold"]) + ")" if few_folds else "")
                 if (m := metrics.get(name)) else "–" for name in summary["metrics"]]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += ["", "## Paired comparisons", "",
              ("Difference a − b per fold; paired t-test (scipy.stats.ttest_rel) and Wilcoxon signed-rank test "
               f"(scipy.stats.wilcoxon), two-sided; Cohen's {summary['cohens_d']}."), ""]
    if summary["comparisons"]:
        lines += ["| a | b | metric | n | mean difference [95% CI] | t | p (t-test) | W | p (Wilcoxon) | d_z |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in summary["comparisons"]:
            lines.append(
                f"| {row['a']} | {row['b']} | {SUMMARY_METRICS[row['metric']]} | {row['n']} | "
                f"{_format(row['mean_difference'])} [{_format(row['ci_low'])}, {_format(row['ci_high'])}] | "
                f"{_format(row['t_statistic'], 2)} | {_format_p(row['t_pvalue'])} | "
                f"{_format(row['wilcoxon_statistic'], 1)} | {_format_p(row['wilcoxon_pvalue'])} | "
                f"{_format(row['cohens_dz'], 2)} |")
    else:
        lines.append("No pair of variants shares a metric.")
    if summary["warnings"]:
        lines += ["", "## Warnings", "", *[f"- {warning}" for warning in summary["warnings"]]]
    lines += ["", "## Notes", "", *[f"- {note}" for note in summary["notes"]]]
    return "\n".join(lines) + "\n"


def plot_summary(results: pd.DataFrame, variants: list[str], path) -> None:
    """summary.png: per metric, a box plot of each variant's per-fold values with the values drawn over it."""
    per_fold = results.groupby(["variant", "fold"])[[name for name in SUMMARY_METRICS if name in results]].mean()
    metrics = [name for name in per_fold if per_fold[name].notna().any()]
    figure = Figure(figsize=(1.2 + 1.1 * len(variants) * max(len(metrics), 1), 3.8))
    axes = figure.subplots(1, max(len(metrics), 1), squeeze=False)
    offsets = np.random.default_rng(0).uniform(-0.12, 0.12, size=len(per_fold))  # seeded jitter: same picture
    for axis, name in zip(axes[0], metrics):
        shown = [(position, per_fold.loc[variant][name].dropna().to_numpy())
                 for position, variant in enumerate(variants, start=1)]
        shown = [(position, values) for position, values in shown if len(values)]
        axis.boxplot([values for _, values in shown], positions=[position for position, _ in shown], widths=0.5,
                     showfliers=False, medianprops={"color": "black"})
        for position, values in shown:  # one colour per variant in every panel
            axis.scatter(position + offsets[:len(values)], values, s=14, alpha=0.8, zorder=3,
                         color=f"C{(position - 1) % 10}")
        axis.set_xticks(range(1, len(variants) + 1), variants, rotation=30, ha="right")
        axis.set(title=SUMMARY_METRICS[name], xlim=(0.4, len(variants) + 0.6))
    figure.tight_layout()
    write_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))


def _setup_line(config: TrainConfig, variants) -> str:
    varied = sorted({key for variant in variants for key in variant.options})
    shown = {key: value for key, value in dataclasses.asdict(config).items()
             if key not in (*FIXED_OPTIONS, *varied) and value != getattr(TrainConfig, key, None)}
    options = ", ".join(f"{key}={value}" for key, value in shown.items()) or "defaults"
    data = config.dataset + (f" ({config.data_dir})" if config.data_dir else "")
    return (f"Dataset {data}, patient-grouped stratified folds from seed {config.seed}; training options: {options}; "
            f"varied: {', '.join(varied) or 'nothing'}.")


def _read_plan(directory: pathlib.Path):
    path = directory / EXPERIMENT_FILE
    if not path.is_file():
        raise ConfigError(f"{directory} is not an experiment directory: {EXPERIMENT_FILE} not found")
    plan = json.loads(path.read_text())
    variants = [Variant(variant["name"], variant["options"]) for variant in plan["variants"]]
    return TrainConfig.from_options(plan["options"]), variants, plan["folds"], plan["seeds"]


def default_output_dir(config: TrainConfig) -> pathlib.Path:
    return pathlib.Path("experiments") / f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{config.dataset}"


def run_experiment(config: TrainConfig | None = None, variants=None, *, folds: int = 5, seeds: int = 1,
                   output_dir=None, resume=None) -> Experiment:
    """Trains every variant on every fold (and seed), evaluates each run on its held-out fold and summarises.

    Args:
        config: the training options every variant starts from; ``config.seed`` seeds the folds, and run ``s`` of a
            fold trains with seed ``config.seed + s``.
        variants: ``Variant``s (``task_variants()`` for the multi-task model against its single-task baselines).
        folds: number of patient-grouped, class-stratified folds; each is the test split of one run per variant and
            seed, and each run's validation split is taken, patient-grouped, from its training folds.
        seeds: trainings per variant and fold.
        output_dir: the experiment directory (must be new or empty; default ``experiments/<date>-<dataset>``).
        resume: an experiment directory to finish: finished runs are kept, a half-finished run continues from its
            last finished epoch; no other argument.

    Returns:
        An ``Experiment``; the directory gets results.csv, summary.json, summary.md and summary.png once every run
        is done.

    Examples::

        config = TrainConfig(dataset="folder", data_dir="busbra", weights=None, image_size=128, deterministic=True)
        experiment = run_experiment(config, task_variants(), folds=5, output_dir="experiments/busbra")
        experiment.summary["comparisons"]  # paired tests of multi against each baseline
    """
    if resume is not None:
        if config is not None or variants is not None or output_dir is not None:
            raise ConfigError("--resume takes the options of the experiment it resumes; give no other option")
        directory = pathlib.Path(resume)
        config, variants, folds, seeds = _read_plan(directory)
    else:
        if config is None or variants is None:
            raise ConfigError("run_experiment needs a config and variants (or resume=EXPERIMENT_DIR)")
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ConfigError(f"--folds {folds!r}: expected an integer of at least 2")
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ConfigError(f"--seeds {seeds!r}: expected a positive integer")
        directory = pathlib.Path(output_dir) if output_dir is not None else default_output_dir(config)
        if directory.exists() and any(directory.iterdir()):
            raise ConfigError(f"--output-dir {directory} already exists and is not empty; choose another directory or "
                              f"finish that experiment with --resume {directory}")
    variants = list(variants)
    _check_variants(variants)
    runs = _plan(config, variants, directory, folds, seeds)
    if resume is None:
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / EXPERIMENT_FILE, {
            "format_version": FORMAT_VERSION, "options": dataclasses.asdict(config),
            "variants": [dataclasses.asdict(variant) for variant in variants], "folds": folds, "seeds": seeds,
        })

    rows = []
    for number, (variant, fold, seed, run_config) in enumerate(runs, start=1):
        logger.info("run %d of %d: variant %s, fold %d, seed %d", number, len(runs), variant, fold, seed)
        metrics = _train_and_evaluate(run_config)
        rows.append({"variant": variant, "fold": fold, "seed": seed, **_numbers(metrics),
                     "run": str(pathlib.Path(run_config.output_dir).relative_to(directory))})
    results = _results_table(rows)
    names = [variant.name for variant in variants]
    summary = _json_ready({**summarize(results, names, folds=folds, seeds=seeds),
                           "variant_options": {variant.name: variant.options for variant in variants}})
    write_atomically(directory / RESULTS_FILE, lambda temporary: results.to_csv(temporary, index=False))
    write_json(directory / SUMMARY_JSON, summary)
    markdown = summary_markdown(summary, f"Experiment {directory.name}", _setup_line(config, variants))
    write_atomically(directory / SUMMARY_MARKDOWN, lambda temporary: pathlib.Path(temporary).write_text(markdown))
    plot_summary(results, names, directory / SUMMARY_PLOT)
    return Experiment(directory, results, summary)
