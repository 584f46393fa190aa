"""NVML access for the meters: a background sampler of GPU power, in the style of the study's
`nvidia-smi` loop, and the handle of the training GPU.

Power is integrated over time with the trapezoid rule. Where the GPU has a total-energy counter
(Volta and newer), the counter's difference is recorded too, and preferred as the GPU's energy.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from repro.energy.measurement import GpuStats, Measurement
from repro.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuReading:
    """What one NVML query returns; fields a GPU does not report are None."""

    power_w: float
    utilization_pct: float | None = None
    memory_used_mb: float | None = None
    temperature_c: float | None = None
    energy_counter_j: float | None = None  # NVML's total energy since the driver loaded


@dataclass
class GpuSource:
    """An opened GPU: a reading function, its provenance tags, and how to close it."""

    read: Callable[[], GpuReading]
    info: dict[str, str] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class GpuSample:
    time_s: float  # time.perf_counter(), for integration
    unix_s: float  # time.time(), for the trace
    reading: GpuReading


def integrate_trapezoid(times_s: Sequence[float], power_w: Sequence[float]) -> float:
    """Energy in joules of a power trace, by the trapezoid rule; 0 for fewer than two samples."""
    if len(times_s) != len(power_w):
        raise ValueError(f"{len(times_s)} times but {len(power_w)} power values")
    return sum(
        (times_s[i + 1] - times_s[i]) * (power_w[i] + power_w[i + 1]) / 2 for i in range(len(times_s) - 1)
    )


class PowerSampler:
    """Calls `read` every `interval_s` seconds in a daemon thread and keeps every sample.

    `mark()` takes a sample at once and returns its index, so a window's boundaries are exact rather
    than rounded to the sampling grid.
    """

    def __init__(self, read: Callable[[], GpuReading], interval_s: float) -> None:
        self.read = read
        self.interval_s = interval_s
        self.failed_reads = 0
        self._samples: list[GpuSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def samples(self) -> list[GpuSample]:
        with self._lock:
            return list(self._samples)

    def start(self) -> int:
        index = self.mark()
        self._thread = threading.Thread(target=self._run, name="repro-nvml-sampler", daemon=True)
        self._thread.start()
        return index

    def mark(self) -> int:
        """Take a sample now (in the caller's thread); return its index."""
        with self._lock:
            t0 = time.perf_counter()
            reading = self.read()
            t1 = time.perf_counter()
            self._samples.append(GpuSample((t0 + t1) / 2, time.time(), reading))
            return len(self._samples) - 1

    def stop(self) -> int:
        """Stop the thread, take a last sample and return its index."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.mark()

    def between(self, start: int, end: int) -> list[GpuSample]:
        with self._lock:
            return self._samples[start : end + 1]

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.mark()
            except Exception as error:  # a reading the driver refused: count it, keep sampling
                self.failed_reads += 1
                if self.failed_reads == 1:
                    log.warning("NVML sampling failed (%s); the GPU trace will have gaps", error)


def span_measurement(samples: list[GpuSample]) -> Measurement:
    """The GPU energy and statistics of a span of samples (both ends included)."""
    times = [s.time_s for s in samples]
    duration_s = times[-1] - times[0]
    sampled_j = integrate_trapezoid(times, [s.reading.power_w for s in samples])
    alternatives_j = {"gpu.nvml-sampled": sampled_j}
    first, last = samples[0].reading.energy_counter_j, samples[-1].reading.energy_counter_j
    if first is not None and last is not None:
        alternatives_j["gpu.nvml-counter"] = last - first
        energy_j, method = last - first, "nvml-counter"
    else:
        energy_j, method = sampled_j, "nvml-sampled"

    def mean(values: list[float | None]) -> float:
        present = [v for v in values if v is not None]
        return sum(present) / len(present) if present else float("nan")

    memory = [s.reading.memory_used_mb for s in samples if s.reading.memory_used_mb is not None]
    stats = GpuStats(
        usage_pct=mean([s.reading.utilization_pct for s in samples]),
        power_avg_w=sampled_j / duration_s if duration_s > 0 else samples[-1].reading.power_w,
        temp_avg_c=mean([s.reading.temperature_c for s in samples]),
        mem_used_peak_mb=max(memory) if memory else float("nan"),
        samples=len(samples),
    )
    return Measurement({"gpu": energy_j}, {"gpu": method}, duration_s, stats, alternatives_j)


def open_nvml_device(device: torch.device) -> GpuSource:
    """Open the NVML handle of `device`: raise `UserError` when NVML is missing."""
    try:
        import pynvml
    except ImportError as error:
        raise UserError("energy meter 'nvml' needs nvidia-ml-py: pip install nvidia-ml-py") from error
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        raise UserError(
            f"energy meter 'nvml' cannot start: NVML is unavailable ({error}); "
            "on a machine without an NVIDIA GPU use energy=codecarbon or energy=none"
        ) from error
    handle = _nvml_handle(pynvml, device)

    def optional(query: Callable[[], Any]) -> Any:
        try:
            return query()
        except pynvml.NVMLError:  # this GPU does not report it
            return None

    temperature_sensor = pynvml.NVML_TEMPERATURE_GPU
    has_counter = optional(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)) is not None

    def read() -> GpuReading:
        utilization = optional(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        memory = optional(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20)
        counter_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) if has_counter else None
        return GpuReading(
            power_w=pynvml.nvmlDeviceGetPowerUsage(handle) / 1000,
            utilization_pct=utilization,
            memory_used_mb=memory,
            temperature_c=optional(lambda: pynvml.nvmlDeviceGetTemperature(handle, temperature_sensor)),
            energy_counter_j=counter_mj / 1000 if counter_mj is not None else None,
        )

    name = pynvml.nvmlDeviceGetName(handle)
    driver = pynvml.nvmlSystemGetDriverVersion()
    limit_mw = optional(lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    info = {
        "energy.gpu_name": name.decode() if isinstance(name, bytes) else str(name),
        "energy.gpu_driver": driver.decode() if isinstance(driver, bytes) else str(driver),
        "energy.gpu_power_limit_w": f"{limit_mw / 1000:g}" if limit_mw is not None else "unknown",
    }
    return GpuSource(read, info, pynvml.nvmlShutdown)


def nvml_index(device: torch.device) -> int | None:
    """NVML's index of a CUDA device (which CUDA_VISIBLE_DEVICES may renumber), or None without NVML."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        log.debug("no NVML: %s", error)
        return None
    try:
        return pynvml.nvmlDeviceGetIndex(_nvml_handle(pynvml, device))
    finally:
        pynvml.nvmlShutdown()


def _nvml_handle(pynvml: Any, device: torch.device) -> Any:
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if uuid is not None:
            text = str(uuid)
            return pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith("GPU-") else f"GPU-{text}")
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    return pynvml.nvmlDeviceGetHandleByIndex(0)


def check_power_limit(device: torch.device, limit_w: float) -> None:
    """Refuse a power limit NVML will not set on `device`, changing nothing: preflight's check.

    NVML tells whether the caller may set a limit only by trying, so the limit in force is written
    back unchanged.

    Raises:
        UserError: no NVIDIA GPU or no NVML, a board without a settable limit, a limit outside the
            board's range, or no permission (setting a limit needs root).
    """
    with _power_limit_handle(device, limit_w) as (pynvml, handle):
        current_mw = pynvml.nvmlDeviceGetPowerManagementLimit(handle)
        _set_limit(pynvml, handle, current_mw, limit_w)


@contextmanager
def power_limit(device: torch.device, limit_w: float | None) -> Iterator[float | None]:
    """Run the block with the GPU's power limit at `limit_w`, then put the previous limit back.

    The previous limit is restored however the block ends (an exception, SIGTERM's `TrainingStopped`,
    Ctrl-C), with SIGTERM held back while it is written. `limit_w=None` leaves the board alone.

    Yields:
        The limit in force in watts, as NVML reads it back (the board may round the request), or None
        when `limit_w` is None.

    Raises:
        UserError: as `check_power_limit`, before anything is changed.
    """
    if limit_w is None:
        yield None
        return
    with _power_limit_handle(device, limit_w) as (pynvml, handle):
        previous_mw = pynvml.nvmlDeviceGetPowerManagementLimit(handle)
        _set_limit(pynvml, handle, round(limit_w * 1000), limit_w)
        try:
            yield pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
        finally:
            with _sigterm_held():
                try:
                    pynvml.nvmlDeviceSetPowerManagementLimit(handle, previous_mw)
                except pynvml.NVMLError as error:  # the job's own outcome must still be reported
                    print(
                        f"warning: the GPU's power limit could not be restored to {previous_mw / 1000:g} W "
                        f"({error}); restore it with: nvidia-smi -pl {previous_mw / 1000:g}",
                        file=sys.stderr,
                    )


@contextmanager
def _power_limit_handle(device: torch.device, limit_w: float) -> Iterator[tuple[Any, Any]]:
    """NVML started and the handle of `device`, whose power limit may be set to `limit_w`."""
    asked = f"gpu.power_limit_w={limit_w:g}"
    if device.type != "cuda":
        raise UserError(
            f"{asked} needs an NVIDIA GPU, but this job trains on the {device.type.upper()}; "
            "leave gpu.power_limit_w=null"
        )
    try:
        import pynvml
    except ImportError as error:
        raise UserError(f"{asked} is set through NVML: pip install nvidia-ml-py") from error
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        raise UserError(f"{asked} is set through NVML, which is unavailable ({error})") from error
    try:
        handle = _nvml_handle(pynvml, device)
        try:
            low_mw, high_mw = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
        except pynvml.NVMLError as error:
            raise UserError(f"{asked}: this GPU's power limit cannot be set ({error})") from error
        if not low_mw <= round(limit_w * 1000) <= high_mw:
            raise UserError(f"{asked} is outside this GPU's range, {low_mw / 1000:g} to {high_mw / 1000:g} W")
        yield pynvml, handle
    finally:
        pynvml.nvmlShutdown()


def _set_limit(pynvml: Any, handle: Any, limit_mw: int, asked_w: float) -> None:
    try:
        pynvml.nvmlDeviceSetPowerManagementLimit(handle, limit_mw)
    except pynvml.NVMLError_NoPermission as error:
        raise UserError(
            f"gpu.power_limit_w={asked_w:g}: no permission to set the GPU's power limit ({error}); run as "
            "root, or have an administrator set it with nvidia-smi -pl and leave gpu.power_limit_w=null"
        ) from error
    except pynvml.NVMLError as error:
        raise UserError(f"gpu.power_limit_w={asked_w:g}: NVML refused the limit ({error})") from error


@contextmanager
def _sigterm_held() -> Iterator[None]:
    """Hold SIGTERM back for the block (main thread only); a SIGTERM sent meanwhile arrives after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
