"""`python -m repro.paper`: the composed config, the files it writes, their determinism, its errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from repro.errors import UserError
from repro.paper import run

REPO_ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        return compose(
            "paper",
            [
                f"tables_dir={tmp_path / 'tables'}",
                f"figures_dir={tmp_path / 'figures'}",
                "figures=false",
                *overrides,
            ],
        )


def test_tables_are_written_and_byte_identical(tmp_path: Path) -> None:
    first = {p.name: p.read_bytes() for p in run(_config(tmp_path / "a"))}
    second = {p.name: p.read_bytes() for p in run(_config(tmp_path / "b"))}
    expected = {
        f"{name}.{ext}"
        for name in (
            "t1a_architectures",
            "t1b_environments",
            "t2_medians",
            "t3a_rq1_omnibus",
            "t3b_rq1_pairs",
            "t4a_rq2_omnibus",
            "t4b_rq2_pairs",
            "t5_correlations",
            "t6_improvements",
            "t7_interaction",
            "excluded_runs",
        )
        for ext in ("md", "tex", "csv")
    }
    assert expected <= set(first)
    assert first == second
    t6 = first["t6_improvements.md"].decode()
    assert (
        "| largest | VGG16 | Local ML | MobileNet V2 | Local ML | 0.3629 | 0.0676 | 0.81386 | 81.39 |" in t6
    )
    t3 = first["t3a_rq1_omnibus.md"].decode()
    assert "| Energy (J/image) | 5 | 140 |" in t3 and "| 127.05 | 1.67e-26 | 0.911 |" in t3
    assert "\\toprule" in first["t3a_rq1_omnibus.tex"].decode()
    assert first["excluded_runs.csv"].decode().count("\n") == 19  # header + 18 runs


@pytest.mark.slow
def test_figures_are_byte_identical(tmp_path: Path) -> None:
    first = {
        p.name: p.read_bytes()
        for p in run(_config(tmp_path / "a", "figures=true"))
        if p.parent.name == "figures"
    }
    second = {
        p.name: p.read_bytes()
        for p in run(_config(tmp_path / "b", "figures=true"))
        if p.parent.name == "figures"
    }
    assert len(first) == 16 and first == second


def test_bad_parameters_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="source=csv is not known"):
        run(_config(tmp_path, "source=csv"))
    with pytest.raises(UserError, match="source=mlflow needs mlflow.experiment"):
        run(_config(tmp_path, "source=mlflow"))
    with pytest.raises(UserError, match="does not exist"):
        run(_config(tmp_path, f"published_path={tmp_path / 'none.parquet'}"))
    with pytest.raises(UserError, match="art_sums_of_squares=IV is not known; use II or III"):
        run(_config(tmp_path, "art_sums_of_squares=IV"))


def test_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "repro.paper", "environment=AWS", f"tables_dir={tmp_path}", "figures=false"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == "error: environment=AWS is not in the runs; known: Local N, Local ML, Cloud"
    assert not list(tmp_path.iterdir())  # nothing written before the error
