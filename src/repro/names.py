"""The names a run records in MLflow: metrics, tags and the params that analyses read.

The recorder (`repro.train`, `repro.tracking`, `repro.energy`, `repro.environments`) writes these
names and `repro.stats` reads them, both through this module, so a rename on one side cannot
silently break the other. The README's "What a run records" table lists the same names; a test
checks that the two agree.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------------------------------
# Final metrics (one value per run)

ACCURACY = "accuracy"
PRECISION = "precision"
RECALL = "recall"
F1 = "f1"
AUC = "auc"
TRAINED_EPOCHS = "trained_epochs"
#: The images a run processed, in training AND validation passes: the study's `total seen images`
#: (trained epochs x (training steps + validation steps) x batch, the last partial batch dropped when
#: `training.drop_last`). Every per-image figure (`energy_j_per_image`, `gpu_energy_j_per_image`,
#: `duration_ms_per_image`) divides by it, as the study's J/image and ms/image did.
IMAGES_SEEN = "images_seen"
#: The images of the training passes only (a part of `images_seen`).
TRAIN_IMAGES_SEEN = "train_images_seen"
GFLOPS = "gflops"
PARAMS_M = "params_m"
DURATION_S = "duration_s"
PAUSED_S = "paused_s"  # how long the process was stopped (SIGSTOP, Ctrl-Z); included in duration and energy
ENERGY_TOTAL_J = "energy_total_j"
ENERGY_J_PER_IMAGE = "energy_j_per_image"
GPU_ENERGY_J_PER_IMAGE = "gpu_energy_j_per_image"
EMISSIONS_G = "emissions_g"
DURATION_MS_PER_IMAGE = "duration_ms_per_image"
POWER_AVG_W = "power_avg_w"
IDLE_POWER_W = "idle_power_w"
ENERGY_NET_J = "energy_net_j"
GPU_USAGE_PCT = "gpu_usage_pct"
GPU_POWER_AVG_W = "gpu_power_avg_w"
GPU_TEMP_AVG_C = "gpu_temp_avg_c"
GPU_MEM_USED_MB = "gpu_mem_used_mb"
#: STEP (repro.energy.projection): how far off the projection made after epoch k was, in % of the total.
PROJECTION_ERROR_EPOCHS: tuple[int, ...] = (1, 2, 3, 4, 5)
ENERGY_PROJECTION_CARBONTRACKER_ERROR_PCT = "energy_projection_carbontracker_error_pct"
ENERGY_PROJECTION_START_EPOCH = "energy_projection_start_epoch"


def energy_projection_error_pct(k: int) -> str:
    """The error of the energy projected after epoch `k`, e.g. `energy_projection_error_pct_k3`."""
    return f"energy_projection_error_pct_k{k}"


#: The energy components a run may measure, in the order the metrics list them.
COMPONENTS: tuple[str, ...] = ("cpu", "gpu", "ram")
#: The other sources of GPU energy that a run keeps beside the one it counts.
GPU_ENERGY_SOURCES: tuple[str, ...] = ("codecarbon", "nvml-sampled", "nvml-counter")


def energy_component_j(component: str) -> str:
    """The metric with one component's energy, e.g. `energy_cpu_j`."""
    return f"energy_{component}_j"


def energy_source_j(component: str, source: str) -> str:
    """The metric with one component's energy from one particular source, e.g. `energy_gpu_nvml_counter_j`."""
    return f"energy_{component}_{source.replace('-', '_')}_j"


#: Every final metric, for documentation and tests (GPU-only ones included).
FINAL_METRICS: tuple[str, ...] = (
    ACCURACY,
    PRECISION,
    RECALL,
    F1,
    AUC,
    TRAINED_EPOCHS,
    IMAGES_SEEN,
    TRAIN_IMAGES_SEEN,
    GFLOPS,
    PARAMS_M,
    DURATION_S,
    PAUSED_S,
    *(energy_component_j(component) for component in COMPONENTS),
    ENERGY_TOTAL_J,
    ENERGY_J_PER_IMAGE,
    GPU_ENERGY_J_PER_IMAGE,
    EMISSIONS_G,
    DURATION_MS_PER_IMAGE,
    POWER_AVG_W,
    IDLE_POWER_W,
    ENERGY_NET_J,
    GPU_USAGE_PCT,
    GPU_POWER_AVG_W,
    GPU_TEMP_AVG_C,
    GPU_MEM_USED_MB,
    *(energy_source_j("gpu", source) for source in GPU_ENERGY_SOURCES),
    *(energy_projection_error_pct(k) for k in PROJECTION_ERROR_EPOCHS),
    ENERGY_PROJECTION_CARBONTRACKER_ERROR_PCT,
    ENERGY_PROJECTION_START_EPOCH,
)

# ----------------------------------------------------------------------------------------------------
# Per-epoch metrics (logged with step=epoch)

TRAIN_LOSS = "train_loss"
VAL_ACCURACY = "val_accuracy"
VAL_F1 = "val_f1"
EPOCH_DURATION_S = "epoch_duration_s"
LEARNING_RATE = "learning_rate"
EPOCH_ENERGY_J = "epoch_energy_j"
EPOCH_GPU_ENERGY_J = "epoch_gpu_energy_j"
ENERGY_PROJECTED_J = "energy_projected_j"  # measured so far + what the remaining epochs would take
ENERGY_PROJECTED_LOW_J = "energy_projected_low_j"  # the same if early stopping fires at its earliest
EMISSIONS_PROJECTED_G = "emissions_projected_g"

EPOCH_METRICS: tuple[str, ...] = (
    TRAIN_LOSS,
    VAL_ACCURACY,
    VAL_F1,
    EPOCH_DURATION_S,
    LEARNING_RATE,
    EPOCH_ENERGY_J,
    EPOCH_GPU_ENERGY_J,
    ENERGY_PROJECTED_J,
    ENERGY_PROJECTED_LOW_J,
    EMISSIONS_PROJECTED_G,
)

# ----------------------------------------------------------------------------------------------------
# Tags

TAG_GIT_SHA = "repro.git_sha"
TAG_HOST = "repro.host"
TAG_CPU_MODEL = "repro.cpu_model"
TAG_PYTHON = "repro.python"
TAG_TORCH_VERSION = "repro.torch_version"
TAG_TIMM_VERSION = "repro.timm_version"
TAG_MODEL = "repro.model"  # the architecture (the `model` config choice); marks a training job
TAG_GPU = "repro.gpu"  # the `gpu` profile asked for
TAG_SEED = "repro.seed"
TAG_OUTPUT_DIR = "repro.output_dir"
TAG_SWEEP_DIR = "repro.sweep_dir"
TAG_JOB_NUM = "repro.job_num"
TAG_END_REASON = "repro.end_reason"
TAG_PID = "repro.pid"  # the recording process, so a later job can tell that it died
TAG_PID_START = "repro.pid_start"  # its start time in clock ticks: a reused PID is another process
TAG_CONFIG_HASH = "repro.config_hash"  # what `resume=true` matches a job by
TAG_HEARTBEAT = "repro.heartbeat"  # unix time (s) of the recording process's latest heartbeat
TAG_HEARTBEAT_S = "repro.heartbeat_s"  # seconds between two heartbeats
TAG_ARTIFACT_ERRORS = "repro.artifact_errors"  # set only when a file could not be written or logged
TAG_KIND = "repro.kind"  # "sweep" on a sweep's parent run
KIND_SWEEP = "sweep"

TAG_GPU_PROFILE = "gpu.profile"
TAG_GPU_LABEL = "gpu.label"
TAG_DEVICE = "device"
TAG_DEVICE_NAME = "device.name"  # the detected device, e.g. "NVIDIA H200" or "cpu"
TAG_DEVICE_DRIVER_VERSION = "device.driver_version"
TAG_DEVICE_POWER_LIMIT_W = "device.power_limit_w"  # NVML's enforced power limit, GPU runs only
TAG_DEVICE_MEMORY_GB = "device.memory_gb"
TAG_DEVICE_MEMORY_FORMAT = "device.memory_format"  # the layout trained in: channels_last, contiguous
TAG_DEVICE_CUDA_VERSION = "device.cuda_version"
TAG_DEVICE_NOTE = "device.note"

TAG_ENERGY_ESTIMATED = "energy_estimated"


def energy_method_tag(component: str) -> str:
    """The tag that says how one component's energy was obtained, e.g. `energy.method.cpu`."""
    return f"energy.method.{component}"


#: The tags the README lists by name (the energy provenance tags are described there in words).
RUN_TAGS: tuple[str, ...] = (
    TAG_GIT_SHA,
    TAG_HOST,
    TAG_CPU_MODEL,
    TAG_TORCH_VERSION,
    TAG_TIMM_VERSION,
    TAG_MODEL,
    TAG_GPU,
    TAG_SEED,
    TAG_SWEEP_DIR,
    TAG_JOB_NUM,
    TAG_END_REASON,
    TAG_PID,
    TAG_PID_START,
    TAG_CONFIG_HASH,
    TAG_HEARTBEAT,
    TAG_HEARTBEAT_S,
    TAG_ARTIFACT_ERRORS,
    TAG_DEVICE_NAME,
    TAG_DEVICE_POWER_LIMIT_W,
    TAG_ENERGY_ESTIMATED,
)

# ----------------------------------------------------------------------------------------------------
# Params (the flattened resolved config) that analyses read

PARAM_GPU_LABEL = "gpu.label"  # the profile's human label, when a run has no device.name tag
PARAM_GPU_TDP_W = "gpu.tdp_w"  # the profile's nominal TDP, when a run has no NVML power limit
