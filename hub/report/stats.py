"""Statistics of the report: a sample's mean and interval, two choices compared (paired t or Welch) with the
difference and its 95% interval, Holm's adjustment over every pair of a table, and ranks."""
from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass

ALPHA = 0.05                         # beyond noise: Holm-adjusted p < ALPHA
PAIRED, WELCH = "paired t", "Welch t"
NOT_ENOUGH = "not enough runs (n < 2) for a test"


@dataclass
class Stats:
    n: int
    mean: float | None
    sd: float | None
    ci: tuple | None   # 95% Student t interval of the mean


def describe(values: list[float]) -> Stats:
    """n, mean, sample sd (n − 1) and the 95% Student t confidence interval of the mean."""
    n = len(values)
    if n == 0:
        return Stats(0, None, None, None)
    mean = statistics.fmean(values)
    if n == 1:
        return Stats(1, mean, None, None)
    sd = statistics.stdev(values)
    return Stats(n, mean, sd, t_interval(mean, sd / math.sqrt(n), n - 1))


def t_interval(center: float, se: float, df: float) -> tuple:
    """center ± t(0.975, df)·se; a point when se = 0."""
    from scipy import stats

    half = stats.t.ppf(0.975, df) * se if se > 0 else 0.0
    return center - half, center + half


@dataclass
class Comparison:
    """Choice a against choice b: the test, its sample, a − b with the 95% interval, and the p-values."""
    test: str                       # PAIRED or WELCH
    n: str                          # "3 pairs", "3 + 2 runs"
    diff: float                     # mean(a) − mean(b) (paired: the mean per-seed difference, the same number)
    ci: tuple | None
    p: float | None                 # two-sided, unadjusted; None when there is no test (see note)
    wilcoxon: float | None = None   # signed-rank p of the same pairs, paired only
    note: str = ""


def compare(a: list[tuple], b: list[tuple]) -> Comparison:
    """Two choices' (key, value) samples, key = seed (and the values of the axes the table pools over).
    Paired t-test when both have the same keys, one value each; else Welch's t-test."""
    keys_a, keys_b = [k for k, _ in a], [k for k, _ in b]
    if None not in keys_a and len(set(keys_a)) == len(keys_a) == len(keys_b) and set(keys_a) == set(keys_b):
        x, y = dict(a), dict(b)
        keys = sorted(x, key=str)
        return paired([x[k] for k in keys], [y[k] for k in keys])
    return welch([v for _, v in a], [v for _, v in b])


def paired(a: list[float], b: list[float]) -> Comparison:
    """Paired t-test (scipy ttest_rel) of d = a − b; 95% CI mean(d) ± t(0.975, n − 1)·sd(d)/√n."""
    from scipy import stats

    n, d = len(a), [x - y for x, y in zip(a, b)]
    diff = statistics.fmean(d)
    if n < 2:
        return Comparison(PAIRED, f"{n} pair", diff, None, None, note=NOT_ENOUGH)
    p = _quiet(stats.ttest_rel, a, b)
    return Comparison(PAIRED, f"{n} pairs", diff, t_interval(diff, statistics.stdev(d) / math.sqrt(n), n - 1), p,
                      wilcoxon(d), "" if p is not None else "the differences are all 0, no test")


def welch(a: list[float], b: list[float]) -> Comparison:
    """Welch's t-test (scipy ttest_ind, equal_var=False); 95% CI mean(a) − mean(b) ± t(0.975, ν)·se with
    se² = s²_a/n_a + s²_b/n_b and the Welch–Satterthwaite ν = se⁴ / Σ (s²_i/n_i)²/(n_i − 1)."""
    from scipy import stats

    n, diff = f"{len(a)} + {len(b)} runs", statistics.fmean(a) - statistics.fmean(b)
    if min(len(a), len(b)) < 2:
        return Comparison(WELCH, n, diff, None, None, note=NOT_ENOUGH)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb else 1
    p = _quiet(stats.ttest_ind, a, b, equal_var=False)
    return Comparison(WELCH, n, diff, t_interval(diff, math.sqrt(va + vb), df), p,
                      note="" if p is not None else "no variance in either group, no test")


def wilcoxon(d: list[float]) -> float | None:
    """Two-sided p of the Wilcoxon signed-rank test of the differences (exact for small n); None when all are 0."""
    from scipy import stats

    if not any(d):
        return None
    return _quiet(stats.wilcoxon, d)


def _quiet(test, *args, **kwargs) -> float | None:
    """The p-value of a scipy test, None for NaN; its warnings (zero variance, small n) are the report's notes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(test(*args, **kwargs).pvalue)
    return None if math.isnan(p) else p


def holm(pvalues: list) -> list:
    """Holm's step-down adjustment, which bounds the family-wise error rate: with the m p-values sorted
    ascending, p₍ᵢ₎ becomes max over j ≤ i of min(1, (m − j + 1)·p₍ⱼ₎). None (no test) stays None,
    outside the family."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted, running = [None] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def ranks(means: list[float], higher_is_better: bool) -> list[float]:
    """1 = best; tied means share their average rank (scipy rankdata)."""
    from scipy.stats import rankdata

    return [float(r) for r in rankdata([-m if higher_is_better else m for m in means])]


# ---------------------------------------------------------------- numbers as text

def fmt(value) -> str:
    """A metric value for the tables: 4 decimals, thousands separated above 100, — when absent."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"


def fmt_diff(comparison: Comparison) -> str:
    """"+0.0213 [0.0150, 0.0276]": the difference and its 95% interval."""
    sign = "+" if comparison.diff > 0 else ""
    ci = f" [{fmt(comparison.ci[0])}, {fmt(comparison.ci[1])}]" if comparison.ci else ""
    return sign + fmt(comparison.diff) + ci


def fmt_p(p: float | None) -> str:
    return "—" if p is None else f"{p:.3g}"
