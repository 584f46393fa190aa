"""One measured training job, end to end: the run, its metrics, its files, sweeps and interruptions."""

from __future__ import annotations

import csv
import math
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from tests.support import REPO_ROOT, cli

from repro import loop, store_process
from repro.train import JobContext, run

FINAL_METRICS = [
    "accuracy", "precision", "recall", "f1", "auc", "trained_epochs", "images_seen", "train_images_seen",
    "gflops", "params_m", "duration_s", "energy_total_j", "energy_j_per_image",
]  # fmt: skip
EPOCH_METRICS = ["train_loss", "val_accuracy", "val_f1", "epoch_duration_s"]


def _only_run(uri: str, experiment: str = "repro") -> mlflow.entities.Run:
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def test_one_job_records_a_complete_run(compose_config, tracking_uri, tmp_path):
    cfg = compose_config("model=mobilenet_v2", "seed=3", "training.drop_last=true")
    f1 = run(cfg, JobContext(output_dir=tmp_path / "job", choices={"model": "mobilenet_v2"}))

    recorded = _only_run(tracking_uri)
    metrics = recorded.data.metrics
    assert recorded.info.status == "FINISHED"
    assert recorded.info.run_name == "mobilenet_v2-cpu-s3"
    assert set(FINAL_METRICS) <= set(metrics), set(FINAL_METRICS) - set(metrics)
    for name in ("accuracy", "precision", "recall", "f1", "auc"):
        assert 0.0 <= metrics[name] <= 1.0, name
    assert metrics["f1"] == pytest.approx(f1)
    # smoke: 1 head + 1 fine-tuning epoch of at most 2 training batches of 16 images, each followed by a
    # validation pass over the whole validation split: digits' 540 images, 33 whole batches with drop_last.
    # The study's `total seen images` counts both passes: epochs x (training + validation steps) x batch.
    assert metrics["trained_epochs"] == 2
    n_val = math.ceil(0.3 * 1797)  # scikit-learn's test side of the 70/30 split
    assert n_val == 540 and n_val % 16 != 0  # so drop_last has a partial batch to drop
    assert metrics["train_images_seen"] == 2 * 2 * 16
    assert metrics["images_seen"] == 2 * (2 + n_val // 16) * 16
    assert metrics["energy_total_j"] > 0
    images = metrics["images_seen"]
    assert metrics["energy_j_per_image"] == pytest.approx(metrics["energy_total_j"] / images)
    assert metrics["duration_ms_per_image"] == pytest.approx(1000 * metrics["duration_s"] / images)
    assert 0.001 < metrics["gflops"] < 0.1  # mobilenetv2_050 at 32 px
    assert metrics["duration_s"] > 0

    client = MlflowClient(tracking_uri)
    for name in EPOCH_METRICS:
        steps = [point.step for point in client.get_metric_history(recorded.info.run_id, name)]
        assert steps == [0, 1], name

    params = recorded.data.params
    assert params["model.name"] == "mobilenetv2_050"
    assert params["training.batch_size"] == "16"
    tags = recorded.data.tags
    for tag in (
        "repro.git_sha",
        "repro.host",
        "repro.cpu_model",
        "repro.torch_version",
        "repro.timm_version",
    ):
        assert tags.get(tag), tag
    assert tags["repro.model"] == "mobilenet_v2" and tags["repro.gpu"] == "cpu"

    artifacts = {item.path for item in client.list_artifacts(recorded.info.run_id)}
    assert {"config.yaml", "history.csv"} <= artifacts
    with (tmp_path / "job" / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["phase"] for row in rows] == ["head", "finetune"]


def test_the_store_opens_while_the_data_builds_and_the_run_is_created_after(
    compose_config, tracking_uri, tmp_path, monkeypatch
):
    import repro.train as train

    order: list[str] = []
    build_data = train.build_data
    open_store, start_run = store_process.StoreProcess.open, store_process.StoreProcess.start_run

    def building(*args, **kwargs):
        order.append("data build started")
        return build_data(*args, **kwargs)

    def opening(self, *args, **kwargs):
        order.append("store asked to open")
        return open_store(self, *args, **kwargs)

    def starting_run(self, *args, **kwargs):
        order.append("run created")
        return start_run(self, *args, **kwargs)

    monkeypatch.setattr(train, "build_data", building)
    monkeypatch.setattr(store_process.StoreProcess, "open", opening)
    monkeypatch.setattr(store_process.StoreProcess, "start_run", starting_run)
    run(compose_config(), JobContext(output_dir=tmp_path / "job"))
    # The request to open does not wait for the store (a future), so the store process opens it while
    # this process builds the data.
    assert order == ["store asked to open", "data build started", "run created"]
    assert _only_run(tracking_uri).info.status == "FINISHED"


def test_a_store_the_store_process_cannot_open_fails_the_job_with_its_error_before_any_meter_starts(
    compose_config, tmp_path
):
    # An SQLite file that names an MLflow schema revision no MLflow knows: it passes the checks made in
    # the job's process and fails when the store process opens it.
    foreign = tmp_path / "foreign.db"
    with closing(sqlite3.connect(foreign)) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        connection.execute("INSERT INTO alembic_version VALUES ('0123456789ab')")
        connection.commit()
    with pytest.raises(store_process.StoreProcessError, match=r"Can't locate revision .*'0123456789ab'$"):
        run(compose_config(f"tracking.uri=sqlite:///{foreign}"), JobContext(output_dir=tmp_path / "job"))
    assert not (tmp_path / "job" / "energy" / "emissions.csv").exists(), "no meter started"


def test_multiclass_digits_train_with_macro_metrics(compose_config, tracking_uri, tmp_path):
    cfg = compose_config("model=resnet18", "dataset.task=multiclass", "energy=none")
    run(cfg, JobContext(output_dir=tmp_path / "job"))
    metrics = _only_run(tracking_uri).data.metrics
    assert 0.0 <= metrics["f1"] <= 1.0
    assert "energy_total_j" not in metrics  # energy=none measures nothing and logs no fake zero


@pytest.mark.slow
def test_sweep_makes_a_parent_run_with_one_child_per_job(finished_sweep_once):
    sweep = finished_sweep_once  # trained once a session; this test only reads it
    sweep_dir, tracking_uri, result = sweep.sweep_dir, sweep.tracking_uri, sweep.result
    assert (sweep_dir / "0").is_dir() and (sweep_dir / "1").is_dir()

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("repro")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("repro.kind") == "sweep"]
    assert len(parents) == 1
    parent_id = parents[0].info.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert sorted(r.info.run_name for r in children) == ["mobilenet_v2-cpu-s0", "resnet18-cpu-s0"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert parents[0].info.status == "FINISHED"
    assert not parents[0].data.metrics  # a group-by view averages the parent too: it has no job metrics
    summary = result.stdout.split("Sweep summary (2 jobs", 1)[1].splitlines()[1:]
    assert summary[0].split() == ["job", "state", "J/image", "F1", "duration", "energy"]
    for child in children:  # one row each: state, J/image, F1, duration, how the energy was obtained
        (row,) = [line for line in summary if line.startswith(f"  {child.info.run_name} ")]
        estimated = child.data.tags["energy_estimated"] == "true"
        j_per_image = f"{'~' if estimated else ''}{child.data.metrics['energy_j_per_image']:.4g}"
        assert row.split()[1:4] == ["FINISHED", j_per_image, f"{child.data.metrics['f1']:.4f}"], row
        assert f"{child.data.metrics['duration_s']:.1f} s" in row
        how = "estimated" if estimated else "measured"
        assert f"{how} (cpu: {child.data.tags['energy.method.cpu']}" in row
    cheapest = min(children, key=lambda r: r.data.metrics["energy_j_per_image"])
    assert any(line.startswith(f"Lowest J/image: {cheapest.info.run_name} (") for line in summary), summary
    assert "viewStateShareKey=repro-energy-per-image" in result.stdout  # the link to the energy view


def test_a_crash_mid_training_keeps_the_energy_measured_so_far(
    compose_config, tracking_uri, tmp_path, monkeypatch
):
    real_epoch = loop._train_one_epoch
    calls = {"n": 0}

    def _crash_on_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated out-of-memory")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_one_epoch", _crash_on_second_epoch)
    cfg = compose_config()
    with pytest.raises(RuntimeError, match="simulated"):
        run(cfg, JobContext(output_dir=tmp_path / "job"))

    recorded = _only_run(tracking_uri)
    assert recorded.info.status == "FAILED"
    assert "simulated out-of-memory" in recorded.data.tags["repro.end_reason"]
    assert recorded.data.metrics["energy_total_j"] > 0
    assert recorded.data.metrics["trained_epochs"] == 1


@pytest.mark.slow
def test_sigterm_ends_the_run_as_killed_with_its_energy(smoke_overrides, tracking_uri, tmp_path, cli_env):
    long_job = [*smoke_overrides, "training.finetune_epochs=500", "hydra.run.dir=" + str(tmp_path / "run")]
    process = subprocess.Popen(
        cli(*long_job), cwd=REPO_ROOT, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_for_epoch_metrics(tracking_uri, deadline_s=180)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        process.kill()
    recorded = _only_run(tracking_uri)
    stderr = process.stderr.read().decode(errors="replace")[-3000:]
    assert recorded.info.status == "KILLED", (recorded.data.tags.get("repro.end_reason"), stderr)
    assert recorded.data.tags["repro.end_reason"] == "terminated (SIGTERM)"
    assert recorded.data.metrics["energy_total_j"] > 0
    assert process.returncode != 0


def _wait_for_epoch_metrics(uri: str, deadline_s: float) -> None:
    client = MlflowClient(uri)
    stop = time.monotonic() + deadline_s
    while time.monotonic() < stop:
        experiment = (
            client.get_experiment_by_name("repro") if Path(uri.removeprefix("sqlite:///")).exists() else None
        )
        if experiment is not None:
            runs = client.search_runs([experiment.experiment_id])
            if runs and "train_loss" in runs[0].data.metrics:
                return
        time.sleep(1)
    raise AssertionError("the job logged no epoch within the deadline")
