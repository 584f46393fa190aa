"""The Zeus meter: GPU energy from NVML and CPU (and DRAM) energy from RAPL, through Zeus's `ZeusMonitor`.

Zeus (https://ml.energy/zeus, `pip install 'repro[zeus]'`) measures named windows: `begin_window(name)`
reads every counter, `end_window(name)` returns a `Measurement` of the time and the joules per GPU and
per CPU package since then. This meter keeps one window open for the whole run and one per epoch.

How Zeus obtains each figure (zeus/monitor/energy.py, 0.16): a GPU of the Volta generation or later
reads NVML's total-energy counter (`nvml-counter`); an older GPU has its power sampled by Zeus's
`PowerMonitor` and integrated (`nvml-sampled`). CPU packages and their DRAM sub-zones read RAPL's
energy counters, whose wrap-arounds Zeus tracks (`rapl`). Zeus estimates nothing.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from importlib.metadata import version
from typing import Any

import torch

from repro.config import EnergyConfig
from repro.energy.measurement import NVML_COUNTER, NVML_SAMPLED, RAPL, Measurement
from repro.energy.registry import Meter, MeterContext, register_meter
from repro.errors import UserError

#: Where Zeus looks for RAPL: the host's powercap tree, or Zeus's container mount of it.
_RAPL_COUNTERS = (
    "/sys/class/powercap/intel-rapl/intel-rapl:*/energy_uj",
    "/zeus_sys/class/powercap/intel-rapl/intel-rapl:*/energy_uj",
)
#: The window that spans the whole run (epoch windows are named by the monitor, e.g. `epoch-0`).
_RUN = "repro-run"


def _zeus_installed() -> bool:
    return importlib.util.find_spec("zeus") is not None


def rapl_readable() -> bool:
    """Whether this machine exposes a RAPL energy counter this process may read."""
    return any(os.access(path, os.R_OK) for pattern in _RAPL_COUNTERS for path in glob.glob(pattern))


@register_meter(
    "zeus",
    methods=[
        RAPL,
        NVML_COUNTER,
        NVML_SAMPLED,
    ],
)
class ZeusMonitorMeter(Meter):
    """Zeus's `ZeusMonitor`: the training GPU (if the job trains on one) and every RAPL CPU package.

    Args:
        gpu_index: The CUDA index of the training GPU, or None for a job on the CPU.
    """

    name = "zeus"

    def __init__(self, gpu_index: int | None) -> None:
        super().__init__()
        self.gpu_index = gpu_index
        self._monitor: Any = None
        self._methods: dict[str, str] = {}

    @classmethod
    def from_config(cls, cfg: EnergyConfig, context: MeterContext) -> ZeusMonitorMeter:
        gpu_index = None
        if context.device.type == "cuda":
            gpu_index = (
                context.device.index if context.device.index is not None else torch.cuda.current_device()
            )
        return cls(gpu_index)

    @classmethod
    def unavailable(cls, device: torch.device | None) -> str | None:
        if not _zeus_installed():
            return "Zeus is not installed; pip install 'repro[zeus]'"
        has_gpu = torch.cuda.is_available() if device is None else device.type == "cuda"
        if not has_gpu and not rapl_readable():
            return (
                "Zeus needs an NVIDIA GPU or a readable RAPL counter (/sys/class/powercap/intel-rapl), "
                "and this machine has neither"
            )
        return None

    def _start(self) -> None:
        from zeus.monitor import ZeusMonitor

        try:
            self._monitor = ZeusMonitor(
                gpu_indices=[self.gpu_index] if self.gpu_index is not None else [],
                cpu_indices=None,  # every RAPL package Zeus finds (none without RAPL)
            )
            self._monitor.begin_window(_RUN)
        except Exception as error:  # whatever Zeus raised, the job must not train unmeasured
            raise UserError(
                f"energy meter 'zeus' failed to start ({type(error).__name__}: {error}); "
                "fix that, or choose another energy meter"
            ) from error
        self._methods = self._read_methods()
        if not self._methods:
            raise UserError("energy meter 'zeus' found nothing to measure (no GPU index and no RAPL package)")

    def _read_methods(self) -> dict[str, str]:
        monitor = self._monitor
        methods: dict[str, str] = {}
        if monitor.cpu_indices:
            methods["cpu"] = "rapl"
            if any(
                monitor.cpus.get_total_energy_consumption(i).dram_mj is not None for i in monitor.cpu_indices
            ):
                methods["ram"] = "rapl"
        if monitor.gpu_indices:
            counter = all(monitor.gpus.supports_get_total_energy_consumption(i) for i in monitor.gpu_indices)
            methods["gpu"] = "nvml-counter" if counter else "nvml-sampled"
        return methods

    def open_window(self, name: str) -> None:
        self._monitor.begin_window(name)

    def close_window(self, name: str) -> Measurement:
        return self._measurement(self._monitor.end_window(name))

    def _stop(self) -> Measurement:
        return self._measurement(self._monitor.end_window(_RUN))

    def _measurement(self, window: Any) -> Measurement:
        """Our `Measurement` from Zeus's: joules summed over the GPUs, the CPU packages and their DRAM."""
        energy_j: dict[str, float] = {}
        if "gpu" in self._methods:
            energy_j["gpu"] = sum(window.gpu_energy.values())
        if "cpu" in self._methods:
            energy_j["cpu"] = sum((window.cpu_energy or {}).values())
        if "ram" in self._methods:
            energy_j["ram"] = sum((window.dram_energy or {}).values())
        alternatives_j = {"gpu.zeus": energy_j["gpu"]} if "gpu" in energy_j else {}
        return Measurement(energy_j, dict(self._methods), window.time, alternatives_j=alternatives_j)

    def methods(self) -> dict[str, str]:
        return dict(self._methods)

    def provenance(self) -> dict[str, str]:
        tags = {"energy.zeus_version": version("zeus")}
        if self._monitor is not None:
            tags["energy.zeus_gpu_indices"] = ",".join(map(str, self._monitor.gpu_indices))
            tags["energy.zeus_cpu_indices"] = ",".join(map(str, self._monitor.cpu_indices))
        return tags
