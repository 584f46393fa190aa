"""Helpers shared by tests that run the command line."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, module: str = "repro.train") -> list[str]:
    """The command line of `python -m <module>` with this interpreter."""
    return [sys.executable, "-m", module, *args]
