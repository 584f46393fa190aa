"""The README's configuration reference is generated from the schemas, so it must match them."""

from __future__ import annotations

import dataclasses
import difflib

import pytest

from repro import config_docs
from repro.config import Config, TrainingConfig


def test_readme_reference_is_the_generated_one():
    readme = config_docs.README.read_text(encoding="utf-8")
    assert config_docs.START in readme and config_docs.END in readme
    generated = config_docs.replace_in(readme, config_docs.render())
    diff = "\n".join(difflib.unified_diff(readme.splitlines(), generated.splitlines(), lineterm="", n=0))
    assert generated == readme, f"README.md's configuration reference is stale (make config-docs):\n{diff}"


def test_every_key_of_every_group_schema_is_listed_with_its_default():
    reference = config_docs.render()
    for item in dataclasses.fields(TrainingConfig):
        assert f"| `training.{item.name}` |" in reference
    assert "| `training.head_lr` | `0.0001` |" in reference
    assert "| `training.finetune_lr` | `1e-5` |" in reference
    assert "| `model.name` | required |" in reference
    for group in ("model", "dataset", "training", "energy", "gpu", "tracking"):
        assert f"### `{group}`" in reference
    for key in ("seed", "run_name", "resume"):
        assert f"| `{key}` |" in reference
    assert "| `energy.projection.window` | `3` |" in reference  # nested schemas are flattened
    assert {field.name for field in dataclasses.fields(Config)} >= {"model", "seed"}


def test_a_changed_default_makes_the_readme_stale(monkeypatch):
    readme = config_docs.README.read_text(encoding="utf-8")
    fields = {item.name: item for item in dataclasses.fields(TrainingConfig)}
    monkeypatch.setattr(fields["batch_size"], "default", 64)
    assert config_docs.replace_in(readme, config_docs.render()) != readme


def test_missing_markers_are_an_error():
    with pytest.raises(ValueError, match="markers"):
        config_docs.replace_in("# README without the reference\n", "tables")
