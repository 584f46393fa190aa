"""Helpers shared by tests that run the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, module: str = "repro.train") -> list[str]:
    """The command line of `python -m <module>` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def run_cli(*args: str, env: dict[str, str], module: str = "repro.train") -> subprocess.CompletedProcess[str]:
    """Run `python -m <module> ARGS` from the repository root and capture its output."""
    return subprocess.run(
        cli(*args, module=module), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def refused_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> str:
    """Run `repro-train ARGS` in-process; it must exit 2 with one `error:` line and no traceback.

    Returns:
        The error line, for the test to check that it names the bad value.
    """
    from repro.train import main

    monkeypatch.setattr(sys, "argv", ["repro-train", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in err
    return err
