"""The NVML meter without a GPU: trapezoid integration, the sampler thread, windows and the trace."""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from repro.energy import GpuReading, NvmlMeter, PowerSampler, integrate_trapezoid


def test_trapezoid_matches_the_analytic_integral() -> None:
    # P(t) = 3t^2 + 2 on [0, 2]: E = t^3 + 2t = 12 J; the trapezoid error is (b-a) h^2 max|P''| / 12.
    times = [i * 0.001 for i in range(2001)]
    energy = integrate_trapezoid(times, [3 * t**2 + 2 for t in times])
    assert energy == pytest.approx(12.0, abs=2 * 0.001**2 * 6 / 12 + 1e-12)
    assert integrate_trapezoid([0.0, 1.0, 3.0], [10.0, 20.0, 20.0]) == pytest.approx(15.0 + 40.0)
    assert integrate_trapezoid([1.0], [5.0]) == 0.0
    with pytest.raises(ValueError):
        integrate_trapezoid([0.0, 1.0], [1.0])


def _wait_until(condition: Callable[[], bool], what: str, deadline_s: float = 60) -> None:
    """Poll until `condition` holds, however busy the machine; fail naming `what` after the deadline."""
    stop = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < stop, f"no {what} within {deadline_s:.0f} s"
        time.sleep(0.01)


def test_sampler_thread_integrates_an_injected_reading(fake_gpu) -> None:
    gpu = fake_gpu()
    sampler = PowerSampler(gpu.read, interval_s=0.01)
    start = sampler.start()
    # As many samples as 0.3 s would give, counted rather than hoped for: a busy machine may lag.
    _wait_until(lambda: len(sampler.samples) >= 30, "30 samples from the sampler thread")
    end = sampler.stop()
    samples = sampler.between(start, end)
    assert len(samples) >= 31, "the thread samples on its own; stop() adds the last one"
    assert [s.time_s for s in samples] == sorted(s.time_s for s in samples)
    t_a, t_b = samples[0].time_s - gpu.t0, samples[-1].time_s - gpu.t0
    measured = integrate_trapezoid([s.time_s for s in samples], [s.reading.power_w for s in samples])
    assert measured == pytest.approx(gpu.energy_j(t_b) - gpu.energy_j(t_a), rel=0.01)
    count = len(sampler.samples)
    time.sleep(0.05)
    assert len(sampler.samples) == count, "the thread must stop with stop()"


def test_sampler_keeps_sampling_after_a_failed_read() -> None:
    calls = {"n": 0}

    def flaky() -> GpuReading:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("GPU is lost")
        return GpuReading(power_w=50.0)

    sampler = PowerSampler(flaky, interval_s=0.01)
    sampler.start()
    _wait_until(lambda: calls["n"] >= 6, "6 reads")  # the third one fails; the thread must go on
    sampler.stop()
    assert sampler.failed_reads == 1
    assert len(sampler.samples) >= 5


@pytest.mark.parametrize("counter", [True, False])
def test_nvml_meter_windows_sum_to_the_total(fake_gpu, tmp_path: Path, counter: bool) -> None:
    gpu = fake_gpu(counter=counter)
    meter = NvmlMeter(torch.device("cuda"), 0.01, tmp_path / "gpu_trace.csv", open_device=gpu.source)
    meter.start()
    windows = []
    for epoch in range(3):
        meter.open_window(f"epoch-{epoch}")
        time.sleep(0.1)
        windows.append(meter.close_window(f"epoch-{epoch}"))
    total = meter.stop()
    assert sum(w.total_j for w in windows) == pytest.approx(total.total_j, rel=0.02)
    assert meter.stop() is total, "stop is idempotent"
    method = "nvml-counter" if counter else "nvml-sampled"
    assert total.method == {"gpu": method} and meter.methods() == {"gpu": method}
    assert set(total.alternatives_j) == (
        {"gpu.nvml-sampled", "gpu.nvml-counter"} if counter else {"gpu.nvml-sampled"}
    )
    if counter:
        # a linear power trace: the trapezoid rule and the counter agree
        assert total.alternatives_j["gpu.nvml-sampled"] == pytest.approx(
            total.alternatives_j["gpu.nvml-counter"], rel=1e-3
        )
    assert total.gpu.usage_pct == 80.0 and total.gpu.temp_avg_c == 60.0
    assert total.gpu.mem_used_peak_mb > 1000
    assert total.gpu.power_avg_w == pytest.approx(total.alternatives_j["gpu.nvml-sampled"] / total.duration_s)
    assert gpu.closed
    with (tmp_path / "gpu_trace.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == [
        "timestamp", "elapsed_s", "power_w", "utilization_pct", "memory_used_mb", "temperature_c",
        "energy_counter_j",
    ]  # fmt: skip
    assert len(rows) == len(meter._sampler.samples) and math.isclose(float(rows[0]["elapsed_s"]), 0.0)
    assert meter.provenance()["energy.gpu_name"] == "Fake GPU"
    assert meter.artifact_paths() == [tmp_path / "gpu_trace.csv"]
