"""From training runs to the study's tables, through the real command lines.

A sweep of 2 architectures x 3 seeds (`python -m repro.train -m`) records into a temporary SQLite
store; `python -m repro.paper source=mlflow` reads that store and writes the tables. The recorder and
the reader share `repro.names`, so a metric renamed on one side only breaks this test.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from tests.support import run_cli

from repro import names

ARCHITECTURES = ("mobilenet_v2", "resnet18")
SEEDS = 3


@pytest.mark.slow
def test_sweep_to_tables(tmp_path: Path, data_cache: Path, cli_env: dict[str, str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "sweep"
    trained = run_cli(
        "-m",
        "experiment=smoke",
        f"model={','.join(ARCHITECTURES)}",
        f"seed=range(0,{SEEDS})",
        "energy=codecarbon",
        "energy.lock=false",  # the test is not about the lock, and other measured jobs may share this machine
        "training.threads=1",  # tiny jobs: a second thread only spins, and on a busy machine it costs minutes
        "training.max_steps_per_epoch=1",
        f"dataset.cache_dir={data_cache}",
        f"tracking.uri={uri}",
        "tracking.experiment=e2e",
        f"hydra.sweep.dir={sweep_dir}",
        env=cli_env,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    parent_run_id = (sweep_dir / "mlflow_parent_run_id").read_text().strip()

    runs = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("e2e").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
    )
    assert len(runs) == len(ARCHITECTURES) * SEEDS
    for run in runs:  # what the reader needs, under the names the recorder wrote
        assert {names.ENERGY_J_PER_IMAGE, names.F1, names.GFLOPS, names.DURATION_MS_PER_IMAGE} <= set(
            run.data.metrics
        )
        assert run.data.tags[names.TAG_DEVICE_NAME] == "cpu"

    tables = tmp_path / "tables"
    analysed = run_cli(
        "source=mlflow",
        f"mlflow.tracking_uri={uri}",
        "mlflow.experiment=e2e",
        f"mlflow.parent_run_id={parent_run_id}",
        f"tables_dir={tables}",
        "figures=false",
        env=cli_env,
        module="repro.paper",
    )
    assert analysed.returncode == 0, analysed.stderr[-3000:]

    medians = pd.read_csv(tables / "t2_medians.csv")
    assert sorted(medians["architecture"]) == sorted(ARCHITECTURES)
    assert list(medians["n"]) == [SEEDS, SEEDS]
    assert (medians[names.ENERGY_J_PER_IMAGE] > 0).all()

    omnibus = pd.read_csv(tables / "t3a_rq1_omnibus.csv").set_index("metric")
    assert omnibus.loc[names.ENERGY_J_PER_IMAGE, "k"] == 2
    assert omnibus.loc[names.ENERGY_J_PER_IMAGE, "kruskal_h"] >= 0

    improvements = pd.read_csv(tables / "t6_improvements.csv")
    largest = improvements[improvements["kind"] == "largest"].iloc[0]
    assert {largest["from_architecture"], largest["to_architecture"]} == set(ARCHITECTURES)
    assert 0 < largest["reduction"] < 1


@pytest.mark.slow
def test_an_experiment_without_training_runs_is_one_line(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """One line, exit 2, nothing written (tests/stats/test_stats_runs.py checks each message in-process)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("only-a-parent")
    client.set_terminated(client.create_run(experiment, tags={names.TAG_KIND: names.KIND_SWEEP}).info.run_id)
    result = run_cli(
        "source=mlflow",
        f"mlflow.tracking_uri={uri}",
        "mlflow.experiment=only-a-parent",
        f"tables_dir={tmp_path / 'tables'}",
        env=cli_env,
        module="repro.paper",
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "has no finished training runs (1 sweep parent run(s)" in errors[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "tables").exists()
