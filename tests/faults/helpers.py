"""Helpers of the fault-injection suite: jobs to interrupt, a real MLflow server to kill, runs to wait for."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from tests.support import REPO_ROOT, cli


def start_job(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """`python -m repro.train ARGS` in the background, its output captured."""
    return subprocess.Popen(
        cli(*args), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def runs(uri: str, experiment: str = "repro", ready: Path | None = None) -> list[Run]:
    """Every run of the experiment, oldest first; [] before the store or the experiment exists.

    Args:
        ready: a file the job writes once its store is set up (the sweep's parent run id); until it
            exists the store is left alone, since opening an SQLite store that a job is still creating
            races with its schema migration.
    """
    if ready is not None and not ready.exists():
        return []
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return []
    try:
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    except Exception:  # the store is being created or the server is down: nothing to see yet
        return []


def wait_for(
    condition: Callable[[], bool],
    what: str,
    deadline_s: float = 600,  # for a hung job, not a speed limit: a loaded machine may take minutes
    poll_s: float = 0.5,
    job: subprocess.Popen[str] | None = None,
) -> None:
    """Poll `condition` until it holds; else fail naming `what`, with the end of `job`'s output."""
    stop = time.monotonic() + deadline_s
    while time.monotonic() < stop:
        if condition():
            return
        if job is not None and job.poll() is not None:
            break
        time.sleep(poll_s)
    output = ""
    if job is not None:
        job.kill()
        out, err = job.communicate()
        output = f"\nexit {job.returncode}\nstdout: {out[-1500:]}\nstderr: {err[-3000:]}"
    raise AssertionError(f"timed out waiting for: {what}{output}")


def children(all_runs: list[Run]) -> list[Run]:
    return [run for run in all_runs if run.data.tags.get("repro.kind") != "sweep"]


def parents(all_runs: list[Run]) -> list[Run]:
    return [run for run in all_runs if run.data.tags.get("repro.kind") == "sweep"]


def epoch_values(uri: str, run_id: str, key: str) -> list[int]:
    """The steps at which a per-epoch metric was recorded."""
    return sorted(metric.step for metric in MlflowClient(uri).get_metric_history(run_id, key))


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (`scripts/mlflow_server.sh`) that a test can kill and restart."""

    def __init__(self, server_dir: Path) -> None:
        self.server_dir = server_dir
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(self.port),
            "MLFLOW_SERVER_DIR": str(self.server_dir),
            "MLFLOW": str(Path(sys.executable).with_name("mlflow")),
            "MLFLOW_WORKERS": "1",
        }
        log = (self.server_dir / "server.log").open("a")
        # Its own session, so that the server and its uvicorn worker die together.
        self.process = subprocess.Popen(
            [str(REPO_ROOT / "scripts" / "mlflow_server.sh")], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_for(self.healthy, f"mlflow server on port {self.port}", deadline_s=180)

    def healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.server_dir / "server.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"mlflow server exited with {self.process.returncode}:\n{log}")
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL the server and its workers, as a crash or an OOM kill would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
