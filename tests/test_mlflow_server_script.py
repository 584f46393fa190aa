"""scripts/mlflow_server.sh (`make mlflow-server`) warns when it would serve runs without authentication."""

from __future__ import annotations

import os
import subprocess

import pytest
from tests.support import REPO_ROOT


def _start(tmp_path, host: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_HOST": host, "MLFLOW_SERVER_DIR": str(tmp_path), "MLFLOW": "/bin/echo"}
    return subprocess.run(
        [str(REPO_ROOT / "scripts" / "mlflow_server.sh"), *args], env=env, capture_output=True, text=True,
        timeout=30, check=True,
    )  # fmt: skip


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3"])
def test_binding_beyond_loopback_without_auth_warns(tmp_path, host):
    result = _start(tmp_path, host)
    assert "warning: binding MLflow to " + host + " without authentication" in result.stderr
    assert "--app-name basic-auth" in result.stderr
    assert f"server --host {host}" in result.stdout  # it still starts: the user may have a firewall


@pytest.mark.parametrize(("host", "args"), [("127.0.0.1", ()), ("0.0.0.0", ("--app-name", "basic-auth"))])
def test_loopback_or_basic_auth_gives_no_warning(tmp_path, host, args):
    result = _start(tmp_path, host, *args)
    assert "warning" not in result.stderr
    assert "--app-name basic-auth" in result.stdout or host == "127.0.0.1"
