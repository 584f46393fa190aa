"""The store process: a job's MLflow work in a process of its own (repro.store_process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tests.faults.helpers import wait_for

from repro import names, store_process
from repro.store_process import StoreProcess, StoreProcessError


@pytest.fixture(scope="module")
def store() -> StoreProcess:
    """One store process for this module's tests that leave it running (each with a store of its own)."""
    own = StoreProcess()
    yield own
    own.close()


@pytest.fixture
def own_store() -> StoreProcess:
    """A store process of the test's own, for a test that stops it."""
    own = StoreProcess()
    yield own
    own.close()


def _start_run(store: StoreProcess, uri: str, spool_path: Path):
    store.open(uri, "repro").result()
    tags, params, config = {"repro.model": "m"}, {"seed": "0"}, {"seed": 0}
    return store.start_run(uri, "repro", "r", None, tags, params, config, spool_path)


def _spooled(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_run_in_the_store_process_gets_its_params_config_records_and_status(
    store: StoreProcess, tracking_uri: str, tmp_path: Path
) -> None:
    sink = _start_run(store, tracking_uri, tmp_path / "spool.jsonl")
    for epoch in range(3):
        sink.log_metrics({"epoch_energy_j": 10.0 * epoch}, step=epoch)
    sink.set_tags({names.TAG_END_REASON: "completed"})
    assert sink.close(timeout_s=60) is None  # everything reached the store
    sink.end_run("FINISHED")

    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("repro").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "r"
    assert run.data.params == {"seed": "0"}
    assert run.data.tags["repro.model"] == "m" and run.data.tags[names.TAG_END_REASON] == "completed"
    history = client.get_metric_history(run.info.run_id, "epoch_energy_j")
    assert [(m.step, m.value) for m in history] == [(0, 0.0), (1, 10.0), (2, 20.0)]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.yaml"]
    assert not (tmp_path / "spool.jsonl").exists()


def test_the_store_process_ignores_a_ctrl_c_meant_for_the_job(
    store: StoreProcess, tracking_uri: str, tmp_path: Path
) -> None:
    sink = _start_run(store, tracking_uri, tmp_path / "spool.jsonl")
    os.kill(store._process.pid, signal.SIGINT)  # as a terminal's Ctrl-C reaches the whole process group
    sink.log_metrics({"f1": 0.5})
    assert sink.close(timeout_s=60) is None
    sink.end_run("KILLED")  # the job says how its run ended, after the Ctrl-C
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("repro").experiment_id])
    assert (run.info.status, run.data.metrics["f1"]) == ("KILLED", 0.5)


def test_records_queued_after_the_store_process_died_go_to_the_spool_file(
    own_store: StoreProcess, tracking_uri: str, tmp_path: Path
) -> None:
    store = own_store
    spool_path = tmp_path / "spool.jsonl"
    sink = _start_run(store, tracking_uri, spool_path)
    store._process.kill()
    wait_for(lambda: store.ended is not None, "the job to notice that its store process is gone", poll_s=0.05)
    sink.log_metrics({"energy_j": 12.5})
    assert sink.close(timeout_s=5) == spool_path
    assert "store process ended" in sink.last_error
    with pytest.raises(StoreProcessError, match="store process ended"):
        sink.end_run("FINISHED")
    assert [(r["key"], r["value"], r["run_id"]) for r in _spooled(spool_path)] == [
        ("energy_j", 12.5, sink.run_id)
    ]


def test_when_the_job_process_dies_its_records_are_in_the_store_or_the_spool_file_and_the_store_process_ends(
    tracking_uri: str, tmp_path: Path
) -> None:
    # A job process that hands 200 metrics to its store process and dies at once (SIGKILL: no clean-up of
    # its own). Whatever the store process had not delivered when the pipe closed, it writes to the spool
    # file; then it exits. (Records still queued in the job's own memory die with it, as they always did.)
    spool_path = tmp_path / "spool.jsonl"
    job = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from repro.store_process import StoreProcess
        store = StoreProcess()
        store.open({tracking_uri!r}, "repro").result()
        spool_path = Path({str(spool_path)!r})
        sink = store.start_run({tracking_uri!r}, "repro", "r", None, {{}}, {{}}, {{}}, spool_path)
        for step in range(200):
            sink.log_metrics({{"loss": float(step)}}, step=step)
        # Answered only once the store process has read every line before it: the records are its own.
        store.open({tracking_uri!r}, "repro").result()
        print(store._process.pid, sink.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", job], capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    store_pid, run_id = done.stdout.split()

    def _store_process_ended() -> bool:
        try:
            os.kill(int(store_pid), 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(_store_process_ended, "the store process to end after its job died", poll_s=0.1)
    client = MlflowClient(tracking_uri)
    # RUNNING until a later job finds it dead (repro.reconcile); never FINISHED by MLflow's exit hook.
    assert client.get_run(run_id).info.status == "RUNNING"
    delivered = {int(m.step) for m in client.get_metric_history(run_id, "loss")}
    spooled = {record["step"] for record in _spooled(spool_path) if record["kind"] == "metric"}
    assert delivered | spooled == set(range(200)), "no record lost"


def test_a_store_process_asked_nothing_ends_when_its_job_closes_the_pipe() -> None:
    # A refused command line or `--help` ends the job before it asks anything: no process is left behind.
    store = StoreProcess()
    store.close()
    assert store._process.wait(timeout=300) == 0


def test_a_run_whose_status_waits_in_the_spool_file_leaves_the_next_run_unnested(
    store: StoreProcess, tracking_uri: str, tmp_path: Path
) -> None:
    # As when the store was away at a job's end: its status goes to the spool file, the run stays open.
    first = _start_run(store, tracking_uri, tmp_path / "first.jsonl")
    first.spool_status("FINISHED")
    second = _start_run(store, tracking_uri, tmp_path / "second.jsonl")
    assert second.close(timeout_s=60) is None
    second.end_run("FINISHED")
    client = MlflowClient(tracking_uri)
    assert "mlflow.parentRunId" not in client.get_run(second.run_id).data.tags
    assert client.get_run(first.run_id).info.status == "RUNNING"  # until its spool file is imported
    assert [r["status"] for r in _spooled(tmp_path / "first.jsonl")] == ["FINISHED"]


@pytest.mark.parametrize(
    ("argv", "starts"),
    [
        (["model=resnet18"], True),
        (["-m", "model=resnet18,vgg16"], True),
        (["--multirun", "model=resnet18"], True),
        (["--help"], False),
        (["--cfg", "job"], False),
        (["--info=searchpath"], False),
    ],
)
def test_only_a_command_that_may_run_a_job_starts_a_store_process(monkeypatch, argv, starts) -> None:
    started: list[bool] = []
    monkeypatch.setattr(store_process, "start", lambda: started.append(True))
    store_process.start_for(argv)
    assert bool(started) == starts
