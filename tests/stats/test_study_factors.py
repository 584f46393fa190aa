"""Any declared factor analysed like the study's (issue 18): loaders, analyses, tables and refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from tests.stores import first_sweep_store, settings_store
from tests.support import run_cli

from repro.stats.analyses import analyse
from repro.stats.runs import RunsTable, load_mlflow
from repro.stats.tables import study_tables


def test_published_runs_carry_every_setting_at_the_studys_protocol(published: RunsTable):
    runs = published.runs
    assert set(runs["batch_size"]) == {32.0} and set(runs["image_size"]) == {128.0}
    assert set(runs["precision"]) == {"fp32"}
    assert np.array_equal(runs["power_limit_in_force_w"], runs["power_limit_w"])  # 'max power limit (W)'


def test_mlflow_runs_without_a_setting_lack_its_level(tmp_path):
    runs = load_mlflow(first_sweep_store(tmp_path), "repro").runs  # no training.* params, no NVML limit
    assert runs["batch_size"].isna().all() and runs["power_limit_in_force_w"].isna().all()
    assert runs["precision"].isna().all()


def _paper(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """`python -m repro.paper ARGS` in-process (figures off): its exit code (0: returned) and stderr."""
    from repro.paper import main

    monkeypatch.setattr(sys, "argv", ["repro-paper", "figures=false", *args])
    capsys.readouterr()  # what came before (MLflow's lines as a test makes its store)
    code = 0
    try:
        main()
    except SystemExit as stopped:
        code = int(stopped.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("factors", "message"),
    [
        (
            "[batchsize]",
            "'batchsize' is not a declared factor; declared: architecture, environment, batch_size",
        ),
        ("[architecture,batch_size,precision]", "name one or 2 different factors"),
        ("[batch_size,batch_size]", "name one or 2 different factors"),
    ],
)
def test_a_bad_study_factors_is_one_line_and_exit_2_before_any_table(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    factors: str,
    message: str,
):
    code, err = _paper(monkeypatch, capsys, f"study.factors={factors}", f"tables_dir={tmp_path / 'tables'}")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: study.factors"), err
    assert message in err and not (tmp_path / "tables").exists()


def test_a_level_with_one_run_is_refused_before_any_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    uri = settings_store(tmp_path, batch_sizes=(16, 64), seeds=1, models=("mobilenet_v2",))
    code, err = _paper(
        monkeypatch, capsys, "source=mlflow", f"mlflow.tracking_uri={uri}", "mlflow.experiment=settings",
        "study.factors=[batch_size]", f"tables_dir={tmp_path / 'tables'}",
    )  # fmt: skip
    assert code == 2 and err.strip().splitlines() == [
        "error: study.factors: batch_size level 16 has 1 run; every level needs 2 or more (train more seeds, "
        "or leave that level out)"
    ]
    assert not (tmp_path / "tables").exists()


@pytest.mark.parametrize(
    ("module", "output"),
    [("repro.paper", "tables_dir={folder}/tables figures=false"), ("repro.report", "output={folder}/r.html")],
)
def test_a_factor_no_run_records_is_one_line_before_any_progress_line(
    tmp_path: Path, cli_env: dict[str, str], module: str, output: str
):
    """CPU runs never set a power limit: the real command line says so once, and prints nothing else."""
    uri = settings_store(tmp_path, batch_sizes=(16, 64), seeds=2, models=("mobilenet_v2",))
    result = run_cli(
        "source=mlflow", f"mlflow.tracking_uri={uri}", "mlflow.experiment=settings",
        "study.factors=[power_limit_w,batch_size]", *output.format(folder=tmp_path / "out").split(),
        env=cli_env, module=module,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.splitlines() == [
        "error: study.factors=['power_limit_w', 'batch_size']: no run has a level of every factor (4 of 4 "
        "run(s) lack power_limit_w); analyse factors that your runs record, or train runs that record them"
    ], result.stderr
    assert not (tmp_path / "out").exists()


def test_one_level_and_runs_that_lack_the_factor_are_each_one_line(tmp_path: Path):
    runs = load_mlflow(
        settings_store(tmp_path, batch_sizes=(64,), seeds=3, lacking_batch_size=2), "settings"
    ).runs
    results = analyse(runs, factors=("batch_size",))
    assert "2 of 6 run(s) lack batch_size; they are left out of the analyses" in results.notes
    assert "batch_size has one level in these runs (64): nothing to compare" in results.notes
    assert results.architectures == ("64",) and not results.rq2 and not results.interaction


def test_two_settings_get_the_studys_tables_named_after_them(tmp_path: Path):
    uri = settings_store(
        tmp_path, batch_sizes=(16, 64), seeds=3, amp=("False", "bf16"), models=("mobilenet_v2",)
    )
    table = load_mlflow(uri, "settings")
    results = analyse(table.runs, factors=("batch_size", "precision"))
    written = {t.name: t.to_markdown() for t in study_tables(table, results)}
    assert {"t1c_batch_size", "t1d_precision", "t3a_rq1_omnibus", "t4a_rq2_omnibus", "t7_interaction"} <= set(
        written
    )
    assert "RQ1: batch sizes compared within precision" in written["t3a_rq1_omnibus"]
    assert "RQ2: precisions compared within batch size" in written["t4a_rq2_omnibus"]
    assert (
        "| Batch size | 1 |" in written["t7_interaction"]
        and "Batch size × precision" in written["t7_interaction"]
    )
    assert "| Energy (J/image) | Batch size |" in written["t5_correlations"]  # numeric: correlated, two-sided
    assert results.improvements[0].kind == "largest" and results.improvements[0].from_pair == ("16", "fp32")
