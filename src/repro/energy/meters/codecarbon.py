"""The CodeCarbon meter: CPU, RAM and GPU energy from one offline tracker (no network)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from repro.config import EnergyConfig
from repro.energy.measurement import Measurement, Method
from repro.energy.nvml import nvml_index
from repro.energy.registry import MarkingMeter, MeterContext, register_meter
from repro.errors import UserError

log = logging.getLogger(__name__)

_J_PER_KWH = 3.6e6

#: CodeCarbon's CPU modes (`codecarbon.external.hardware.CPU._mode`) and what they mean here.
_CODECARBON_CPU_METHODS = {
    "intel_rapl": "rapl",  # /sys/class/powercap energy counters
    "windows_emi": "rapl",  # the same counters through Windows' Energy Meter Interface
    "cpu_load": "tdp-load-estimate",  # TDP x a function of psutil's CPU load
    "constant": "constant-estimate",  # half the TDP, always
}


#: CodeCarbon's clock (time.perf_counter) at its last measurement, and its running totals in joules.
_Mark = tuple[float, dict[str, float]]


#: How often CodeCarbon's own timer measures (its `measure_power_secs`).
_MEASURE_POWER_S = 15.0


@register_meter(
    "codecarbon",
    methods=[
        Method("rapl", rank=10, estimate=False),
        Method("nvml-counter", rank=20, estimate=False),
        Method("nvml-sampled", rank=30, estimate=False),
        Method("tdp-load-estimate", rank=40, estimate=True),
        Method("constant-estimate", rank=50, estimate=True),
    ],
)
class CodeCarbonMeter(MarkingMeter):
    """CodeCarbon's `OfflineEmissionsTracker`: CPU, RAM and (NVIDIA/AMD) GPU energy, no network.

    Windows read CodeCarbon's running totals after forcing a measurement. CodeCarbon's own periodic
    measurement runs in a timer thread, so both go through one lock: two concurrent measurements
    would count the same interval twice. This reads private attributes of CodeCarbon 3.3
    (`_total_cpu_energy`, `_hardware`, ...); `start` checks they exist.
    """

    name = "codecarbon"

    def __init__(
        self,
        output_dir: Path,
        *,
        measure_power_s: float = _MEASURE_POWER_S,
        gpu_ids: list[int] | None = None,
        country_iso_code: str | None = None,
        carbon_intensity_g_per_kwh: float | None = None,
        write_csv: bool = True,
    ) -> None:
        super().__init__()
        self.output_dir = output_dir
        self.measure_power_s = measure_power_s
        self.gpu_ids = gpu_ids
        self.country_iso_code = country_iso_code
        self.carbon_intensity_g_per_kwh = carbon_intensity_g_per_kwh
        self.write_csv = write_csv
        self._tracker: Any = None
        self._lock = threading.Lock()
        self._final: Any = None  # CodeCarbon's EmissionsData at stop

    intensity_source = "codecarbon:world-average"

    @classmethod
    def from_config(cls, cfg: EnergyConfig, context: MeterContext) -> CodeCarbonMeter:
        gpu_ids = None
        if context.device.type == "cuda":
            index = nvml_index(context.device)
            gpu_ids = [index] if index is not None else None
        meter = cls(
            context.output_dir,
            gpu_ids=gpu_ids,
            country_iso_code=cfg.country_iso_code,
            carbon_intensity_g_per_kwh=cfg.carbon_intensity_g_per_kwh,
            write_csv=not context.baseline,
        )
        meter.intensity_source = f"codecarbon:{cfg.country_iso_code or 'world-average'}"
        return meter

    @property
    def csv_path(self) -> Path:
        return self.output_dir / "emissions.csv"

    def _start(self) -> None:
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.output_methods.base_output import OutputMethod

        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"energy meter 'codecarbon' cannot write to {self.output_dir} ({error}); "
                "give the job a writable output directory"
            ) from error
        optional: dict[str, Any] = {}
        if self.country_iso_code is not None:
            optional["country_iso_code"] = self.country_iso_code
        if self.carbon_intensity_g_per_kwh is not None:
            optional["force_carbon_intensity_g_co2e_kwh"] = self.carbon_intensity_g_per_kwh
        if self.gpu_ids is not None:
            optional["gpu_ids"] = self.gpu_ids
        logging.getLogger("codecarbon").setLevel(logging.ERROR)  # as log_level does, but before __init__ logs
        # CodeCarbon wraps __init__ and start() in @suppress(Exception), which logs (below the level
        # set here) and carries on with a half-built tracker; call them unwrapped to see the error.
        self._tracker = OfflineEmissionsTracker.__new__(OfflineEmissionsTracker)
        try:
            _unsuppressed(OfflineEmissionsTracker.__init__)(
                self._tracker,
                project_name="repro",
                output_dir=str(self.output_dir),
                output_file=self.csv_path.name,
                output_methods=[OutputMethod.CSV] if self.write_csv else [],
                measure_power_secs=self.measure_power_s,
                api_call_interval=-1,  # no periodic output; the CSV row is written at stop
                tracking_mode="machine",
                allow_multiple_runs=True,  # repro's own lock (measurement_lock) isolates jobs
                log_level="error",
                **optional,
            )
            _unsuppressed(OfflineEmissionsTracker.start)(self._tracker)
        except Exception as error:  # whatever CodeCarbon raised, the job must not train unmeasured
            raise UserError(
                f"energy meter 'codecarbon' failed to start ({type(error).__name__}: {error}); "
                "fix that, or choose energy=nvml or energy=none"
            ) from error
        scheduler = getattr(self._tracker, "_scheduler", None)
        if getattr(self._tracker, "_start_time", None) is None or scheduler is None or scheduler._stopped:
            raise UserError(
                "energy meter 'codecarbon' did not start (its tracker is not running); "
                "fix that, or choose energy=nvml or energy=none"
            )
        if not hasattr(self._tracker, "_total_cpu_energy") or self._cpu() is None:
            raise UserError(
                "energy meter 'codecarbon' started without the CPU tracking repro reads "
                f"(CodeCarbon {self._version()}); install codecarbon>=3.3,<4"
            )
        scheduler.function = self._measure  # CodeCarbon's timer now measures under our lock

    def _measure(self) -> None:
        with self._lock:
            self._tracker._measure_power_and_energy()

    def _mark(self) -> _Mark:
        with self._lock:
            self._tracker._measure_power_and_energy()
            return self._tracker._last_measured_time, self._totals_j()

    def _totals_j(self) -> dict[str, float]:
        totals = {
            "cpu": self._tracker._total_cpu_energy.kWh * _J_PER_KWH,
            "ram": self._tracker._total_ram_energy.kWh * _J_PER_KWH,
        }
        if self._gpu() is not None:
            totals["gpu"] = self._tracker._total_gpu_energy.kWh * _J_PER_KWH
        return totals

    def _finish(self) -> _Mark:
        with self._lock:
            self._tracker.stop()
            self._final = getattr(self._tracker, "final_emissions_data", None)
            if self._final is None:
                log.warning("CodeCarbon failed to stop cleanly; its energy ends at its last measurement")
            return self._tracker._last_measured_time, self._totals_j()

    def _between(self, start: _Mark, end: _Mark) -> Measurement:
        (t0, e0), (t1, e1) = start, end
        energy_j = {component: e1[component] - e0[component] for component in e1}
        alternatives_j = {"gpu.codecarbon": energy_j["gpu"]} if "gpu" in energy_j else {}
        return Measurement(energy_j, self.methods(), t1 - t0, alternatives_j=alternatives_j)

    def _cpu(self) -> Any:
        return next((hw for hw in self._tracker._hardware if type(hw).__name__ == "CPU"), None)

    def _gpu(self) -> Any:
        return next((hw for hw in self._tracker._hardware if type(hw).__name__ == "GPU"), None)

    def _ram(self) -> Any:
        return next((hw for hw in self._tracker._hardware if type(hw).__name__ == "RAM"), None)

    def _version(self) -> str:
        import codecarbon

        return codecarbon.__version__

    def methods(self) -> dict[str, str]:
        cpu_mode = self._cpu()._mode
        methods = {
            "cpu": _CODECARBON_CPU_METHODS.get(cpu_mode, f"codecarbon-{cpu_mode}"),
            # RAM power is a model of installed memory (or a forced constant), never a reading.
            "ram": "constant-estimate",
        }
        gpu = self._gpu()
        if gpu is not None:
            # Each device reads NVML's energy counter, or falls back to sampling power when the
            # counter is missing or fails (codecarbon.core.gpu_device.GPUDevice).
            tracked = set(gpu._get_gpu_ids())
            devices = [device for device in gpu.devices.devices if device.gpu_index in tracked]
            fallback = any(getattr(device, "_use_power_fallback", True) for device in devices)
            methods["gpu"] = "nvml-sampled" if fallback else "nvml-counter"
        return methods

    @property
    def intensity_g_per_kwh(self) -> float | None:
        """The carbon intensity CodeCarbon applied (its emissions over its energy), once stopped."""
        if self._final is None or self._final.energy_consumed <= 0:
            return None
        return self._final.emissions * 1000 / self._final.energy_consumed

    def provenance(self) -> dict[str, str]:
        tags = {
            "energy.codecarbon_version": self._version(),
            "energy.codecarbon_interval_s": f"{self.measure_power_s:g}",
            "energy.cpu_model": str(self._tracker._conf.get("cpu_model")),
        }
        cpu = self._cpu()
        if cpu._mode in ("cpu_load", "constant"):
            tags["energy.assumed_cpu_tdp_w"] = f"{cpu._tdp:g}"
            tags["energy.assumed_cpu_tdp_source"] = _tdp_source(cpu)
        ram = self._ram()
        if ram is not None:
            tags["energy.assumed_ram_power_w"] = f"{ram.total_power().W:.4g}"
        return tags

    def artifact_paths(self) -> list[Path]:
        return [self.csv_path] if self.write_csv and self.csv_path.exists() else []


def _unsuppressed(method: Any) -> Any:
    """A CodeCarbon method without its `@suppress(Exception)` (a ContextDecorator, so `__wrapped__`)."""
    return getattr(method, "__wrapped__", method)


def _tdp_source(cpu: Any) -> str:
    """Where CodeCarbon's assumed TDP came from: its CPU registry or a default."""
    if cpu._is_generic_tdp:
        return "codecarbon-default-85w"
    from codecarbon.core import cpu as cpu_module
    from codecarbon.core.hardware_cache import get_cached_tdp

    tdp = get_cached_tdp(cpu_module)
    if tdp._get_cpu_power_from_registry(tdp.model) is None:
        return "codecarbon-default-per-thread"
    return "codecarbon-cpu-registry"
