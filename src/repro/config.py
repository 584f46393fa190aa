"""Dataclass schemas behind every config group, registered in Hydra's ConfigStore.

A typo or a wrong type in a YAML file or an override fails when Hydra composes the config, before
any training starts. `MISSING` marks values a group file must set; `None` means "the library's
default" or "not applicable".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

#: The YAML config groups. The package is installed editable (`pip install -e .`), so they are
#: read from the checkout, next to `src/`.
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@dataclass
class ModelConfig:
    """Which network to train. `name` is any timm model name (repro registers the study's extras)."""

    name: str = MISSING
    pretrained: bool = False  # download ImageNet weights from timm's hub (needs network)
    weights_file: str | None = None  # local checkpoint loaded through timm instead of the hub
    drop_rate: float = 0.0
    head: str = "linear"  # linear: GAP + one linear layer; study: the study's head (study_head_hidden)
    study_head_hidden: list[int] | None = None  # widths of the study head's ReLU layers; None: no study head
    # How pixels in 0..1 reach the model, named after Keras' preprocess_input modes: torch (ImageNet mean
    # and std), tf ([-1, 1]) or caffe (BGR, ImageNet means subtracted on 0..255).
    preprocessing: str = "torch"


@dataclass
class DatasetConfig:
    """Where images come from and how they are prepared."""

    name: str = MISSING  # digits | imagefolder | synthetic
    path: str | None = None  # imagefolder: a folder of class sub-folders
    task: str = "binary"  # digits: binary (digit < 5 vs >= 5) or multiclass (10 digits)
    image_size: int = 128
    val_fraction: float = 0.3  # the study's 70/30 split, stratified and seeded
    augment: bool = True  # the study's augmentation, on the training set only
    num_workers: int | None = None  # DataLoader workers; None: 0 for held data, else the spare cores (max 8)
    memory_limit_mb: float = 2048.0  # decode once and hold as uint8 when the pixels take at most this
    cache_dir: str = "data"  # where generated image trees are written once
    num_images: int = 512  # synthetic only
    num_classes: int = 2  # synthetic only


@dataclass
class TrainingConfig:
    """The study's two-phase protocol; every number is configurable."""

    batch_size: int = 32
    head_epochs: int = 10  # phase 1: only the new head trains
    head_lr: float = 1e-4  # Adam
    finetune_epochs: int = 140  # phase 2: the whole network trains
    finetune_lr: float = 1e-5  # SGD with momentum
    momentum: float = 0.9
    early_stopping_patience: int = 20  # epochs without val-accuracy gain
    early_stopping_min_delta: float = 1e-3
    plateau_patience: int = 10  # epochs before the learning rate drops
    plateau_factor: float = 0.1
    max_steps_per_epoch: int | None = None  # cap for benchmarks; None trains on every batch
    freeze_bn: bool = False  # the base's BatchNorm stays in inference mode in both phases (the study)
    drop_last: bool = False  # drop the last partial batch of training and validation (the study)
    threads: int | None = None  # intra-op threads; None: the cores this job may use


@dataclass
class ProjectionConfig:
    """STEP: the run's total energy projected from its latest epochs (repro.energy.projection)."""

    start_epoch: Any = "auto"  # 1-based epoch to project from, or "auto": once epoch energies are stable
    window: int = 3  # epochs averaged for the projection
    tolerance: float = 0.1  # auto: stable once the window's (max - min) / mean is below this


@dataclass
class EnergyConfig:
    """Which meters measure the job and the study's measurement protocol around it."""

    meters: list[str] = field(default_factory=lambda: ["codecarbon", "nvml-if-gpu"])
    sample_interval_s: float = 1.0  # NVML sampling period, as the study's nvidia-smi
    country_iso_code: str | None = None  # CodeCarbon's grid lookup; ignored if intensity is set
    carbon_intensity_g_per_kwh: float | None = None
    warmup_s: float = 0.0  # once before a campaign
    cooldown_s: float = 0.0  # between runs
    baseline_s: float = 0.0  # idle power measured before each run
    lock: bool = True  # refuse a second measured job on the same machine
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    budget_j: float | None = None  # stop after the first epoch whose projected energy exceeds it
    budget_gco2: float | None = None  # the same in gCO2e (needs carbon_intensity_g_per_kwh)


@dataclass
class SlurmResources:
    """How a SLURM job asks for this GPU; gres and/or a node feature constraint."""

    gres: str | None = None  # e.g. "gpu:a100:1"
    constraint: str | None = None  # e.g. "a100"
    partition: str | None = None


@dataclass
class GpuConfig:
    """A training environment: `cpu`, `auto` (whatever is here) or a named GPU profile."""

    name: str = MISSING
    label: str = MISSING  # human label, e.g. the study's "Cloud"
    device_match: str | None = None  # whole words of the device name, any case ("A100"); None: CPU or auto
    tdp_w: float | None = None  # nominal TDP (board power) from the spec sheet
    memory_gb: float | None = None
    cuda_cores: int | None = None  # published specs, read by repro.estimate; None: not known
    fp32_tflops: float | None = None  # peak FP32 throughput
    specs_source: str | None = None  # where the specs come from, e.g. the vendor's datasheet
    slurm: SlurmResources = field(default_factory=SlurmResources)


@dataclass
class TrackingConfig:
    """Where runs are recorded."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = "repro"
    parent_run_id: str | None = None  # set by sweeps: every job becomes a child of this run
    flush_timeout_s: float = 60.0  # at a job's end, how long to wait for MLflow before spooling to disk
    heartbeat_s: float = 30.0  # seconds between two heartbeats (tag repro.heartbeat) of a recording process


@dataclass
class Config:
    """The root config of `python -m repro.train`."""

    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    training: TrainingConfig = MISSING
    energy: EnergyConfig = MISSING
    gpu: GpuConfig = MISSING
    tracking: TrackingConfig = MISSING
    seed: int = 0
    run_name: str | None = None  # default: {model}-{gpu}-s{seed}
    resume: bool = False  # skip jobs whose identical config already FINISHED in this experiment


_GROUP_SCHEMAS = {
    "model": ModelConfig,
    "dataset": DatasetConfig,
    "training": TrainingConfig,
    "energy": EnergyConfig,
    "gpu": GpuConfig,
    "tracking": TrackingConfig,
}


def register_configs() -> None:
    """Put every schema in the ConfigStore; group YAMLs name theirs in their defaults list."""
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    for group, schema in _GROUP_SCHEMAS.items():
        store.store(group=group, name=f"{group}_schema", node=schema)
