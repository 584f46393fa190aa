"""The dataclass schema of `python -m repro.paper`, registered in Hydra's ConfigStore as `paper_schema`."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from repro.factors import STUDY_FACTORS

#: The sums of squares T7's ART can read (`repro.stats.interaction.art_anova`).
ART_SUMS_OF_SQUARES: tuple[str, ...] = ("II", "III")


@dataclass
class MlflowSourceConfig:
    """Where `source=mlflow` reads the runs."""

    tracking_uri: str = "sqlite:///mlflow.db"  # the store the runs were recorded in
    experiment: str | None = None  # required with source=mlflow
    parent_run_id: str | None = None  # only this sweep's runs; null: every run of the experiment


@dataclass
class StudyConfig:
    """Which declared factors (`repro.factors.FACTORS`) the analyses compare."""

    # One or two of: architecture, environment, batch_size, image_size, precision, power_limit_w. The first's
    # levels are compared within one level of the second (RQ1), the second's within one of the first (RQ2),
    # and two factors get T7's interaction. Default: the study's design.
    factors: list[str] = field(default_factory=lambda: list(STUDY_FACTORS))


@dataclass
class PaperConfig:
    """Which runs to analyse, which groups to hold fixed, and where the tables and figures go.

    Relative paths are taken from the repository root.
    """

    source: str = "published"  # published | mlflow
    published_path: str = "paper/data/dl-training-energy-consumption-dataset.parquet"  # the authors' runs
    exclusions_path: str = "paper/data/exclusions.csv"  # published only: the authors' excluded runs
    mlflow: MlflowSourceConfig = field(default_factory=MlflowSourceConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    outlier_policy: str = "none"  # none | iqr3 (runs beyond 3 x IQR of their group, listed with the reason)
    environment: str | None = None  # RQ1's environment; null: the study's (Cloud) when present
    architecture: str | None = None  # RQ2's architecture; null: the study's (mobilenet_v2) when present
    min_group_size: int = 3  # groups with fewer runs are left out of the tests, with the reason
    f1_floor: float = 0.5  # the trade-off ignores runs with a lower F1
    # T7's ART: II (Type II sums of squares, as its ANOVA and SRH columns) | III (sum-to-zero contrasts,
    # ARTool's default). They agree on a balanced design.
    art_sums_of_squares: str = "II"
    # null: paper/tables and paper/figures for the published data, reports/<experiment>/... for your
    # own runs, so that analysing them never overwrites the reference tables.
    tables_dir: str | None = None
    figures_dir: str | None = None  # null: a folder `figures` beside the tables folder
    figures: bool = True  # false: tables only


@dataclass
class ReportConfig(PaperConfig):
    """`python -m repro.report`: the same sources and choices, and the one HTML file it writes."""

    # null: paper/report.html for the published data, reports/<experiment>/report.html for your runs.
    output: str | None = None


def register() -> None:
    """Put the schemas in the ConfigStore; conf/paper.yaml and conf/report.yaml name them."""
    ConfigStore.instance().store(name="paper_schema", node=PaperConfig)
    ConfigStore.instance().store(name="report_schema", node=ReportConfig)
