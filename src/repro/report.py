"""Entry point: `python -m repro.report` writes the study as one self-contained HTML file (`make report`).

The page holds the design, the headline reduction, each research question's figures beside the tests
that back them (each with a one-line reading generated from the numbers), the architecture x
environment interaction, the excluded runs and how the energy was measured. Figures are embedded as
base64 PNGs, so the file opens offline; the same input gives the same bytes.

It leads with what the runs can support: when the headline's groups are too small for a test, a caveat
above it says so and how many more seeds would allow one, and a part that the runs cannot fill (RQ2 with
one environment, tests of one run per group) is one line instead of empty charts and tables.
"""

from __future__ import annotations

import base64
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from repro.errors import UserError
from repro.factors import by_column
from repro.stats.config import register
from repro.stats.study import entry_point, repo_path

log = logging.getLogger("repro.report")
#: Cohen-style bounds for eta^2 (and partial eta^2): below 0.06 small, below 0.14 medium, else large.
_ETA2_BOUNDS = ((0.01, "negligible"), (0.06, "small"), (0.14, "medium"))
#: How the readings name the compared metrics.
_READING_NAMES = {
    "energy_j_per_image": "energy per image",
    "gpu_usage_pct": "GPU usage",
    "duration_ms_per_image": "duration per image",
    "f1": "F1",
}

register()


@dataclass(frozen=True)
class Section:
    """A part of the page: its anchor, heading and blocks, each ("table", HtmlTable), ("figure", (name,
    caption)), ("readings", lines) or ("missing", line), in order."""

    id: str
    title: str
    blocks: list[tuple[str, object]]


#: Tables `python -m repro.paper` writes that the page leaves out: the pairs and Shapiro-Wilk per group.
PAPER_ONLY_TABLES: tuple[str, ...] = ("t3b_", "t3c_", "t4b_", "t4c_")


@dataclass(frozen=True)
class HtmlTable:
    """A table as the template shows it: title, headers, rows of shown cells, notes."""

    name: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str]


def output_path(cfg: DictConfig) -> Path:
    """Where the report goes: `output`, or paper/report.html, or reports/<experiment>/report.html."""
    if cfg.output is not None:
        return repo_path(str(cfg.output))
    if cfg.source == "published":
        return repo_path("paper/report.html")
    return repo_path("reports") / str(cfg.mlflow.experiment) / "report.html"


def _check_writable(path: Path) -> None:
    """Fail in one line, before any analysis, when the report cannot be written there."""
    if path.is_dir():
        raise UserError(f"output={path} is a folder; give a file name such as {path / 'report.html'}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UserError(f"output={path}: {folder} is not writable; choose another output=PATH")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"output={path} exists and is not writable; choose another output=PATH")


def magnitude(eta2: float) -> str:
    """Label an eta^2 (or partial eta^2) as negligible, small, medium or large."""
    for bound, label in _ETA2_BOUNDS:
        if eta2 < bound:
            return label
    return "large"


def _p(value: float) -> str:
    from repro.stats.tables import pvalue

    return pvalue(value)


def omnibus_reading(comparison: object, noun: str) -> str:
    """One plain-language line for a Kruskal-Wallis comparison, from its numbers."""
    metric = _READING_NAMES.get(comparison.metric, comparison.metric)
    within = by_column(comparison.within_column).within_text(comparison.within)
    kw = comparison.kruskal
    if kw is None:
        return f"{noun} not compared on {metric} within {within}: {'; '.join(comparison.skipped)}."
    if kw.pvalue < 0.05:
        return (
            f"{noun} differ in {metric} within {within}: Kruskal-Wallis p = {_p(kw.pvalue)}, "
            f"{magnitude(kw.effect_size)} effect η²_H = {kw.effect_size:.2f}."
        )
    return (
        f"no evidence that {noun} differ in {metric} within {within}: Kruskal-Wallis "
        f"p = {_p(kw.pvalue)}, η²_H = {kw.effect_size:.2f}."
    )


def interaction_readings(results: object) -> list[str]:
    """One line per complete sub-design: does the environment's effect depend on the architecture?"""
    from repro.stats.tables import subdesign_label

    first, second = (f.noun_text for f in results.factors)
    lines = []
    for number, sub in enumerate(results.interaction, start=1):
        art, srh = sub.art[2], sub.srh[2]
        label = subdesign_label(sub.architectures, sub.environments, results.architectures, results.factors)
        both = art.pvalue < 0.05 and srh.pvalue < 0.05
        verdict = (
            f"the {second}'s effect on energy depends on the {first}"
            if both
            else "the nonparametric tests disagree on an interaction"
            if art.pvalue < 0.05 or srh.pvalue < 0.05
            else f"no evidence that the {second}'s effect depends on the {first}"
        )
        lines.append(
            f"S{number} ({label}): {verdict}: ART p = {_p(art.pvalue)}, {magnitude(art.partial_eta2)} "
            f"effect η²p = {art.partial_eta2:.2f}; Scheirer-Ray-Hare p = {_p(srh.pvalue)}; the parametric "
            f"ANOVA's assumptions {'hold' if sub.assumptions_hold else 'fail'}."
        )
    if not lines:
        lines.append(
            f"No complete sub-design (two {first}s run in the same two {second}s, 3+ runs each): "
            "the interaction cannot be tested on these runs."
        )
    return lines


def headline(results: object) -> str | None:
    """The largest reduction of median J/image, with the F1 given up, as one sentence."""
    largest = next((i for i in results.improvements if i.kind == "largest"), None)
    if largest is None:
        return None
    given = largest.f1_given_up
    f1_text = f"giving up {given:.4f} in median F1" if given >= 0 else f"gaining {-given:.4f} in median F1"
    return (
        f"Training {_cell(results, largest.to_pair)} instead of "
        f"{_cell(results, largest.from_pair)} cuts the median energy per image "
        f"by {100 * largest.reduction:.2f}% ({largest.from_median:.4f} → {largest.to_median:.4f} J/image), "
        f"{f1_text} ({largest.from_f1:.4f} → {largest.to_f1:.4f})."
    )


def _cell(results: object, pair: tuple[str, str]) -> str:
    """A group of runs in a sentence: "MobileNet V2 on Cloud", "batch size 64" (one factor)."""
    named = [f.within_text(level) for f, level in zip(results.factors, pair, strict=True)]
    return named[0] if results.one_factor else " on ".join(named)


def headline_caveat(results: object, min_group_size: int) -> str | None:
    """What the headline cannot claim: its two groups are too small for a test, and how many seeds would do.

    None when both groups have `min_group_size` runs or more (or there is no headline).
    """
    largest = next((i for i in results.improvements if i.kind == "largest"), None)
    if largest is None:
        return None
    sizes = [int(results.medians.loc[[pair], "n"].iat[0]) for pair in (largest.from_pair, largest.to_pair)]
    fewest = min(sizes)
    if fewest >= min_group_size:
        return None
    pairs = list(zip((largest.to_pair, largest.from_pair), reversed(sizes), strict=True))
    groups = " and ".join(f"{_cell(results, pair)} has {_runs(n)}" for pair, n in pairs)
    short = [_cell(results, pair) for pair, n in pairs if n < min_group_size]
    more = min_group_size - fewest
    seeds = ",".join(str(seed) for seed in range(fewest, min_group_size))
    return (
        f"Too few runs for a test: {groups}, and a test needs at least {min_group_size} runs per group. "
        f"Train {more} more seed{'s' if more > 1 else ''} of {'each' if len(short) == 2 else short[0]} "
        f"(for example, add seed={seeds} to the sweep's command line) to test the difference below; until "
        "then it may be noise."
    )


def unavailable(table: object, results: object, min_group_size: int, f1_floor: float) -> dict[str, str]:
    """The parts of the report that these runs cannot fill, each with the one line shown instead.

    Keys: rq1, rq1_tests, correlations, rq2, rq2_tests, gpu_usage, pareto, improvements, interaction,
    excluded.
    """
    from repro.stats.analyses import with_levels

    first, second = results.factors
    a, b = first.noun_text, second.noun_text
    runs, _ = with_levels(table.runs, results.factors)  # the levels as the analyses saw them
    lines = {}
    env, arch = results.environment, results.architecture
    in_env = runs.loc[runs[second.column] == env, first.column].value_counts()
    model = "model" if first.name == "architecture" else a
    if len(in_env) < 2:
        lines["rq1"] = (
            f"RQ1 compares {a}s trained in one {b}, and {second.within_text(env)} has one "
            f"({first.level_label(in_env.index[0])}): train a second {model} there to compare them."
        )
        if results.one_factor:
            only = first.level_label(in_env.index[0])
            lines["rq1"] = f"The runs have one {a} ({only}): nothing to compare."
    elif all(c.kruskal is None for c in results.rq1):
        within = second.within_text(env)
        lines["rq1_tests"] = _untested(a, within, in_env, min_group_size, first.level_label)
    if all(c.result is None for c in results.correlations):
        lines["correlations"] = (
            f"No Spearman correlation: each needs at least 3 runs with both values in one {b}."
        )
    for_arch = runs.loc[runs[first.column] == arch, second.column].value_counts()
    how = " (another machine or gpu= profile)" if second.name == "environment" else ""
    if results.one_factor:
        pass
    elif len(for_arch) < 2:
        lines["rq2"] = (
            f"RQ2 compares the {b}s that one {a} was trained in, and {first.within_text(arch)} "
            f"ran in one ({second.level_label(for_arch.index[0])}): train it in a second {b}{how} to compare "
            "them."
        )
    elif all(c.kruskal is None for c in results.rq2):
        within = first.within_text(arch)
        lines["rq2_tests"] = _untested(b, within, for_arch, min_group_size, second.level_label)
    if runs["gpu_usage_pct"].isna().all():
        lines["gpu_usage"] = "No run recorded GPU usage (gpu_usage_pct), so there is no chart of it."
    if results.pareto["all"].empty:
        lines["pareto"] = f"No run reached F1 ≥ {f1_floor:g} (f1_floor), so there is no energy-F1 front."
    if not results.improvements:
        group = a if results.one_factor else f"{a} and {b}"
        lines["improvements"] = f"One group ({group}) only: no reduction to compare."
    if not results.one_factor and (len(results.environments) < 2 or len(results.architectures) < 2):
        lines["interaction"] = (
            f"The interaction needs two {a}s each trained in the same two {b}s; these "
            f"runs have {len(results.architectures)} {a}(s) in {len(results.environments)} "
            f"{b}(s)."
        )
    if table.excluded.empty:
        parents = f" {table.parent_runs} sweep parent run(s) skipped (not training runs)."
        lines["excluded"] = "No run left out." + (parents if table.parent_runs else "")
    return lines


def _untested(factor: str, within: str, counts: object, min_group_size: int, label: object) -> str:
    sizes = ", ".join(f"{label(name)} {_runs(n)}" for name, n in counts.items())
    return (
        f"Not tested: a test needs at least {min_group_size} runs per {factor} within {within}, and "
        f"there are {sizes}. The figures above describe these runs; they cannot tell a difference from noise."
    )


def _runs(n: int) -> str:
    return f"{n} run{'' if n == 1 else 's'}"


def _html_table(table: object) -> HtmlTable:
    rows = [[c.show(row[c.key]) for c in table.columns] for _, row in table.frame.iterrows()]
    return HtmlTable(table.name, table.title, [c.header for c in table.columns], rows, list(table.notes))


def _measurement(cfg: DictConfig, table: object) -> dict[str, object]:
    """How the energy was obtained: the study's method, or the provenance tags of your runs."""
    if cfg.source == "published":
        return {
            "summary": "GPU energy only, as the authors measured it: the GPU's power draw sampled with "
            "nvidia-smi during training (their published data; see paper/data/README.md). "
            "CPU and RAM energy are not in the data.",
            "rows": [],
        }
    from repro.stats.runs import PROVENANCE_TAG_PREFIX

    # The loader read these tags with the runs: one row per analysed run, no second trip to the store.
    tags = table.provenance.set_index("run").loc[table.runs["run"]]
    estimated_tag = "energy_estimated"
    estimated = (
        int((tags[estimated_tag].fillna("").str.lower() == "true").sum()) if estimated_tag in tags else 0
    )
    methods: dict[tuple[str, str], int] = {}
    for column in tags.columns:
        if column.startswith(PROVENANCE_TAG_PREFIX):
            for method, n in tags[column].dropna().value_counts().items():
                methods[column.removeprefix(PROVENANCE_TAG_PREFIX), method] = int(n)
    return {
        "summary": f"{len(tags)} runs analysed on {table.energy_basis} energy; {estimated} of them had at "
        "least one estimated component (tag energy_estimated=true).",
        "rows": [[component, method, str(n)] for (component, method), n in sorted(methods.items())],
    }


def _figures(runs: object, results: object, f1_floor: float) -> dict[str, str]:
    """Every figure as a base64 PNG, keyed by its file name without extension."""
    from repro.stats.figures import study_figures

    with tempfile.TemporaryDirectory() as folder:
        paths = study_figures(
            runs, results, Path(folder), f1_floor, formats=("png",)
        )  # the page embeds PNGs only
        return {p.stem: base64.b64encode(p.read_bytes()).decode("ascii") for p in paths}


def sections(
    tables: dict[str, HtmlTable], results: object, lines: dict[str, str], figures: dict[str, str]
) -> list[Section]:
    """The page's parts after the headline, each table placed by its name (T1-T2 in the design, T3a and T5
    in RQ1, ...). A table no part names is shown under "More tables", so a new table appears without
    editing this function or the template.
    """
    left = {name: t for name, t in tables.items() if not name.startswith(PAPER_ONLY_TABLES)}

    def take(prefix: str) -> list[tuple[str, object]]:
        return [("table", left.pop(name)) for name in [n for n in left if n.startswith(prefix)]]

    def figure(name: str, caption: str) -> list[tuple[str, object]]:
        return [("figure", (name, caption))] if name in figures else []

    def unless(key: str, blocks: list[tuple[str, object]]) -> list[tuple[str, object]]:
        return [("missing", lines[key])] if key in lines else blocks

    first, second = results.factors
    a, b = first.noun_text, second.noun_text
    design = take("t1") + take("t2")
    rq1_tables, correlations, rq2_tables = take("t3a"), take("t5"), take("t4a")
    improvements, interaction, excluded = take("t6"), take("t7"), take("excluded")
    rq1_within = "" if results.one_factor else f" (within {second.within_text(results.environment)})"
    found = [
        Section("design", "Design (T1)", design),
        Section(
            "rq1",
            f"RQ1: do {a}s differ{rq1_within}?",
            unless(
                "rq1",
                figure("f1_energy_bars", "Median energy per image, with interquartile range and runs per bar")
                + figure("f7_energy_boxes", f"Energy per image per {a}, one panel per {b}")
                + figure("f6_energy_gflops", "Energy per image against the architecture's GFLOPs")
                + unless(
                    "rq1_tests",
                    [("readings", [omnibus_reading(c, f"{a}s") for c in results.rq1]), *rq1_tables],
                ),
            )
            + unless("correlations", correlations),
        ),
    ]
    if not results.one_factor:
        found.append(
            Section(
                "rq2",
                f"RQ2: do {b}s differ (for {first.within_text(results.architecture)})?",
                unless(
                    "rq2",
                    unless("gpu_usage", figure("f2_gpu_usage_bars", "Median GPU usage"))
                    + figure("f3_duration_bars", "Median duration per image")
                    + unless(
                        "rq2_tests",
                        [("readings", [omnibus_reading(c, f"{b}s") for c in results.rq2]), *rq2_tables],
                    ),
                ),
            )
        )
    found.append(
        Section(
            "tradeoff",
            "Trade-off: energy against F1",
            figure("f4_f1_bars", "Median F1 (the axis starts near the data)")
            + unless("pareto", figure("f5_energy_f1_pareto", "Energy against F1 with the Pareto front"))
            + unless("improvements", improvements),
        )
    )
    if not results.one_factor:
        found.append(
            Section(
                "interaction",
                f"Interaction: does the best {b} depend on the {a}?",
                unless(
                    "interaction",
                    figure("f8_interaction", f"Median energy per image per {a}, one line per {b}")
                    + [("readings", interaction_readings(results))]
                    + (interaction if results.interaction else []),
                ),
            )
        )
    found.append(Section("excluded", "Excluded runs", unless("excluded", excluded)))
    if left:
        found.append(Section("more", "More tables", [("table", t) for t in left.values()]))
    return found


def render(cfg: DictConfig) -> str:
    """Read the runs, analyse them, and return the report's HTML."""
    import jinja2

    from repro.stats.study import analyse_study, read_runs, read_summary
    from repro.stats.tables import study_tables

    table = read_runs(cfg)  # checked against study.factors: a refusal is one line, before any progress line
    log.info("[1/3] read %s", read_summary(table))
    log.info("[2/3] analysing %d runs", len(table.runs))
    results = analyse_study(table, cfg)
    tables = {t.name: _html_table(t) for t in study_tables(table, results)}
    log.info("[3/3] drawing the figures and writing the page")
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("repro", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    figures = _figures(table.runs, results, cfg.f1_floor)
    lines = unavailable(table, results, cfg.min_group_size, cfg.f1_floor)
    first, second = results.factors
    return environment.get_template("report.html.j2").render(
        title=f"{first.label} and {second.noun_text}" if not results.one_factor else first.label,
        source=table.source,
        energy_basis=table.energy_basis,
        n_runs=len(table.runs),
        n_excluded=len(table.excluded),
        headline=headline(results),
        headline_caveat=headline_caveat(results, cfg.min_group_size),
        sections=sections(tables, results, lines, figures),
        figures=figures,
        measurement=_measurement(cfg, table),
        notes=list(results.notes),
    )


def run(cfg: DictConfig) -> Path:
    """Check the request, write the report, and return its path."""
    from repro.stats.study import check_request

    check_request(cfg)
    path = output_path(cfg)
    _check_writable(path)
    html = render(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8", newline="\n")
    log.info("report written to %s (%.1f MB); it opens offline", path, len(html) / 1e6)
    return path


#: Console entry point (`repro-report`); shows progress lines on stderr.
main = entry_point("report", run)


if __name__ == "__main__":
    main()
