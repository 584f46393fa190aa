"""Real services for the cluster tests: a single-node SLURM cluster and an MLflow tracking server.

Both are started once per session on this machine and stopped by their PIDs afterwards. Without
SLURM's binaries (or without root) the cluster tests skip, unless REPRO_REQUIRE_SLURM=1 (as in CI),
where they fail instead of silently skipping.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.slurm.cluster import SlurmCluster, missing_binaries

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Test-only `gpu=` profiles (fake_a, fake_b, fake_broken), mapped to the test node's features.
TEST_CONF_DIR = Path(__file__).parent / "conf"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: needs a real SLURM cluster (started by the fixture)")


def _unavailable(reason: str) -> None:
    if os.environ.get("REPRO_REQUIRE_SLURM") == "1":
        pytest.fail(f"REPRO_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """munged, slurmctld and slurmd on this machine; SLURM_CONF points clients at them."""
    missing = missing_binaries()
    if missing:
        _unavailable(
            f"no SLURM here ({', '.join(missing)} missing); install with: apt-get install -y slurm-wlm munge"
        )
    if os.geteuid() != 0:
        _unavailable("the test SLURM cluster runs its daemons as root, and these tests do not run as root")
    cluster = SlurmCluster(root=tmp_path_factory.mktemp("slurm"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(cluster.conf))
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


def _tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-30:])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1, started by the script behind `make mlflow-server`."""
    server_dir = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_SERVER_DIR": str(server_dir),
        "MLFLOW": str(Path(sys.executable).with_name("mlflow")),
        "MLFLOW_WORKERS": "1",
    }
    log = (server_dir / "server.log").open("w")
    # Its own session, so that the server and its uvicorn workers stop together.
    server = subprocess.Popen(
        [str(REPO_ROOT / "scripts" / "mlflow_server.sh")], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"mlflow server exited with {server.returncode}:\n{_tail(server_dir / 'server.log')}"
                )
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"mlflow server did not answer within 120 s:\n{_tail(server_dir / 'server.log')}"
                    )
                time.sleep(0.5)
        yield uri
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()
