"""`python -m repro.report`: the committed report regenerates byte for byte; readings; bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from tests.stores import first_sweep_store
from tests.support import REPO_ROOT, run_cli

from repro.errors import UserError
from repro.report import headline_caveat, run, unavailable
from repro.stats.analyses import analyse
from repro.stats.runs import RunsTable


def _config(*overrides: str) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        return compose("report", list(overrides))


@pytest.mark.slow
def test_committed_report_is_regenerated_byte_for_byte(tmp_path: Path) -> None:
    path = run(_config(f"output={tmp_path / 'report.html'}"))
    html = path.read_text(encoding="utf-8")
    assert html == (REPO_ROOT / "paper" / "report.html").read_text(encoding="utf-8"), (
        "paper/report.html is stale: regenerate it with `make report`"
    )
    assert "cuts the median energy per image by 81.39%" in html
    assert (
        "architectures differ in energy per image within Cloud: Kruskal-Wallis p = 1.67e-26, "
        "large effect η²_H = 0.91." in html
    )
    assert "S2 (all 5 architectures × Local ML, Cloud): the environment&#39;s effect on energy" in html
    assert html.count('src="data:image/png;base64,') == 8
    assert "http://" not in html.replace("http://www.w3.org", "")  # nothing to fetch: it opens offline


def test_unknown_source_is_one_line_and_exit_2(cli_env: dict[str, str]) -> None:
    result = run_cli("source=csv", env=cli_env, module="repro.report")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: source=csv is not known; use one of published, mlflow"
    ]


def test_unwritable_output_is_refused_before_any_analysis(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="is not writable"):
        run(_config(f"output={blocker / 'report.html'}"))
    with pytest.raises(UserError, match="is a folder"):
        run(_config(f"output={tmp_path}"))


def test_an_empty_experiment_is_a_user_error(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment("empty")
    with pytest.raises(UserError, match="has no runs"):
        run(_config("source=mlflow", "mlflow.experiment=empty", f"mlflow.tracking_uri={uri}",
                    f"output={tmp_path / 'r.html'}"))  # fmt: skip


def first_sweep_report(folder: Path, seeds: int = 1) -> str:
    """The HTML report of a `make run`-sized store (two CPU jobs per seed), as `repro.report` writes it."""
    uri = first_sweep_store(folder, seeds)
    path = run(_config("source=mlflow", "mlflow.experiment=repro", f"mlflow.tracking_uri={uri}",
                       f"output={folder / 'report.html'}"))  # fmt: skip
    return path.read_text(encoding="utf-8")


def test_a_first_sweeps_report_leads_with_what_it_cannot_test(tmp_path: Path) -> None:
    html = first_sweep_report(tmp_path)
    caveat = (
        "Too few runs for a test: MobileNet V2 on cpu has 1 run and resnet18 on cpu has 1 run, and a test "
        "needs at least 3 runs per group. Train 2 more seeds of each (for example, add seed=1,2 to the "
        "sweep&#39;s command line) to test the difference below"
    )
    assert caveat in html
    assert html.index(caveat) < html.index("Training MobileNet V2 on cpu instead of resnet18 on cpu cuts")
    assert '<p class="headline untested">' in html
    # What cannot be computed is one line each, not empty charts or tables of "no test".
    assert "no test" not in html
    assert "Not tested: a test needs at least 3 runs per architecture within cpu, and there are " in html
    assert "MobileNet V2 1 run, resnet18 1 run." in html
    assert "and MobileNet V2 ran in one (cpu)" in html  # RQ2: one environment
    assert "these runs have 2 architecture(s) in 1 environment(s)" in html  # no interaction to draw
    assert "No run left out. 1 sweep parent run(s) skipped" in html
    for absent in ("t3a_rq1_omnibus", "t4a_rq2_omnibus", "t5_correlations", "t7_interaction",
                   "excluded_runs"):  # fmt: skip
        assert f'id="{absent}"' not in html
    assert html.count('src="data:image/png;base64,') == 5  # energy bars, boxes, GFLOPs, F1 bars, Pareto


def test_enough_seeds_lift_the_caveat_and_bring_the_tests(tmp_path: Path) -> None:
    html = first_sweep_report(tmp_path, seeds=3)
    assert "Too few runs" not in html
    assert '<p class="headline">Training MobileNet V2 on cpu instead of resnet18 on cpu cuts' in html
    assert 'id="t3a_rq1_omnibus"' in html
    assert "architectures differ in energy per image within cpu: Kruskal-Wallis p = " in html


def test_the_caveat_counts_the_seeds_the_smaller_group_lacks() -> None:
    runs = pd.DataFrame(
        {"environment": "cpu", "architecture": ["a", "a", "b", "b", "b", "b"], "run": list("123456"),
         "energy_j_per_image": [1.0, 1.1, 2.0, 2.1, 2.2, 2.3], "gpu_usage_pct": np.nan,
         "duration_ms_per_image": 1.0, "f1": 0.9, "accuracy": 0.9, "gflops": [1, 1, 2, 2, 2, 2],
         "params_m": 1.0, "gpu_name": "cpu", "power_limit_w": np.nan}
    )  # fmt: skip
    results = analyse(runs)
    assert headline_caveat(results, 3) == (
        "Too few runs for a test: a on cpu has 2 runs and b on cpu has 4 runs, and a test needs at least "
        "3 runs per group. Train 1 more seed of a on cpu (for example, add seed=2 to the sweep's command "
        "line) to test the difference below; until then it may be noise."
    )
    assert headline_caveat(results, 2) is None


def test_one_job_leaves_every_comparison_as_one_line() -> None:
    runs = pd.DataFrame(
        {"environment": ["cpu"], "architecture": ["mobilenet_v2"], "run": ["1"], "energy_j_per_image": [2.7],
         "gpu_usage_pct": [np.nan], "duration_ms_per_image": [97.0], "f1": [0.6], "accuracy": [0.55],
         "gflops": [0.004], "params_m": [0.7], "gpu_name": ["cpu"], "power_limit_w": [np.nan]}
    )  # fmt: skip
    excluded = pd.DataFrame(columns=["environment", "architecture", "run", "reason"])
    table = RunsTable(runs, excluded, "whole machine", "a test", parent_runs=1)
    lines = unavailable(table, analyse(runs), min_group_size=3, f1_floor=0.5)
    assert sorted(lines) == [
        "correlations", "excluded", "gpu_usage", "improvements", "interaction", "rq1", "rq2"
    ]  # fmt: skip
    assert lines["rq1"] == (
        "RQ1 compares architectures trained in one environment, and cpu has one (MobileNet V2): train a "
        "second model there to compare them."
    )
    assert lines["excluded"] == "No run left out. 1 sweep parent run(s) skipped (not training runs)."
    assert "pareto" in unavailable(table, analyse(runs, f1_floor=0.9), min_group_size=3, f1_floor=0.9)
