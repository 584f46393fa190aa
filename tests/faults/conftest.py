"""Fixtures of the fault-injection suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.faults.helpers import MlflowServer


@pytest.fixture
def fault_env(cli_env: dict[str, str]) -> dict[str, str]:
    """The CLI's environment with MLflow's HTTP client retrying briefly, so an outage shows in seconds."""
    return {
        **cli_env,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    server_dir = tmp_path / "mlflow-server"
    server_dir.mkdir()
    server = MlflowServer(server_dir)
    server.start()
    try:
        yield server
    finally:
        server.kill()
