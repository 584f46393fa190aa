"""The benchmark scripts refuse what they cannot measure: one line on stderr, exit code 2, nothing run."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tests.support import REPO_ROOT


@pytest.mark.parametrize(
    ("script", "args", "named"),
    [
        (
            "throughput.py",
            ["--steps", "41"],
            "--steps 41 is more than one epoch of dataset=digits at batch size 32",
        ),
        ("throughput.py", ["--steps", "3"], "--steps 3 with --skip 5"),
        ("throughput.py", ["--rounds", "0"], "--rounds 0"),
        ("head_step.py", ["--steps", "6"], "--steps 6 with --skip 5"),
        ("head_step.py", ["--rounds", "0"], "--rounds 0"),
    ],
)
def test_a_benchmark_refuses_what_it_cannot_measure(script: str, args: list[str], named: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert named in done.stderr
    assert done.stdout == ""  # no table was started


def test_stats_scale_reports_the_measured_process_own_peak_memory() -> None:
    """A parent that once held 400 MB must not lend that peak to the small child it measures.

    Linux carries getrusage's ru_maxrss across exec; the benchmark reported 1.4 GB for repro.paper
    runs that peaked at 0.43 GB, because the benchmark itself had just built a store.
    """
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        import stats_scale
    finally:
        sys.path.pop(0)
    held = bytearray(400 * 1024 * 1024)
    held[::4096] = b"\1" * len(held[::4096])  # touch every page, so they count as resident
    _, _, peak_mb, _ = stats_scale._measure(stats_scale._module("calendar", "2026"), REPO_ROOT)
    del held
    assert 0 < peak_mb < 200
