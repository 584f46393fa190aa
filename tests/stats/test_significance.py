"""The hand-written statistics against a second computation; the library ones against their definitions."""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import pytest
from scipy import stats

from repro.stats import significance as sig


def _brute_cliff(a: np.ndarray, b: np.ndarray) -> float:
    diff = np.sign(a[:, None] - b[None, :])
    return float(diff.mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cliffs_delta_matches_pairwise_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 8, size=23).astype(float)  # integers: plenty of ties
    b = rng.integers(2, 10, size=17).astype(float)
    result = sig.cliffs_delta(a, b, ("a", "b"))
    assert result.delta == pytest.approx(_brute_cliff(a, b), abs=1e-12)
    assert (result.n_a, result.n_b) == (23, 17)
    assert sig.cliffs_delta(b, a).delta == pytest.approx(-result.delta, abs=1e-12)


def test_cliffs_delta_extremes_and_labels() -> None:
    assert sig.cliffs_delta([1, 2, 3], [4, 5, 6]).delta == -1.0
    assert sig.cliffs_delta([4, 5, 6], [1, 2, 3]).magnitude == "large"
    labels = [sig.cliff_magnitude(d) for d in (0.0, 0.146, 0.147, 0.329, 0.33, -0.473, 0.474, -1.0)]
    assert labels == ["negligible", "negligible", "small", "small", "medium", "medium", "large", "large"]


def test_kruskal_and_eta_squared_match_hand_ranking() -> None:
    groups = {"x": [1.1, 2.3, 3.7, 4.2], "y": [5.5, 6.1, 7.9], "z": [8.4, 9.0, 10.2, 11.8, 12.5]}
    values = np.concatenate([np.asarray(v) for v in groups.values()])
    ranks = stats.rankdata(values)
    n, k = len(values), len(groups)
    h, start = 0.0, 0
    for v in groups.values():  # no ties: H = 12 / (n (n+1)) sum R_i^2 / n_i - 3 (n+1)
        h += ranks[start : start + len(v)].sum() ** 2 / len(v)
        start += len(v)
    h = 12 / (n * (n + 1)) * h - 3 * (n + 1)
    result = sig.kruskal(groups)
    assert result.statistic == pytest.approx(h)
    assert result.effect_size == pytest.approx((h - k + 1) / (n - k))
    assert (result.k, result.n, result.n_per_group) == (3, 12, {"x": 4, "y": 3, "z": 5})


def test_games_howell_matches_its_formula() -> None:
    rng = np.random.default_rng(3)
    groups = {"a": rng.normal(0, 1, 12), "b": rng.normal(0.8, 2, 15), "c": rng.normal(1.5, 0.5, 9)}
    found = {(p.a, p.b): p.pvalue for p in sig.games_howell(groups)}
    assert list(found) == [("a", "b"), ("a", "c"), ("b", "c")]
    for a, b in combinations(groups, 2):
        x, y = groups[a], groups[b]
        va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
        q = abs(x.mean() - y.mean()) / np.sqrt((va + vb) / 2)
        df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
        assert found[a, b] == pytest.approx(stats.studentized_range.sf(q, 3, df), rel=1e-6)


def test_welch_anova_matches_its_formula() -> None:
    rng = np.random.default_rng(4)
    groups = {"a": rng.normal(0, 1, 10), "b": rng.normal(1, 3, 14), "c": rng.normal(0.5, 2, 8)}
    n = np.array([len(v) for v in groups.values()])
    m = np.array([v.mean() for v in groups.values()])
    w = n / np.array([v.var(ddof=1) for v in groups.values()])
    grand = (w * m).sum() / w.sum()
    k = len(n)
    lam = ((1 - w / w.sum()) ** 2 / (n - 1)).sum()
    f = ((w * (m - grand) ** 2).sum() / (k - 1)) / (1 + 2 * (k - 2) / (k**2 - 1) * lam)
    p = stats.f.sf(f, k - 1, (k**2 - 1) / (3 * lam))
    result = sig.welch_anova(groups)
    assert (result.statistic, result.pvalue) == (pytest.approx(f), pytest.approx(p))


def test_dunn_holm_pairs_are_in_group_order_and_adjusted() -> None:
    groups = {"a": [1, 2, 3, 4, 5], "b": [3, 4, 5, 6, 7], "c": [8, 9, 10, 11, 12]}
    pairs = sig.dunn_holm(groups)
    assert [(p.a, p.b) for p in pairs] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert all(0 < p.pvalue <= 1 for p in pairs)
    assert pairs[1].pvalue < pairs[0].pvalue  # a-c is the clearest difference


def test_spearman_alternative() -> None:
    x = np.arange(10.0)
    y = x + np.array([0.5, -0.3, 0.9, -1.2, 0.1, 2.0, -0.4, 0.3, 0.8, -0.6])
    two = sig.spearman(x, y)
    greater = sig.spearman(x, y, "greater")
    less = sig.spearman(x, y, "less")
    assert greater.rho == two.rho > 0
    assert greater.pvalue == pytest.approx(two.pvalue / 2)
    assert less.pvalue == pytest.approx(1 - two.pvalue / 2)
    assert greater.n == 10 and greater.alternative == "greater"


def test_shapiro_and_levene_per_group() -> None:
    groups = {"a": [1.0, 2.0, 2.5, 3.1, 4.0], "b": [1.0, 1.1, 0.9, 5.0, 1.05]}
    shapiro = sig.shapiro(groups)
    assert [s.group for s in shapiro] == ["a", "b"] and shapiro[1].pvalue < shapiro[0].pvalue
    assert sig.levene(groups).pvalue == pytest.approx(stats.levene(groups["a"], groups["b"]).pvalue)


def test_shapiro_above_5000_values_tests_a_fixed_subsample_without_scipys_warning() -> None:
    values = np.random.default_rng(1).normal(size=6000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's "p-value may not be accurate for N > 5000" would raise
        w, p, n_tested = sig.shapiro_wilk(values)
        (result,) = sig.shapiro({"g": values})
    subsample = np.random.default_rng(0).choice(values, 5000, replace=False)
    assert (w, p, n_tested) == (stats.shapiro(subsample).statistic, stats.shapiro(subsample).pvalue, 5000)
    assert (result.n, result.n_tested, result.pvalue) == (6000, 5000, p)
    small = values[:100]
    assert sig.shapiro_wilk(small)[:2] == (stats.shapiro(small).statistic, stats.shapiro(small).pvalue)
