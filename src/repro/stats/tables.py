"""Tables T1-T7 of the study, built from the analyses and written as Markdown, LaTeX (booktabs) and CSV.

Markdown and LaTeX show rounded, labelled values; the CSV keeps every value (10 significant digits)
under machine-friendly column names. The same input always gives byte-identical files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from repro.factors import ALL_RUNS, ARCHITECTURE_LABELS, FACTORS, STUDY_FACTORS, Factor, by_column
from repro.stats.analyses import Comparison, StudyResults, value_column
from repro.stats.runs import RunsTable
from repro.stats.significance import SHAPIRO_MAX_N, ShapiroResult

__all__ = ["ARCHITECTURE_LABELS"]  # declared with the factors (repro.factors); shown from here too

#: How the tables name the study's metrics (and the numeric factors' values); others as they are.
METRIC_LABELS: dict[str, str] = {
    "energy_j_per_image": "Energy (J/image)",
    "gpu_usage_pct": "GPU usage (%)",
    "duration_ms_per_image": "Duration (ms/image)",
    "f1": "F1",
    "gflops": "GFLOPs",
}


@dataclass(frozen=True)
class Column:
    """A table column: its CSV key, Markdown and LaTeX headers, and how to show a value."""

    key: str
    header: str
    tex: str
    show: Callable[[object], str] = str


@dataclass(frozen=True)
class Table:
    """A titled table of raw values plus the columns that render it."""

    name: str
    title: str
    frame: pd.DataFrame
    columns: tuple[Column, ...]
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A table with no rows (one group: nothing to compare) may come without columns; give it its columns.
        missing = [c.key for c in self.columns if c.key not in self.frame]
        if missing and self.frame.empty:
            object.__setattr__(self, "frame", self.frame.reindex(columns=[*self.frame.columns, *missing]))

    def to_markdown(self) -> str:
        cells = self._cells()
        number = self.name.split("_")[0]
        label = f"T{number[1:]}. " if number[:1] == "t" and number[1:2].isdigit() else ""
        lines = [f"**{label}{self.title}**", ""]
        lines.append("| " + " | ".join(c.header for c in self.columns) + " |")
        lines.append("| " + " | ".join("---" for _ in self.columns) + " |")
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in cells]
        lines += [""] + [f"Note: {note}" for note in self.notes] if self.notes else []
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        cells = self._cells()
        align = "".join(
            "r" if pd.api.types.is_numeric_dtype(self.frame[c.key]) else "l" for c in self.columns
        )
        lines = [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{_tex_escape(self.title)}}}",
            f"\\label{{tab:{self.name}}}",
            f"\\begin{{tabular}}{{{align}}}",
            "\\toprule",
            " & ".join(c.tex for c in self.columns) + " \\\\",
            "\\midrule",
        ]
        lines += [" & ".join(_tex_escape(cell) for cell in row) + " \\\\" for row in cells]
        lines += ["\\bottomrule", "\\end{tabular}"]
        lines += [f"\\par\\footnotesize {_tex_escape(note)}" for note in self.notes]
        lines.append("\\end{table}")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        frame = self.frame[[c.key for c in self.columns]]
        return frame.to_csv(index=False, float_format="%.10g", lineterminator="\n")

    def write(self, folder: Path) -> list[Path]:
        """Write NAME.md, NAME.tex and NAME.csv into `folder`; returns the paths."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for suffix, text in (("md", self.to_markdown()), ("tex", self.to_latex()), ("csv", self.to_csv())):
            path = folder / f"{self.name}.{suffix}"
            path.write_text(text, encoding="utf-8", newline="\n")
            paths.append(path)
        return paths

    def _cells(self) -> list[list[str]]:
        return [[c.show(row[c.key]) for c in self.columns] for _, row in self.frame.iterrows()]


def _tex_escape(text: str) -> str:
    for char, escaped in (
        ("\\", "\\textbackslash{}"),
        ("&", "\\&"),
        ("%", "\\%"),
        ("_", "\\_"),
        ("#", "\\#"),
        ("$", "\\$"),
        ("<", "$<$"),
        (">", "$>$"),
        ("δ", "$\\delta$"),
        ("→", "$\\to$"),
        ("×", "$\\times$"),
        ("χ²", "$\\chi^2$"),
        ("η²", "$\\eta^2$"),
    ):
        text = text.replace(char, escaped)
    return text


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fixed(digits: int) -> Callable[[object], str]:
    """Show a number with `digits` decimals; NaN as a dash."""
    return lambda v: "–" if _missing(v) else f"{float(v):.{digits}f}"


def pvalue(value: object) -> str:
    """Show a p-value: 3 decimals from 0.001, else 3 significant digits in scientific notation."""
    if _missing(value):
        return "–"
    p = float(value)
    if p == 0.0:
        return "< 1e-300"  # below what double precision holds
    return f"{p:.3f}" if p >= 0.001 else f"{p:.2e}"


def pvalue_floor(floor: float) -> Callable[[object], str]:
    """Like `pvalue`, but shows values below `floor` (beyond the method's numerical accuracy) as "< floor"."""
    return lambda v: f"< {floor:g}" if not _missing(v) and float(v) < floor else pvalue(v)


def arch_label(value: object) -> str:
    return ARCHITECTURE_LABELS.get(str(value), str(value))


def metric_label(value: object) -> str:
    return METRIC_LABELS.get(str(value), _FACTOR_VALUE_LABELS.get(str(value), str(value)))


_FACTOR_VALUE_LABELS = {value_column(f): f.label for f in FACTORS.values() if f.numeric}


def _text(value: object) -> str:
    return "–" if _missing(value) or value == "" else str(value)


def _integer(value: object) -> str:
    return "–" if _missing(value) else str(int(value))


def design_tables(table: RunsTable, results: StudyResults | None = None) -> list[Table]:
    """T1: the architectures (GFLOPs, parameters) and the environments (GPU, power limit).

    With `results` of a study over other factors, T1c-d: each such factor's levels and their runs.
    """
    runs = table.runs
    from repro.stats.runs import architecture_order, energy_label, environment_order

    archs = runs.groupby("architecture").agg(
        gflops=("gflops", "median"),
        params_m=("params_m", "median"),
        environments=("environment", "nunique"),
        runs=("run", "size"),
    )
    archs = archs.loc[architecture_order(runs)].reset_index()
    envs = runs.groupby("environment").agg(
        gpu=("gpu_name", lambda s: ", ".join(sorted(set(s) - {""}))),
        power_limit_w=("power_limit_w", "median"),
        architectures=("architecture", "nunique"),
        runs=("run", "size"),
    )
    envs = envs.loc[environment_order(runs)].reset_index()
    return [
        Table(
            "t1a_architectures",
            "Architectures: forward-pass cost and size",
            archs,
            (
                Column("architecture", "Architecture", "Architecture", arch_label),
                Column("gflops", "GFLOPs", "GFLOPs", fixed(3)),
                Column("params_m", "Parameters (M)", "Parameters (M)", fixed(1)),
                Column("environments", "Environments", "Environments", _integer),
                Column("runs", "Runs", "Runs", _integer),
            ),
            _design_notes(table),
        ),
        Table(
            "t1b_environments",
            "Training environments",
            envs,
            (
                Column("environment", "Environment", "Environment"),
                Column("gpu", "GPU", "GPU", _text),
                Column("power_limit_w", "Power limit (W)", "Power limit (W)", fixed(0)),
                Column("architectures", "Architectures", "Architectures", _integer),
                Column("runs", "Runs", "Runs", _integer),
            ),
            (energy_label(table),),
        ),
        *(
            _levels_table(runs, chosen, letter)
            for letter, chosen in zip("cd", _settings(results), strict=False)  # at most two: T1c, T1d
        ),
    ]


def _settings(results: StudyResults | None) -> list[Factor]:
    """The study's factors other than architecture and environment (and the one-factor stand-in)."""
    chosen = results.factors if results else ()
    return [f for f in chosen if f.name not in STUDY_FACTORS and f is not ALL_RUNS]


def _levels_table(runs: pd.DataFrame, chosen: Factor, letter: str) -> Table:
    """T1c/d: a setting factor's levels, the runs at each, and how many runs lack it."""
    from repro.stats.analyses import with_levels
    from repro.stats.runs import level_order

    kept, notes = with_levels(runs, (chosen, ALL_RUNS))
    counts = kept.groupby(chosen.column).agg(
        architectures=("architecture", "nunique"),
        environments=("environment", "nunique"),
        runs=("run", "size"),
    )
    frame = counts.loc[level_order(kept, chosen)].reset_index().rename(columns={chosen.column: "level"})
    return Table(
        f"t1{letter}_{chosen.name}",
        f"{chosen.label}: the levels in the runs",
        frame,
        (
            Column("level", chosen.label, chosen.label, chosen.level_label),
            Column("architectures", "Architectures", "Architectures", _integer),
            Column("environments", "Environments", "Environments", _integer),
            Column("runs", "Runs", "Runs", _integer),
        ),
        tuple(notes) or (f"Every run has a {chosen.noun_text}.",),
    )


def _design_notes(table: RunsTable) -> tuple[str, ...]:
    if table.source.startswith("published"):
        return (
            "Parameters: the Keras ImageNet models' counts from the Keras Applications documentation "
            "(the published data has no such column).",
        )
    return ()


#: What every per-image figure divides by, in the published data and in repro's runs alike.
PER_IMAGE_NOTE = (
    "Energy and duration per image divide by the images processed in the training and validation passes "
    "of every trained epoch (the study's \"total seen images\")."
)


def _factor_column(chosen: Factor, key: str | None = None, header: str | None = None) -> Column:
    """A column of a factor's levels (header: its label), shown as the factor shows them."""
    header = header or chosen.label
    return Column(key or chosen.column, header, header, chosen.level_label)


def medians_table(results: StudyResults) -> Table:
    """T2: medians per architecture x environment (per level of the first factor x the second)."""
    first, second = results.factors
    frame = results.medians.reset_index()
    title = f"Medians per {first.noun_text}" + ("" if results.one_factor else f" and {second.noun_text}")
    return Table(
        "t2_medians",
        title,
        frame,
        (
            _factor_column(first),
            *(() if results.one_factor else (_factor_column(second),)),
            Column("n", "Runs", "Runs", _integer),
            Column("energy_j_per_image", "Energy (J/image)", "Energy (J/image)", fixed(4)),
            Column("gpu_usage_pct", "GPU usage (%)", "GPU usage (\\%)", fixed(2)),
            Column("duration_ms_per_image", "Duration (ms/image)", "Duration (ms/image)", fixed(3)),
            Column("f1", "F1", "$F_1$", fixed(4)),
        ),
        (PER_IMAGE_NOTE,),
    )


def comparison_tables(prefix: str, question: str, comparisons: tuple[Comparison, ...]) -> list[Table]:
    """T3/T4: the omnibus tests per metric, the pairs (Dunn-Holm, Games-Howell, Cliff's delta), normality."""
    first = comparisons[0]
    compared = by_column(first.factor)
    label = compared.level_label
    within = by_column(first.within_column).within_text(first.within)
    omnibus, pairs, normality = [], [], []
    notes: list[str] = []
    for c in comparisons:
        kw, lev, welch = c.kruskal, c.levene, c.welch
        omnibus.append(
            {
                "metric": c.metric,
                "k": len(c.groups),
                "n": kw.n if kw else math.nan,
                "shapiro_normal": f"{sum(s.pvalue >= 0.05 for s in c.shapiro)}/{len(c.shapiro)}"
                if c.shapiro
                else "",
                "levene_p": lev.pvalue if lev else math.nan,
                "welch_f": welch.statistic if welch else math.nan,
                "welch_p": welch.pvalue if welch else math.nan,
                "kruskal_h": kw.statistic if kw else math.nan,
                "kruskal_p": kw.pvalue if kw else math.nan,
                "eta2_h": kw.effect_size if kw else math.nan,
                "skipped": "; ".join(c.skipped),
            }
        )
        for p in c.pairs:
            pairs.append(
                {
                    "metric": c.metric,
                    "a": p.a,
                    "b": p.b,
                    "n_a": p.n_a,
                    "n_b": p.n_b,
                    "dunn_holm_p": p.dunn_holm_p,
                    "games_howell_p": p.games_howell_p,
                    "cliffs_delta": p.cliffs_delta,
                    "magnitude": p.magnitude,
                }
            )
        for s in c.shapiro:
            normality.append(
                {
                    "metric": c.metric,
                    "group": s.group,
                    "n": s.n,
                    "shapiro_w": s.statistic,
                    "shapiro_p": s.pvalue,
                }
            )
        if c.nan_dropped:
            notes.append(f"{c.nan_dropped} run(s) with no {c.metric} dropped.")
    factor = compared.label
    title = f"{question}: {compared.noun_text}s compared within {within}"
    return [
        Table(
            f"{prefix}a_{question.lower()}_omnibus",
            f"{title}; omnibus tests",
            pd.DataFrame(omnibus),
            (
                Column("metric", "Metric", "Metric", metric_label),
                Column("k", "k", "$k$", _integer),
                Column("n", "n", "$n$", _integer),
                Column(
                    "shapiro_normal",
                    "Normal groups (Shapiro p ≥ 0.05)",
                    "Normal groups (Shapiro $p \\geq 0.05$)",
                    _text,
                ),
                Column("levene_p", "Levene p", "Levene $p$", pvalue),
                Column("welch_f", "Welch F", "Welch $F$", fixed(2)),
                Column("welch_p", "Welch p", "Welch $p$", pvalue),
                Column("kruskal_h", "Kruskal-Wallis H", "Kruskal-Wallis $H$", fixed(2)),
                Column("kruskal_p", "p", "$p$", pvalue),
                Column("eta2_h", "η²_H", "$\\eta^2_H$", fixed(3)),
                Column("skipped", "Skipped", "Skipped", _text),
            ),
            tuple(notes),
        ),
        Table(
            f"{prefix}b_{question.lower()}_pairs",
            f"{title}; pairs",
            pd.DataFrame(pairs, columns=list(_PAIR_KEYS)),
            (
                Column("metric", "Metric", "Metric", metric_label),
                Column("a", f"{factor} A", f"{factor} A", label),
                Column("b", f"{factor} B", f"{factor} B", label),
                Column("n_a", "n A", "$n_A$", _integer),
                Column("n_b", "n B", "$n_B$", _integer),
                Column("dunn_holm_p", "Dunn-Holm p", "Dunn-Holm $p$", pvalue),
                Column("games_howell_p", "Games-Howell p", "Games-Howell $p$", pvalue_floor(1e-12)),
                Column("cliffs_delta", "Cliff's δ (A vs B)", "Cliff's $\\delta$ (A vs B)", fixed(3)),
                Column("magnitude", "Magnitude", "Magnitude"),
            ),
            (
                "Cliff's δ > 0: A tends to be larger than B. Magnitude: negligible < 0.147 ≤ small < 0.33 ≤ "
                "medium < 0.474 ≤ large. Games-Howell p below 1e-12 is beyond the accuracy of the "
                "studentized range integral and shown as < 1e-12.",
            ),
        ),
        Table(
            f"{prefix}c_{question.lower()}_normality",
            f"{title}; Shapiro-Wilk per group",
            pd.DataFrame(normality, columns=["metric", "group", "n", "shapiro_w", "shapiro_p"]),
            (
                Column("metric", "Metric", "Metric", metric_label),
                Column("group", factor, factor, label),
                Column("n", "n", "$n$", _integer),
                Column("shapiro_w", "W", "$W$", fixed(4)),
                Column("shapiro_p", "p", "$p$", pvalue),
            ),
            _subsample_note([s for c in comparisons for s in c.shapiro if s.n_tested < s.n]),
        ),
    ]


def _subsample_note(subsampled: list[ShapiroResult]) -> tuple[str, ...]:
    """The note for groups that Shapiro-Wilk tested on a subsample (its p-value is not valid above 5000)."""
    if not subsampled:
        return ()
    return (
        f"Shapiro-Wilk's p-value is not valid above {SHAPIRO_MAX_N} values: {len(subsampled)} group(s) "
        f"larger than that were tested on a random subsample of {SHAPIRO_MAX_N} of their runs (seed 0).",
    )


_PAIR_KEYS = ("metric", "a", "b", "n_a", "n_b", "dunn_holm_p", "games_howell_p", "cliffs_delta", "magnitude")


def correlations_table(results: StudyResults) -> Table:
    """T5: the Spearman correlations (one-sided, greater; a numeric factor's two-sided)."""
    second = results.factors[1]
    numeric = {value_column(f) for f in results.factors if f.numeric}
    rows = [
        {
            "x": c.x,
            "y": c.y,
            second.name: c.subset,
            "n": c.result.n if c.result else math.nan,
            "rho": c.result.rho if c.result else math.nan,
            "p_greater": c.result.pvalue if c.result else math.nan,
            "alternative": "two-sided" if c.y in numeric else "greater",
            "skipped": c.skipped,
        }
        for c in results.correlations
    ]
    mixed = bool(numeric)  # a numeric factor's rows are two-sided: the table says which row is which
    return Table(
        "t5_correlations",
        "Spearman correlations (alternative: " + ("as listed" if mixed else "greater") + ")",
        pd.DataFrame(rows),
        (
            Column("x", "X", "$X$", metric_label),
            Column("y", "Y", "$Y$", metric_label),
            _factor_column(second, second.name),
            Column("n", "n", "$n$", _integer),
            Column("rho", "ρ", "$\\rho$", fixed(3)),
            *(
                (Column("p_greater", "p", "$p$", pvalue), Column("alternative", "Alternative", "Alternative"))
                if mixed
                else (Column("p_greater", "p (one-sided)", "$p$ (one-sided)", pvalue),)
            ),
            Column("skipped", "Skipped", "Skipped", _text),
        ),
    )


def improvements_table(results: StudyResults) -> Table:
    """T6: the largest and smallest reductions, and best against worst within each factor."""
    first, second = results.factors
    rows = [
        {
            "kind": _kind_label(i.kind),
            f"from_{first.name}": i.from_pair[0],
            f"from_{second.name}": i.from_pair[1],
            f"to_{first.name}": i.to_pair[0],
            f"to_{second.name}": i.to_pair[1],
            "from_j_per_image": i.from_median,
            "to_j_per_image": i.to_median,
            "reduction": i.reduction,
            "reduction_pct": 100 * i.reduction,
            "from_f1": i.from_f1,
            "to_f1": i.to_f1,
            "f1_given_up": i.f1_given_up,
        }
        for i in results.improvements
    ]
    return Table(
        "t6_improvements",
        "Reductions of median energy per image",
        pd.DataFrame(rows),
        (
            Column("kind", "Comparison", "Comparison"),
            _factor_column(first, f"from_{first.name}", "From"),
            *_second_column(results, "from", "From"),
            _factor_column(first, f"to_{first.name}", "To"),
            *_second_column(results, "to", "To"),
            Column("from_j_per_image", "J/image from", "J/image from", fixed(4)),
            Column("to_j_per_image", "J/image to", "J/image to", fixed(4)),
            Column("reduction", "Reduction", "Reduction", fixed(5)),
            Column("reduction_pct", "Reduction (%)", "Reduction (\\%)", fixed(2)),
            Column("from_f1", "F1 from", "$F_1$ from", fixed(4)),
            Column("to_f1", "F1 to", "$F_1$ to", fixed(4)),
            Column("f1_given_up", "F1 given up", "$F_1$ given up", fixed(4)),
        ),
        (
            "Reduction = (median A - median B) / median A over the medians of T2. "
            "F1 given up = median F1 of A - "
            "median F1 of B (negative: F1 gained).",
        ),
    )


def _second_column(results: StudyResults, end: str, header: str) -> tuple[Column, ...]:
    """T6's column of the second factor's level at one end ("From env."); none in a one-factor study."""
    second = results.factors[1]
    if results.one_factor:
        return ()
    return (_factor_column(second, f"{end}_{second.name}", f"{header} {second.short_label}"),)


def _kind_label(kind: str) -> str:
    name = kind.removeprefix("within ")
    return f"within {arch_label(name)}" if name != kind else kind


def effect_labels(first: Factor, second: Factor) -> dict[str, str]:
    """T7's effects, e.g. "architecture:environment" -> "Architecture × environment"."""
    return {
        first.column: first.label,
        second.column: second.label,
        f"{first.column}:{second.column}": f"{first.label} × {second.noun_text}",
    }


EFFECT_LABELS: dict[str, str] = effect_labels(FACTORS["architecture"], FACTORS["environment"])


def subdesign_label(
    archs: tuple[str, ...],
    envs: tuple[str, ...],
    all_archs: tuple[str, ...],
    factors: tuple[Factor, Factor] = (FACTORS["architecture"], FACTORS["environment"]),
) -> str:
    """A short name for a sub-design: "MobileNet V2, NASNet Mobile × Local N, Local ML, Cloud"."""
    first, second = factors
    arch_text = f"all {len(archs)} {first.noun_text}s" if archs == all_archs else None
    arch_text = arch_text or ", ".join(first.level_label(a) for a in archs)
    return f"{arch_text} × {', '.join(second.level_label(e) for e in envs)}"


def _art_sums_text(results: StudyResults) -> str:
    """Which sums of squares T7's ART column read (art_sums_of_squares), in words."""
    kinds = {sub.art_sums_of_squares for sub in results.interaction} or {"II"}
    if kinds == {"III"}:
        return "Type III sums of squares with sum-to-zero contrasts (ARTool's default)"
    return "Type II sums of squares (ARTool's default is Type III: art_sums_of_squares=III)"


def interaction_table(results: StudyResults) -> Table:
    """T7: architecture x environment on J/image per complete sub-design: ANOVA, ART, Scheirer-Ray-Hare."""
    first, second = results.factors
    rows = []
    notes = [
        f"Complete sub-design: every {first.noun_text} in it ran in every {second.noun_text} in it, "
        "with 3+ runs "
        "per cell. Two-way analyses of J/image with interaction, Type II sums of squares. "
        "ANOVA: parametric (statsmodels OLS). ART: aligned rank transform ANOVA (Wobbrock et al. 2011), "
        "ranked as ARTool ranks (aligned values rounded to 8 decimals), "
        f"{_art_sums_text(results)}. "
        "SRH: Scheirer-Ray-Hare, H referred to χ². "
        "Partial η² = SS_effect / (SS_effect + SS_residual), of the values (ANOVA), the aligned ranks "
        "(ART) or the ranks (SRH).",
    ]
    for number, sub in enumerate(results.interaction, start=1):
        name = subdesign_label(sub.architectures, sub.environments, results.architectures, results.factors)
        label = f"S{number}: {name}"
        for anova, art, srh in zip(sub.anova, sub.art, sub.srh, strict=True):
            rows.append(
                {
                    "subdesign": label,
                    "n": sub.n,
                    "effect": anova.effect,
                    "df": anova.df,
                    "df_residual": anova.df_residual,
                    "anova_f": anova.statistic,
                    "anova_p": anova.pvalue,
                    "anova_partial_eta2": anova.partial_eta2,
                    "art_f": art.statistic,
                    "art_p": art.pvalue,
                    "art_partial_eta2": art.partial_eta2,
                    "srh_h": srh.statistic,
                    "srh_p": srh.pvalue,
                    "srh_partial_eta2": srh.partial_eta2,
                    "shapiro_p": sub.shapiro_p,
                    "levene_p": sub.levene_p,
                }
            )
        verdict = (
            "hold"
            if sub.assumptions_hold
            else "fail ("
            + " and ".join(
                text
                for text, failed in (
                    ("residuals not normal", sub.shapiro_p < 0.05),
                    ("unequal variances", sub.levene_p < 0.05),
                )
                if failed
            )
            + "), so read ART and SRH"
        )
        notes.append(
            f"S{number}: the parametric ANOVA's assumptions {verdict}: Shapiro-Wilk on its residuals "
            f"W = {sub.shapiro_w:.3f}, p = {pvalue(sub.shapiro_p)}"
            + (
                f" (on a random subsample of {sub.shapiro_n} of its {sub.n} residuals, seed 0: "
                f"Shapiro-Wilk's p-value is not valid above {SHAPIRO_MAX_N})"
                if sub.shapiro_n < sub.n
                else ""
            )
            + f"; Levene (median) across the {len(sub.cell_sizes)} cells p = {pvalue(sub.levene_p)}."
        )
    if not rows:
        rows.append({"subdesign": "none", "effect": ""})
        notes.append(
            f"No complete sub-design: no two {first.noun_text}s ran in the same two {second.noun_text}s "
            "with 3+ runs each, so no interaction can be tested."
        )
    frame = pd.DataFrame(rows, columns=list(_T7_KEYS))
    effects = effect_labels(first, second)
    return Table(
        "t7_interaction",
        f"{first.label} × {second.noun_text} interaction on energy per image (complete sub-designs)",
        frame,
        (
            Column("subdesign", "Sub-design", "Sub-design"),
            Column("n", "n", "$n$", _integer),
            Column("effect", "Effect", "Effect", lambda v: effects.get(str(v), _text(v))),
            Column("df", "df", "df", _integer),
            Column("df_residual", "df res.", "df res.", _integer),
            Column("anova_f", "ANOVA F", "ANOVA $F$", fixed(1)),
            Column("anova_p", "ANOVA p", "ANOVA $p$", pvalue),
            Column("anova_partial_eta2", "ANOVA η²p", "ANOVA $\\eta^2_p$", fixed(3)),
            Column("art_f", "ART F", "ART $F$", fixed(1)),
            Column("art_p", "ART p", "ART $p$", pvalue),
            Column("art_partial_eta2", "ART η²p", "ART $\\eta^2_p$", fixed(3)),
            Column("srh_h", "SRH H", "SRH $H$", fixed(2)),
            Column("srh_p", "SRH p", "SRH $p$", pvalue),
            Column("srh_partial_eta2", "SRH η²p", "SRH $\\eta^2_p$", fixed(3)),
            Column("shapiro_p", "Shapiro p (residuals)", "Shapiro $p$ (residuals)", pvalue),
            Column("levene_p", "Levene p (cells)", "Levene $p$ (cells)", pvalue),
        ),
        tuple(notes),
    )


_T7_KEYS = (
    "subdesign",
    "n",
    "effect",
    "df",
    "df_residual",
    "anova_f",
    "anova_p",
    "anova_partial_eta2",
    "art_f",
    "art_p",
    "art_partial_eta2",
    "srh_h",
    "srh_p",
    "srh_partial_eta2",
    "shapiro_p",
    "levene_p",
)


def excluded_table(table: RunsTable) -> Table:
    """The runs left out before the analyses, each with its reason."""
    return Table(
        "excluded_runs",
        f"Runs left out ({len(table.excluded)})",
        table.excluded,
        (
            Column("environment", "Environment", "Environment"),
            Column("architecture", "Architecture", "Architecture", arch_label),
            Column("run", "Run", "Run"),
            Column("reason", "Reason", "Reason"),
        ),
        (f"Sweep parent runs skipped (not training runs, not counted above): {table.parent_runs}.",)
        if table.parent_runs
        else (),
    )


def study_tables(table: RunsTable, results: StudyResults) -> list[Table]:
    """Every table, in order: T1a-b (T1c-d), T2, T3a-c, T4a-c, T5, T6, T7 and the excluded runs.

    A one-factor study has no T4 (nothing to compare within) and no T7 (no second factor).
    """
    return [
        *design_tables(table, results),
        medians_table(results),
        *comparison_tables("t3", "RQ1", results.rq1),
        *(comparison_tables("t4", "RQ2", results.rq2) if results.rq2 else ()),
        correlations_table(results),
        improvements_table(results),
        *(() if results.one_factor else (interaction_table(results),)),
        excluded_table(table),
    ]
