"""A sweep folder that already holds a sweep is refused, unless the sweep resumes there."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tests.faults.helpers import children, parents, runs
from tests.support import refused_in_process

from repro.errors import UserError
from repro.tracking import claim_sweep_dir
from repro.train import main


def _sweep(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["repro-train", "-m", *args])
    main()  # raises SystemExit unless every job finished


def test_a_reused_sweep_dir_is_refused_and_resume_continues_it(
    monkeypatch, capsys, smoke_overrides, tracking_uri, tmp_path: Path
) -> None:
    sweep = [*smoke_overrides, "seed=0", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    _sweep(monkeypatch, *sweep)
    history = tmp_path / "sweep" / "0" / "history.csv"
    before = history.read_bytes()
    capsys.readouterr()

    err = refused_in_process(monkeypatch, capsys, "-m", *sweep)

    assert err == (
        f"error: hydra.sweep.dir={tmp_path / 'sweep'} already holds a sweep; use resume=true to continue it, "
        "or another hydra.sweep.dir"
    )
    assert history.read_bytes() == before  # the earlier job's files are untouched
    assert len(runs(tracking_uri)) == 2  # and nothing was recorded: its parent and its one job

    _sweep(monkeypatch, *sweep, "resume=true")

    assert "resume: skipping" in capsys.readouterr().out
    recorded = runs(tracking_uri)
    assert [p.info.status for p in parents(recorded)] == ["FINISHED", "FINISHED"]
    assert len(children(recorded)) == 1  # the finished job was not run again
    assert history.read_bytes() == before


def test_two_sweeps_started_in_the_same_second_cannot_share_a_sweep_dir(tmp_path: Path) -> None:
    same_second = tmp_path / "multirun" / "2024-01-01" / "12-00-00"
    claim_sweep_dir(same_second, resume=False)  # the first sweep, before it has written anything else
    with pytest.raises(UserError, match="already holds a sweep"):
        claim_sweep_dir(same_second, resume=False)
