"""The NVML meter: GPU energy from NVML's energy counter, or its power sampled in a background thread."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import torch

from repro.config import EnergyConfig
from repro.energy import nvml
from repro.energy.measurement import NVML_COUNTER, NVML_SAMPLED, Measurement
from repro.energy.nvml import GpuSource, PowerSampler, span_measurement
from repro.energy.registry import MarkingMeter, MeterContext, register_meter


@register_meter(
    "nvml",
    methods=[
        NVML_COUNTER,
        NVML_SAMPLED,
    ],
    aliases={"nvml-if-gpu": "nvml-if-available"},
)
class NvmlMeter(MarkingMeter):
    """GPU energy from NVML, sampled in a background thread.

    Args:
        device: The training device; its NVML handle is found by UUID. A CPU device means GPU 0.
        interval_s: Sampling period.
        trace_path: Where the trace CSV is written at stop.
        open_device: Opens the GPU; injected by tests, `open_nvml_device` otherwise.
    """

    name = "nvml"
    preference = {"gpu": 1}  # measures exactly the training GPU; CodeCarbon may see several

    def __init__(
        self,
        device: torch.device,
        interval_s: float,
        trace_path: Path,
        open_device: Callable[[torch.device], GpuSource] | None = None,
    ) -> None:
        super().__init__()
        self.device = device
        self.interval_s = interval_s
        self.trace_path = trace_path
        self._open_device = open_device or nvml.open_nvml_device  # looked up now, so tests can replace it
        self._source: GpuSource | None = None
        self._sampler: PowerSampler | None = None
        self._has_counter = False

    @classmethod
    def from_config(cls, cfg: EnergyConfig, context: MeterContext) -> NvmlMeter:
        trace = context.output_dir / ("gpu_trace_baseline.csv" if context.baseline else "gpu_trace.csv")
        return cls(context.device, cfg.sample_interval_s, trace)

    @classmethod
    def unavailable(cls, device: torch.device | None) -> str | None:
        if device is not None and device.type != "cuda":
            return f"the training device is the {device.type.upper()}, not an NVIDIA GPU"
        return None  # whether NVML answers is known only when it starts

    def _start(self) -> None:
        self._source = self._open_device(self.device)
        self._has_counter = self._source.read().energy_counter_j is not None
        self._sampler = PowerSampler(self._source.read, self.interval_s)
        self._sampler.start()

    def _mark(self) -> int:
        return self._sampler.mark()

    def _finish(self) -> int:
        end = self._sampler.stop()
        self._write_trace()
        self._source.close()
        return end

    def _between(self, start: int, end: int) -> Measurement:
        return span_measurement(self._sampler.between(start, end))

    def methods(self) -> dict[str, str]:
        return {"gpu": "nvml-counter" if self._has_counter else "nvml-sampled"}

    def provenance(self) -> dict[str, str]:
        tags = dict(self._source.info)
        tags["energy.sample_interval_s"] = f"{self.interval_s:g}"
        tags["energy.nvml_counter"] = str(self._has_counter).lower()
        if self._sampler is not None and self._sampler.failed_reads:
            tags["energy.nvml_failed_reads"] = str(self._sampler.failed_reads)
        return tags

    def artifact_paths(self) -> list[Path]:
        return [self.trace_path] if self.trace_path.exists() else []

    def _write_trace(self) -> None:
        samples = self._sampler.samples
        self.trace_path.parent.mkdir(parents=True, exist_ok=True)
        with self.trace_path.open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(
                ["timestamp", "elapsed_s", "power_w", "utilization_pct", "memory_used_mb",
                 "temperature_c", "energy_counter_j"]
            )  # fmt: skip
            for sample in samples:
                r = sample.reading
                writer.writerow(
                    [f"{sample.unix_s:.3f}", f"{sample.time_s - samples[0].time_s:.3f}", r.power_w,
                     r.utilization_pct, r.memory_used_mb, r.temperature_c, r.energy_counter_j]
                )  # fmt: skip
