"""Jobs that start at once on a store that does not exist yet: it is created once, under a lock.

MLflow creates and migrates a new SQLite store's tables without a lock, so two processes doing it at
once failed (alembic: "Online migration expected to match one row"). `repro.tracking.open_store` holds
an exclusive lock on the database's folder while it creates or opens the store.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tests.support import REPO_ROOT

from repro import tracking


def _tables(db_path: Path) -> list[str]:
    if not db_path.exists():
        return []
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as connection:
        return [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]


def test_a_new_store_waits_for_the_job_that_is_creating_it(tmp_path: Path) -> None:
    db_path = tmp_path / "mlflow.db"
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(folder, fcntl.LOCK_EX)  # as another job creating the store holds it
    opener = threading.Thread(target=tracking.open_store, args=(f"sqlite:///{db_path}",))
    try:
        opener.start()
        opener.join(timeout=2)
        assert opener.is_alive()  # waiting for the lock
        assert _tables(db_path) == []  # and has created nothing meanwhile
    finally:
        os.close(folder)
    opener.join(timeout=120)
    assert not opener.is_alive()
    assert "experiments" in _tables(db_path) and "alembic_version" in _tables(db_path)


_OPEN = "import sys; from repro.tracking import open_store, open_experiment; " \
        "open_store(sys.argv[1]); open_experiment(sys.argv[1], 'repro')"  # fmt: skip


@pytest.mark.slow
def test_processes_that_open_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    openers = [
        subprocess.Popen([sys.executable, "-c", _OPEN, uri], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    errors = [opener.communicate(timeout=300)[1] for opener in openers]
    assert [opener.returncode for opener in openers] == [0, 0, 0], errors
    assert not any("Online migration" in error for error in errors)
    assert MlflowClient(uri).get_experiment_by_name("repro") is not None
