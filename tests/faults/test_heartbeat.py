"""The heartbeat: how a later job tells a dead run from one in a long, quiet epoch."""

from __future__ import annotations

import datetime
import os
import socket
import threading
import time
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from tests.faults.helpers import runs

from repro import reconcile
from repro.spool import RunSpool
from repro.train import JobContext, run


def _running_run(uri: str, **tags: str) -> str:
    """A RUNNING run of this host with the given tags, as a job that died would leave it."""
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment("repro")
    created = MlflowClient(uri).create_run(
        experiment.experiment_id, tags={"repro.host": socket.gethostname(), **tags}
    )
    return created.info.run_id


def _process(pid_start: str, heartbeat_s: float) -> dict[str, str]:
    """Process tags naming a process that exists (this one's parent), with the given start and heartbeat."""
    return {
        "repro.pid": str(os.getppid()),
        "repro.pid_start": pid_start,
        "repro.heartbeat": f"{heartbeat_s:.0f}",
        "repro.heartbeat_s": "30",
    }


def test_a_reused_pid_with_a_stale_heartbeat_is_ended_failed(tracking_uri: str) -> None:
    stale_s = round(time.time() - (reconcile.STALE_PERIODS + 1) * 30)
    stale = _running_run(tracking_uri, **_process(pid_start="", heartbeat_s=stale_s))  # start time unknown
    fresh = _running_run(tracking_uri, **_process(pid_start="", heartbeat_s=time.time()))
    reused = _running_run(tracking_uri, **_process(pid_start="1", heartbeat_s=time.time()))  # another start

    assert sorted(reconcile.end_dead_runs(tracking_uri, "repro")) == sorted([stale, reused])

    client = MlflowClient(tracking_uri)
    assert client.get_run(fresh).info.status == "RUNNING"  # alive as far as anyone can tell
    ended = client.get_run(stale)
    assert ended.info.status == "FAILED"
    since = datetime.datetime.fromtimestamp(stale_s, tz=datetime.timezone.utc).isoformat(timespec="seconds")
    assert ended.data.tags["repro.end_reason"] == f"process died (no heartbeat since {since})"


def _heartbeat_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("mlflow-heartbeat")]


def test_the_heartbeat_beats_while_the_run_records_and_stops_at_its_end(
    compose_config, tracking_uri: str, tmp_path: Path
) -> None:
    run(compose_config("tracking.heartbeat_s=0.2"), JobContext(output_dir=tmp_path / "job"))

    assert _heartbeat_threads() == []
    (recorded,) = runs(tracking_uri)
    assert recorded.info.status == "FINISHED"
    assert recorded.data.tags["repro.heartbeat_s"] == "0.2"
    last_beat_s = float(recorded.data.tags["repro.heartbeat"])
    start_s, end_s = recorded.info.start_time / 1000, recorded.info.end_time / 1000
    assert end_s - start_s > 2  # long enough for the check below to mean something
    assert end_s - 2 < last_beat_s <= end_s + 1  # renewed until the end, not only at the start


def test_the_heartbeat_costs_a_negligible_share_of_a_core(tracking_uri: str, tmp_path: Path) -> None:
    run_id = _running_run(tracking_uri)
    period_s, beating_s = 0.05, 3.0
    cpu_before = time.process_time()
    sink = RunSpool(tracking_uri, run_id, tmp_path / "spool.jsonl", heartbeat_s=period_s)
    time.sleep(beating_s)
    assert sink.close(timeout_s=10) is None
    cpu_per_beat_s = (time.process_time() - cpu_before) / (beating_s / period_s)
    share_at_default = cpu_per_beat_s / 30  # the default tracking.heartbeat_s
    print(f"heartbeat: {cpu_per_beat_s * 1000:.2f} ms CPU per beat, {share_at_default:.4%} of a core at 30 s")
    assert share_at_default < 0.001
    assert _heartbeat_threads() == []
