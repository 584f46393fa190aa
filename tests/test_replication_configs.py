"""The replication campaigns compose, expand to the jobs they promise, and pass the preflight here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from repro.config import CONF_DIR
from repro.preflight import _expand_jobs, preflight

REPO_ROOT = Path(__file__).resolve().parents[1]
STUDY_MODELS = {f"model={m}" for m in ("mobilenet_v2", "nasnet_mobile", "xception", "resnet50", "vgg16")}


def _jobs(*overrides: str) -> list[list[str]]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _expand_jobs(list(overrides), multirun=True)


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize(("experiment", "seeds"), [("replication_cpu", 5), ("replication_gpu", 3)])
def test_campaign_is_the_study_architectures_times_seeds(experiment: str, seeds: int) -> None:
    jobs = _jobs(f"experiment={experiment}")
    assert len(jobs) == 5 * seeds
    assert {o for job in jobs for o in job if o.startswith("model=")} == STUDY_MODELS
    assert {o for job in jobs for o in job if o.startswith("seed=")} == {f"seed={s}" for s in range(seeds)}


def test_cpu_campaign_settings() -> None:
    cfg = _compose("experiment=replication_cpu")
    assert cfg.model.pretrained is False  # nothing can be downloaded: random initialisation
    assert cfg.training.head_epochs >= 1 and cfg.training.finetune_epochs >= 1  # the study's two phases
    assert cfg.training.max_steps_per_epoch is not None
    assert list(cfg.energy.meters) == ["codecarbon"] and cfg.gpu.name == "cpu"
    assert cfg.tracking.experiment == "replication_cpu"


def test_gpu_campaign_settings() -> None:
    cfg = _compose("experiment=replication_gpu")
    assert cfg.dataset.image_size == 128 and cfg.model.pretrained is False
    assert list(cfg.energy.meters) == ["nvml"] and cfg.gpu.name == "auto"
    assert cfg.tracking.experiment == "replication_gpu"


@pytest.mark.slow
def test_gpu_campaign_passes_the_preflight_on_the_cpu(tmp_path: Path) -> None:
    """With gpu=cpu energy=codecarbon every job of the GPU campaign is valid here (models, 128 px, ...)."""
    preflight(
        ["-m", "experiment=replication_gpu", "gpu=cpu", "energy=codecarbon", f"dataset.cache_dir={tmp_path}"],
        CONF_DIR,
    )


def test_replication_script_never_writes_into_paper() -> None:
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "replication.sh"), "replication_cpu", "paper/replication/cpu"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: OUT_DIR=paper/replication/cpu is inside paper/, the committed reference; "
        "write to reports/ and copy"
    )
