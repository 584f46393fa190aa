"""The names a run records: the README's table lists exactly the names in `repro.names`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from repro import names

README = Path(__file__).resolve().parents[1] / "README.md"


def _records_table() -> dict[str, list[str]]:
    """The "What a run records" table: row kind -> the backticked names in it, `a.b|c` expanded."""
    text = README.read_text()
    section = text.split("### What a run records", 1)[1].split("\n\n", 2)[1]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines()[2:]:
        kind, cell = (part.strip() for part in line.strip().strip("|").split("|", 1))
        found = []
        for token in re.findall(r"`([^`]+)`", cell):
            stem, _, alternatives = token.rpartition(".")
            if "|" in alternatives:
                found += [f"{stem}.{alternative}" for alternative in alternatives.split("|")]
            else:
                found.append(token)
        rows[kind] = found
    return rows


@pytest.fixture(scope="module")
def table() -> dict[str, list[str]]:
    return _records_table()


def test_readme_lists_every_final_metric(table: dict[str, list[str]]) -> None:
    assert sorted(table["final metrics"]) == sorted(names.FINAL_METRICS)


def test_readme_lists_every_epoch_metric(table: dict[str, list[str]]) -> None:
    assert sorted(table["per epoch (`step=epoch`)"]) == sorted(names.EPOCH_METRICS)


def test_readme_lists_the_run_tags(table: dict[str, list[str]]) -> None:
    named_tags = {token for token in table["tags"] if token.startswith(("repro.", "device.", "energy"))}
    method_tags = {names.energy_method_tag(component) for component in names.COMPONENTS}
    assert named_tags == set(names.RUN_TAGS) | method_tags


def test_names_are_unique() -> None:
    assert len(set(names.FINAL_METRICS)) == len(names.FINAL_METRICS)
    assert not set(names.FINAL_METRICS) & set(names.EPOCH_METRICS)
