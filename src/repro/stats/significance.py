"""The significance tests the study used, each returning a small typed result instead of printing.

Library code does the statistics (scipy, scikit-posthocs). Written here by hand, because no
well-kept library offers them in this form: Cliff's delta (from the Mann-Whitney U), the
Kruskal-Wallis effect size eta^2_H and the magnitude labels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from scipy import integrate, stats

#: Romano et al. (2006) thresholds for |Cliff's delta|: below each bound, the label on its right.
CLIFF_THRESHOLDS: tuple[tuple[float, str], ...] = ((0.147, "negligible"), (0.33, "small"), (0.474, "medium"))

Groups = Mapping[str, Sequence[float] | np.ndarray]


@dataclass(frozen=True)
class ShapiroResult:
    """Shapiro-Wilk normality test of one group (of `n_tested` of its `n` values; see `shapiro_wilk`)."""

    group: str
    n: int
    statistic: float
    pvalue: float
    n_tested: int = 0


@dataclass(frozen=True)
class OmnibusResult:
    """A test across k groups (Levene, Welch's ANOVA, Kruskal-Wallis).

    Attributes:
        test: the test's name.
        statistic: W for Levene, F for Welch's ANOVA, H for Kruskal-Wallis.
        pvalue: the test's p-value.
        n_per_group: runs in each group, in the order tested.
        effect_size: eta^2_H for Kruskal-Wallis; NaN for the others.
    """

    test: str
    statistic: float
    pvalue: float
    n_per_group: dict[str, int]
    effect_size: float = math.nan

    @property
    def k(self) -> int:
        return len(self.n_per_group)

    @property
    def n(self) -> int:
        return sum(self.n_per_group.values())


@dataclass(frozen=True)
class PairResult:
    """A pairwise post-hoc p-value (Dunn-Holm or Games-Howell) for groups a and b."""

    a: str
    b: str
    pvalue: float


@dataclass(frozen=True)
class CliffsDelta:
    """Cliff's delta of a against b: P(a > b) - P(a < b), with its magnitude label."""

    a: str
    b: str
    n_a: int
    n_b: int
    delta: float
    magnitude: str


@dataclass(frozen=True)
class SpearmanResult:
    """Spearman's rank correlation of x and y under the given alternative."""

    rho: float
    pvalue: float
    n: int
    alternative: str


def _arrays(groups: Groups) -> dict[str, np.ndarray]:
    return {name: np.asarray(values, dtype=float) for name, values in groups.items()}


def _long(groups: Groups) -> pd.DataFrame:
    arrays = _arrays(groups)
    return pd.DataFrame(
        {
            "group": np.repeat(list(arrays), [len(v) for v in arrays.values()]),
            "value": np.concatenate(list(arrays.values())) if arrays else np.array([], dtype=float),
        }
    )


#: Above this many values Shapiro-Wilk's p-value is not accurate (Royston's approximation, which
#: scipy uses, is fitted up to n = 5000; scipy warns beyond it).
SHAPIRO_MAX_N = 5000


def shapiro_wilk(values: np.ndarray) -> tuple[float, float, int]:
    """(W, p, n tested): Shapiro-Wilk, on a fixed random subsample of `SHAPIRO_MAX_N` values above that.

    The subsample (seed 0, without replacement) keeps the p-value within the range where it is
    accurate; it tests the same distribution, with the power of 5000 values, which is plenty.
    """
    values = np.asarray(values, dtype=float)
    if len(values) > SHAPIRO_MAX_N:
        values = np.random.default_rng(0).choice(values, SHAPIRO_MAX_N, replace=False)
    result = stats.shapiro(values)
    return float(result.statistic), float(result.pvalue), len(values)


def shapiro(groups: Groups) -> list[ShapiroResult]:
    """Shapiro-Wilk per group (a group of more than `SHAPIRO_MAX_N` runs is subsampled, `shapiro_wilk`)."""
    results = []
    for name, values in _arrays(groups).items():
        w, p, n_tested = shapiro_wilk(values)
        results.append(ShapiroResult(name, len(values), w, p, n_tested))
    return results


def levene(groups: Groups) -> OmnibusResult:
    """Levene's test of equal variances (scipy's default, centred on the median: Brown-Forsythe)."""
    arrays = _arrays(groups)
    result = stats.levene(*arrays.values())
    return OmnibusResult("Levene", float(result.statistic), float(result.pvalue), _sizes(arrays))


def welch_anova(groups: Groups) -> OmnibusResult:
    """Welch's one-way ANOVA, which does not assume equal variances."""
    arrays = _arrays(groups)
    result = stats.f_oneway(*arrays.values(), equal_var=False)
    return OmnibusResult("Welch ANOVA", float(result.statistic), float(result.pvalue), _sizes(arrays))


def games_howell(groups: Groups) -> list[PairResult]:
    """Games-Howell pairwise comparisons (scikit-posthocs), one result per unordered pair."""
    with warnings.catch_warnings():
        # Far-apart groups push the studentized range integral to its limits; such p-values are tiny anyway.
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        matrix = sp.posthoc_games_howell(_long(groups), val_col="value", group_col="group")
    return _pairs_from_matrix(matrix, groups)


def eta_squared_h(h: float, k: int, n: int) -> float:
    """Kruskal-Wallis effect size eta^2_H = (H - k + 1) / (n - k) (Tomczak & Tomczak, 2014)."""
    return (h - k + 1) / (n - k)


def kruskal(groups: Groups) -> OmnibusResult:
    """Kruskal-Wallis H test (tie-corrected, as scipy computes it) with eta^2_H."""
    arrays = _arrays(groups)
    result = stats.kruskal(*arrays.values())
    sizes = _sizes(arrays)
    h = float(result.statistic)
    return OmnibusResult(
        "Kruskal-Wallis", h, float(result.pvalue), sizes, eta_squared_h(h, len(sizes), sum(sizes.values()))
    )


def dunn_holm(groups: Groups) -> list[PairResult]:
    """Dunn's pairwise test (tie-corrected, scikit-posthocs) with Holm's correction over all pairs."""
    matrix = sp.posthoc_dunn(_long(groups), val_col="value", group_col="group", p_adjust="holm", sort=False)
    return _pairs_from_matrix(matrix, groups)


def cliff_magnitude(delta: float) -> str:
    """Label |delta| as negligible, small, medium or large."""
    for bound, label in CLIFF_THRESHOLDS:
        if abs(delta) < bound:
            return label
    return "large"


def cliffs_delta(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, names: tuple[str, str] = ("a", "b")
) -> CliffsDelta:
    """Cliff's delta of a against b, from the Mann-Whitney U of a: delta = 2U / (n_a n_b) - 1.

    U counts the pairs with a > b plus half the ties, so this equals P(a > b) - P(a < b) exactly,
    in O((n_a + n_b) log(n_a + n_b)) instead of comparing every pair.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    u = float(stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").statistic)
    delta = 2.0 * u / (len(x) * len(y)) - 1.0
    return CliffsDelta(names[0], names[1], len(x), len(y), delta, cliff_magnitude(delta))


def cliffs_deltas(groups: Groups) -> list[CliffsDelta]:
    """Cliff's delta for every unordered pair of groups, in the groups' order."""
    arrays = _arrays(groups)
    return [cliffs_delta(arrays[a], arrays[b], (a, b)) for a, b in combinations(arrays, 2)]


def spearman(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, alternative: str = "two-sided"
) -> SpearmanResult:
    """Spearman's rho with the chosen alternative: "two-sided", "greater" or "less"."""
    result = stats.spearmanr(np.asarray(x, dtype=float), np.asarray(y, dtype=float), alternative=alternative)
    return SpearmanResult(float(result.statistic), float(result.pvalue), len(x), alternative)


def _sizes(arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
    return {name: len(values) for name, values in arrays.items()}


def _pairs_from_matrix(matrix: pd.DataFrame, groups: Groups) -> list[PairResult]:
    return [PairResult(a, b, float(matrix.loc[a, b])) for a, b in combinations(list(groups), 2)]
