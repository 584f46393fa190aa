"""The heartbeat: how a later job tells a dead run from one in a long, quiet epoch."""

from __future__ import annotations

import datetime
import os
import socket
import threading
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from tests.faults.helpers import runs, wait_for

from repro import names, reconcile, recorder
from repro.spool import RecordQueue, RunSpool
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


@pytest.fixture
def queued_beats(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The value of every heartbeat a job's run (or a `RunSpool`) queues from now on, in order."""
    beats: list[float] = []
    real_set_tags = RecordQueue.set_tags

    def _set_tags(self: RecordQueue, tags) -> None:  # noqa: ANN001
        if names.TAG_HEARTBEAT in tags:
            beats.append(float(tags[names.TAG_HEARTBEAT]))
        real_set_tags(self, tags)

    monkeypatch.setattr(RecordQueue, "set_tags", _set_tags)
    return beats


def test_the_heartbeat_beats_while_the_run_records_and_stops_at_its_end(
    compose_config, tracking_uri: str, tmp_path: Path, monkeypatch, queued_beats: list[float]
) -> None:
    # Long enough by construction, on any machine: each epoch ends only once the heartbeat has been
    # renewed after the epoch's own end, and not before the beats are 3 s apart from the run's first.
    real_on_epoch_end = recorder.EpochRecorder.on_epoch_end
    after_last_epoch: list[float] = []

    def _on_epoch_end_then_wait_for_beats(self: recorder.EpochRecorder, record) -> None:  # noqa: ANN001
        real_on_epoch_end(self, record)
        beaten = len(queued_beats)
        wait_for(
            lambda: len(queued_beats) > beaten and queued_beats[-1] >= queued_beats[0] + 3,
            "a heartbeat after the epoch's end, 3 s after the first",
            deadline_s=60,
            poll_s=0.05,
        )
        after_last_epoch[:] = queued_beats[beaten:]

    monkeypatch.setattr(recorder.EpochRecorder, "on_epoch_end", _on_epoch_end_then_wait_for_beats)
    run(compose_config("tracking.heartbeat_s=0.2"), JobContext(output_dir=tmp_path / "job"))

    assert _heartbeat_threads() == []  # stopped at the end
    (recorded,) = runs(tracking_uri)
    assert recorded.info.status == "FINISHED"
    assert recorded.data.tags["repro.heartbeat_s"] == "0.2"
    last_beat_s = float(recorded.data.tags["repro.heartbeat"])
    start_s, end_s = recorded.info.start_time / 1000, recorded.info.end_time / 1000
    assert end_s - start_s > 2  # long enough for the checks below to mean something
    assert last_beat_s == queued_beats[-1]  # the last beat queued reached the store
    assert after_last_epoch and last_beat_s >= after_last_epoch[0]  # renewed past the last epoch's end
    assert last_beat_s >= queued_beats[0] + 3  # not only at the start
    assert last_beat_s <= end_s + 1  # and never after the run ended (beats are rounded to the second)


def test_the_heartbeat_costs_a_negligible_share_of_a_core(
    tracking_uri: str, tmp_path: Path, queued_beats: list[float]
) -> None:
    run_id = _running_run(tracking_uri)
    sink = RunSpool(tracking_uri, run_id, tmp_path / "spool.jsonl", heartbeat_s=0.05)
    # The CPU time of the two threads a heartbeat costs (the beating one and the delivering one), not
    # of the whole process: other tests' threads may still be winding down in it.
    clocks = [time.pthread_getcpuclockid(thread.ident) for thread in (sink._beat_thread, sink._thread)]
    wait_for(lambda: len(queued_beats) >= 40, "40 heartbeats", deadline_s=120, poll_s=0.05)
    cpu_s = sum(time.clock_gettime(clock) for clock in clocks)
    beaten = len(queued_beats)
    assert sink.close(timeout_s=10) is None
    cpu_per_beat_s = cpu_s / beaten
    share_at_default = cpu_per_beat_s / 30  # the default tracking.heartbeat_s
    print(f"heartbeat: {cpu_per_beat_s * 1000:.2f} ms CPU per beat, {share_at_default:.4%} of a core at 30 s")
    assert share_at_default < 0.001
    assert _heartbeat_threads() == []
