"""The two sources of the tidy runs table, the outlier policy, and their one-line errors."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param

from repro.errors import UserError
from repro.stats.analyses import analyse
from repro.stats.runs import RUN_COLUMNS, RunsTable, apply_outlier_policy, load_mlflow, load_published

_DATA_DIR = Path(__file__).resolve().parents[2] / "paper" / "data"
DATA = _DATA_DIR / "dl-training-energy-consumption-dataset.parquet"
EXCLUSIONS = _DATA_DIR / "exclusions.csv"


def test_published_columns_and_derived_metrics(published: RunsTable) -> None:
    assert tuple(published.runs.columns) == RUN_COLUMNS
    raw = pd.read_parquet(DATA).iloc[0]
    first = published.runs.iloc[0]
    assert first["energy_j_per_image"] == pytest.approx(raw["energy (MJ)"] * 1e6 / raw["total seen images"])
    assert first["duration_ms_per_image"] == pytest.approx(
        raw["training duration (h)"] * 3.6e6 / raw["total seen images"]
    )
    assert set(published.excluded["reason"].str.len() > 0) == {True}


def test_published_missing_column(tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    pd.read_parquet(DATA).drop(columns=["gpu usage (%)"]).to_parquet(broken)
    with pytest.raises(UserError, match="lacks column 'gpu usage \\(%\\)'"):
        load_published(broken, EXCLUSIONS)


def test_outlier_policy_iqr3_lists_every_run(published: RunsTable) -> None:
    runs = published.runs.copy()
    runs.loc[0, "energy_j_per_image"] = 50.0  # far beyond its group's fences
    table = RunsTable(runs, published.excluded, published.energy_basis, published.source)
    screened = apply_outlier_policy(table, "iqr3")
    new = screened.excluded.iloc[len(published.excluded) :]
    assert (runs.loc[0, "run"], runs.loc[0, "architecture"]) in set(
        zip(new["run"], new["architecture"], strict=True)
    )
    assert new["reason"].str.contains("3xIQR").all()
    assert len(screened.runs) + len(new) == len(runs)
    assert apply_outlier_policy(table, "none") is table
    with pytest.raises(UserError, match="outlier_policy=zscore"):
        apply_outlier_policy(table, "zscore")


def test_unknown_environment_lists_known(published: RunsTable) -> None:
    with pytest.raises(
        UserError, match="environment=AWS is not in the runs; known: Local N, Local ML, Cloud"
    ):
        analyse(published.runs, environment="AWS")
    with pytest.raises(UserError, match="architecture=resnet18 .*known: mobilenet_v2, nasnet_mobile"):
        analyse(published.runs, architecture="resnet18")


def test_small_group_is_skipped_with_reason(published: RunsTable) -> None:
    runs = published.runs
    tiny = runs[~((runs["environment"] == "Cloud") & (runs["architecture"] == "vgg16"))]
    tiny = pd.concat(
        [tiny, runs[(runs["environment"] == "Cloud") & (runs["architecture"] == "vgg16")].head(2)]
    )
    result = analyse(tiny)
    energy = result.rq1[0]
    assert "vgg16" not in energy.groups
    assert energy.skipped == ("vgg16: 2 run(s), fewer than 3",)
    assert energy.kruskal is not None and energy.kruskal.k == 4


def test_nan_metric_is_reported_and_dropped(published: RunsTable, caplog: pytest.LogCaptureFixture) -> None:
    runs = published.runs.copy()
    cloud = runs.index[runs["environment"] == "Cloud"][:3]
    runs.loc[cloud, "gpu_usage_pct"] = np.nan
    result = analyse(runs)
    gpu = next(c for c in result.rq1 if c.metric == "gpu_usage_pct")
    assert gpu.nan_dropped == 3 and gpu.kruskal.n == 137
    assert "3 run(s) have no gpu_usage_pct" in result.notes[0]
    assert "3 run(s) with NaN gpu_usage_pct dropped" in caplog.text


# --- source=mlflow ---------------------------------------------------------------------------------------

_RUNS = [  # (model, gpu, energy J/image, f1), three runs each; b2 has a GPU-only energy everywhere
    ("mobilenet_v2", "rtx3070", 0.05, 0.95),
    ("mobilenet_v2", "rtx3090", 0.10, 0.96),
    ("resnet50", "rtx3070", 0.20, 0.97),
    ("resnet50", "rtx3090", 0.25, 0.975),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A sqlite MLflow store with one sweep (a parent and 12 children) and one empty experiment."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("paper-test")
    client.create_experiment("empty")
    parent = client.create_run(experiment, tags={"repro.kind": "sweep"}).info.run_id
    client.set_terminated(parent)
    for i, (model, gpu, energy, f1) in enumerate(_RUNS * 3):
        run = client.create_run(
            experiment,
            tags={"repro.model": model, "repro.gpu": gpu, "repro.seed": str(i), "mlflow.parentRunId": parent},
            start_time=1_000 + i,
        ).info.run_id
        metrics = {
            "energy_j_per_image": energy * 1.5 + i * 1e-3,
            "gpu_energy_j_per_image": energy + i * 1e-3,
            "f1": f1 - i * 1e-4,
            "gpu_usage_pct": 40 + i,
            "duration_ms_per_image": 1 + i * 0.01,
            "gflops": 0.3 if model == "mobilenet_v2" else 4.1,
            "params_m": 3.5,
        }
        params = {"gpu.tdp_w": "220" if gpu == "rtx3070" else "350", "gpu.label": gpu.upper()}
        client.log_batch(
            run,
            metrics=[Metric(key, value, 0, 0) for key, value in metrics.items()],
            params=[Param(key, value) for key, value in params.items()],
        )
        client.set_terminated(run)
    return uri, parent


def test_mlflow_reads_the_sweep(store: tuple[str, str]) -> None:
    uri, parent = store
    table = load_mlflow(uri, "paper-test")
    assert len(table.runs) == 12 and tuple(table.runs.columns) == RUN_COLUMNS
    assert table.energy_basis == "GPU only"  # every run has gpu_energy_j_per_image
    assert table.runs["energy_j_per_image"].min() == pytest.approx(0.05)
    assert list(table.excluded["reason"]) == [
        "not a training job (no repro.model tag, e.g. a sweep's parent run)"
    ]
    assert len(load_mlflow(uri, "paper-test", parent_run_id=parent).runs) == 12
    results = analyse(table.runs)
    assert results.environment == "rtx3090"  # no Cloud: the most powerful environment with most architectures
    assert results.architecture == "mobilenet_v2"
    assert results.rq1[0].kruskal.k == 2


def test_mlflow_errors(store: tuple[str, str], tmp_path: Path) -> None:
    uri, _ = store
    with pytest.raises(UserError, match="has no runs"):
        load_mlflow(uri, "empty")
    with pytest.raises(
        UserError, match="mlflow.experiment='nope' is not in .*known: Default, empty, paper-test"
    ):
        load_mlflow(uri, "nope")
    with pytest.raises(UserError, match="no MLflow database at"):
        load_mlflow(f"sqlite:///{tmp_path / 'missing.db'}", "paper-test")
    with pytest.raises(UserError, match="cannot be reached"):
        load_mlflow("http://127.0.0.1:9", "paper-test")
    with pytest.raises(UserError, match="has no runs"):
        load_mlflow(uri, "paper-test", parent_run_id="0" * 32)
