"""The machine-wide lock that keeps two measured jobs from counting each other's energy."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from repro.energy import measurement_lock
from repro.energy.lock import lock_path
from repro.errors import UserError

_HOLDER = """
import sys, time
from repro.energy import measurement_lock
with measurement_lock(True):
    print("held", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_a_second_measured_job_is_refused(temp_dir: Path) -> None:
    env = {**os.environ, "TMPDIR": str(temp_dir)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock_path().parent == temp_dir
        with pytest.raises(UserError) as error, measurement_lock(True):
            pass
        message = str(error.value)
        assert f"pid {holder.pid}" in message
        assert "count each other's energy" in message and "one after another" in message
        with measurement_lock(False):  # energy.lock=false measures anyway
            pass
    finally:
        holder.communicate("\n", timeout=30)
    with measurement_lock(True):  # released when the holder ended
        pass


def test_a_lock_left_by_a_dead_job_is_taken_over(temp_dir: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock_path().write_text(dead.stdout)  # the file stays behind, but no process holds it
    with measurement_lock(True):
        assert lock_path().read_text().strip() == str(os.getpid())
