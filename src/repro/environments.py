"""GPU profiles: find the hardware a job runs on and check it against the requested `gpu=` profile.

A profile (`conf/gpu/*.yaml`, schema `repro.config.GpuConfig`) is one of three kinds:

- `auto`: whatever this machine has, the first CUDA device or else the CPU;
- a profile without `device_match` (such as `cpu`): no accelerator;
- a named profile (`a100`, `rtx3090`, ...): a GPU whose name contains `device_match` as whole words,
  case-insensitively ("RTX 3090" matches "NVIDIA GeForce RTX 3090", "A10" does not match "A100").

`resolve_device` runs on the node that trains, so a job sent to the wrong node stops before training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from repro import names
from repro.errors import UserError

if TYPE_CHECKING:
    from repro.config import GpuConfig

AUTO = "auto"


@dataclass(frozen=True)
class DeviceInfo:
    """The device a job trains on, and what was found out about it.

    Attributes:
        torch_device: where tensors go, `cpu` or `cuda:<index>`.
        name: the detected device name, e.g. "NVIDIA H200", or "cpu".
        profile: the requested `gpu=` profile name.
        label: the profile's human label, e.g. the study's "Cloud".
        driver_version: NVIDIA driver version, when NVML is available.
        power_limit_w: enforced board power limit, when NVML is available.
        memory_gb: device memory in GB (10^9 bytes); None for the CPU.
        cuda_version: CUDA runtime version torch was built with; None for the CPU.
        note: how the device was chosen, e.g. why `gpu=auto` fell back to the CPU.
    """

    torch_device: torch.device
    name: str
    profile: str
    label: str
    driver_version: str | None = None
    power_limit_w: float | None = None
    memory_gb: float | None = None
    cuda_version: str | None = None
    note: str | None = None

    def tags(self) -> dict[str, str]:
        """MLflow tags for this device; values that could not be detected are left out."""
        values = {
            names.TAG_GPU_PROFILE: self.profile,
            names.TAG_GPU_LABEL: self.label,
            names.TAG_DEVICE: str(self.torch_device),
            names.TAG_DEVICE_NAME: self.name,
            names.TAG_DEVICE_DRIVER_VERSION: self.driver_version,
            names.TAG_DEVICE_POWER_LIMIT_W: None if self.power_limit_w is None else f"{self.power_limit_w:g}",
            names.TAG_DEVICE_MEMORY_GB: None if self.memory_gb is None else f"{self.memory_gb:.1f}",
            names.TAG_DEVICE_CUDA_VERSION: self.cuda_version,
            names.TAG_DEVICE_NOTE: self.note,
        }
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class _Gpu:
    """One CUDA device as torch numbers it, enriched with NVML's view when NVML is available."""

    index: int
    name: str
    memory_gb: float
    driver_version: str | None = None
    power_limit_w: float | None = None


def resolve_device(cfg: GpuConfig) -> DeviceInfo:
    """Check the requested profile against this machine's hardware and pick the device to train on.

    Args:
        cfg: the composed `gpu` config group.

    Returns:
        The device to train on; a matching GPU is also made torch's current CUDA device.

    Raises:
        UserError: a named profile whose GPU is not on this machine.
    """
    if cfg.name != AUTO and cfg.device_match is None:
        return _cpu(cfg, note=None)
    gpus, why_none = _detect_gpus()
    if cfg.name == AUTO:
        if not gpus:
            return _cpu(cfg, note=f"gpu=auto found no usable GPU: {why_none}")
        return _on_gpu(cfg, gpus[0], note=f"gpu=auto chose the first of {len(gpus)} CUDA device(s)")
    matching = [gpu for gpu in gpus if _matches(cfg.device_match, gpu.name)]
    if not matching:
        raise UserError(_mismatch_message(cfg, gpus, why_none))
    return _on_gpu(cfg, matching[0], note=None)


def _matches(device_match: str, device_name: str) -> bool:
    """Whether `device_match` occurs in `device_name` as whole words, ignoring case."""
    pattern = r"(?<![A-Za-z0-9])" + re.escape(device_match.strip()) + r"(?![A-Za-z0-9])"
    return re.search(pattern, device_name, flags=re.IGNORECASE) is not None


def _mismatch_message(cfg: GpuConfig, gpus: list[_Gpu], why_none: str | None) -> str:
    wanted = f"gpu={cfg.name} asks for an NVIDIA {cfg.device_match}"
    elsewhere = "or submit to a cluster with hydra/launcher=slurm"
    if not gpus:
        found = "this machine has no NVIDIA GPU"
        if why_none and why_none != _NO_NVIDIA_GPU:
            found = f"this machine has no usable NVIDIA GPU ({why_none})"
        return f"{wanted} but {found}; use gpu=cpu or gpu=auto here, {elsewhere}"
    found = ", ".join(f"{gpu.name} (cuda:{gpu.index})" for gpu in gpus)
    return (
        f"{wanted} but this machine has {found}; use gpu=auto or a profile for that GPU here, "
        f"or set gpu.device_match, {elsewhere}"
    )


def _cpu(cfg: GpuConfig, note: str | None) -> DeviceInfo:
    return DeviceInfo(
        torch_device=torch.device("cpu"), name="cpu", profile=cfg.name, label=cfg.label, note=note
    )


def _on_gpu(cfg: GpuConfig, gpu: _Gpu, note: str | None) -> DeviceInfo:
    torch.cuda.set_device(gpu.index)
    return DeviceInfo(
        torch_device=torch.device("cuda", gpu.index),
        name=gpu.name,
        profile=cfg.name,
        label=cfg.label,
        driver_version=gpu.driver_version,
        power_limit_w=gpu.power_limit_w,
        memory_gb=gpu.memory_gb,
        cuda_version=torch.version.cuda,
        note=note,
    )


_NO_NVIDIA_GPU = "no NVIDIA GPU"


def _detect_gpus() -> tuple[list[_Gpu], str | None]:
    """The CUDA devices torch can use, in torch's numbering, and why there are none if so.

    torch's numbering is the one that matters (it honours CUDA_VISIBLE_DEVICES, which SLURM sets);
    NVML adds the driver and the power limit, matched to torch's devices by UUID.
    """
    nvml_by_uuid, nvml_names = _nvml_devices()
    if not torch.cuda.is_available():
        if nvml_names:
            why = (
                f"NVML sees {', '.join(nvml_names)} but torch {torch.__version__} cannot use CUDA; "
                "install a CUDA build of torch or check CUDA_VISIBLE_DEVICES"
            )
            return [], why
        return [], _NO_NVIDIA_GPU
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        driver_version, power_limit_w = nvml_by_uuid.get(
            _normalise_uuid(str(getattr(props, "uuid", ""))), (None, None)
        )
        gpus.append(
            _Gpu(
                index=index,
                name=props.name,
                memory_gb=props.total_memory / 1e9,
                driver_version=driver_version,
                power_limit_w=power_limit_w,
            )
        )
    return gpus, None


def _normalise_uuid(uuid: str) -> str:
    return uuid.lower().removeprefix("gpu-")


def _nvml_devices() -> tuple[dict[str, tuple[str, float | None]], list[str]]:
    """NVML's devices: (driver version, power limit in W) by UUID, and their names.

    Empty when pynvml is not installed or NVML cannot start (no NVIDIA driver).
    """
    try:
        import pynvml
    except ImportError:
        return {}, []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return {}, []
    try:
        driver_version = _text(pynvml.nvmlSystemGetDriverVersion())
        by_uuid: dict[str, tuple[str, float | None]] = {}
        names = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            names.append(_text(pynvml.nvmlDeviceGetName(handle)))
            try:
                power_limit_w: float | None = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
            except pynvml.NVMLError_NotSupported:
                power_limit_w = None  # e.g. consumer boards without power management
            by_uuid[_normalise_uuid(_text(pynvml.nvmlDeviceGetUUID(handle)))] = (
                driver_version,
                power_limit_w,
            )
        return by_uuid, names
    finally:
        pynvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    """NVML strings are bytes in older pynvml releases and str in newer ones."""
    return value.decode() if isinstance(value, bytes) else value
