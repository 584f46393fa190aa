"""The study factors' declarations (repro.factors): levels read from raw values, and run-name parts."""

from __future__ import annotations

import pytest

from repro import factors
from repro.factors import FACTORS, run_name_suffix


def test_every_factor_the_issue_names_is_declared_with_a_source_in_runs_and_in_the_published_data():
    assert list(FACTORS) == [
        "architecture",
        "environment",
        "batch_size",
        "image_size",
        "precision",
        "power_limit_w",
    ]
    for declared in FACTORS.values():
        assert declared.param or declared.tag, declared.name
        assert declared.published_column or declared.published_value is not None, declared.name


def test_precision_reads_training_amp_false_as_fp32_and_numbers_as_floats():
    precision, batch = FACTORS["precision"], FACTORS["batch_size"]
    assert [precision.level(v) for v in ("False", "false", "bf16", "fp16", None)] == [
        "fp32",
        "fp32",
        "bf16",
        "fp16",
        None,
    ]
    assert batch.level("64") == 64.0 and batch.level(None) is None and batch.level(float("nan")) is None


def test_a_run_name_shows_only_the_settings_that_differ_from_the_default():
    assert (
        run_name_suffix({"training.batch_size": 32, "training.amp": False, "dataset.image_size": 128}) == ""
    )
    suffix = run_name_suffix({"training.batch_size": 64, "training.amp": "bf16", "gpu.power_limit_w": 250})
    assert suffix == "-bs64-bf16-250w"


def test_an_unknown_factor_names_the_declared_ones():
    with pytest.raises(KeyError, match="batch_size"):
        factors.factor("batchsize")


def test_a_sweep_over_settings_names_each_job_by_the_settings_its_command_line_set():
    from omegaconf import OmegaConf

    from repro.factors import command_line_settings

    cfg = OmegaConf.create({"training": {"batch_size": 64, "amp": "bf16"}, "dataset": {"image_size": 32}})
    settings = command_line_settings(cfg, ["model=resnet50", "training.batch_size=64", "training.amp=bf16"])
    assert settings == {"training.batch_size": 64, "training.amp": "bf16"}  # image_size: the experiment's
    assert run_name_suffix(settings) == "-bs64-bf16"
