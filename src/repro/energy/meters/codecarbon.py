"""The CodeCarbon meter: CPU, RAM and GPU energy from one offline tracker (no network).

CodeCarbon is driven through its public API: `start()`, then one task always open. Every reading
("mark") closes the open task with `stop_task`, which returns the task's `EmissionsData` (energy per
component in kWh), and opens the next with `start_task`. The run's energy is the sum of the closed
tasks, so the per-epoch windows, which are differences of marks, add up to it by construction. A
thread of ours marks every `measure_power_s` seconds, as CodeCarbon's own timer would (which
`start_task` pauses), so that no span between two hardware readings is long enough for a RAPL
counter to wrap twice.

What CodeCarbon exposes nowhere publicly (whether `start()` worked, how it measures the CPU, its
assumed TDP, whether a GPU fell back from its energy counter to sampled power) is read by
`read_internals` alone, the one function here that touches a private member; its test names the
CodeCarbon version when a release changes one of them.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repro.config import EnergyConfig
from repro.energy.measurement import NVML_COUNTER, NVML_SAMPLED, RAPL, Measurement, Method
from repro.energy.nvml import nvml_index
from repro.energy.registry import MarkingMeter, MeterContext, register_meter
from repro.errors import UserError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_J_PER_KWH = 3.6e6

#: CodeCarbon's CPU modes (`codecarbon.external.hardware.CPU._mode`) and what they mean here.
_CODECARBON_CPU_METHODS = {
    "intel_rapl": "rapl",  # /sys/class/powercap energy counters
    "windows_emi": "rapl",  # the same counters through Windows' Energy Meter Interface
    "cpu_load": "tdp-load-estimate",  # TDP x a function of psutil's CPU load
    "constant": "constant-estimate",  # half the TDP, always
}

#: How often a reading is taken between windows (CodeCarbon's default `measure_power_secs`).
_MEASURE_POWER_S = 15.0

#: Where CodeCarbon reads the CPU's RAPL energy counters on Linux; without them it estimates from a TDP.
_RAPL_DIR = Path("/sys/class/powercap/intel-rapl/subsystem")

#: EmissionsData fields in kWh (or litres) that add up over tasks.
_ADDITIVE = ("emissions", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed", "water_consumed")
#: Utilizations averaged over tasks, weighted by their durations.
_AVERAGED = ("cpu_utilization_percent", "gpu_utilization_percent", "ram_utilization_percent", "ram_used_gb")

#: repro's clock (time.perf_counter) at a mark, and the closed tasks' running totals in joules.
_Mark = tuple[float, dict[str, float]]


@dataclass(frozen=True)
class Internals:
    """What a CodeCarbon tracker knows but exposes nowhere publicly (see `read_internals`).

    Attributes:
        started: Whether `start()` really started it (it swallows its errors).
        cpu_mode: How it measures the CPU: `intel_rapl`, `windows_emi`, `cpu_load` or `constant`;
            None when it tracks no CPU.
        cpu_tdp_w: The TDP its CPU estimates assume (None in a counter mode).
        cpu_tdp_source: Where that TDP came from: its CPU registry, a per-thread or an 85 W default.
        gpu_power_fallback: Whether a tracked GPU integrates sampled power instead of reading NVML's
            energy counter (None: it tracks no GPU).
    """

    started: bool
    cpu_mode: str | None
    cpu_tdp_w: float | None
    cpu_tdp_source: str | None
    gpu_power_fallback: bool | None


def codecarbon_version() -> str:
    import codecarbon

    return codecarbon.__version__


def read_internals(tracker: Any) -> Internals:
    """Read `Internals` from a CodeCarbon 3.3 tracker: the only private access to CodeCarbon in repro.

    Raises:
        UserError: naming the installed version, when a release renamed or removed what is read.
    """
    try:
        started = tracker._start_time is not None
        hardware = {type(item).__name__: item for item in tracker._hardware}
        cpu, gpu = hardware.get("CPU"), hardware.get("GPU")
        cpu_mode = cpu._mode if cpu is not None else None
        tdp_w = tdp_source = None
        if cpu_mode in ("cpu_load", "constant"):
            tdp_w = float(cpu._tdp)
            tdp_source = _tdp_source(bool(cpu._is_generic_tdp))
        fallback = None
        if gpu is not None:
            # Each device reads NVML's energy counter, or falls back to sampling power when the counter
            # is missing or fails (codecarbon.core.gpu_device.GPUDevice).
            tracked = set(gpu._get_gpu_ids())
            devices = [device for device in gpu.devices.devices if device.gpu_index in tracked]
            fallback = any(device._use_power_fallback for device in devices)
    except AttributeError as error:
        raise UserError(
            f"CodeCarbon {codecarbon_version()} no longer has what repro reads from it ({error}); "
            "install codecarbon>=3.3,<4"
        ) from error
    if cpu_mode is not None and cpu_mode not in _CODECARBON_CPU_METHODS:
        raise UserError(
            f"CodeCarbon {codecarbon_version()} measures the CPU in a mode repro does not know "
            f"({cpu_mode!r}); install codecarbon>=3.3,<4"
        )
    return Internals(started, cpu_mode, tdp_w, tdp_source, fallback)


@functools.cache
def _tdp_source(generic: bool) -> str:
    """Where CodeCarbon's assumed TDP came from: its CPU registry or a default (part of `read_internals`).

    Cached: the registry lookup reads CodeCarbon's CPU table, and the CPU does not change.
    """
    if generic:
        return "codecarbon-default-85w"
    from codecarbon.core import cpu as cpu_module
    from codecarbon.core.hardware_cache import get_cached_tdp

    tdp = get_cached_tdp(cpu_module)
    if tdp._get_cpu_power_from_registry(tdp.model) is None:
        return "codecarbon-default-per-thread"
    return "codecarbon-cpu-registry"


class _SwallowedErrors(logging.Filter):
    """Collects the exceptions CodeCarbon's `@suppress` logs (with `exc_info`) instead of raising them,
    and lets only its errors through to the console."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])
        return record.levelno >= logging.ERROR


@contextmanager
def _codecarbon_errors() -> Iterator[list[BaseException]]:
    """The exceptions CodeCarbon swallows inside the block; outside, it logs only its errors."""
    logger = logging.getLogger("codecarbon")
    swallowed = _SwallowedErrors()
    logger.addFilter(swallowed)
    logger.setLevel(logging.WARNING)  # @suppress logs at WARNING
    try:
        yield swallowed.errors
    finally:
        logger.removeFilter(swallowed)
        logger.setLevel(logging.ERROR)


@register_meter(
    "codecarbon",
    methods=[
        RAPL,
        NVML_COUNTER,
        NVML_SAMPLED,
        Method("tdp-load-estimate", rank=40, estimate=True),
        Method("constant-estimate", rank=50, estimate=True),
    ],
)
class CodeCarbonMeter(MarkingMeter):
    """CodeCarbon's `OfflineEmissionsTracker`: CPU, RAM and (NVIDIA/AMD) GPU energy, no network.

    Args:
        output_dir: Where `emissions.csv` is written (one row for the run, CodeCarbon's columns).
        measure_power_s: How often a reading is taken between windows.
        gpu_ids: The GPUs CodeCarbon tracks (None: all it finds).
        country_iso_code: The grid CodeCarbon looks the carbon intensity up for (None: world average).
        carbon_intensity_g_per_kwh: A carbon intensity to use instead.
        write_csv: Whether to write `emissions.csv` (not for the idle baseline).
    """

    name = "codecarbon"
    intensity_source = "codecarbon:world-average"

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
        self._internals: Internals | None = None
        self._lock = threading.Lock()  # one mark at a time: ours and the window's
        self._totals_j: dict[str, float] = {}
        self._tasks: list[Any] = []  # CodeCarbon's EmissionsData of every closed task
        self._duration_s = 0.0
        self._task_number = 0
        self._marker: threading.Thread | None = None
        self._stop_marking = threading.Event()
        self._marker_error: BaseException | None = None
        self._columns: list[str] = []

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

    @classmethod
    def prepare(cls, device: torch.device) -> None:
        """Import CodeCarbon and, where it will estimate the CPU from a TDP, look the TDP up before `start`.

        The lookup (the CPU's model from a `cpuinfo` subprocess, then its row in CodeCarbon's CPU table)
        takes seconds of waiting. CodeCarbon keeps its outcome for the process (`get_cached_tdp`) and
        every tracker's hardware set-up reads it from there, as `_tdp_source` does; so calling it
        earlier changes nothing the tracker detects or reports. With RAPL counters neither needs it.
        """
        from codecarbon.core import cpu as cpu_module
        from codecarbon.core.hardware_cache import get_cached_tdp

        if _RAPL_DIR.exists():
            return
        with _codecarbon_errors() as swallowed:  # its warnings stay off the console, as during `start`
            get_cached_tdp(cpu_module)
            _tdp_source(False)
        if swallowed:
            raise swallowed[0]

    @property
    def csv_path(self) -> Path:
        return self.output_dir / "emissions.csv"

    def _start(self) -> None:
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.output_methods.emissions_data import EmissionsData

        if self.write_csv:
            self._columns = [item.name for item in dataclasses.fields(EmissionsData)]
            try:
                self._write_csv_rows([])  # the header now: a folder it cannot write stops the job here
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
        with _codecarbon_errors() as swallowed:
            self._tracker = OfflineEmissionsTracker(
                project_name="repro",
                output_methods=[],  # repro writes emissions.csv, with the run's own duration
                measure_power_secs=self.measure_power_s,
                api_call_interval=-1,
                tracking_mode="machine",
                allow_multiple_runs=True,  # repro's own lock (measurement_lock) isolates jobs
                log_level="warning",  # what @suppress logs reaches _codecarbon_errors
                **optional,
            )
            self._tracker.start()
        if not swallowed and not read_internals(self._tracker).started:
            raise UserError(
                "energy meter 'codecarbon' did not start (its tracker is not running); "
                "fix that, or choose energy=nvml or energy=none"
            )
        if not swallowed:
            try:
                self._tracker.start_task(self._next_task())  # not suppressed: its errors are raised
            except Exception as error:  # whatever CodeCarbon raised, the job must not train unmeasured
                swallowed.append(error)
        if swallowed:
            error = swallowed[0]
            raise UserError(
                f"energy meter 'codecarbon' failed to start ({type(error).__name__}: {error}); "
                "fix that, or choose energy=nvml or energy=none"
            ) from error
        self._internals = read_internals(self._tracker)
        if self._internals.cpu_mode is None:
            raise UserError(
                "energy meter 'codecarbon' started without tracking the CPU "
                f"(CodeCarbon {codecarbon_version()}); install codecarbon>=3.3,<4"
            )
        self._totals_j = {"cpu": 0.0, "ram": 0.0, **({"gpu": 0.0} if self._tracks_gpu else {})}
        self._marker = threading.Thread(target=self._mark_periodically, name="repro-codecarbon", daemon=True)
        self._marker.start()

    @property
    def internals(self) -> Internals | None:
        """What CodeCarbon reported about itself when it started (None before)."""
        return self._internals

    @property
    def _tracks_gpu(self) -> bool:
        return self._internals is not None and self._internals.gpu_power_fallback is not None

    def _next_task(self) -> str:
        self._task_number += 1
        return f"repro-{self._task_number}"

    def _close_task(self) -> None:
        """Close the open task and add its energy to the totals (under `_lock`)."""
        data = self._tracker.stop_task()
        if data is None:
            raise RuntimeError(
                "CodeCarbon had no open task to stop; its energy since the last reading is lost"
            )
        if self._start_mark is None:  # the start mark: the tasks before it are not the run's
            return
        self._tasks.append(data)
        self._totals_j["cpu"] += data.cpu_energy * _J_PER_KWH
        self._totals_j["ram"] += data.ram_energy * _J_PER_KWH
        if "gpu" in self._totals_j:
            self._totals_j["gpu"] += data.gpu_energy * _J_PER_KWH

    def _mark(self) -> _Mark:
        with self._lock:
            if self._marker_error is not None:
                raise self._marker_error
            self._close_task()
            self._tracker.start_task(self._next_task())
            return time.perf_counter(), dict(self._totals_j)

    def _mark_periodically(self) -> None:
        while not self._stop_marking.wait(self.measure_power_s):
            try:
                self._mark()
            except Exception as error:  # raised again by the next window or by stop
                self._marker_error = error
                return

    def _finish(self) -> _Mark:
        self._stop_marking.set()
        if self._marker is not None:
            self._marker.join()
        with self._lock:
            try:
                if self._marker_error is not None:
                    raise self._marker_error
                self._close_task()
                end_s = time.perf_counter()
            finally:
                with _codecarbon_errors() as swallowed:
                    self._tracker.stop()
                for error in swallowed:
                    log.warning("CodeCarbon did not stop cleanly (%s: %s)", type(error).__name__, error)
        self._duration_s = end_s - self._start_mark[0]
        return end_s, dict(self._totals_j)

    def stop(self) -> Measurement:
        """Stop and return the whole run, then write `emissions.csv`.

        The measurement is kept when the file cannot be written: the `OSError` (a full disk, say) is
        raised after it, and a later call returns the same measurement.
        """
        first = not self.stopped
        total = super().stop()
        if first and self.write_csv:
            self._write_csv_rows([self._run_row()])
        return total

    def _between(self, start: _Mark, end: _Mark) -> Measurement:
        (t0, e0), (t1, e1) = start, end
        energy_j = {component: e1[component] - e0[component] for component in e1}
        alternatives_j = {"gpu.codecarbon": energy_j["gpu"]} if "gpu" in energy_j else {}
        return Measurement(energy_j, self.methods(), t1 - t0, alternatives_j=alternatives_j)

    def methods(self) -> dict[str, str]:
        internals = read_internals(self._tracker)  # a GPU may fall back to sampled power mid-run
        methods = {
            "cpu": _CODECARBON_CPU_METHODS[internals.cpu_mode],
            # RAM power is a model of installed memory (or a forced constant), never a reading.
            "ram": "constant-estimate",
        }
        if internals.gpu_power_fallback is not None:
            methods["gpu"] = "nvml-sampled" if internals.gpu_power_fallback else "nvml-counter"
        return methods

    @property
    def intensity_g_per_kwh(self) -> float | None:
        """The carbon intensity CodeCarbon applied (its emissions over its energy), once stopped."""
        energy_kwh = sum(task.energy_consumed for task in self._tasks)
        if not self.stopped or energy_kwh <= 0:
            return None
        return sum(task.emissions for task in self._tasks) * 1000 / energy_kwh

    def provenance(self) -> dict[str, str]:
        tags = {
            "energy.codecarbon_version": codecarbon_version(),
            "energy.codecarbon_interval_s": f"{self.measure_power_s:g}",
            "energy.cpu_model": str(self._tracker.get_detected_hardware().get("cpu_model")),
        }
        if self._internals.cpu_tdp_w is not None:
            tags["energy.assumed_cpu_tdp_w"] = f"{self._internals.cpu_tdp_w:g}"
            tags["energy.assumed_cpu_tdp_source"] = str(self._internals.cpu_tdp_source)
        if self._tasks:
            tags["energy.assumed_ram_power_w"] = f"{self._tasks[-1].ram_power:.4g}"
        return tags

    def artifact_paths(self) -> list[Path]:
        return [self.csv_path] if self.write_csv and self.stopped and self.csv_path.exists() else []

    def _run_row(self) -> dict[str, Any]:
        """CodeCarbon's columns for the whole run: the tasks' sums, over repro's own duration.

        (`start_task` restarts CodeCarbon's clock, so its own total would cover the last task only.)
        """
        row = dict(self._tasks[-1].values)
        duration_s = self._duration_s
        tasks_s = sum(task.duration for task in self._tasks) or 1.0
        for key in _ADDITIVE:
            row[key] = sum(getattr(task, key) for task in self._tasks)
        for key in _AVERAGED:
            row[key] = sum(getattr(task, key) * task.duration for task in self._tasks) / tasks_s
        row["duration"] = duration_s
        per_s = 1 / duration_s if duration_s > 0 else 0.0
        row["emissions_rate"] = row["emissions"] * per_s
        for component in ("cpu", "gpu", "ram"):
            row[f"{component}_power"] = row[f"{component}_energy"] * _J_PER_KWH * per_s  # W
        return row

    def _write_csv_rows(self, rows: list[dict[str, Any]]) -> None:
        """Write `emissions.csv` afresh: the header, then `rows`; never through a symbolic link.

        Raises:
            OSError: at stop, e.g. a full disk, so the run ends FAILED saying so.
        """
        self.output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.csv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(rows)
