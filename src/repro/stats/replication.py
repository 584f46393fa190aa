"""RQ1 of a replication beside the study's Cloud: the section a replication's README needs.

    python -m repro.stats.replication source=mlflow mlflow.tracking_uri=sqlite:///replication_cpu.db \
        mlflow.experiment=replication_cpu [mlflow.parent_run_id=ID]

reads your runs and the authors' published data (both with the code behind `python -m repro.paper`),
and writes `comparison.md` next to your tables (`reports/<experiment>/` by default): the order of the
architectures by median J/image, Kruskal-Wallis H and eta^2_H for energy, Spearman's rho of J/image
against GFLOPs, and whether RQ1's conclusion ("architectures differ significantly in energy") holds.
Nothing in it is typed in: the study's column is computed from `paper/data` like T3a and T5.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from repro import names
from repro.errors import UserError
from repro.stats.analyses import STUDY_ENVIRONMENT, analyse
from repro.stats.config import register
from repro.stats.runs import RunsTable, load_published
from repro.stats.study import entry_point, read_runs, repo_path

log = logging.getLogger(__name__)
#: The significance level of the study's tests.
ALPHA = 0.05

register()


@dataclass(frozen=True)
class Rq1Summary:
    """RQ1's energy findings in one environment.

    Attributes:
        label: how the column is headed, e.g. "this machine (cpu)".
        environment: the environment whose architectures were compared.
        runs: how many runs the comparison used.
        energy_basis: "GPU only" or "whole machine".
        medians_j_per_image: median J/image per architecture, cheapest first.
        kruskal_h, kruskal_p, eta2_h: the Kruskal-Wallis test of J/image across architectures (None
            when it could not run, e.g. fewer than two groups of `min_group_size`).
        spearman_rho, spearman_p: J/image against GFLOPs, one-sided ("greater"), as in T5.
    """

    label: str
    environment: str
    runs: int
    energy_basis: str
    medians_j_per_image: tuple[tuple[str, float], ...]
    kruskal_h: float | None
    kruskal_p: float | None
    eta2_h: float | None
    spearman_rho: float | None
    spearman_p: float | None

    @property
    def differ(self) -> bool | None:
        """RQ1's conclusion: the architectures' energy differs significantly (None: not tested)."""
        return None if self.kruskal_p is None else self.kruskal_p < ALPHA


def rq1_summary(
    table: RunsTable, label: str, environment: str | None = None, min_group_size: int = 3
) -> Rq1Summary:
    """Summarise RQ1 for energy over a runs table, with the same analyses as the study's tables."""
    results = analyse(table.runs, environment=environment, min_group_size=min_group_size)
    env = results.environment
    energy = next(c for c in results.rq1 if c.metric == names.ENERGY_J_PER_IMAGE)
    medians = results.medians.xs(env, level="environment")[names.ENERGY_J_PER_IMAGE].dropna().sort_values()
    correlation = next(
        (
            c
            for c in results.correlations
            if c.x == names.ENERGY_J_PER_IMAGE and c.y == names.GFLOPS and c.subset == env
        ),
        None,
    )
    spearman = correlation.result if correlation is not None else None
    kruskal = energy.kruskal
    return Rq1Summary(
        label=label,
        environment=env,
        runs=int((table.runs["environment"] == env).sum()),
        energy_basis=table.energy_basis,
        medians_j_per_image=tuple((str(name), float(value)) for name, value in medians.items()),
        kruskal_h=None if kruskal is None else kruskal.statistic,
        kruskal_p=None if kruskal is None else kruskal.pvalue,
        eta2_h=None if kruskal is None else kruskal.effect_size,
        spearman_rho=None if spearman is None else spearman.rho,
        spearman_p=None if spearman is None else spearman.pvalue,
    )


def order_agreement(own: Rq1Summary, study: Rq1Summary) -> tuple[list[str], float | None]:
    """The architectures both rank, and Spearman's rho between their two orders (None below 3)."""
    from scipy.stats import spearmanr

    own_rank = {name: rank for rank, (name, _) in enumerate(own.medians_j_per_image)}
    study_rank = {name: rank for rank, (name, _) in enumerate(study.medians_j_per_image)}
    common = [name for name, _ in study.medians_j_per_image if name in own_rank]
    if len(common) < 3:
        return common, None
    rho = spearmanr([own_rank[n] for n in common], [study_rank[n] for n in common]).statistic
    return common, float(rho)


def comparison_markdown(own: Rq1Summary, study: Rq1Summary) -> str:
    """The side-by-side section, as Markdown."""

    def order(summary: Rq1Summary) -> str:
        return " < ".join(f"{name} ({value:.4g})" for name, value in summary.medians_j_per_image) or "-"

    def number(value: float | None, digits: str = ".3f") -> str:
        return "-" if value is None else format(value, digits)

    def verdict(summary: Rq1Summary) -> str:
        if summary.differ is None:
            return "not tested (fewer than two groups large enough)"
        return f"{'yes' if summary.differ else 'no'} (p = {summary.kruskal_p:.3g}, alpha = {ALPHA})"

    rows = [
        ("Environment compared", own.environment, study.environment),
        ("Runs", str(own.runs), str(study.runs)),
        ("Energy counted", own.energy_basis, study.energy_basis),
        ("Architectures by median J/image, cheapest first", order(own), order(study)),
        ("Kruskal-Wallis H for J/image", number(own.kruskal_h, ".2f"), number(study.kruskal_h, ".2f")),
        ("eta^2_H", number(own.eta2_h), number(study.eta2_h)),
        (
            "Spearman rho, J/image vs GFLOPs (one-sided p)",
            f"{number(own.spearman_rho)} (p = {number(own.spearman_p, '.3g')})",
            f"{number(study.spearman_rho)} (p = {number(study.spearman_p, '.3g')})",
        ),
        ("RQ1 holds: architectures differ significantly in energy", verdict(own), verdict(study)),
    ]
    lines = [
        "## RQ1 side by side with the study's Cloud",
        "",
        f"| | {own.label} | {study.label} |",
        "| --- | --- | --- |",
        *(f"| {name} | {mine} | {theirs} |" for name, mine, theirs in rows),
        "",
    ]
    common, rho = order_agreement(own, study)
    same = [n for n, _ in own.medians_j_per_image if n in common] == [
        n for n, _ in study.medians_j_per_image if n in common
    ]
    if rho is None:
        lines.append(
            f"Fewer than three architectures in common ({', '.join(common) or 'none'}): orders not compared."
        )
    else:
        lines.append(
            f"The order of the {len(common)} architectures in common is "
            f"{'the same as' if same else 'not the same as'} the study's "
            f"(Spearman rho between the two orders: {rho:.2f})."
        )
    lines.append(
        "Computed by `python -m repro.stats.replication` with the analyses behind `python -m repro.paper`; "
        "the study's column comes from its published data (`paper/data`, after the authors' exclusions)."
    )
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig) -> Path:
    """Write `comparison.md` for the runs of `cfg.mlflow` and return its path."""
    if cfg.source != "mlflow" or not cfg.mlflow.experiment:
        raise UserError(
            "the comparison needs your runs: source=mlflow mlflow.experiment=NAME "
            "[mlflow.tracking_uri=URI] [mlflow.parent_run_id=ID]"
        )
    own_table = read_runs(cfg)
    published = load_published(repo_path(cfg.published_path), repo_path(cfg.exclusions_path))
    label = f"this replication ({cfg.mlflow.experiment})"
    own = rq1_summary(own_table, label, cfg.environment, cfg.min_group_size)
    study = rq1_summary(published, f"the study's {STUDY_ENVIRONMENT}", STUDY_ENVIRONMENT, cfg.min_group_size)
    default_tables = Path("reports") / str(cfg.mlflow.experiment) / "tables"  # as python -m repro.paper
    tables = default_tables if cfg.tables_dir is None else Path(cfg.tables_dir)
    target = repo_path(str(tables)).parent / "comparison.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    text = comparison_markdown(own, study)
    target.write_text(text)
    print(text)
    log.info("comparison written to %s", target)
    return target


#: `python -m repro.stats.replication`: the same options as `python -m repro.paper`.
main = entry_point("paper", run)


if __name__ == "__main__":
    main()
