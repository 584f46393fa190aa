"""The study's analyses over a tidy runs table: RQ1, RQ2, the correlations, the trade-off, the improvements.

Each analysis runs over whatever groups exist. A group too small for a test is left out of it, with
the reason recorded, and NaNs in a metric are dropped and counted, never silently.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from repro.errors import UserError
from repro.factors import ALL_RUNS, ALL_RUNS_LEVEL, FACTORS, STUDY_FACTORS, Factor
from repro.stats import significance as sig
from repro.stats.interaction import SubDesign, interaction
from repro.stats.runs import level_order
from repro.stats.tradeoff import improvement_matrix, pareto_front

log = logging.getLogger(__name__)

#: The study's choices: RQ1 compares architectures in the Cloud, RQ2 environments for MobileNet V2.
STUDY_ENVIRONMENT = "Cloud"
STUDY_ARCHITECTURE = "mobilenet_v2"
#: The level each factor holds fixed by default, where the runs have it (others: the best covered).
STUDY_CHOICES: dict[str, str] = {"environment": STUDY_ENVIRONMENT, "architecture": STUDY_ARCHITECTURE}
#: Metrics compared in RQ1 and RQ2.
COMPARED_METRICS: tuple[str, ...] = ("energy_j_per_image", "gpu_usage_pct", "f1")


@dataclass(frozen=True)
class PairRow:
    """One pair of groups in a comparison: Dunn-Holm and Games-Howell p, Cliff's delta of a against b."""

    a: str
    b: str
    n_a: int
    n_b: int
    dunn_holm_p: float
    games_howell_p: float
    cliffs_delta: float
    magnitude: str


@dataclass(frozen=True)
class Comparison:
    """Groups of one factor compared on one metric, within one level of the other factor.

    Attributes:
        metric: the tidy column compared.
        factor: the compared factor's column: "architecture" (RQ1) or "environment" (RQ2) in the study.
        within: the level held fixed (an environment for RQ1, an architecture for RQ2), in `within_column`.
        groups: the groups tested, in display order.
        shapiro, levene, welch, kruskal: the omnibus results (None when skipped).
        pairs: every pair of tested groups.
        skipped: why a group or the whole test was left out.
        nan_dropped: runs dropped because the metric was NaN.
    """

    metric: str
    factor: str
    within: str
    groups: tuple[str, ...]
    shapiro: tuple[sig.ShapiroResult, ...] = ()
    levene: sig.OmnibusResult | None = None
    welch: sig.OmnibusResult | None = None
    kruskal: sig.OmnibusResult | None = None
    pairs: tuple[PairRow, ...] = ()
    skipped: tuple[str, ...] = ()
    nan_dropped: int = 0
    within_column: str = "environment"  # the column that holds `within`


@dataclass(frozen=True)
class Correlation:
    """A Spearman correlation between two tidy columns over a subset of runs."""

    x: str
    y: str
    subset: str
    result: sig.SpearmanResult | None
    skipped: str = ""


@dataclass(frozen=True)
class Improvement:
    """A reduction of median J/image from one cell (first factor's level, second's) to another."""

    kind: str
    from_pair: tuple[str, str]
    to_pair: tuple[str, str]
    from_median: float
    to_median: float
    reduction: float
    from_f1: float
    to_f1: float

    @property
    def f1_given_up(self) -> float:
        return self.from_f1 - self.to_f1


@dataclass(frozen=True)
class StudyResults:
    """Everything the tables and figures show.

    The study's roles: `architecture(s)` are the first factor's (chosen and all) levels, `environment(s)`
    the second's; with one factor the second is `repro.factors.ALL_RUNS`, one level holding every run.
    """

    environment: str
    architecture: str
    environments: tuple[str, ...]
    architectures: tuple[str, ...]
    medians: pd.DataFrame
    rq1: tuple[Comparison, ...]
    rq2: tuple[Comparison, ...]
    correlations: tuple[Correlation, ...]
    pareto: dict[str, pd.DataFrame]
    improvements: tuple[Improvement, ...]
    reductions: pd.DataFrame
    notes: tuple[str, ...] = field(default=())
    #: T7: the architecture x environment analyses, one per complete sub-design (none: empty).
    interaction: tuple[SubDesign, ...] = field(default=())
    #: The two factors in their roles (first: compared in RQ1, second: in RQ2).
    factors: tuple[Factor, Factor] = (FACTORS["architecture"], FACTORS["environment"])

    @property
    def one_factor(self) -> bool:
        """A one-factor study: no RQ2 and no interaction."""
        return self.factors[1] is ALL_RUNS


def compare(
    runs: pd.DataFrame,
    metric: str,
    factor: str,
    within_column: str,
    within_value: str,
    order: list[str],
    min_group_size: int = 3,
) -> Comparison:
    """Compare the groups of `factor` on `metric`, over the runs where `within_column == within_value`.

    Runs with a NaN metric are dropped (and counted); groups with fewer than `min_group_size` runs are
    left out with a reason; with fewer than two groups left, only the reasons are returned.
    """
    subset = runs[runs[within_column] == within_value]
    nan = subset[metric].isna()
    if nan.any():
        log.warning(
            "%s within %s: %d run(s) with NaN %s dropped", factor, within_value, int(nan.sum()), metric
        )
    subset = subset[~nan]
    skipped: list[str] = []
    groups: dict[str, np.ndarray] = {}
    for name in order:
        values = subset.loc[subset[factor] == name, metric].to_numpy(dtype=float)
        if len(values) == 0:
            continue
        if len(values) < min_group_size:
            skipped.append(f"{name}: {len(values)} run(s), fewer than {min_group_size}")
            continue
        groups[name] = values
    base = {
        "metric": metric,
        "factor": factor,
        "within": within_value,
        "groups": tuple(groups),
        "nan_dropped": int(nan.sum()),
        "within_column": within_column,
    }
    if len(groups) < 2:
        skipped.append(f"fewer than 2 groups with {min_group_size}+ runs; no test")
        return Comparison(**base, skipped=tuple(skipped))
    if np.ptp(np.concatenate(list(groups.values()))) == 0:
        skipped.append("all values identical; no test")
        return Comparison(**base, skipped=tuple(skipped))
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", RuntimeWarning
        )  # a constant group makes Welch/Shapiro NaN, shown as such
        shapiro = tuple(sig.shapiro(groups))
        levene = sig.levene(groups)
        welch = sig.welch_anova(groups)
        games_howell = {(p.a, p.b): p.pvalue for p in sig.games_howell(groups)}
    kruskal = sig.kruskal(groups)
    dunn = {(p.a, p.b): p.pvalue for p in sig.dunn_holm(groups)}
    pairs = tuple(
        PairRow(d.a, d.b, d.n_a, d.n_b, dunn[d.a, d.b], games_howell[d.a, d.b], d.delta, d.magnitude)
        for d in sig.cliffs_deltas(groups)
    )
    return Comparison(
        **base,
        shapiro=shapiro,
        levene=levene,
        welch=welch,
        kruskal=kruskal,
        pairs=pairs,
        skipped=tuple(skipped),
    )


def correlate(runs: pd.DataFrame, x: str, y: str, subset: str, alternative: str = "greater") -> Correlation:
    """Spearman between two columns over `runs` (NaN pairs dropped); skipped below 3 runs or if constant."""
    pairs = runs[[x, y]].dropna()
    if len(pairs) < 3:
        return Correlation(x, y, subset, None, f"{len(pairs)} run(s) with both values, fewer than 3")
    if pairs[x].nunique() < 2 or pairs[y].nunique() < 2:
        return Correlation(x, y, subset, None, "one variable is constant")
    return Correlation(x, y, subset, sig.spearman(pairs[x], pairs[y], alternative))


def correlations(
    runs: pd.DataFrame, environments: list[str], factors: tuple[Factor, Factor] | None = None
) -> list[Correlation]:
    """The study's Spearman correlations, one-sided ("greater"), and each numeric factor's, two-sided.

    Energy-F1 and energy-GPU usage per environment (the second factor's level); energy-GFLOPs and
    GPU usage-GFLOPs in every environment where at least three architectures ran (the Cloud and
    Local ML in the study). A numeric factor (batch size, ...) is correlated with energy within each
    level of the other factor, two-sided, as its sign is the question.
    """
    first, second = factors or (FACTORS["architecture"], FACTORS["environment"])
    found = []
    for env in environments:
        in_env = runs[runs[second.column] == env]
        found.append(correlate(in_env, "energy_j_per_image", "f1", env))
    for env in environments:
        in_env = runs[runs[second.column] == env]
        if in_env["architecture"].nunique() >= 3:
            found.append(correlate(in_env, "energy_j_per_image", "gflops", env))
            found.append(correlate(in_env, "gpu_usage_pct", "gflops", env))
    for env in environments:
        in_env = runs[runs[second.column] == env]
        found.append(correlate(in_env, "energy_j_per_image", "gpu_usage_pct", env))
    for numeric, other in ((first, second), (second, first)):
        if numeric.numeric:
            for level in level_order(runs, other):
                subset = runs[runs[other.column] == level]
                found.append(
                    correlate(subset, "energy_j_per_image", value_column(numeric), level, "two-sided")
                )
    return found


def value_column(factor: Factor) -> str:
    """The column with a numeric factor's levels as numbers (its own column holds them as text)."""
    return f"{factor.name}_value"


def pareto_fronts(
    runs: pd.DataFrame, environments: list[str], f1_floor: float = 0.5, column: str = "environment"
) -> dict[str, pd.DataFrame]:
    """The (energy, F1) Pareto front over the runs with F1 >= `f1_floor`: for all runs and per environment.

    `column` holds the environments (the second factor's levels).
    """
    usable = runs[(runs["f1"] >= f1_floor) & runs["energy_j_per_image"].notna()]
    fronts = {}
    for name, subset in [("all", usable)] + [(env, usable[usable[column] == env]) for env in environments]:
        index = pareto_front(subset["energy_j_per_image"], subset["f1"])
        fronts[name] = subset.iloc[index].reset_index(drop=True)
    return fronts


def group_medians(
    runs: pd.DataFrame,
    environments: list[str],
    architectures: list[str],
    columns: tuple[str, str] = ("architecture", "environment"),
) -> pd.DataFrame:
    """Median of every metric (and run count) per (architecture, environment) pair that has runs.

    `columns` hold the first and second factor's levels.
    """
    metrics = ["energy_j_per_image", "gpu_usage_pct", "duration_ms_per_image", "f1"]
    grouped = runs.groupby(list(columns))
    medians = grouped[metrics].median().join(grouped.size().rename("n"))
    order = [(a, e) for a in architectures for e in environments if (a, e) in medians.index]
    return medians.loc[order]


def improvements(
    medians: pd.DataFrame,
    environments: list[str],
    architectures: list[str],
    factors: tuple[Factor, Factor] | None = None,
) -> tuple[list[Improvement], pd.DataFrame]:
    """The largest and smallest positive reduction of median J/image, and the reductions within each factor.

    Returns:
        The improvements (largest, smallest positive, then best against worst per environment and per
        architecture) and the full reduction matrix (rows: from, columns: to).
    """
    energy = medians["energy_j_per_image"].dropna()
    matrix = improvement_matrix(energy)

    def make(kind: str, a: tuple[str, str], b: tuple[str, str]) -> Improvement:
        return Improvement(
            kind,
            a,
            b,
            float(energy[a]),
            float(energy[b]),
            float(matrix.loc[[a], [b]].iat[0, 0]),
            float(medians.loc[[a], "f1"].iat[0]),
            float(medians.loc[[b], "f1"].iat[0]),
        )

    found: list[Improvement] = []
    if len(energy) < 2:
        return found, matrix
    values = matrix.to_numpy()
    i, j = np.unravel_index(np.nanargmax(values), values.shape)
    found.append(make("largest", matrix.index[i], matrix.columns[j]))
    positive = np.where(values > 0, values, np.inf)
    if np.isfinite(positive).any():
        i, j = np.unravel_index(np.argmin(positive), values.shape)
        found.append(make("smallest positive", matrix.index[i], matrix.columns[j]))
    first, second = factors or (FACTORS["architecture"], FACTORS["environment"])
    for env in environments if second is not ALL_RUNS else ():  # within all runs: the largest above
        within = energy[[pair for pair in energy.index if pair[1] == env]]
        if len(within) >= 2:
            found.append(make(f"within {_within(second, env)}", within.idxmax(), within.idxmin()))
    for arch in architectures:
        within = energy[[pair for pair in energy.index if pair[0] == arch]]
        if len(within) >= 2:
            found.append(make(f"within {_within(first, arch)}", within.idxmax(), within.idxmin()))
    return found, matrix


def _within(factor: Factor, level: str) -> str:
    """A level in an improvement's kind: as it is for the study's factors, else with the factor's noun."""
    return level if factor.name in STUDY_FACTORS else factor.within_text(level)


def resolve_choice(
    value: str | None, known: list[str], study_choice: str, key: str, counts: pd.Series
) -> str:
    """The environment/architecture to hold fixed: the given one, or the study's, or the best covered.

    Args:
        value: what the user asked for (None: the default).
        known: the names present in the runs.
        study_choice: the study's choice, used by default when present.
        key: the config key, for the error message.
        counts: how many groups of the other factor each name has, to pick a default otherwise.
    """
    if value is not None:
        if value not in known:
            raise UserError(f"{key}={value} is not in the runs; known: {', '.join(known)}")
        return value
    if study_choice in known:
        return study_choice
    best = max(counts[name] for name in known)
    return [name for name in known if counts[name] == best][-1]


def analyse(
    runs: pd.DataFrame,
    environment: str | None = None,
    architecture: str | None = None,
    min_group_size: int = 3,
    f1_floor: float = 0.5,
    art_sums_of_squares: str = "II",
    factors: tuple[str, ...] = STUDY_FACTORS,
) -> StudyResults:
    """Run every analysis of the study on a tidy runs table.

    Args:
        runs: the tidy runs table (see `repro.stats.runs.RUN_COLUMNS`).
        environment: the second factor's level held fixed in RQ1 (the study's: the environment); None
            for the study's (Cloud) or, if absent, the one with the most levels of the first factor.
        architecture: the first factor's level held fixed in RQ2 (the study's: MobileNet V2); None for the
            study's or the one with the most levels of the second.
        min_group_size: smallest group that a test takes.
        f1_floor: the trade-off ignores runs with a lower F1.
        art_sums_of_squares: T7's ART sums of squares, "II" (as its ANOVA and SRH) or "III" (ARTool's).
        factors: the one or two declared factors (`repro.factors.FACTORS`) in the study's roles: the
            first's levels compared in RQ1, the second's in RQ2; the default is the study's design.
    """
    if runs.empty:
        raise UserError("no runs left to analyse; check the source and the outlier policy")
    check_levels_present(runs, factors)
    first = FACTORS[factors[0]]
    second = FACTORS[factors[1]] if len(factors) > 1 else ALL_RUNS
    runs, notes = with_levels(runs, (first, second))
    environments, architectures = level_order(runs, second), level_order(runs, first)
    env = resolve_choice(
        environment if second.name == "environment" else None,
        environments,
        STUDY_CHOICES.get(second.name, ""),
        second.name,
        runs.groupby(second.column)[first.column].nunique(),
    )
    arch = resolve_choice(
        architecture if first.name == "architecture" else None,
        architectures,
        STUDY_CHOICES.get(first.name, ""),
        first.name,
        runs.groupby(first.column)[second.column].nunique(),
    )
    for chosen, levels in ((first, architectures), (second, environments)):
        if len(levels) == 1 and chosen is not ALL_RUNS:
            notes.append(f"{chosen.name} has one level in these runs ({levels[0]}): nothing to compare")
            log.warning(notes[-1])
    for metric in ("energy_j_per_image", "gpu_usage_pct", "duration_ms_per_image", "f1"):
        missing = int(runs[metric].isna().sum())
        if missing:
            notes.append(f"{missing} run(s) have no {metric}; they are dropped from the analyses of it")
            log.warning(notes[-1])
    log.info("RQ1: %ss compared in %s", first.noun_text, env)
    rq1 = tuple(
        compare(runs, m, first.column, second.column, env, architectures, min_group_size)
        for m in COMPARED_METRICS
    )
    rq2: tuple[Comparison, ...] = ()
    if second is not ALL_RUNS:
        log.info("RQ2: %ss compared for %s", second.noun_text, arch)
        rq2 = tuple(
            compare(runs, m, second.column, first.column, arch, environments, min_group_size)
            for m in COMPARED_METRICS
        )
    log.info("correlations, trade-off, improvements and the %s x %s interaction", first.name, second.name)
    medians = group_medians(runs, environments, architectures, (first.column, second.column))
    found, matrix = improvements(medians, environments, architectures, (first, second))
    return StudyResults(
        environment=env,
        architecture=arch,
        environments=tuple(environments),
        architectures=tuple(architectures),
        medians=medians,
        rq1=rq1,
        rq2=rq2,
        correlations=tuple(correlations(runs, environments, (first, second))),
        pareto=pareto_fronts(runs, environments, f1_floor, second.column),
        improvements=tuple(found),
        reductions=matrix,
        notes=tuple(notes),
        interaction=()
        if second is ALL_RUNS
        else interaction(
            runs,
            environments,
            architectures,
            min_cell=min_group_size,
            art_sums_of_squares=art_sums_of_squares,
            columns=(first.column, second.column),
        ),
        factors=(first, second),
    )


def check_levels_present(runs: pd.DataFrame, factors: tuple[str, ...]) -> None:
    """Fail in one line when no run has a level of every factor in `factors`: nothing would be left.

    Runs that lack only some factor are left out later, with a note (`with_levels`).
    """
    levels = runs[[FACTORS[name].column for name in factors]]
    if runs.empty or levels.notna().all(axis=1).any():
        return
    lacking = zip(factors, levels.isna().sum(), strict=True)
    counts = ", ".join(f"{n} of {len(runs)} run(s) lack {name}" for name, n in lacking if n)
    raise UserError(
        f"study.factors={list(factors)}: no run has a level of every factor ({counts}); analyse factors "
        "that your runs record, or train runs that record them"
    )


def with_levels(runs: pd.DataFrame, factors: tuple[Factor, Factor]) -> tuple[pd.DataFrame, list[str]]:
    """The runs that have every factor's level, with the notes that count the others.

    A numeric factor's column becomes its levels as text ("64"), its numbers kept in `value_column`;
    a one-factor study gets `ALL_RUNS`'s column, one level for every run.
    """
    notes: list[str] = []
    for chosen in factors:
        if chosen is ALL_RUNS:
            runs = runs.assign(**{ALL_RUNS.column: ALL_RUNS_LEVEL})
            continue
        lacking = runs[chosen.column].isna()
        if lacking.any():
            notes.append(
                f"{int(lacking.sum())} of {len(runs)} run(s) lack {chosen.name}; they are left out of the "
                "analyses"
            )
            log.warning(notes[-1])
            runs = runs[~lacking].reset_index(drop=True)
        if chosen.numeric:
            values = runs[chosen.column].astype(float)
            runs = runs.assign(**{value_column(chosen): values, chosen.column: [f"{v:g}" for v in values]})
    return runs, notes
