"""A job stopped (SIGSTOP, Ctrl-Z), then continued: its pause is recorded and flagged, not billed as training.

Every meter measures the whole machine, which goes on drawing power while the job is stopped, so the
pause's share of the energy could only be estimated. The run keeps what was measured, records `paused_s`,
says so in its end reason, and `repro.paper` leaves it out.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient
from tests.faults.helpers import runs
from tests.support import REPO_ROOT

from repro import spool
from repro.spool import PAUSE_PERIODS, PauseClock
from repro.train import JobContext, run


class _FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_a_tick_several_periods_late_is_a_pause_and_a_little_late_is_not() -> None:
    clock = _FakeClock()
    pauses = PauseClock(period_s=1.0, clock=clock)
    for late_s in (0.0, 0.5, PAUSE_PERIODS * 1.0):  # busy or loaded, not stopped
        clock.now_s += 1.0 + late_s
        assert pauses.tick() == 0.0
    clock.now_s += 1.0 + 150.0  # stopped for 150 s
    assert pauses.tick() == 150.0
    clock.now_s += 1.0
    assert pauses.tick() == 0.0
    assert pauses.paused_s == 150.0


_CHILD = """
import sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient
from repro.spool import RunSpool
uri = sys.argv[1]
client = MlflowClient(uri)
run_id = client.create_run(client.create_experiment("pause")).info.run_id
sink = RunSpool(uri, run_id, Path(sys.argv[2]), heartbeat_s=0.05)
print("ready", flush=True)
sys.stdin.readline()
sink.stop_heartbeat()
print(sink.pauses.paused_s, flush=True)
"""


def test_a_real_sigstop_is_measured_by_the_heartbeat(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "spool.jsonl")],
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(1.5)  # the child cannot run meanwhile, however fast or slow the machine
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate("stop\n", timeout=60)
    finally:
        child.kill()
    assert float(out.strip()) >= 1.5 - 2 * 0.05  # a slow machine only makes it longer


def test_a_paused_job_finishes_with_its_pause_recorded_and_flagged(
    compose_config, tracking_uri: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    class _StoppedOnce(PauseClock):
        """The real clock, 100 s later from the first heartbeat on: as if the job was stopped then."""

        def __init__(self, period_s: float) -> None:
            self.calls = 0
            super().__init__(period_s, clock=self._clock_with_a_stop)

        def _clock_with_a_stop(self) -> float:
            self.calls += 1
            return time.monotonic() + (100.0 if self.calls > 1 else 0.0)

    monkeypatch.setattr(spool, "PauseClock", _StoppedOnce)
    monkeypatch.chdir(tmp_path)  # MLflow's ./mlruns
    run(compose_config("tracking.heartbeat_s=0.05"), JobContext(output_dir=tmp_path / "job"))

    (recorded,) = runs(tracking_uri)
    assert recorded.info.status == "FINISHED"
    assert recorded.data.metrics["paused_s"] >= 100.0
    assert re.search(r"; stopped for 1\d\d s \(SIGSTOP\?\)", recorded.data.tags["repro.end_reason"])
    assert re.search(r"warning: this job was stopped for 1\d\d s", capsys.readouterr().err)


def test_paper_leaves_out_a_paused_run_naming_the_pause(tmp_path: Path) -> None:
    from tests.test_refused_inputs import _log_runs, _paper_config

    from repro import paper

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _log_runs(uri, {("resnet18", "cpu"): [1.0, 1.1, 1.2, 1.3], ("vgg16", "cpu"): [2.0, 2.1, 2.2]})
    client = MlflowClient(uri)
    paused = client.search_runs([client.get_experiment_by_name("mine").experiment_id])[0]
    client.log_metric(paused.info.run_id, "paused_s", 150.0)
    paper.run(_paper_config(tmp_path, "source=mlflow", f"mlflow.tracking_uri={uri}", "mlflow.experiment=mine",
                            "figures=false"))  # fmt: skip
    excluded = (tmp_path / "tables" / "excluded_runs.csv").read_text()
    assert paused.info.run_id in excluded and "stopped for 150 s" in excluded
