"""The benchmark scripts refuse what they cannot measure: one line on stderr, exit code 2, nothing run."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tests.support import REPO_ROOT


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--steps", "41"], "--steps 41 is more than one epoch of dataset=digits at batch size 32"),
        (["--steps", "3"], "--steps 3 with --skip 5"),
        (["--rounds", "0"], "--rounds 0"),
    ],
)
def test_throughput_refuses_what_it_cannot_measure(args: list[str], named: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "throughput.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert named in done.stderr
    assert done.stdout == ""  # no table was started
