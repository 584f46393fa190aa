"""Helpers shared by tests that run the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, module: str = "repro.train") -> list[str]:
    """The command line of `python -m <module>` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def run_cli(*args: str, env: dict[str, str], module: str = "repro.train") -> subprocess.CompletedProcess[str]:
    """Run `python -m <module> ARGS` from the repository root and capture its output."""
    return subprocess.run(
        cli(*args, module=module), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
