"""Energy measurement that says how it was measured.

Meters (CodeCarbon, an NVML sampler) behind one interface, named windows (one per epoch), the run's
energy metrics and provenance tags, the study's protocol (warm-up, cooldown, idle baseline), and a
machine-wide lock so two measured jobs never count each other's energy.
"""

from repro.energy.lock import measurement_lock
from repro.energy.measurement import METHODS, GpuStats, Measurement
from repro.energy.meters import CodeCarbonMeter, Meter
from repro.energy.monitor import METER_NAMES, EnergyMonitor, Window, create_monitor
from repro.energy.nvml import GpuReading, GpuSource, NvmlMeter, PowerSampler, integrate_trapezoid
from repro.energy.protocol import cooldown, warmup

__all__ = [
    "METER_NAMES",
    "METHODS",
    "CodeCarbonMeter",
    "EnergyMonitor",
    "GpuReading",
    "GpuSource",
    "GpuStats",
    "Measurement",
    "Meter",
    "NvmlMeter",
    "PowerSampler",
    "Window",
    "cooldown",
    "create_monitor",
    "integrate_trapezoid",
    "measurement_lock",
    "warmup",
]
