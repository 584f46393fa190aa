"""`python -m repro.report`: the committed report regenerates byte for byte; readings; bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from tests.support import REPO_ROOT, run_cli

from repro.errors import UserError
from repro.report import run


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
