"""Statistics of cross-validated results: mean, standard deviation and t confidence interval of per-fold values, and
paired comparisons of two variants on the same folds (scipy's paired t-test and Wilcoxon signed-rank test)."""

import math
import warnings

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def describe(values, confidence: float = CONFIDENCE, bounds: tuple[float, float] | None = (0.0, 1.0)) -> dict:
    """Mean, sample standard deviation (ddof 1) and the t confidence interval of the mean of ``values``.

    ``bounds`` is the range the metric can take (accuracy, AUC, Dice: [0, 1]); the t interval, symmetric about the
    mean, can reach past it with few, spread values (2 folds: t = 12.7), so it is cut at the bounds and
    ``ci_clipped`` says so; None: no range.

    Returns ``{"n", "mean", "sd", "ci_low", "ci_high", "ci_method", "ci_clipped"}``; ``sd`` and the interval are NaN
    for fewer than 2 values. NaN values are left out (an AUC undefined on a fold with one class).
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    method = "t interval of the mean" + (f", cut at the metric's range [{bounds[0]:g}, {bounds[1]:g}]" if bounds
                                         else "")
    if n < 2:
        return {"n": n, "mean": mean, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_method": method,
                "ci_clipped": False}
    sd = float(values.std(ddof=1))
    if sd == 0:
        low = high = mean
    else:
        low, high = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    clipped = bool(bounds) and (low < bounds[0] or high > bounds[1])
    if bounds:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"n": n, "mean": mean, "sd": sd, "ci_low": float(low), "ci_high": float(high), "ci_method": method,
            "ci_clipped": clipped}


def smallest_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give for ``n`` pairs: ``2 / 2**n``.

    Reached when every difference has the same sign; scipy has no function for this bound.
    """
    return 2.0 ** (1 - n) if n > 0 else 1.0


def paired_comparison(first, second, confidence: float = CONFIDENCE) -> dict:
    """Compares two variants' values on the same folds (``first[i]`` and ``second[i]`` from fold ``i``).

    Differences are ``first - second``; pairs with a NaN are left out. Returns:

    - ``n``: pairs compared; ``mean_difference``, ``sd_difference`` (ddof 1) and the t interval
      ``ci_low``/``ci_high`` of the mean difference (``scipy.stats.ttest_rel(...).confidence_interval``);
    - ``t_statistic``, ``t_pvalue``: the paired t-test, ``scipy.stats.ttest_rel`` (two-sided);
    - ``wilcoxon_statistic``, ``wilcoxon_pvalue``: ``scipy.stats.wilcoxon`` (two-sided; exact without ties or zeros);
    - ``cohens_dz``: Cohen's d for paired samples, d_z = mean difference / standard deviation of the differences.

    Values that cannot be computed (fewer than 2 pairs, identical differences) are NaN; when every difference is 0
    the tests' p-values are 1.
    """
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if first.shape != second.shape:
        raise ValueError(f"paired values need the same length; received {len(first)} and {len(second)}")
    keep = ~(np.isnan(first) | np.isnan(second))
    first, second = first[keep], second[keep]
    differences = first - second
    n = len(differences)
    result = {"n": n, "mean_difference": float(differences.mean()) if n else math.nan, "sd_difference": math.nan,
              "ci_low": math.nan, "ci_high": math.nan, "t_statistic": math.nan, "t_pvalue": math.nan,
              "wilcoxon_statistic": math.nan, "wilcoxon_pvalue": math.nan, "cohens_dz": math.nan}
    if n < 2:
        return result
    sd = float(differences.std(ddof=1))
    result["sd_difference"] = sd
    if not np.any(differences):
        result.update(ci_low=0.0, ci_high=0.0, t_pvalue=1.0, wilcoxon_pvalue=1.0)
        return result
    if sd == 0:  # the same non-zero difference on every fold: no spread to test against
        result.update(ci_low=result["mean_difference"], ci_high=result["mean_difference"])
    else:
        t_test = stats.ttest_rel(first, second)
        low, high = t_test.confidence_interval(confidence)
        result.update(ci_low=float(low), ci_high=float(high), t_statistic=float(t_test.statistic),
                      t_pvalue=float(t_test.pvalue), cohens_dz=result["mean_difference"] / sd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scipy's "sample size too small for normal approximation"
        wilcoxon = stats.wilcoxon(first, second)
    result.update(wilcoxon_statistic=float(wilcoxon.statistic), wilcoxon_pvalue=float(wilcoxon.pvalue))
    return result
