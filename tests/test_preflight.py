"""The preflight expands a sweep exactly as Hydra's basic sweeper will launch it."""

from __future__ import annotations

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
