"""Two-way analyses of architecture x environment (T7): is the environment's effect the same for every model?

Three analyses side by side, each over a complete sub-design (every architecture ran in every
environment of the sub-design):

- the parametric two-way ANOVA (statsmodels OLS, Type II sums of squares);
- the aligned rank transform ANOVA (ART; Wobbrock, Findlater, Gergle and Higgins, CHI 2011);
- the Scheirer-Ray-Hare test (Sokal and Rohlf, *Biometry*, 1995), a two-way Kruskal-Wallis.

No maintained Python library offers ART (it lives in R's ARTool, Kay and Wobbrock), so it is written
here as ARTool computes it: for each effect, the response is reduced to its residual plus that one
effect's estimate, rounded to 8 decimals (so values equal in exact arithmetic tie), given mid-ranks,
and the full factorial model is fitted to the ranks; only the aligned effect's row is read. ARTool
reads Type III sums of squares with sum-to-zero contrasts; `art_anova` offers those and Type II (the
other two analyses' sums), which agree on a balanced design. T7 prints Type II, and says so.
Shapiro-Wilk on the ANOVA residuals and Levene (median-centred) across the cells say whether the
parametric ANOVA's assumptions hold.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from repro.stats import significance as sig

#: The three effects of a two-way design, in table order.
EFFECTS: tuple[str, ...] = ("architecture", "environment", "architecture:environment")


@dataclass(frozen=True)
class EffectRow:
    """One effect of one analysis: statistic (F, or H for Scheirer-Ray-Hare), df, p, partial eta^2."""

    effect: str
    df: int
    df_residual: int
    statistic: float
    pvalue: float
    partial_eta2: float


@dataclass(frozen=True)
class SubDesign:
    """A complete sub-design and its three analyses.

    Attributes:
        architectures, environments: the levels in the sub-design (every pair ran).
        n: runs analysed; cell_sizes: runs per (architecture, environment) cell.
        anova, art, srh: one `EffectRow` per effect in `EFFECTS` order.
        shapiro_w, shapiro_p: Shapiro-Wilk on the parametric ANOVA's residuals (on `shapiro_n` of
            them: a random 5000 when there are more, `repro.stats.significance.shapiro_wilk`).
        levene_p: Levene's test (median-centred) of equal variances across the cells.
        art_sums_of_squares: the sums of squares ART read, "II" or "III" (see `art_anova`).
    """

    architectures: tuple[str, ...]
    environments: tuple[str, ...]
    n: int
    cell_sizes: dict[tuple[str, str], int]
    anova: tuple[EffectRow, ...]
    art: tuple[EffectRow, ...]
    srh: tuple[EffectRow, ...]
    shapiro_w: float
    shapiro_p: float
    levene_p: float
    art_sums_of_squares: str = "II"
    shapiro_n: int = 0

    @property
    def assumptions_hold(self) -> bool:
        return self.shapiro_p >= 0.05 and self.levene_p >= 0.05


def complete_subdesigns(
    runs: pd.DataFrame,
    environments: list[str],
    architectures: list[str],
    metric: str = "energy_j_per_image",
    min_cell: int = 3,
) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The maximal complete sub-designs: (architectures, environments) where every cell has `min_cell` runs.

    A sub-design needs at least two levels of each factor. Maximal: no other complete sub-design
    contains both its architectures and its environments. Ordered by most environments first.
    """
    counts = runs.dropna(subset=[metric]).groupby(["architecture", "environment"]).size()
    full = {pair for pair, count in counts.items() if count >= min_cell}
    found: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    for size in range(len(environments), 1, -1):
        for envs in combinations(environments, size):
            archs = tuple(a for a in architectures if all((a, e) in full for e in envs))
            if len(archs) < 2:
                continue
            contained = any(set(archs) <= set(a2) and set(envs) <= set(e2) for a2, e2 in found)
            if not contained:
                found.append((archs, envs))
    return found


def _design_matrix(a: pd.Series, b: pd.Series) -> dict[str, np.ndarray]:
    """Sum-to-zero (effect) coded columns of A, B and A:B, plus the intercept."""

    def coded(factor: pd.Series) -> np.ndarray:
        levels = list(dict.fromkeys(factor))
        columns = np.zeros((len(factor), len(levels) - 1))
        for j, level in enumerate(levels[:-1]):
            columns[:, j] = (factor == level).to_numpy(float) - (factor == levels[-1]).to_numpy(float)
        return columns

    xa, xb = coded(a), coded(b)
    xab = np.column_stack([xa[:, i] * xb[:, j] for i in range(xa.shape[1]) for j in range(xb.shape[1])])
    return {"1": np.ones((len(a), 1)), "A": xa, "B": xb, "AB": xab}


def _rss(y: np.ndarray, *blocks: np.ndarray) -> float:
    x = np.column_stack(blocks)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ beta
    return float(residual @ residual)


def _type2(y: np.ndarray, a: pd.Series, b: pd.Series) -> tuple[dict[str, tuple[float, int]], float, int]:
    """Type II sums of squares of A, B and A:B with their df, and the full model's residual SS and df.

    Type II: each main effect adjusted for the other, the interaction for both (as car::Anova and
    statsmodels' `anova_lm(typ=2)` compute it).
    """
    m = _design_matrix(a, b)
    rss_1a = _rss(y, m["1"], m["A"])
    rss_1b = _rss(y, m["1"], m["B"])
    rss_ab = _rss(y, m["1"], m["A"], m["B"])
    rss_full = _rss(y, m["1"], m["A"], m["B"], m["AB"])
    x_full = np.column_stack([m["1"], m["A"], m["B"], m["AB"]])
    df_resid = len(y) - np.linalg.matrix_rank(x_full)
    return (
        {
            "architecture": (rss_1b - rss_ab, m["A"].shape[1]),
            "environment": (rss_1a - rss_ab, m["B"].shape[1]),
            "architecture:environment": (rss_ab - rss_full, m["AB"].shape[1]),
        },
        rss_full,
        int(df_resid),
    )


def _type3(y: np.ndarray, a: pd.Series, b: pd.Series) -> tuple[dict[str, tuple[float, int]], float, int]:
    """Type III sums of squares of A, B and A:B with sum-to-zero contrasts, as ARTool's `anova()` reads them.

    Type III: each effect's columns dropped from the full model, the others kept (car::Anova(type=3)
    with `contr.sum`). Only meaningful with sum-to-zero coding, which `_design_matrix` uses.
    """
    m = _design_matrix(a, b)
    rss_full = _rss(y, m["1"], m["A"], m["B"], m["AB"])
    x_full = np.column_stack([m["1"], m["A"], m["B"], m["AB"]])
    df_resid = len(y) - np.linalg.matrix_rank(x_full)
    return (
        {
            "architecture": (_rss(y, m["1"], m["B"], m["AB"]) - rss_full, m["A"].shape[1]),
            "environment": (_rss(y, m["1"], m["A"], m["AB"]) - rss_full, m["B"].shape[1]),
            "architecture:environment": (_rss(y, m["1"], m["A"], m["B"]) - rss_full, m["AB"].shape[1]),
        },
        rss_full,
        int(df_resid),
    )


#: The sums of squares `art_anova` can read: Type II (T7's, as its ANOVA and SRH) or Type III (ARTool's).
SUMS_OF_SQUARES = {"II": _type2, "III": _type3}

#: ARTool rounds aligned responses to this many decimals before ranking them.
ARTOOL_ROUND_DECIMALS = 8


def two_way_anova(frame: pd.DataFrame, metric: str) -> tuple[tuple[EffectRow, ...], np.ndarray]:
    """The parametric two-way ANOVA with interaction (statsmodels OLS, Type II); also returns residuals."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    data = pd.DataFrame(
        {"y": frame[metric].to_numpy(float), "a": frame["architecture"], "b": frame["environment"]}
    )
    model = smf.ols("y ~ C(a, Sum) * C(b, Sum)", data=data).fit()
    table = anova_lm(model, typ=2)
    ss_resid, df_resid = float(table.loc["Residual", "sum_sq"]), int(table.loc["Residual", "df"])
    rows = []
    for effect, term in zip(EFFECTS, ("C(a, Sum)", "C(b, Sum)", "C(a, Sum):C(b, Sum)"), strict=True):
        ss = float(table.loc[term, "sum_sq"])
        rows.append(
            EffectRow(
                effect,
                int(table.loc[term, "df"]),
                df_resid,
                float(table.loc[term, "F"]),
                float(table.loc[term, "PR(>F)"]),
                ss / (ss + ss_resid),
            )
        )
    return tuple(rows), np.asarray(model.resid, dtype=float)


def art_align(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The aligned responses of Wobbrock et al. (2011) for A, B and A:B (columns named as `EFFECTS`).

    residual = y - cell mean; aligned for A = residual + (mean of A's level - grand mean); for B likewise;
    for A:B = residual + (cell mean - mean of A's level - mean of B's level + grand mean).
    Every aligned column sums to zero.
    """
    y = frame[metric].to_numpy(float)
    grand = y.mean()
    cell = frame.groupby(["architecture", "environment"])[metric].transform("mean").to_numpy(float)
    mean_a = frame.groupby("architecture")[metric].transform("mean").to_numpy(float)
    mean_b = frame.groupby("environment")[metric].transform("mean").to_numpy(float)
    residual = y - cell
    return pd.DataFrame(
        {
            "architecture": residual + (mean_a - grand),
            "environment": residual + (mean_b - grand),
            "architecture:environment": residual + (cell - mean_a - mean_b + grand),
        },
        index=frame.index,
    )


def art_ranks(aligned: np.ndarray) -> np.ndarray:
    """Mid-ranks of aligned responses as ARTool gives them: rounded first, so floating-point noise ties.

    Without the rounding, two aligned values that are equal in exact arithmetic (common: they are
    sums and differences of cell means) rank apart by their last bit.
    """
    return stats.rankdata(np.round(aligned, ARTOOL_ROUND_DECIMALS))


def art_anova(frame: pd.DataFrame, metric: str, sums_of_squares: str = "II") -> tuple[EffectRow, ...]:
    """ART ANOVA: for each effect, rank its aligned response as ARTool does and read that effect's F test.

    Args:
        sums_of_squares: "II" (T7's) or "III" with sum-to-zero contrasts (ARTool's default).
    """
    type_of_sums = SUMS_OF_SQUARES[sums_of_squares]
    aligned = art_align(frame, metric)
    rows = []
    for effect in EFFECTS:
        ranks = art_ranks(aligned[effect].to_numpy())
        sums, ss_resid, df_resid = type_of_sums(ranks, frame["architecture"], frame["environment"])
        ss, df = sums[effect]
        f = (ss / df) / (ss_resid / df_resid)
        rows.append(
            EffectRow(effect, df, df_resid, f, float(stats.f.sf(f, df, df_resid)), ss / (ss + ss_resid))
        )
    return tuple(rows)


def scheirer_ray_hare(frame: pd.DataFrame, metric: str) -> tuple[EffectRow, ...]:
    """Scheirer-Ray-Hare: the two-way ANOVA of the ranks, each SS divided by the ranks' total mean square.

    H = SS_effect / MS_total is referred to chi^2 with the effect's df. Mid-ranks for ties; dividing by
    the observed variance of the ranks is the tie correction. Type II sums of squares.
    """
    ranks = stats.rankdata(frame[metric].to_numpy(float))
    sums, ss_resid, df_resid = _type2(ranks, frame["architecture"], frame["environment"])
    ms_total = float(np.var(ranks, ddof=1))
    rows = []
    for effect in EFFECTS:
        ss, df = sums[effect]
        h = ss / ms_total
        rows.append(EffectRow(effect, df, df_resid, h, float(stats.chi2.sf(h, df)), ss / (ss + ss_resid)))
    return tuple(rows)


def analyse_subdesign(
    runs: pd.DataFrame,
    architectures: tuple[str, ...],
    environments: tuple[str, ...],
    metric: str,
    art_sums_of_squares: str = "II",
) -> SubDesign:
    """Run the three analyses and the assumption checks on one complete sub-design."""
    frame = runs[runs["architecture"].isin(architectures) & runs["environment"].isin(environments)].dropna(
        subset=[metric]
    )
    # A fixed row order (sub-design levels, then run id) keeps every number identical run to run.
    frame = frame.assign(
        _a=frame["architecture"].map({a: i for i, a in enumerate(architectures)}),
        _e=frame["environment"].map({e: i for i, e in enumerate(environments)}),
    ).sort_values(["_a", "_e", "run"], kind="stable")
    frame = frame.drop(columns=["_a", "_e"]).reset_index(drop=True)
    anova, residuals = two_way_anova(frame, metric)
    shapiro_w, shapiro_p, shapiro_n = sig.shapiro_wilk(residuals)
    cells = [group[metric].to_numpy(float) for _, group in frame.groupby(["architecture", "environment"])]
    levene = stats.levene(*cells, center="median")
    sizes = frame.groupby(["architecture", "environment"]).size()
    return SubDesign(
        architectures=architectures,
        environments=environments,
        n=len(frame),
        cell_sizes={(a, e): int(sizes[a, e]) for a in architectures for e in environments},
        anova=anova,
        art=art_anova(frame, metric, art_sums_of_squares),
        srh=scheirer_ray_hare(frame, metric),
        shapiro_w=shapiro_w,
        shapiro_p=shapiro_p,
        levene_p=float(levene.pvalue),
        art_sums_of_squares=art_sums_of_squares,
        shapiro_n=shapiro_n,
    )


def interaction(
    runs: pd.DataFrame,
    environments: list[str],
    architectures: list[str],
    metric: str = "energy_j_per_image",
    min_cell: int = 3,
    art_sums_of_squares: str = "II",
    columns: tuple[str, str] = ("architecture", "environment"),
) -> tuple[SubDesign, ...]:
    """T7: every maximal complete sub-design of the runs, analysed; empty when the data has none.

    `columns` hold the two factors' levels (the study's: architecture and environment); the effects
    are named after them ("batch_size", "precision", "batch_size:precision").
    """
    first, second = columns
    frame = runs[[first, second, "run", metric]].set_axis(
        ["architecture", "environment", "run", metric], axis=1
    )
    effect_names = dict(zip(EFFECTS, (first, second, f"{first}:{second}"), strict=True))

    def named(rows: tuple[EffectRow, ...]) -> tuple[EffectRow, ...]:
        return tuple(replace(row, effect=effect_names[row.effect]) for row in rows)

    found = []
    for archs, envs in complete_subdesigns(frame, environments, architectures, metric, min_cell):
        sub = analyse_subdesign(frame, archs, envs, metric, art_sums_of_squares)
        found.append(replace(sub, anova=named(sub.anova), art=named(sub.art), srh=named(sub.srh)))
    return tuple(found)
