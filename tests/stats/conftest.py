"""Fixtures: the published runs and their analysis, computed once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from repro.stats.analyses import StudyResults, analyse
from repro.stats.runs import RunsTable, load_published

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT / "paper" / "data" / "dl-training-energy-consumption-dataset.parquet"
EXCLUSIONS = REPO_ROOT / "paper" / "data" / "exclusions.csv"


@pytest.fixture(scope="session")
def published() -> RunsTable:
    return load_published(DATA, EXCLUSIONS)


@pytest.fixture(scope="session")
def study(published: RunsTable) -> StudyResults:
    return analyse(published.runs)
