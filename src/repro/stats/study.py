"""One study pipeline (check -> read -> leave out -> analyse) and one entry point for its commands.

`python -m repro.paper`, `python -m repro.report` and `python -m repro.stats.replication` read the same
config (`repro.stats.config.PaperConfig`); each calls `check_request` before any work, `read_runs` and
`analyse_study` for its data, and is started by `entry_point`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from repro.errors import UserError, exit_on_user_error
from repro.factors import FACTORS, STUDY_FACTORS
from repro.paths import repo_root
from repro.stats.config import ART_SUMS_OF_SQUARES

_REPO_ROOT = repo_root()
SOURCES: tuple[str, ...] = ("published", "mlflow")
#: The most factors one study compares (the first's levels within the second's, and their interaction).
MAX_FACTORS = 2


def repo_path(value: str) -> Path:
    """A config path: relative paths are taken from the repository root."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else _REPO_ROOT / path


def check_request(cfg: DictConfig) -> None:
    """Fail in one line on a config that no analysis can serve: before any run is read or file written."""
    if cfg.source not in SOURCES:
        raise UserError(f"source={cfg.source} is not known; use one of {', '.join(SOURCES)}")
    if cfg.source == "mlflow" and not cfg.mlflow.experiment:
        raise UserError(
            "source=mlflow needs mlflow.experiment=NAME (the experiment your training runs went to)"
        )
    if cfg.min_group_size < 2:
        raise UserError(f"min_group_size={cfg.min_group_size} is too small; use 3 or more")
    if cfg.art_sums_of_squares not in ART_SUMS_OF_SQUARES:
        raise UserError(f"art_sums_of_squares={cfg.art_sums_of_squares} is not known; use II or III")
    check_factors(list(cfg.study.factors))


def check_factors(chosen: list[str]) -> None:
    """`study.factors` must name one or two different declared factors."""
    unknown = [name for name in chosen if name not in FACTORS]
    if unknown:
        raise UserError(
            f"study.factors: {unknown[0]!r} is not a declared factor; declared: {', '.join(FACTORS)}"
        )
    if not 1 <= len(chosen) <= MAX_FACTORS or len(set(chosen)) != len(chosen):
        raise UserError(
            f"study.factors={chosen}: name one or {MAX_FACTORS} different factors, e.g. "
            "study.factors=[batch_size] or study.factors=[architecture,precision]"
        )


def check_levels(runs: pd.DataFrame, chosen: list[str]) -> None:
    """Some run must have every chosen factor, and every level of one needs 2+ runs (the study's own
    design keeps its per-test skips): checked as soon as the runs are read, before any progress line."""
    from repro.stats.analyses import check_levels_present

    check_levels_present(runs, tuple(chosen))
    if tuple(chosen) == STUDY_FACTORS:
        return
    for name in chosen:
        column = FACTORS[name].column
        counts = runs[column].dropna().value_counts()
        thin = counts[counts < 2]
        if not thin.empty:
            level = thin.index[0]
            shown = f"{level:g}" if FACTORS[name].numeric else FACTORS[name].level_label(level)
            raise UserError(
                f"study.factors: {name} level {shown} has {int(thin.iloc[0])} run; every level needs 2 or "
                "more (train more seeds, or leave that level out)"
            )


def read_runs(cfg: DictConfig) -> Any:
    """The runs of `cfg.source` with the outlier policy applied (`repro.stats.runs.RunsTable`), checked
    against `study.factors`: silent, so that a request the runs cannot serve is one error line."""
    from repro.stats.runs import apply_outlier_policy, load_mlflow, load_published

    if cfg.source == "published":
        table = load_published(repo_path(cfg.published_path), repo_path(cfg.exclusions_path))
    else:
        table = load_mlflow(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, cfg.mlflow.parent_run_id)
    table = apply_outlier_policy(table, cfg.outlier_policy)
    check_levels(table.runs, list(cfg.study.factors))
    return table


def read_summary(table: Any) -> str:
    """What `read_runs` read, for the entry points' first progress line."""
    return (
        f"{len(table.runs)} runs from {table.source}: {len(table.excluded)} left out, {table.parent_runs} "
        f"sweep parent run(s) skipped; energy: {table.energy_basis}"
    )


def analyse_study(table: Any, cfg: DictConfig) -> Any:
    """`repro.stats.analyses.analyse` with the config's choices (`StudyResults`)."""
    from repro.stats.analyses import analyse

    return analyse(
        table.runs,
        cfg.environment,
        cfg.architecture,
        cfg.min_group_size,
        cfg.f1_floor,
        art_sums_of_squares=cfg.art_sums_of_squares,
        factors=tuple(cfg.study.factors),
    )


def entry_point(config_name: str, run: Callable[[DictConfig], object]) -> Callable[[], None]:
    """A console entry point: compose conf/`config_name`.yaml, call `run`, a user's error as one line.

    Progress lines go to stderr, as `logging` shows them.
    """
    import hydra

    @hydra.main(version_base="1.3", config_path=str(_REPO_ROOT / "conf"), config_name=config_name)
    def _main(cfg: DictConfig) -> None:
        with exit_on_user_error():
            run(cfg)

    def main() -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        _main()

    return main
