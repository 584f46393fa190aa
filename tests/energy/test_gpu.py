"""The real NVML sampler and CodeCarbon's GPU tracking on an NVIDIA GPU; skipped without one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from repro.config import EnergyConfig
from repro.energy import create_monitor
from repro.energy.nvml import nvml_index

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or nvml_index(torch.device("cuda")) is None,
        reason="needs an NVIDIA GPU with NVML",
    ),
]


def _load(device: torch.device, seconds: float) -> None:
    matrix = torch.randn(8192, 8192, device=device)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        matrix = torch.tanh(matrix @ matrix)
        torch.cuda.synchronize(device)


def test_three_gpu_figures_agree(tmp_path: Path) -> None:
    device = torch.device("cuda", torch.cuda.current_device())
    cfg = EnergyConfig(meters=["codecarbon", "nvml"], sample_interval_s=0.1, carbon_intensity_g_per_kwh=232.0)
    monitor = create_monitor(cfg, device, tmp_path)
    monitor.start()
    with monitor.window("epoch-0") as window:
        _load(device, 10.0)
    total = monitor.stop()
    metrics = monitor.run_metrics(total, images_seen=1000, duration_s=10.0)
    tags = monitor.provenance_tags()
    figures = {
        key: metrics[key]
        for key in ("energy_gpu_codecarbon_j", "energy_gpu_nvml_sampled_j", "energy_gpu_nvml_counter_j")
        if key in metrics
    }
    print(figures, {k: v for k, v in tags.items() if "gpu" in k}, metrics.get("gpu_usage_pct"))
    assert "energy_gpu_codecarbon_j" in figures and "energy_gpu_nvml_sampled_j" in figures
    assert max(figures.values()) / min(figures.values()) < 1.05
    assert tags["energy.method.gpu"] in ("nvml-counter", "nvml-sampled")
    assert tags["energy.gpu_name"] and tags["energy.gpu_driver"] and tags["energy.gpu_power_limit_w"]
    assert metrics["gpu_usage_pct"] > 50 and metrics["gpu_power_avg_w"] > 0
    assert monitor.epoch_metrics(window.measurement)["epoch_gpu_energy_j"] > 0
    assert {path.name for path in monitor.artifact_paths()} == {"emissions.csv", "gpu_trace.csv"}
