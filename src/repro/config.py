"""Dataclass schemas behind every config group, stored in Hydra's ConfigStore by `repro.composition`.

A typo or a wrong type in a YAML file or an override fails when Hydra composes the config, before
any training starts. `MISSING` marks values a group file must set; `None` means "the library's
default" or "not applicable".
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from repro.errors import UserError
from repro.paths import repo_root

#: The YAML config groups. The package is installed editable (`pip install -e .`), so they are
#: read from the checkout, next to `src/`.
CONF_DIR = repo_root() / "conf"

#: `model.head` options: GAP + one linear layer, or the study's dense head.
HEADS = ("linear", "study")
#: `model.preprocessing` options, named after the modes of Keras' `preprocess_input`.
PREPROCESSING = ("torch", "tf", "caffe")
#: `training.amp` options: false (FP32) or the autocast precision (repro.precision).
AMP_OPTIONS: tuple[bool | str, ...] = (False, "fp16", "bf16")
#: `training.memory_format`: auto lays the model out channels last on the CPU and leaves a GPU's default.
MEMORY_FORMATS: tuple[str, ...] = ("auto", "channels_last", "contiguous")


def check_finite(node: Any, group: str) -> None:
    """Refuse NaN and infinity in a config dataclass's numbers: they pass every `<= 0` check.

    Each schema's `__post_init__` calls this first, so that its own range checks see only real numbers.

    Args:
        node: a config dataclass instance.
        group: its dotted place in the job's config (`training`, `energy.projection`), for the message.
    """
    for item in dataclasses.fields(node):
        value = getattr(node, item.name)
        values = value if isinstance(value, list | tuple) else [value]
        for one in values:
            if isinstance(one, float) and not math.isfinite(one):
                raise UserError(f"{group}.{item.name}={value} is not a finite number")


def _given(value: Any) -> bool:
    """Whether a value is set: `__post_init__` checks skip OmegaConf's MISSING ("???")."""
    return not (isinstance(value, str) and value == MISSING)


@dataclass
class ModelConfig:
    """Which network to train. `name` is any timm model name (repro registers the study's extras)."""

    name: str = MISSING  # any timm model name; `import repro.models` registers the study's extras
    pretrained: bool = False  # download ImageNet weights from timm's hub (needs network)
    weights_file: str | None = None  # local checkpoint loaded through timm instead of the hub
    drop_rate: float = 0.0  # dropout before the classifier, as timm's `drop_rate`
    head: str = "linear"  # linear: GAP + one linear layer; study: the study's head (study_head_hidden)
    study_head_hidden: list[int] | None = None  # widths of the study head's ReLU layers; None: no study head
    # How pixels in 0..1 reach the model, named after Keras' preprocess_input modes: torch (ImageNet mean
    # and std), tf ([-1, 1]) or caffe (BGR, ImageNet means subtracted on 0..255).
    preprocessing: str = "torch"

    def __post_init__(self) -> None:
        check_finite(self, "model")
        if self.head not in HEADS:
            raise UserError(f"unknown model.head={self.head!r}: choose one of {', '.join(HEADS)}")
        if self.head == "study" and self.study_head_hidden is None:
            raise UserError(
                f"model.head=study: model {self.name!r} has no study head; "
                f"these models have one: {', '.join(_models_with_study_head())}"
            )
        if self.preprocessing not in PREPROCESSING:
            known = ", ".join(PREPROCESSING)
            raise UserError(f"unknown model.preprocessing={self.preprocessing!r}: choose one of {known}")
        if not 0 <= self.drop_rate < 1:
            raise UserError(f"model.drop_rate={self.drop_rate} must be in [0, 1)")


def _models_with_study_head() -> list[str]:
    """The `model=` options whose YAML file names a study head."""
    return [
        path.stem
        for path in sorted((CONF_DIR / "model").glob("*.yaml"))
        if OmegaConf.load(path).get("study_head_hidden") is not None
    ]


@dataclass
class DatasetConfig:
    """Where images come from and how they are prepared: the keys every source shares.

    Each source (`repro.data.<name>`) subclasses this with its own keys and registers the subclass as
    its schema, `<name>_schema`, which the source's YAML file names as `- /<name>_schema`.
    """

    name: str = MISSING  # the source: one of the options, each registered in repro.data
    image_size: int = 128  # pixels per side; every image is resized to it
    val_fraction: float = 0.3  # the study's 70/30 split, stratified and seeded
    augment: bool = True  # the study's augmentation, on the training set only
    augment_per_image: bool = False  # draw the colour changes per image, not once per batch as the study did
    num_workers: int | None = None  # DataLoader workers; None: 0 for held data, else the spare cores (max 8)
    memory_limit_mb: float = 2048.0  # decode once and hold as uint8 when the pixels take at most this
    cache_dir: str = "data"  # where a source that generates its images (digits) writes them once

    def __post_init__(self) -> None:
        """Raises: UserError for a value no source accepts (a `???` value is left for later)."""
        check_finite(self, "dataset")
        if is_set(self.image_size) and self.image_size <= 0:
            raise UserError(
                f"dataset.image_size={self.image_size} must be positive: set e.g. dataset.image_size=128"
            )
        if is_set(self.val_fraction) and not 0 < self.val_fraction < 1:
            raise UserError(
                f"dataset.val_fraction={self.val_fraction} must lie between 0 and 1: the study uses 0.3"
            )
        if self.num_workers is not None and is_set(self.num_workers) and self.num_workers < 0:
            raise UserError(
                f"dataset.num_workers={self.num_workers} must be 0 (load in the main process) or more"
            )
        if is_set(self.memory_limit_mb) and self.memory_limit_mb < 0:
            raise UserError(f"dataset.memory_limit_mb={self.memory_limit_mb} must be 0 (never hold) or more")


def is_set(value: object) -> bool:
    """False for OmegaConf's `???`, which a dataclass built from a partial config may still hold."""
    return value != MISSING


@dataclass
class TrainingConfig:
    """How a job trains. The defaults are the reference study's protocol, written here once.

    del Rey et al., SEAA 2023 (doi:10.1109/SEAA60479.2023.00031): 10 epochs training only a new head
    with Adam at 1e-4, then up to 140 epochs fine-tuning the whole network with SGD at 1e-5 and momentum
    0.9; early stopping on validation accuracy (patience 20, min delta 1e-3) and the learning rate x0.1
    after 10 epochs without improvement; batch size 32; the base's BatchNorm in inference mode in both
    phases, and the last partial batch dropped (steps_per_epoch = train_size // 32). `training=paper`
    names this protocol; other presets set only what they change.
    """

    batch_size: int = 32  # images per batch, training and validation
    head_epochs: int = 10  # phase 1: only the new head trains
    head_lr: float = 1e-4  # Adam
    finetune_epochs: int = 140  # phase 2: the whole network trains
    finetune_lr: float = 1e-5  # SGD with momentum
    momentum: float = 0.9  # SGD's, in fine-tuning
    early_stopping_patience: int = 20  # epochs without val-accuracy gain
    early_stopping_min_delta: float = 1e-3  # the smallest val-accuracy gain that counts
    plateau_patience: int = 10  # epochs before the learning rate drops
    plateau_factor: float = 0.1  # the learning rate is multiplied by this on a plateau
    max_steps_per_epoch: int | None = None  # cap for benchmarks; None trains on every batch
    freeze_bn: bool = True  # the base's BatchNorm stays in inference mode in both phases
    drop_last: bool = True  # drop the last partial batch of training and validation
    # intra-op threads; None: OMP_NUM_THREADS where set, else the cores of the affinity mask, capped by
    # SLURM_CPUS_PER_TASK
    threads: int | None = None
    # mixed precision: false (FP32), fp16 (autocast and a gradient scaler; CUDA only) or bf16 (autocast)
    amp: Any = False
    # the model's memory layout: auto (channels last on the CPU, where oneDNN runs it faster; PyTorch's
    # default on a GPU), channels_last or contiguous; the one used is tagged device.memory_format
    memory_format: str = "auto"

    def __post_init__(self) -> None:
        check_finite(self, "training")
        if _given(self.amp) and self.amp is not False and self.amp not in AMP_OPTIONS[1:]:
            raise UserError(f"training.amp={self.amp} is not an option: choose false (FP32), fp16 or bf16")
        if _given(self.memory_format) and self.memory_format not in MEMORY_FORMATS:
            raise UserError(
                f"training.memory_format={self.memory_format} is not an option: "
                f"choose {', '.join(MEMORY_FORMATS)}"
            )
        positive = ("batch_size", "head_lr", "finetune_lr", "early_stopping_patience", "plateau_patience")
        for key in (*positive, "plateau_factor"):
            if getattr(self, key) <= 0:
                raise UserError(f"training.{key}={getattr(self, key)} must be greater than 0")
        for key in ("head_epochs", "finetune_epochs"):
            if getattr(self, key) < 0:
                raise UserError(f"training.{key}={getattr(self, key)} must be 0 or more")
        if self.head_epochs + self.finetune_epochs == 0:
            raise UserError(
                "training.head_epochs and training.finetune_epochs are both 0; train at least one epoch"
            )
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch <= 0:
            raise UserError(
                f"training.max_steps_per_epoch={self.max_steps_per_epoch} must be positive or null"
            )
        if not 0 <= self.momentum < 1:
            raise UserError(f"training.momentum={self.momentum} must be in [0, 1)")
        if self.early_stopping_min_delta < 0:
            raise UserError(
                f"training.early_stopping_min_delta={self.early_stopping_min_delta} must be 0 or more"
            )
        if self.threads is not None and self.threads <= 0:
            raise UserError(f"training.threads={self.threads} must be 1 or more, or unset (all cores)")


@dataclass
class ProjectionConfig:
    """STEP: the run's total energy projected from its latest epochs (repro.energy.projection)."""

    start_epoch: Any = "auto"  # 1-based epoch to project from, or "auto": once epoch energies are stable
    window: int = 3  # epochs averaged for the projection
    tolerance: float = 0.1  # auto: stable once the window's (max - min) / mean is below this

    def __post_init__(self) -> None:
        check_finite(self, "energy.projection")
        start = self.start_epoch
        if start not in ("auto", MISSING) and (
            isinstance(start, bool) or not isinstance(start, int) or start < 1
        ):
            raise UserError(
                f"energy.projection.start_epoch={start} must be an epoch number (1 or more) or 'auto'"
            )
        if _given(self.window) and self.window < 1:
            raise UserError(f"energy.projection.window={self.window} must be 1 or more epochs")
        if _given(self.tolerance) and self.tolerance <= 0:
            raise UserError(f"energy.projection.tolerance={self.tolerance} must be positive, e.g. 0.1 (10%)")


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

    def __post_init__(self) -> None:
        check_finite(self, "energy")
        if _given(self.sample_interval_s) and self.sample_interval_s <= 0:
            raise UserError(f"energy.sample_interval_s={self.sample_interval_s} must be positive, e.g. 1.0")
        for key in ("warmup_s", "cooldown_s", "baseline_s"):
            if _given(getattr(self, key)) and getattr(self, key) < 0:
                raise UserError(f"energy.{key}={getattr(self, key)} is negative; use 0 to skip it")
        intensity = self.carbon_intensity_g_per_kwh
        if _given(intensity) and intensity is not None and intensity < 0:
            raise UserError(
                f"energy.carbon_intensity_g_per_kwh={intensity} is negative; give gCO2e/kWh, e.g. 232"
            )
        for key in ("budget_j", "budget_gco2"):
            value = getattr(self, key)
            if _given(value) and value is not None and value <= 0:
                raise UserError(f"energy.{key}={value:g} must be greater than 0, or null for no budget")
        budgeted = self.budget_j is not None or self.budget_gco2 is not None
        if budgeted and _given(self.meters) and list(self.meters) == ["none"]:
            raise UserError("an energy budget needs energy to be measured; drop energy=none")
        if _given(self.budget_gco2) and self.budget_gco2 is not None and intensity is None:
            raise UserError(
                "energy.budget_gco2 needs energy.carbon_intensity_g_per_kwh (gCO2e/kWh, e.g. 232) to convert "
                "the projected energy"
            )


@dataclass
class SlurmResources:
    """How a SLURM job asks for this GPU; gres and/or a node feature constraint."""

    gres: str | None = None  # e.g. "gpu:a100:1"
    constraint: str | None = None  # e.g. "a100"
    partition: str | None = None  # None: the cluster's default partition


@dataclass
class GpuConfig:
    """A training environment: `cpu`, `auto` (whatever is here) or a named GPU profile."""

    name: str = MISSING  # the profile's name, as in `gpu=NAME` and the run names
    label: str = MISSING  # human label, e.g. the study's "Cloud"
    device_match: str | None = None  # whole words of the device name, any case ("A100"); None: CPU or auto
    tdp_w: float | None = None  # nominal TDP (board power) from the spec sheet
    memory_gb: float | None = None  # on-board memory
    cuda_cores: int | None = None  # published specs, read by repro.estimate; None: not known
    fp32_tflops: float | None = None  # peak FP32 throughput
    default_power_limit_w: float | None = None  # the limit the board runs at, where not its TDP; None: TDP
    memory_bandwidth_gbs: float | None = None  # peak memory bandwidth (GB/s), read by repro.estimate's prior
    tf32_tflops: float | None = None  # peak dense tensor-core TF32; None: none or not published
    fp16_tflops: float | None = None  # peak dense tensor-core FP16 with FP32 accumulate; None: not known
    bf16_tflops: float | None = None  # peak dense tensor-core BF16 with FP32 accumulate; None: not known
    idle_power_w: float | None = None  # idle power, where published; None: the prior fits a share
    specs_source: str | None = None  # where the specs come from, e.g. the vendor's datasheet
    slurm: SlurmResources = field(default_factory=SlurmResources)
    # A setting, not a spec: the power limit (W) the job sets through NVML before its idle baseline and
    # restores at its end (needs root); the limit in force is logged as device.power_limit_w. None: leave it.
    power_limit_w: float | None = None

    def __post_init__(self) -> None:
        check_finite(self, "gpu")
        for key in (
            "tdp_w", "memory_gb", "cuda_cores", "fp32_tflops", "default_power_limit_w",
            "memory_bandwidth_gbs", "tf32_tflops", "fp16_tflops", "bf16_tflops", "idle_power_w",
            "power_limit_w",
        ):  # fmt: skip
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise UserError(f"gpu.{key}={value} must be greater than 0, or null when not known")


#: MLflow's longest experiment name (`mlflow.utils.validation.MAX_EXPERIMENT_NAME_LENGTH`).
_MAX_EXPERIMENT_NAME = 500


@dataclass
class TrackingConfig:
    """Where runs are recorded."""

    uri: str = "sqlite:///mlflow.db"  # the embedded store; http://HOST:PORT for an `mlflow server`
    experiment: str = "repro"  # the MLflow experiment every run of the job goes to
    parent_run_id: str | None = None  # set by sweeps: every job becomes a child of this run
    flush_timeout_s: float = 60.0  # at a job's end, how long to wait for MLflow before spooling to disk
    heartbeat_s: float = 30.0  # seconds between two heartbeats (tag repro.heartbeat) of a recording process

    def __post_init__(self) -> None:
        check_finite(self, "tracking")
        if self.flush_timeout_s < 0:
            raise UserError(f"tracking.flush_timeout_s={self.flush_timeout_s} must be 0 or more seconds")
        if self.heartbeat_s <= 0:
            raise UserError(f"tracking.heartbeat_s={self.heartbeat_s} must be greater than 0")
        if _given(self.experiment) and not str(self.experiment).strip():
            raise UserError("tracking.experiment is empty; name the MLflow experiment (the default is repro)")
        if _given(self.experiment) and len(str(self.experiment)) > _MAX_EXPERIMENT_NAME:
            raise UserError(
                f"tracking.experiment is {len(str(self.experiment))} characters long; MLflow takes at most "
                f"{_MAX_EXPERIMENT_NAME}"
            )


@dataclass
class Config:
    """The root config of `python -m repro.train`."""

    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    training: TrainingConfig = MISSING
    energy: EnergyConfig = MISSING
    gpu: GpuConfig = MISSING
    tracking: TrackingConfig = MISSING
    seed: int = 0  # fixes the split, the initialisation and the shuffling
    run_name: str | None = None  # default: {model}-{gpu}-s{seed}
    resume: bool = False  # skip jobs whose identical config already FINISHED in this experiment

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"seed={self.seed} must be a non-negative integer")
        # The groups have checked their own numbers; this also covers a schema registered without it.
        _refuse_non_finite(dataclasses.asdict(self), "")


def _refuse_non_finite(node: Any, prefix: str) -> None:
    """NaN and infinity anywhere in a config tree (dicts and lists of `dataclasses.asdict`)."""
    if isinstance(node, dict):
        for key, value in node.items():
            _refuse_non_finite(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _refuse_non_finite(value, f"{prefix.rstrip('.')}[{index}].")
    elif isinstance(node, float) and not math.isfinite(node):
        raise UserError(f"{prefix.rstrip('.')}={node} is not a finite number")


def job_config(cfg: DictConfig | Config) -> Config:
    """A composed job config as the dataclasses above, converted once; each checks its own values.

    Args:
        cfg: the job's composed config (a `hydra` node, if present, is left out), or an already
            converted `Config`.

    Raises:
        UserError: from the first schema whose `__post_init__` refuses a value.
    """
    if isinstance(cfg, Config):
        return cfg
    if "hydra" in cfg:
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    return OmegaConf.to_object(cfg)


#: The schema under each config group; `repro.composition` stores them, with the plugins' own.
GROUP_SCHEMAS = {
    "model": ModelConfig,
    "dataset": DatasetConfig,
    "training": TrainingConfig,
    "energy": EnergyConfig,
    "gpu": GpuConfig,
    "tracking": TrackingConfig,
}
