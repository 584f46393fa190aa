"""The machine-wide lock that keeps two measured jobs from counting each other's energy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro.energy import lock as lock_module
from repro.energy import measurement_lock
from repro.energy.lock import LOCK_DIR_ENV, lock_path
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
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path))
    return tmp_path


def test_a_second_measured_job_is_refused(temp_dir: Path) -> None:
    env = dict(os.environ)
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


def test_a_symlink_at_the_lock_path_is_refused_and_its_target_kept(temp_dir: Path) -> None:
    victim = temp_dir / "victim.txt"
    victim.write_text("precious\n")
    lock_path().symlink_to(victim)
    with pytest.raises(UserError, match="symbolic link"), measurement_lock(True):
        pass
    assert victim.read_text() == "precious\n"


def test_the_lock_falls_back_when_the_first_folder_is_not_writable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(LOCK_DIR_ENV, raising=False)
    missing, writable = tmp_path / "no-such-dir", tmp_path / "var-tmp"
    writable.mkdir()
    monkeypatch.setattr(lock_module, "LOCK_DIRS", (missing, writable))
    assert lock_path().parent == writable
    monkeypatch.setattr(lock_module, "LOCK_DIRS", (missing,))
    with pytest.raises(UserError, match=LOCK_DIR_ENV):
        lock_path()
