"""Issue 18's end-to-end check: a tiny CPU sweep over training.batch_size, analysed through the CLIs."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from tests.support import REPO_ROOT, cli


@dataclass(frozen=True)
class BatchSweep:
    tracking_uri: str
    root: Path


@pytest.fixture(scope="module")
def batch_sweep(
    tmp_path_factory: pytest.TempPathFactory, data_cache: Path, cli_env: dict[str, str]
) -> BatchSweep:
    """Two models x batch sizes 8 and 16 x seeds 0 and 1: eight smoke jobs, by the real command line."""
    root = tmp_path_factory.mktemp("batch-sweep")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = subprocess.run(
        cli("-m", "model=mobilenet_v2,resnet18", "training.batch_size=8,16", "seed=0,1",
            "experiment=smoke", f"tracking.uri={uri}", f"dataset.cache_dir={data_cache}", "energy=codecarbon",
            "energy.lock=false", f"hydra.sweep.dir={root / 'sweep'}"),
        cwd=REPO_ROOT, env=cli_env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return BatchSweep(uri, root)


@pytest.fixture(scope="module")
def cli_env() -> dict[str, str]:
    from tests.conftest import _cli_env

    return _cli_env()


def _analyse(
    module: str, sweep: BatchSweep, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("source=mlflow", f"mlflow.tracking_uri={sweep.tracking_uri}", "mlflow.experiment=repro",
            "min_group_size=2", *args, module=module),
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_the_jobs_of_a_sweep_over_batch_sizes_have_names_apart(batch_sweep: BatchSweep):
    client = mlflow.MlflowClient(batch_sweep.tracking_uri)
    experiment = client.get_experiment_by_name("repro")
    runs = client.search_runs([experiment.experiment_id])
    jobs = [run for run in runs if "repro.model" in run.data.tags]
    assert len(jobs) == 8 and all(run.info.status == "FINISHED" for run in jobs)
    names = {run.info.run_name for run in jobs}
    assert len(names) == 8 and "resnet18-cpu-bs8-s1" in names and "mobilenet_v2-cpu-bs16-s0" in names
    assert {run.data.params["training.batch_size"] for run in jobs} == {"8", "16"}


@pytest.mark.slow
def test_repro_paper_analyses_architecture_by_batch_size(batch_sweep: BatchSweep, cli_env: dict[str, str]):
    tables = batch_sweep.root / "tables"
    result = _analyse(
        "repro.paper", batch_sweep, cli_env, "study.factors=[architecture,batch_size]",
        f"tables_dir={tables}", "figures=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    levels = (tables / "t1c_batch_size.md").read_text()
    assert (
        "| 8 | 2 | 1 | 4 |" in levels and "| 16 | 2 | 1 | 4 |" in levels
    )  # level, models, environments, runs
    medians = (tables / "t2_medians.md").read_text()
    assert "Medians per architecture and batch size" in medians and medians.count("| MobileNet V2 |") == 2
    assert "RQ2: batch sizes compared within" in (tables / "t4a_rq2_omnibus.md").read_text()
    interaction = (tables / "t7_interaction.md").read_text()
    assert "Architecture × batch size interaction" in interaction and "| Batch size | 1 |" in interaction
    assert "| Energy (J/image) | Batch size |" in (tables / "t5_correlations.md").read_text()
    assert "| largest |" in (tables / "t6_improvements.md").read_text()


@pytest.mark.slow
def test_repro_report_analyses_batch_size_alone(batch_sweep: BatchSweep, cli_env: dict[str, str]):
    output = batch_sweep.root / "report.html"
    result = _analyse("repro.report", batch_sweep, cli_env, "study.factors=[batch_size]", f"output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    page = output.read_text()
    assert "RQ1: do batch sizes differ?" in page and 'id="t1c_batch_size"' in page
    assert 'id="rq2"' not in page and 'id="t7_interaction"' not in page  # one factor: no RQ2, no interaction
