"""Fixtures for the energy tests: a fake GPU whose power is a known function of time."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from repro.energy import GpuReading, GpuSource


class FakeGpu:
    """Power 100 + 50 t W (t in s since creation): its energy over [a, b] is known exactly."""

    def __init__(self, counter: bool = True) -> None:
        self.t0 = time.perf_counter()
        self.counter = counter
        self.closed = False

    def power_w(self, t: float) -> float:
        return 100 + 50 * t

    def energy_j(self, t: float) -> float:
        return 100 * t + 25 * t**2

    def read(self) -> GpuReading:
        t = time.perf_counter() - self.t0
        return GpuReading(
            power_w=self.power_w(t),
            utilization_pct=80.0,
            memory_used_mb=1000 + t,
            temperature_c=60.0,
            energy_counter_j=self.energy_j(t) if self.counter else None,
        )

    def source(self, device: object = None) -> GpuSource:
        info = {"energy.gpu_name": "Fake GPU", "energy.gpu_driver": "0.0", "energy.gpu_power_limit_w": "300"}
        return GpuSource(self.read, info, self.close)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_gpu() -> Callable[..., FakeGpu]:
    return FakeGpu
