"""What the estimator knows about a training job: the architecture, the data and the GPU's specs.

The published runs and a job about to run are described by the same columns (`FEATURES`). Two
targets are learnt: the GPU's mean power (`power_w`) and the wall time per processed image
(`ms_per_image`, training and validation images, as the study counted them); energy per image is
their product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from repro.config import CONF_DIR, Config, DatasetConfig, GpuConfig
from repro.errors import UserError
from repro.paths import repo_root

#: The GPU specs every profile in conf/gpu/ carries (published values; see each file's specs_source).
GPU_SPEC_KEYS: tuple[str, ...] = ("cuda_cores", "memory_gb", "tdp_w", "fp32_tflops")
#: The model's inputs. Sizes and specs enter as logarithms; a feature that never varies in the
#: training data cannot be learnt and is left out of the fit (a job that differs in it is flagged).
FEATURES: tuple[str, ...] = (
    "log_gflops",
    "log_params_m",
    "image_size",
    "batch_size",
    "train_images",
    "val_images",
    "log_cuda_cores",
    "log_memory_gb",
    "log_tdp_w",
    "log_fp32_tflops",
)
#: The conf/gpu profile of each of the study's environments.
STUDY_GPU_PROFILES: dict[str, str] = {"Local N": "gtx750ti", "Local ML": "rtx3070", "Cloud": "rtx3090"}
#: Parameters (millions) of this package's versions of the study's networks with the study's heads
#: (conf/model/*.yaml with model.head=study, as experiment=paper trains them; `measure_complexity`).
#: The published data has no parameter column, and the Keras documentation's figures count the
#: ImageNet classifiers that the study replaced.
STUDY_PARAMS_M: dict[str, float] = {
    "mobilenet_v2": 1.344065,
    "nasnet_mobile": 4.774675,
    "xception": 22.906153,
    "resnet50": 26.131521,
    "vgg16": 14.715201,
}
_REPO_ROOT = repo_root()
PUBLISHED_DATA = _REPO_ROOT / "paper" / "data" / "dl-training-energy-consumption-dataset.parquet"
PUBLISHED_EXCLUSIONS = _REPO_ROOT / "paper" / "data" / "exclusions.csv"


def gpu_specs_of_profile(name: str) -> dict[str, float | None]:
    """The specs of conf/gpu/NAME.yaml (None where the profile lacks one)."""
    path = CONF_DIR / "gpu" / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"gpu={name} has no profile in {CONF_DIR / 'gpu'}")
    profile = OmegaConf.load(path)
    return {key: profile.get(key) for key in GPU_SPEC_KEYS}


def add_log_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the `log_*` columns of `FEATURES` from their raw columns."""
    out = frame.copy()
    for name in FEATURES:
        if name.startswith("log_"):
            out[name] = np.log(out[name.removeprefix("log_")].astype(float))
    return out


def published_runs(
    data_path: Path = PUBLISHED_DATA, exclusions_path: Path = PUBLISHED_EXCLUSIONS
) -> pd.DataFrame:
    """The study's 351 runs (after the authors' exclusions) as features, targets and what was measured.

    Columns: `architecture`, `environment`, `gpu`, the raw features, `FEATURES`, the targets
    `power_w` and `ms_per_image`, and `epochs`, `images`, `duration_s`, `energy_j`,
    `gpu_usage_pct`, `memory_used_gb` (for the baselines).
    """
    from repro.stats.runs import PUBLISHED_ENVIRONMENTS, load_published

    kept = load_published(data_path, exclusions_path).runs[["environment", "architecture", "run"]]
    raw = pd.read_parquet(data_path)
    raw = raw.assign(
        environment=raw["training environment"].map(PUBLISHED_ENVIRONMENTS),
        architecture=raw["architecture"].astype(str),
        run=raw["run"].astype(int).astype(str),
    )
    raw = kept.merge(raw, on=["environment", "architecture", "run"], how="left", validate="one_to_one")
    images = raw["total seen images"].astype(float)
    frame = pd.DataFrame(
        {
            "architecture": raw["architecture"],
            "environment": raw["environment"],
            "gpu": raw["environment"].map(STUDY_GPU_PROFILES),
            "gflops": raw["GFLOPs"].astype(float),
            "params_m": raw["architecture"].map(STUDY_PARAMS_M).astype(float),
            "image_size": 128.0,  # the study's protocol (PROTOCOL.md); not a column of the data
            "batch_size": raw["batch size"].astype(float),
            "train_images": raw["training size"].astype(float),
            "val_images": raw["validation size"].astype(float),
            "power_w": raw["average power draw (W)"].astype(float),
            "ms_per_image": raw["training duration (h)"] * 3.6e6 / images,
            "epochs": raw["trained epochs"].astype(float),
            "images": images,
            "duration_s": raw["training duration (h)"] * 3600.0,
            "energy_j": raw["energy (MJ)"] * 1e6,
            "gpu_usage_pct": raw["gpu usage (%)"].astype(float),
            "memory_used_gb": raw["average memory used (MB)"] / 1000.0,
        }
    )
    specs = pd.DataFrame([gpu_specs_of_profile(name) for name in frame["gpu"]], dtype=float)
    return add_log_features(pd.concat([frame, specs], axis=1))


def experiment_runs(tracking_uri: str, experiment: str, filter_string: str = "") -> pd.DataFrame | None:
    """The runs of `experiment` as `mlflow.search_runs` frames them, or None when the store lacks it.

    The store is checked first, so a damaged one is one error line rather than MLflow's traceback.
    """
    import mlflow

    from repro.stats.runs import check_readable

    check_readable(tracking_uri)
    found = mlflow.MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    if found is None:
        return None
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.search_runs(
        experiment_ids=[found.experiment_id], filter_string=filter_string, output_format="pandas"
    )


def mlflow_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Your own finished GPU runs from MLflow, in the same columns as `published_runs`.

    A run counts when it has the GPU's mean power (`gpu_power_avg_w`, NVML), its duration and epochs,
    and a GPU profile with specs (the `gpu.*` params). Images are the run's `images_seen`, training and
    validation passes as the study counted them; `train_images_seen` splits them per epoch. A run recorded
    before repro counted validation images has no `train_images_seen` and does not count.
    """
    raw = experiment_runs(tracking_uri, experiment)
    if raw is None:
        raise UserError(f"estimate.experiment={experiment!r} is not in {tracking_uri}")
    needed = [
        "metrics.gpu_power_avg_w", "metrics.duration_s", "metrics.trained_epochs", "metrics.images_seen",
        "metrics.train_images_seen", "metrics.gflops", "metrics.params_m", "tags.repro.model",
        "tags.repro.gpu", "params.dataset.image_size", "params.training.batch_size",
        *[f"params.gpu.{key}" for key in GPU_SPEC_KEYS],
    ]  # fmt: skip
    if raw.empty or any(column not in raw for column in needed):
        return pd.DataFrame()
    raw = raw[(raw["status"] == "FINISHED") & raw[needed].notna().all(axis=1)]
    raw = raw[~raw[[f"params.gpu.{key}" for key in GPU_SPEC_KEYS]].isin(["None", ""]).any(axis=1)]
    if raw.empty:
        return pd.DataFrame()
    epochs = raw["metrics.trained_epochs"].astype(float)
    peak_tflops = raw["params.gpu.fp32_tflops"].astype(float)
    for precision in ("fp16", "bf16"):  # a run with training.amp: the peak at its precision bounds it
        at_precision = raw.get("params.training.amp", pd.Series("", index=raw.index)) == precision
        if at_precision.any():
            at_peak = raw[f"params.gpu.{precision}_tflops"].astype(float)
            peak_tflops = peak_tflops.where(~at_precision, at_peak)
    images = raw["metrics.images_seen"].astype(float)
    train_images = raw["metrics.train_images_seen"].astype(float) / epochs
    val_images = images / epochs - train_images
    duration_s = raw["metrics.duration_s"].astype(float)
    power_w = raw["metrics.gpu_power_avg_w"].astype(float)
    frame = pd.DataFrame(
        {
            "architecture": raw["tags.repro.model"].astype(str),
            "environment": raw["tags.repro.gpu"].astype(str),
            "gpu": raw["tags.repro.gpu"].astype(str),
            "gflops": raw["metrics.gflops"].astype(float),
            "params_m": raw["metrics.params_m"].astype(float),
            "image_size": raw["params.dataset.image_size"].astype(float),
            "batch_size": raw["params.training.batch_size"].astype(float),
            "train_images": train_images,
            "val_images": val_images,
            "power_w": power_w,
            "ms_per_image": duration_s * 1000 / images,
            "epochs": epochs,
            "images": images,
            "duration_s": duration_s,
            "energy_j": power_w * duration_s,
            "gpu_usage_pct": raw.get("metrics.gpu_usage_pct", pd.Series(np.nan, index=raw.index)).astype(
                float
            ),
            "memory_used_gb": raw.get("metrics.gpu_mem_used_mb", pd.Series(np.nan, index=raw.index)) / 1000.0,
            **{key: raw[f"params.gpu.{key}"].astype(float) for key in GPU_SPEC_KEYS},
            "fp32_tflops": peak_tflops,
        }
    ).reset_index(drop=True)
    return add_log_features(frame)


@dataclass(frozen=True)
class JobFeatures:
    """One job as the estimator sees it, plus what turns per-image figures into a run's totals."""

    architecture: str
    gpu: str
    values: dict[str, float]  # the raw features (gflops, params_m, sizes, GPU specs)
    train_images_per_epoch: int  # a run's `images_seen` per epoch is the sum of these two
    val_images_per_epoch: int
    max_epochs: int
    earliest_epochs: int  # where early stopping can fire first
    paper_protocol: bool  # the study's training protocol, so the published epochs apply
    intensity_g_per_kwh: float | None
    precision: str = "fp32"  # what the job computes at (training.amp), for the prior's peak TFLOPS


def estimate_key(cfg: Config, architecture: str) -> tuple[str, ...]:
    """What `job_features` reads of a job: two jobs with the same key get the same estimate.

    The seed, the run's name and the tracking settings are not in it, so a sweep over seeds is
    estimated once per configuration.
    """
    parts = (cfg.model, cfg.dataset, cfg.training, cfg.gpu, cfg.energy.carbon_intensity_g_per_kwh)
    return (architecture, *(repr(part) for part in parts))


def job_features(
    cfg: Config, architecture: str, cache: dict | None = None, require_specs: bool = True
) -> JobFeatures:
    """Describe one composed job; raise `UserError` if its GPU profile lacks specs.

    `cache`, shared across a sweep's jobs, keeps each network's complexity and each data set's split
    sizes, so that neither is computed twice. `require_specs=False` (a job probed on this machine)
    leaves a missing spec NaN instead.
    """
    try:
        specs = gpu_specs(cfg.gpu)
    except UserError:
        if require_specs:
            raise
        specs = dict.fromkeys(GPU_SPEC_KEYS)
    missing = [key for key in GPU_SPEC_KEYS if specs.get(key) is None]
    if missing and require_specs:
        raise UserError(
            f"gpu={cfg.gpu.name} lacks the spec(s) {', '.join(missing)} that the estimate needs; "
            f"set them in conf/gpu/{cfg.gpu.name}.yaml or on the command line (gpu.{missing[0]}=...)"
        )
    precision = "fp32" if cfg.training.amp is False else str(cfg.training.amp)
    try:
        peak_tflops = _peak_tflops(cfg.gpu, specs, precision)
    except UserError:
        if require_specs:
            raise
        peak_tflops = math.nan  # a probe measures the job; only the prior needs the peak
    cache = cache if cache is not None else {}
    gflops, params_m = _complexity(cfg, cache)
    split_key = ("split", repr(cfg.dataset))
    if split_key not in cache:
        cache[split_key] = dataset_split_sizes(cfg.dataset)
    n_train, n_val = cache[split_key]
    training = cfg.training
    batch = training.batch_size
    train_per_epoch = n_train // batch * batch if training.drop_last else n_train
    val_per_epoch = n_val // batch * batch if training.drop_last else n_val
    if training.max_steps_per_epoch is not None:
        train_per_epoch = min(train_per_epoch, training.max_steps_per_epoch * batch)
    max_epochs = training.head_epochs + training.finetune_epochs
    earliest = training.head_epochs + min(training.early_stopping_patience, training.finetune_epochs)
    paper_protocol = (
        training.head_epochs == 10
        and training.finetune_epochs == 140
        and training.early_stopping_patience == 20
        and math.isclose(training.early_stopping_min_delta, 1e-3)
    )
    values = {
        "gflops": gflops,
        "params_m": params_m,
        "image_size": float(cfg.dataset.image_size),
        "batch_size": float(training.batch_size),
        "train_images": float(n_train),
        "val_images": float(n_val),
        **{key: math.nan if specs[key] is None else float(specs[key]) for key in GPU_SPEC_KEYS},
        # The published runs trained in FP32, so the column holds the peak that bounds a job's arithmetic:
        # the profile's peak at the job's precision.
        "fp32_tflops": peak_tflops,
    }
    return JobFeatures(
        architecture=architecture,
        gpu=str(cfg.gpu.name),
        values=values,
        train_images_per_epoch=train_per_epoch,
        val_images_per_epoch=val_per_epoch,
        max_epochs=max_epochs,
        earliest_epochs=min(earliest, max_epochs),
        paper_protocol=paper_protocol,
        intensity_g_per_kwh=cfg.energy.carbon_intensity_g_per_kwh,
        precision=precision,
    )


def _peak_tflops(gpu_cfg: GpuConfig, specs: dict[str, float | None], precision: str) -> float:
    """The profile's peak TFLOPS at `precision` (fp32, fp16 or bf16); raise `UserError` where it has none."""
    from repro.estimate.prior import PEAK_OF_PRECISION  # prior imports this module through model

    key = PEAK_OF_PRECISION[precision]
    peak = specs.get(key) if key in specs else getattr(gpu_cfg, key, None)
    if peak is None:
        raise UserError(
            f"gpu={gpu_cfg.name} has no {key} for training.amp={precision}; set it in "
            f"conf/gpu/{gpu_cfg.name}.yaml or on the command line (gpu.{key}=...)"
        )
    return float(peak)


def gpu_specs(gpu_cfg: GpuConfig) -> dict[str, float | None]:
    """A profile's specs; for `gpu=auto`, what NVML reports about the first GPU, the rest None."""
    if gpu_cfg.name == "auto":
        return _nvml_specs()
    return {key: getattr(gpu_cfg, key) for key in GPU_SPEC_KEYS}


def _nvml_specs() -> dict[str, float | None]:
    """NVML's memory, default power limit (the board's TDP) and core count; no guesses for the rest."""
    specs: dict[str, float | None] = dict.fromkeys(GPU_SPEC_KEYS)
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as error:  # pynvml missing, or no NVIDIA driver
        raise UserError(f"gpu=auto: NVML cannot describe a GPU here ({error}); name a gpu= profile") from None
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            raise UserError("gpu=auto: NVML sees no GPU here; name a gpu= profile")
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        specs["memory_gb"] = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 1e9
        for key, read in (
            ("tdp_w", lambda: pynvml.nvmlDeviceGetPowerManagementDefaultLimit(handle) / 1000.0),
            ("cuda_cores", lambda: float(pynvml.nvmlDeviceGetNumGpuCores(handle))),
        ):
            try:
                specs[key] = read()
            except (pynvml.NVMLError, AttributeError):
                specs[key] = None  # this driver or pynvml cannot tell; left missing
    finally:
        pynvml.nvmlShutdown()
    return specs


def dataset_split_sizes(cfg: DatasetConfig) -> tuple[int, int]:
    """(training, validation) image counts of a dataset config, without loading any image."""
    from repro.data import dataset_labels  # the dataset's own rules for what counts as an image

    total = len(dataset_labels(cfg).targets)
    n_val = math.ceil(cfg.val_fraction * total)  # scikit-learn's train_test_split rounds the test side up
    return total - n_val, n_val


def _complexity(cfg: Config, cache: dict) -> tuple[float, float]:
    """GFLOPs and parameters of the job's network at its image size, built once per distinct model."""
    key = (repr(cfg.model), int(cfg.dataset.image_size))
    if key not in cache:
        import dataclasses

        from repro.models import create_model, measure_complexity

        architecture = dataclasses.replace(cfg.model, pretrained=False, weights_file=None)
        model = create_model(architecture, num_classes=1)
        complexity = measure_complexity(model, int(cfg.dataset.image_size))
        cache[key] = (complexity.gflops, complexity.params_m)
    return cache[key]
