"""resume=true, dead-run reconciliation, the metric spool, and sweep summaries that show every job."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.core.utils import JobReturn, JobStatus
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from repro import loop, reconcile, spool, tracking
from repro.errors import UserError
from repro.train import JobContext, run


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs(
        [client.get_experiment_by_name("repro").experiment_id], order_by=["attributes.start_time ASC"]
    )


def test_resume_skips_a_finished_config_and_reruns_a_failed_one(
    compose_config, tracking_uri, tmp_path, capsys, monkeypatch
):
    run(compose_config(), JobContext(output_dir=tmp_path / "a"))  # trained without resume
    capsys.readouterr()
    run(compose_config("resume=true"), JobContext(output_dir=tmp_path / "b"))
    assert (
        "resume: skipping mobilenetv2_050-cpu-s0: identical config already FINISHED"
        in capsys.readouterr().out
    )
    assert len(_runs(tracking_uri)) == 1  # nothing trained again

    def _crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(loop, "_train_one_epoch", _crash)
        with pytest.raises(RuntimeError):
            run(compose_config("resume=true", "seed=1"), JobContext(output_dir=tmp_path / "c"))
    capsys.readouterr()
    run(compose_config("resume=true", "seed=1"), JobContext(output_dir=tmp_path / "d"))
    assert "resume: rerunning mobilenetv2_050-cpu-s1: its last run" in capsys.readouterr().out
    assert [r.info.status for r in _runs(tracking_uri)] == ["FINISHED", "FAILED", "FINISHED"]


def test_a_run_whose_process_died_is_ended_failed_and_a_live_one_is_left(tracking_uri, tmp_path):
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("repro")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_run = client.create_run(
        experiment_id, tags={**reconcile.process_tags(), "repro.pid": dead.stdout.strip()}
    )
    live_run = client.create_run(experiment_id, tags=reconcile.process_tags())  # this very process
    other_host = client.create_run(
        experiment_id, tags={**reconcile.process_tags(), "repro.host": "elsewhere", "repro.pid": "1"}
    )
    client.log_metric(dead_run.info.run_id, "train_loss", 0.5, step=0)

    assert reconcile.end_dead_runs(tracking_uri, "repro") == [dead_run.info.run_id]
    ended = client.get_run(dead_run.info.run_id)
    assert ended.info.status == "FAILED"
    assert ended.data.tags["repro.end_reason"].startswith("process died (no heartbeat since 20")
    assert ended.data.metrics["train_loss"] == 0.5
    assert client.get_run(live_run.info.run_id).info.status == "RUNNING"
    assert client.get_run(other_host.info.run_id).info.status == "RUNNING"  # not ours to judge


def test_a_dead_runs_spool_is_imported_instead_of_failing_it(tracking_uri, tmp_path):
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("repro")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    tags = {**reconcile.process_tags(), "repro.pid": dead.stdout.strip(), "repro.output_dir": str(tmp_path)}
    left = client.create_run(experiment_id, tags=tags)
    sink = spool.RunSpool(tracking_uri, left.info.run_id, tmp_path / spool.SPOOL_FILE)
    sink.append_to_spool(
        [
            {"kind": "metric", "key": "energy_total_j", "value": 12.5, "timestamp": 1, "step": 0},
            {"kind": "status", "status": "FINISHED", "end_time": 2},
        ]
    )
    sink.close(0)
    assert reconcile.end_dead_runs(tracking_uri, "repro") == []
    recovered = client.get_run(left.info.run_id)
    assert recovered.info.status == "FINISHED" and recovered.data.metrics["energy_total_j"] == 12.5
    assert (tmp_path / f"{spool.SPOOL_FILE}.imported").is_file()


def test_the_spool_delivers_in_order_after_an_outage_and_keeps_what_never_arrived(
    tracking_uri, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(spool, "RETRY_INTERVAL_S", 0.05)
    client = MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("repro")).info.run_id
    sink = spool.RunSpool(tracking_uri, run_id, tmp_path / spool.SPOOL_FILE)
    real_log_batch = sink._client.log_batch
    outage = {"calls_left": 3}

    def _flaky(*args, **kwargs):
        if outage["calls_left"] > 0:
            outage["calls_left"] -= 1
            raise ConnectionError("server away")
        return real_log_batch(*args, **kwargs)

    monkeypatch.setattr(sink._client, "log_batch", _flaky)
    for epoch in range(5):
        sink.log_metrics({"train_loss": 1.0 / (epoch + 1), "auc": float("nan")}, step=epoch)
    assert sink.close(timeout_s=30) is None  # all delivered once the server was back
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [0, 1, 2, 3, 4]
    assert "auc" not in client.get_run(run_id).data.metrics  # NaN is left out, not faked

    never = spool.RunSpool(tracking_uri, run_id, tmp_path / "never" / spool.SPOOL_FILE)
    monkeypatch.setattr(
        never._client, "log_batch", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down"))
    )
    never.log_metrics({"energy_total_j": 42.0})
    never.set_tags({"repro.end_reason": "completed"})
    path = never.close(timeout_s=0.3)
    assert path == tmp_path / "never" / spool.SPOOL_FILE
    spool.main([str(path)])
    assert "3 records imported" not in capsys.readouterr().out  # two records: a metric and a tag
    imported = client.get_run(run_id)
    assert imported.data.metrics["energy_total_j"] == 42.0
    assert imported.data.tags["repro.end_reason"] == "completed"


def test_a_job_that_failed_before_its_run_started_shows_in_the_summary(
    compose_config, tracking_uri, tmp_path, capsys
):
    sweep_dir = tmp_path / "sweep"
    cfg = compose_config()
    sweep_cfg = OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(sweep_dir)}}, "tracking": OmegaConf.to_container(cfg.tracking)}
    )
    callback = tracking.SweepCallback()
    callback.on_multirun_start(sweep_cfg)
    run(cfg, JobContext(output_dir=sweep_dir / "0", job_num=0, sweep_dir=sweep_dir))
    failed = JobReturn(overrides=["model.weights_file=broken.pth"], status=JobStatus.FAILED)
    failed._return_value = UserError("model.weights_file='broken.pth' is not a readable PyTorch checkpoint")
    callback.on_job_end(OmegaConf.create({"hydra": {"job": {"num": 1}}}), failed)
    capsys.readouterr()

    assert callback.finish() is False
    out = capsys.readouterr().out
    assert "Sweep summary (2 jobs" in out
    assert "FAILED" in out and "job 1 (model.weights_file=broken.pth): UserError" in out
    parent = [r for r in _runs(tracking_uri) if r.data.tags.get("repro.kind") == "sweep"][0]
    assert parent.info.status == "FAILED"
    assert parent.data.tags["repro.end_reason"] == "1 job(s) did not finish"
