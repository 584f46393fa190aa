"""The replication comparison: a tiny store of our own runs beside the study's Cloud."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import Metric

from repro import names
from repro.config import CONF_DIR
from repro.errors import UserError
from repro.stats import replication
from repro.stats.runs import RunsTable, load_mlflow

REPO_ROOT = Path(__file__).resolve().parents[2]
#: (architecture, GFLOPs, median J/image): the cheapest forward pass costs the least energy here.
_ARCHITECTURES = [("mobilenet_v2", 0.004, 0.1), ("resnet50", 0.17, 0.6), ("vgg16", 0.63, 1.9)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three architectures x 3 seeds on the CPU, recorded under repro.names."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('replication') / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("replication_test")
    for seed in range(3):
        for architecture, gflops, energy in _ARCHITECTURES:
            tags = {names.TAG_MODEL: architecture, names.TAG_GPU: "cpu", names.TAG_DEVICE_NAME: "cpu"}
            run = client.create_run(experiment, tags=tags, start_time=1_000 + seed).info.run_id
            metrics = {names.ENERGY_J_PER_IMAGE: energy + seed * 0.01, names.F1: 0.8, names.GFLOPS: gflops}
            client.log_batch(run, metrics=[Metric(key, value, 0, 0) for key, value in metrics.items()])
            client.set_terminated(run)
    return uri


def test_summary_of_own_runs(store: str) -> None:
    summary = replication.rq1_summary(load_mlflow(store, "replication_test"), "here")
    assert summary.environment == "cpu" and summary.runs == 9
    assert [name for name, _ in summary.medians_j_per_image] == ["mobilenet_v2", "resnet50", "vgg16"]
    assert summary.medians_j_per_image[0][1] == pytest.approx(0.11)
    assert summary.kruskal_h == pytest.approx(7.2)  # three perfectly separated groups of 3: H = 7.2
    assert summary.differ is True
    assert summary.spearman_rho == pytest.approx(0.9487, abs=1e-4)  # < 1: GFLOPs tie within an architecture


def test_study_column_matches_the_published_tables(published: RunsTable) -> None:
    summary = replication.rq1_summary(published, "study", "Cloud")
    t3a = pd.read_csv(REPO_ROOT / "paper" / "tables" / "t3a_rq1_omnibus.csv").set_index("metric")
    assert summary.kruskal_h == pytest.approx(t3a.loc[names.ENERGY_J_PER_IMAGE, "kruskal_h"])
    assert summary.eta2_h == pytest.approx(t3a.loc[names.ENERGY_J_PER_IMAGE, "eta2_h"])
    t5 = pd.read_csv(REPO_ROOT / "paper" / "tables" / "t5_correlations.csv")
    row = t5[
        (t5["x"] == names.ENERGY_J_PER_IMAGE) & (t5["y"] == names.GFLOPS) & (t5["environment"] == "Cloud")
    ]
    assert summary.spearman_rho == pytest.approx(float(row["rho"].iloc[0]))
    assert len(summary.medians_j_per_image) == 5 and summary.differ is True


def test_cli_writes_the_comparison(store: str, tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="paper",
            overrides=[
                "source=mlflow",
                f"mlflow.tracking_uri={store}",
                "mlflow.experiment=replication_test",
                f"tables_dir={tmp_path / 'report' / 'tables'}",
            ],
        )
    written = replication.run(cfg)
    assert written == tmp_path / "report" / "comparison.md"
    text = written.read_text()
    assert "| Kruskal-Wallis H for J/image | 7.20 |" in text
    assert "mobilenet_v2 (0.11) < resnet50 (0.61) < vgg16 (1.91)" in text
    assert "The order of the 3 architectures in common is" in text


def test_cli_needs_own_runs() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="paper")
    with pytest.raises(UserError, match="the comparison needs your runs: source=mlflow"):
        replication.run(cfg)
