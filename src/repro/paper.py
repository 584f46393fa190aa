"""Entry point: `python -m repro.paper` writes the study's tables and figures (`make paper-tables`)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from omegaconf import DictConfig

from repro.paths import check_output_folder
from repro.stats.config import register
from repro.stats.study import entry_point, repo_path

log = logging.getLogger("repro.paper")

register()


def _output_dirs(cfg: DictConfig) -> tuple[Path, Path]:
    """Where tables and figures go; your own runs never land on top of the reference tables."""
    # The experiment name is anyone's text: as a path component it must not climb out of reports/.
    safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(cfg.mlflow.experiment)).lstrip(".") or "experiment"
    base = Path("paper") if cfg.source == "published" else Path("reports") / safe_name
    tables = repo_path(str(cfg.tables_dir if cfg.tables_dir is not None else base / "tables"))
    figures = cfg.figures_dir if cfg.figures_dir is not None else tables.parent / "figures"  # beside tables
    return tables, repo_path(str(figures))


def run(cfg: DictConfig) -> list[Path]:
    """Read the runs, analyse them and write every table (and figure); returns the files written."""
    from repro.stats.runs import check_readable
    from repro.stats.study import analyse_study, check_request, read_runs, read_summary
    from repro.stats.tables import study_tables

    started = time.perf_counter()
    check_request(cfg)
    tables_dir, figures_dir = _output_dirs(cfg)
    check_output_folder(tables_dir, "tables_dir")  # before any work, and before any table is written
    if cfg.figures:
        check_output_folder(figures_dir, "figures_dir")
    if cfg.source == "mlflow":
        check_readable(cfg.mlflow.tracking_uri)  # a damaged store is one error line, before any progress line
    table = read_runs(cfg)  # checked against study.factors: a refusal is one line, before any progress line
    log.info("[1/4] read %s", read_summary(table))
    log.info("[2/4] analysing %d runs", len(table.runs))
    results = analyse_study(table, cfg)
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
        levels = slice(0, 1) if results.one_factor else slice(0, 2)
        log.info(
            "largest reduction: %.5f (%s -> %s)",
            headline.reduction,
            " on ".join(headline.from_pair[levels]),
            " on ".join(headline.to_pair[levels]),
        )
    log.info("done: %d files in %.1f s", len(written), time.perf_counter() - started)
    return written


#: Console entry point (`repro-paper`); shows this package's progress lines on stderr.
main = entry_point("paper", run)


if __name__ == "__main__":
    main()
