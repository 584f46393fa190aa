"""Entry point: `python -m repro.paper` writes the study's tables and figures (`make paper-tables`)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from repro.errors import UserError, exit_on_user_error
from repro.paths import check_output_folder, repo_root
from repro.stats.config import ART_SUMS_OF_SQUARES, register

log = logging.getLogger("repro.paper")
_REPO_ROOT = repo_root()
_SOURCES = ("published", "mlflow")

register()


def _path(value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else _REPO_ROOT / path


def _output_dirs(cfg: DictConfig) -> tuple[Path, Path]:
    """Where tables and figures go; your own runs never land on top of the reference tables."""
    # The experiment name is anyone's text: as a path component it must not climb out of reports/.
    safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(cfg.mlflow.experiment)).lstrip(".") or "experiment"
    base = Path("paper") if cfg.source == "published" else Path("reports") / safe_name
    tables = _path(str(cfg.tables_dir if cfg.tables_dir is not None else base / "tables"))
    figures = cfg.figures_dir if cfg.figures_dir is not None else tables.parent / "figures"  # beside tables
    return tables, _path(str(figures))


def run(cfg: DictConfig) -> list[Path]:
    """Read the runs, analyse them and write every table (and figure); returns the files written."""
    from repro.stats.analyses import analyse_as_configured
    from repro.stats.runs import apply_outlier_policy, check_readable, load_mlflow, load_published
    from repro.stats.tables import study_tables

    started = time.perf_counter()
    if cfg.source not in _SOURCES:
        raise UserError(f"source={cfg.source} is not known; use one of {', '.join(_SOURCES)}")
    if cfg.min_group_size < 2:
        raise UserError(f"min_group_size={cfg.min_group_size} is too small; use 3 or more")
    if cfg.art_sums_of_squares not in ART_SUMS_OF_SQUARES:
        raise UserError(f"art_sums_of_squares={cfg.art_sums_of_squares} is not known; use II or III")
    tables_dir, figures_dir = _output_dirs(cfg)
    check_output_folder(tables_dir, "tables_dir")  # before any work, and before any table is written
    if cfg.figures:
        check_output_folder(figures_dir, "figures_dir")
    if cfg.source == "mlflow":
        if not cfg.mlflow.experiment:
            raise UserError(
                "source=mlflow needs mlflow.experiment=NAME (the experiment your training runs went to)"
            )
        check_readable(cfg.mlflow.tracking_uri)  # a damaged store is one error line, before any progress line
    log.info("[1/4] reading runs (source=%s)", cfg.source)
    if cfg.source == "published":
        table = load_published(_path(cfg.published_path), _path(cfg.exclusions_path))
    else:
        table = load_mlflow(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, cfg.mlflow.parent_run_id)
    table = apply_outlier_policy(table, cfg.outlier_policy)
    log.info(
        "[2/4] analysing %d runs (%d left out, %d sweep parent run(s) skipped)",
        len(table.runs),
        len(table.excluded),
        table.parent_runs,
    )
    results = analyse_as_configured(table.runs, cfg)
    log.info("[3/4] writing tables to %s", tables_dir)
    written = [path for t in study_tables(table, results) for path in t.write(tables_dir)]
    if cfg.figures:
        from repro.stats.figures import study_figures

        log.info("[4/4] drawing figures in %s", figures_dir)
        written += study_figures(table.runs, results, figures_dir, cfg.f1_floor)
    else:
        log.info("[4/4] figures skipped (figures=false)")
    headline = next((i for i in results.improvements if i.kind == "largest"), None)
    if headline:
        log.info(
            "largest reduction: %.5f (%s on %s -> %s on %s)",
            headline.reduction,
            *headline.from_pair,
            *headline.to_pair,
        )
    log.info("done: %d files in %.1f s", len(written), time.perf_counter() - started)
    return written


@hydra.main(version_base="1.3", config_path=str(_REPO_ROOT / "conf"), config_name="paper")
def _main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        run(cfg)


def main() -> None:
    """Console entry point (`repro-paper`); shows this package's progress lines on stderr."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _main()


if __name__ == "__main__":
    main()
