"""Energy measurement that says how it was measured.

Meters (CodeCarbon, an NVML sampler, Zeus) registered by name in `repro.energy.meters`, named windows
(one per epoch), the run's energy metrics and provenance tags, the study's protocol (warm-up,
cooldown, idle baseline), and a machine-wide lock so two measured jobs never count each other's energy.
"""

from repro.energy.lock import measurement_lock
from repro.energy.measurement import GpuStats, Measurement, Method, ranked_methods
from repro.energy.meters import CodeCarbonMeter, NvmlMeter
from repro.energy.monitor import (
    EnergyMonitor,
    Window,
    check_energy_config,
    check_meters_available,
    create_monitor,
)
from repro.energy.nvml import GpuReading, GpuSource, PowerSampler, integrate_trapezoid
from repro.energy.protocol import cooldown, warmup
from repro.energy.registry import MarkingMeter, Meter, MeterContext, register_meter

__all__ = [
    "CodeCarbonMeter",
    "EnergyMonitor",
    "GpuReading",
    "GpuSource",
    "GpuStats",
    "MarkingMeter",
    "Measurement",
    "Meter",
    "MeterContext",
    "Method",
    "NvmlMeter",
    "PowerSampler",
    "Window",
    "check_energy_config",
    "check_meters_available",
    "cooldown",
    "create_monitor",
    "integrate_trapezoid",
    "measurement_lock",
    "ranked_methods",
    "register_meter",
    "warmup",
]
