"""Fault injection: kills, signals, a full disk, a vanishing MLflow server and two TMPDIRs.

Each test injects one fault that real clusters produce and checks what a user would look at
afterwards: every run's final state, that the energy counts training only, and that no finished
epoch's metrics were lost.
"""

from __future__ import annotations

import csv
import datetime
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tests.faults.helpers import MlflowServer, children, epoch_values, parents, runs, start_job, wait_for

from repro import loop, recorder, sigterm, train
from repro.energy import lock as lock_module
from repro.energy import measurement_lock
from repro.energy import monitor as monitor_module
from repro.energy.lock import LOCK_DIR_ENV, lock_path
from repro.errors import UserError
from repro.tracking import PARENT_RUN_FILE
from repro.train import JobContext, run

pytestmark = pytest.mark.slow

LONG = "training.finetune_epochs=500"


def _has_an_epoch(uri: str, sweep_dir: Path) -> bool:
    recorded = runs(uri, ready=sweep_dir / PARENT_RUN_FILE)
    return any("train_loss" in child.data.metrics for child in children(recorded))


def _beats_renewed(recorded: list) -> bool:
    """Whether the parent and its child each have a heartbeat renewed over 1 s after the run's start."""
    return len(recorded) == 2 and all(
        float(run.data.tags.get("repro.heartbeat", "0")) > run.info.start_time / 1000 + 1 for run in recorded
    )


def _lock_held_by(path: Path, pid: int) -> bool:
    """Whether process `pid` holds a flock on `path`, read from /proc/locks (taking it would race the job)."""
    if not path.exists():
        return False
    inode = f":{path.stat().st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and str(pid) in fields and any(f.endswith(inode) for f in fields):
            return True
    return False


def _history_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _assert_no_epoch_lost(uri: str, child, history_csv: Path) -> None:
    """Every epoch the run counts is in MLflow, step by step, and in history.csv."""
    trained = int(child.data.metrics["trained_epochs"])
    assert trained >= 1
    assert epoch_values(uri, child.info.run_id, "train_loss") == list(range(trained))
    assert [int(row["epoch"]) for row in _history_rows(history_csv)] == list(range(trained))


def test_kill_9_then_the_next_job_ends_the_dead_runs_failed(
    smoke_overrides, tracking_uri, tmp_path, fault_env, compose_config
):
    sweep_dir = tmp_path / "sweep"
    job = start_job(
        "-m", *smoke_overrides, LONG, "tracking.heartbeat_s=1", f"hydra.sweep.dir={sweep_dir}", env=fault_env
    )  # fmt: skip
    try:
        wait_for(lambda: _has_an_epoch(tracking_uri, sweep_dir), "the job's first epoch", job=job)
        wait_for(
            lambda: _beats_renewed(runs(tracking_uri, ready=sweep_dir / PARENT_RUN_FILE)),
            "the parent's and the child's heartbeats renewed after their starts",
            job=job,
        )  # then the check below means something, however long the start took
        job.send_signal(signal.SIGKILL)  # what the OOM killer or a node failure does
        job.wait(timeout=30)
    finally:
        job.kill()
        job.communicate()
    left = runs(tracking_uri)
    assert sorted(r.info.status for r in left) == ["RUNNING", "RUNNING"]  # the parent and its child
    steps_before = epoch_values(tracking_uri, children(left)[0].info.run_id, "train_loss")

    run(compose_config("seed=1"), JobContext(output_dir=tmp_path / "next"))  # the next job on this host

    after = {r.info.run_id: r for r in runs(tracking_uri)}
    for dead in left:
        ended = after[dead.info.run_id]
        assert ended.info.status == "FAILED", ended.info.run_name
        last_beat_s = float(ended.data.tags["repro.heartbeat"])
        assert last_beat_s > dead.info.start_time / 1000 + 1  # renewed while it ran, not only at its start
        since = datetime.datetime.fromtimestamp(last_beat_s, tz=datetime.timezone.utc)
        since = since.isoformat(timespec="seconds")
        assert ended.data.tags["repro.end_reason"] == f"process died (no heartbeat since {since})"
    dead_child = children(left)[0].info.run_id
    assert epoch_values(tracking_uri, dead_child, "train_loss") == steps_before  # its epochs are kept
    rows = _history_rows(sweep_dir / "0" / "history.csv")
    assert len(rows) >= len(steps_before) >= 1  # and its history.csv, written after every epoch
    assert after[dead_child].data.tags["repro.pid"].isdigit()
    assert [r.info.status for r in after.values() if r.info.run_id not in {d.info.run_id for d in left}] == [
        "FINISHED"
    ]


def test_sigterm_in_a_sweep_ends_child_and_parent_killed_with_a_summary(
    smoke_overrides, tracking_uri, tmp_path, fault_env
):
    sweep_dir = tmp_path / "sweep"
    job = start_job("-m", "seed=0,1", *smoke_overrides, LONG, f"hydra.sweep.dir={sweep_dir}", env=fault_env)
    try:
        wait_for(lambda: _has_an_epoch(tracking_uri, sweep_dir), "the first job's first epoch", job=job)
        job.send_signal(signal.SIGTERM)
        out, err = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "Traceback" not in out
    assert "Sweep summary (1 jobs" in out and "terminated (SIGTERM)" in out
    assert "resume=true" in err

    recorded = runs(tracking_uri)
    (parent,) = parents(recorded)
    (child,) = children(recorded)  # the second job never started
    assert parent.info.status == "KILLED"
    assert parent.data.tags["repro.end_reason"] == "terminated (SIGTERM)"
    assert child.info.status == "KILLED"
    assert child.data.tags["repro.end_reason"] == "terminated (SIGTERM)"
    assert child.data.metrics["energy_total_j"] > 0
    _assert_no_epoch_lost(tracking_uri, child, sweep_dir / "0" / "history.csv")


def test_sigterm_during_a_cooldown_closes_the_sweep_at_once(
    smoke_overrides, tracking_uri, tmp_path, fault_env
):
    sweep_dir = tmp_path / "sweep"
    lock_dir = tmp_path / "lock"  # the job's own, so that the test can see when job 1 takes it
    lock_dir.mkdir()
    job = start_job(
        "-m",
        "seed=0,1",
        *smoke_overrides,
        "energy.cooldown_s=3600",
        f"hydra.sweep.dir={sweep_dir}",
        env={**fault_env, LOCK_DIR_ENV: str(lock_dir)},
    )
    try:
        # Job 0 releases the lock before Hydra creates job 1's folder; job 1 takes it, then cools down
        # for an hour before its run starts. So folder 1 plus a held lock means job 1 is in its cooldown.
        wait_for(
            lambda: (
                [c.info.status for c in children(runs(tracking_uri))] == ["FINISHED"]
                and (sweep_dir / "1").is_dir()
                and _lock_held_by(lock_dir / lock_path().name, job.pid)
            ),
            "the first job to finish and the second to begin its cooldown",
            poll_s=0.2,
            job=job,
        )
        signalled = time.monotonic()
        job.send_signal(signal.SIGTERM)
        out, err = job.communicate(timeout=600)
        stopped_after_s = time.monotonic() - signalled
    finally:
        job.kill()
    assert job.returncode == 143, err[-2000:]
    assert stopped_after_s < 600  # not after the hour's cooldown
    assert "Traceback" not in err
    assert "Sweep summary (1 jobs" in out
    recorded = runs(tracking_uri)
    assert [c.info.status for c in children(recorded)] == ["FINISHED"]  # job 1's run never started
    assert parents(recorded)[0].info.status == "KILLED"


def test_sigterm_during_the_idle_baseline_ends_the_run_killed(
    compose_config, tracking_uri, tmp_path, monkeypatch
):
    in_baseline = threading.Event()
    baseline_ran_out = threading.Event()
    real_countdown = monitor_module.countdown

    def _countdown(seconds: float, label: str, *args, **kwargs) -> None:
        if label == "idle baseline":
            in_baseline.set()
        real_countdown(seconds, label, *args, **kwargs)
        if label == "idle baseline":
            baseline_ran_out.set()

    monkeypatch.setattr(monitor_module, "countdown", _countdown)

    def _terminate_during_the_baseline() -> None:
        if in_baseline.wait(timeout=600):
            time.sleep(0.2)  # into the countdown; a SIGTERM just before it must stop the job all the same
            os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=_terminate_during_the_baseline, daemon=True)
    killer.start()
    try:
        with pytest.raises(loop.TrainingStopped):
            run(compose_config("energy.baseline_s=300"), JobContext(output_dir=tmp_path / "job"))
    finally:
        sigterm.STOP_REQUESTED.clear()
        killer.join(timeout=5)
    assert in_baseline.is_set()
    assert not baseline_ran_out.is_set()  # the 300 s baseline was cut short
    (recorded,) = runs(tracking_uri)
    assert recorded.info.status == "KILLED"
    assert recorded.data.tags["repro.end_reason"] == "terminated (SIGTERM)"
    assert recorded.data.metrics["trained_epochs"] == 0


@pytest.fixture
def full_disk(tmp_path: Path, monkeypatch) -> Path:
    """A folder on a 512 KiB tmpfs that fills in the first epoch; where none can be mounted, writes of
    history.csv fail as if it were full."""
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    try:
        if mounted:
            filler = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                while True:
                    os.write(filler, b"\0" * 4096)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                # One page left: CodeCarbon's emissions.csv, opened when the meters start, fits; the first
                # epoch's history.csv does not, so the disk fills mid-run, as on a cluster node.
                os.ftruncate(filler, os.fstat(filler).st_size - 4096)
            finally:
                os.close(filler)
        else:  # no root or no tmpfs: a fake full filesystem at the one write the test checks

            def _disk_full(self: recorder.EpochRecorder) -> None:
                self.history_path.parent.mkdir(parents=True, exist_ok=True)
                self.history_path.touch()
                raise OSError(errno.ENOSPC, "No space left on device", str(self.history_path))

            monkeypatch.setattr(recorder.EpochRecorder, "write_history", _disk_full)
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_fails_the_run_cleanly_with_what_was_measured(
    compose_config, tracking_uri, full_disk, capsys
):
    output_dir = full_disk / "job"
    with pytest.raises(OSError):
        run(compose_config(), JobContext(output_dir=output_dir))
    (recorded,) = runs(tracking_uri)
    assert recorded.info.status == "FAILED"
    reason = recorded.data.tags["repro.end_reason"]
    assert (
        reason.startswith(f"disk full: cannot write {output_dir / 'history.csv'} (") and "MB free)" in reason
    )
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error: disk full")] == [f"error: {reason}"]
    assert "history.csv" in recorded.data.tags["repro.artifact_errors"]  # said, not silent
    assert recorded.data.metrics["energy_total_j"] > 0  # the energy measured is kept
    assert recorded.data.metrics["trained_epochs"] == 1
    assert epoch_values(tracking_uri, recorded.info.run_id, "train_loss") == [0]
    logged = [item.path for item in MlflowClient(tracking_uri).list_artifacts(recorded.info.run_id)]
    assert "history.csv" not in logged  # no empty artifact


def test_mlflow_server_killed_and_restarted_mid_sweep_loses_nothing_and_bills_no_waiting(
    mlflow_server: MlflowServer, data_cache, tmp_path, fault_env
):
    uri = mlflow_server.uri
    sweep_dir = tmp_path / "sweep"
    job = start_job(
        "-m", "seed=0,1", "experiment=smoke", f"tracking.uri={uri}", f"dataset.cache_dir={data_cache}",
        "energy=codecarbon", "training.finetune_epochs=5", "tracking.flush_timeout_s=300",
        f"hydra.sweep.dir={sweep_dir}", env=fault_env,
    )  # fmt: skip
    try:
        wait_for(lambda: _has_an_epoch(uri, sweep_dir), "the first job's first epoch", poll_s=0.2, job=job)
        mlflow_server.kill()
        down_at = time.monotonic()
        time.sleep(6)  # an outage longer than the 5 s slack below by construction, however fast the restart
        mlflow_server.start()
        outage_s = time.monotonic() - down_at
        out, err = job.communicate(timeout=600)
    finally:
        job.kill()
    assert job.returncode == 0, err[-3000:]
    recorded = runs(uri)
    assert [p.info.status for p in parents(recorded)] == ["FINISHED"]
    jobs = sorted(children(recorded), key=lambda r: r.data.tags["repro.job_num"])
    assert [c.info.status for c in jobs] == ["FINISHED", "FINISHED"]
    for num, child in enumerate(jobs):
        history_csv = sweep_dir / str(num) / "history.csv"
        _assert_no_epoch_lost(uri, child, history_csv)
        training_s = sum(float(row["epoch_duration_s"]) for row in _history_rows(history_csv))
        # The energy window is the training: no retry waiting is billed to it.
        assert child.data.metrics["duration_s"] < training_s + 5, (
            child.data.metrics["duration_s"],
            training_s,
        )
        print(f"job {num}: duration_s={child.data.metrics['duration_s']:.1f}, epochs={training_s:.1f} s")
    print(f"outage_s={outage_s:.1f}")
    assert outage_s > 5  # the check above is meaningful: the outage was longer than the slack
    assert not list(sweep_dir.glob("*/mlflow_spool.jsonl"))  # everything was delivered in the end


_HOLDER = """
import sys
from repro.energy import lock, measurement_lock
lock.LOCK_DIRS = (lock.Path(sys.argv[1]),)
with measurement_lock(True):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_the_lock_holds_across_two_tmpdirs(tmp_path: Path, monkeypatch) -> None:
    first, second = tmp_path / "tmp-a", tmp_path / "tmp-b"
    first.mkdir()
    second.mkdir()
    # The machine's lock folders, as with no REPRO_LOCK_DIR, but a private one in their place: the
    # machine's own lock may be held by a real measured job (another user's, or another test session's).
    machine_lock_dir = tmp_path / "run-lock"
    machine_lock_dir.mkdir()
    env = {key: value for key, value in os.environ.items() if key != LOCK_DIR_ENV}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(machine_lock_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env={**env, "TMPDIR": str(first)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(lock_module, "LOCK_DIRS", (machine_lock_dir,))
        monkeypatch.delenv(LOCK_DIR_ENV)
        monkeypatch.setenv("TMPDIR", str(second))
        monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() now answers the second TMPDIR
        assert first not in lock_path().parents and second not in lock_path().parents
        with pytest.raises(UserError, match=f"pid {holder.pid}"), measurement_lock(True):
            pass
    finally:
        holder.communicate("\n", timeout=30)


def test_a_job_that_fails_in_a_sweep_is_one_line_and_the_sweep_goes_on(
    smoke_overrides, tracking_uri, tmp_path, fault_env
):
    sweep_dir = tmp_path / "sweep"
    job = start_job(  # job 0's loss turns NaN at run time, after preflight passed
        "-m", "training.head_lr=1e30,0.01", *smoke_overrides, f"hydra.sweep.dir={sweep_dir}", env=fault_env
    )  # fmt: skip
    try:
        out, err = job.communicate(timeout=600)
    finally:
        job.kill()
    result = subprocess.CompletedProcess(job.args, job.returncode, out, err)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: job 0 (training.head_lr=1e+30 "), errors
    assert ") failed: TrainingDiverged: training diverged" in errors[0]

    recorded = runs(tracking_uri)
    (parent,) = parents(recorded)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["repro.end_reason"] == "1 job(s) did not finish"
    jobs = sorted(children(recorded), key=lambda r: r.data.tags["repro.job_num"])
    assert [c.info.status for c in jobs] == ["FAILED", "FINISHED"]  # the sweep went on to job 1
    reason = jobs[0].data.tags["repro.end_reason"]
    assert "training diverged" in reason
    summary = result.stdout.split("Sweep summary (2 jobs", 1)[1].splitlines()
    failed_row = [line for line in summary if line.startswith(f"  {jobs[0].info.run_name} ")]
    assert (
        [line for line in summary if line.split()[1:2] == ["FAILED"]]
        == [line for line in failed_row if line.endswith(f"  {reason}")]
        != []
    )  # the failed job's row, with its one-line reason at the end
    assert jobs[0].data.metrics["energy_total_j"] > 0  # what it measured before it failed is kept


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Path:
    """A 16 MiB tmpfs for a test to fill; skipped where tmpfs cannot be mounted (needs root)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)]
    mounted = subprocess.run(mount, capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'}); needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    """Write a file into `folder` until its filesystem is full; returns the file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_the_mlflow_database_on_a_full_disk_spools_the_run_and_one_command_imports_it(
    compose_config, small_tmpfs, tmp_path, monkeypatch, capfd
):
    db = small_tmpfs / "mlflow.db"
    uri = f"sqlite:///{db}"
    filled: list[Path] = []
    real_on_epoch_end = recorder.EpochRecorder.on_epoch_end

    def _fill_after_the_run_started(self: recorder.EpochRecorder, record: loop.EpochRecord) -> None:
        if not filled:
            filled.append(_fill(small_tmpfs))  # the disk fills mid-run: the first epoch cannot be recorded
        real_on_epoch_end(self, record)

    monkeypatch.setattr(recorder.EpochRecorder, "on_epoch_end", _fill_after_the_run_started)
    output_dir = tmp_path / "job"
    with pytest.raises(OSError):
        run(
            compose_config(f"tracking.uri={uri}", "tracking.flush_timeout_s=3"),
            JobContext(output_dir=output_dir),
        )
    out, err = capfd.readouterr()
    assert "Traceback" not in err + out
    spool_file = output_dir / "mlflow_spool.jsonl"
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: disk full: cannot write {db} (") and "MB free)" in line, line
    assert line.endswith(f"import them with: python -m repro.spool {spool_file}"), line
    assert spool_file.is_file()  # nothing lost: the run's records are in its folder

    filled[0].unlink()  # space is freed
    command = line.split("import them with: ", 1)[1].split()
    imported = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, check=False)
    assert imported.returncode == 0, imported.stderr[-2000:]

    (recorded,) = runs(uri)
    assert recorded.info.status == "FINISHED"  # training completed; its record is whole now
    assert recorded.data.tags["repro.end_reason"] == "completed"
    trained = int(recorded.data.metrics["trained_epochs"])
    assert trained == 2
    assert epoch_values(uri, recorded.info.run_id, "train_loss") == [0, 1]
    assert recorded.data.metrics["energy_total_j"] > 0


def test_codecarbon_unable_to_write_its_csv_stops_the_job_before_training_in_one_line(
    smoke_overrides, tracking_uri, tmp_path, monkeypatch, capfd
):
    """Its file is written from the start, so a job whose energy file cannot be written never trains."""
    run_dir = tmp_path / "run"
    (run_dir / "energy" / "emissions.csv").mkdir(parents=True)  # a folder where CodeCarbon writes its file
    monkeypatch.setattr(sys, "argv", ["repro-train", *smoke_overrides, f"hydra.run.dir={run_dir}"])
    with pytest.raises(SystemExit) as stopped:  # repro-train's main, in-process: not a test of the process
        train.main()
    stderr = capfd.readouterr().err
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert "emissions.csv" in errors[0] and "codecarbon" in errors[0]
    assert stopped.value.code == 2
    (recorded,) = runs(tracking_uri)
    assert recorded.info.status == "FAILED"  # never FINISHED in silence
    assert "emissions.csv" in recorded.data.tags["repro.end_reason"]
    assert recorded.data.metrics.get("trained_epochs", 0) == 0  # nothing trained unmeasured
