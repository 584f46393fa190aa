"""The preflight expands a sweep exactly as Hydra's basic sweeper will launch it."""

from __future__ import annotations

import pytest
from hydra import initialize_config_dir

from repro.config import CONF_DIR
from repro.preflight import _expand_jobs


def _jobs(*overrides: str, multirun: bool = True) -> list[list[str]]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _expand_jobs(list(overrides), multirun)


def test_single_run_is_one_job():
    assert _jobs("model=resnet18", multirun=False) == [["model=resnet18"]]


def test_command_line_sweeps_are_a_product():
    jobs = _jobs("model=resnet18,vgg16", "seed=0,1", "training=quick")
    assert len(jobs) == 4
    assert ["model=vgg16", "seed=1", "training=quick"] in jobs


def test_paper_experiment_expands_to_the_study_campaign():
    jobs = _jobs("experiment=paper", "gpu=cpu")
    assert len(jobs) == 5 * 30
    models = {override for job in jobs for override in job if override.startswith("model=")}
    assert models == {
        f"model={m}" for m in ("mobilenet_v2", "nasnet_mobile", "xception", "resnet50", "vgg16")
    }


def test_command_line_overrides_the_experiment_sweep():
    jobs = _jobs("experiment=paper", "model=resnet18", "seed=0,1")
    assert len(jobs) == 2
    assert all("model=resnet18" in job for job in jobs)


def test_a_sweep_over_values_composes_once_per_set_of_config_files(monkeypatch):
    from repro import preflight
    from repro.composition import register_configs

    register_configs()
    overrides = ["model=resnet18,mobilenet_v2", "seed=range(0,3)", "training.head_lr=0.01,0.001"]
    composed = []
    full_compose = preflight._compose
    monkeypatch.setattr(preflight, "_compose", lambda o: composed.append(o) or full_compose(o))
    jobs = preflight.compose_jobs(overrides, True, CONF_DIR)
    assert len(jobs) == 12
    assert len(composed) == 1 + 2  # the sweep's own params, then once per model
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        each = [preflight._job(full_compose(job)) for job in _expand_jobs(overrides, True)]
    assert [cfg for _, cfg in jobs] == each  # what composing every job in full gives
    assert [(cfg.seed, cfg.training.head_lr) for _, cfg in jobs[:3]] == [(0, 0.01), (0, 0.001), (1, 0.01)]
    assert {choices["model"] for choices, _ in jobs} == {"resnet18", "mobilenet_v2"}


def test_a_value_the_schema_refuses_in_a_later_job_is_still_refused():
    from repro.composition import register_configs
    from repro.errors import UserError
    from repro.preflight import compose_jobs

    register_configs()
    with pytest.raises(UserError, match="seed=-1"):
        compose_jobs(["seed=0,-1"], True, CONF_DIR)
    with pytest.raises(UserError, match="training.head_lr"):
        compose_jobs(["training.head_lr=0.01,fast"], True, CONF_DIR)
