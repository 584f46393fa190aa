"""The energy monitor with a real CodeCarbon tracker on this machine (and a fake GPU where one is needed)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
import torch

from repro.config import EnergyConfig
from repro.energy import create_monitor, nvml
from repro.errors import UserError

CPU = torch.device("cpu")


def busy(seconds: float) -> None:
    """Keep one core busy, so the CPU meters see some load."""
    deadline = time.perf_counter() + seconds
    x = 1.0
    while time.perf_counter() < deadline:
        x = (x * 1.000001) % 7.0


#: Where CodeCarbon looks for RAPL; without it CPU energy can only be an estimate.
_RAPL_READABLE = Path("/sys/class/powercap/intel-rapl/subsystem").exists()


def _cfg(**overrides) -> EnergyConfig:
    values = {
        "meters": ["codecarbon", "nvml-if-gpu"],
        "sample_interval_s": 0.01,
        "carbon_intensity_g_per_kwh": 232.0,
    }
    return EnergyConfig(**{**values, **overrides})


@pytest.mark.slow
def test_cpu_run_windows_metrics_and_provenance(tmp_path: Path) -> None:
    monitor = create_monitor(_cfg(), CPU, tmp_path)
    idle_w = monitor.measure_baseline(0.3)
    monitor.start()
    windows = []
    for epoch in range(3):
        with monitor.window(f"epoch-{epoch}") as window:
            busy(0.3)
        windows.append(window.measurement)
    total = monitor.stop()

    assert total.total_j > 0 and set(total.energy_j) == {"cpu", "ram"}, "no GPU here: no GPU key, not a 0"
    windows_j = sum(w.total_j for w in windows)
    between_s = total.duration_s - sum(w.duration_s for w in windows)  # the moments between windows
    tags = monitor.provenance_tags()
    if _RAPL_READABLE:
        assert windows_j == pytest.approx(total.total_j, rel=0.02)
    else:  # the windows hold the run's energy but for what the moments between them can hold, at most
        # the assumed full power; a busy machine stretches those moments, so they are bounded, not ignored
        max_power_w = float(tags["energy.assumed_cpu_tdp_w"]) + float(tags["energy.assumed_ram_power_w"])
        assert total.total_j * 0.99 - max_power_w * between_s <= windows_j <= total.total_j * 1.01
    assert all(monitor.epoch_metrics(w)["epoch_energy_j"] > 0 for w in windows)
    assert "epoch_gpu_energy_j" not in monitor.epoch_metrics(windows[0])

    metrics = monitor.run_metrics(total, images_seen=100, duration_s=0.9)
    expected = {"energy_cpu_j", "energy_ram_j", "energy_total_j", "energy_j_per_image", "emissions_g"}
    expected |= {"duration_ms_per_image", "power_avg_w", "idle_power_w", "energy_net_j"}
    assert expected <= set(metrics)
    assert not {"energy_gpu_j", "gpu_energy_j_per_image", "gpu_usage_pct"} & set(metrics)
    assert metrics["emissions_g"] == pytest.approx(total.total_j / 3.6e6 * 232.0)
    assert metrics["idle_power_w"] == idle_w > 0
    assert metrics["energy_net_j"] == pytest.approx(total.total_j - idle_w * total.duration_s)

    if _RAPL_READABLE:
        assert tags["energy.method.cpu"] == "rapl"
    else:  # this machine: CodeCarbon estimates the CPU from its TDP and load
        assert tags["energy.method.cpu"] == "tdp-load-estimate"
        assert float(tags["energy.assumed_cpu_tdp_w"]) > 0
    assert tags["energy.method.ram"] == "constant-estimate" and float(tags["energy.assumed_ram_power_w"]) > 0
    assert tags["energy.method.gpu"] == "not-measured"
    assert tags["energy_estimated"] == "true" and monitor.estimated
    assert (
        tags["energy.carbon_intensity_g_per_kwh"] == "232"
        and tags["energy.carbon_intensity_source"] == "config"
    )
    assert tags["energy.codecarbon_version"]

    (csv_path,) = monitor.artifact_paths()
    with csv_path.open() as stream:
        (row,) = list(csv.DictReader(stream))
    assert float(row["energy_consumed"]) * 3.6e6 == pytest.approx(total.total_j, rel=0.02)


def test_energy_so_far_survives_an_exception(tmp_path: Path) -> None:
    monitor = create_monitor(_cfg(carbon_intensity_g_per_kwh=None, country_iso_code="ESP"), CPU, tmp_path)
    monitor.start()
    with pytest.raises(RuntimeError, match="boom"), monitor.window("epoch-0") as window:
        busy(0.2)
        raise RuntimeError("boom")
    total = monitor.stop()
    assert window.measurement is not None and window.measurement.total_j > 0
    assert total.total_j >= window.measurement.total_j > 0
    assert monitor.stop() is total, "stop is idempotent"
    tags = monitor.provenance_tags()
    assert tags["energy.carbon_intensity_source"] == "codecarbon:ESP"
    assert float(tags["energy.carbon_intensity_g_per_kwh"]) > 0


def test_gpu_run_logs_every_gpu_figure(tmp_path: Path, fake_gpu, monkeypatch) -> None:
    gpu = fake_gpu()
    monkeypatch.setattr(nvml, "open_nvml_device", gpu.source)
    monitor = create_monitor(_cfg(), torch.device("cuda"), tmp_path)
    assert monitor.meter_names == ["codecarbon", "nvml"]
    monitor.start()
    with monitor.window("epoch-0") as window:
        busy(0.2)
    total = monitor.stop()
    assert total.method["gpu"] == "nvml-counter"
    assert monitor.epoch_metrics(window.measurement)["epoch_gpu_energy_j"] > 0
    metrics = monitor.run_metrics(total, images_seen=10, duration_s=0.2)
    assert metrics["gpu_energy_j_per_image"] == pytest.approx(metrics["energy_gpu_j"] / 10)
    assert metrics["energy_gpu_nvml_counter_j"] == metrics["energy_gpu_j"]
    assert metrics["energy_gpu_nvml_sampled_j"] == pytest.approx(metrics["energy_gpu_j"], rel=1e-2)
    assert "energy_gpu_codecarbon_j" not in metrics, "CodeCarbon sees no GPU on this machine"
    assert metrics["gpu_usage_pct"] == 80.0 and metrics["gpu_temp_avg_c"] == 60.0
    assert metrics["gpu_power_avg_w"] > 100 and metrics["gpu_mem_used_mb"] > 1000
    tags = monitor.provenance_tags()
    assert tags["energy.gpu_name"] == "Fake GPU" and tags["energy.sample_interval_s"] == "0.01"
    assert {p.name for p in monitor.artifact_paths()} == {"emissions.csv", "gpu_trace.csv"}


def test_codecarbon_that_does_not_really_start_is_an_error(tmp_path: Path, monkeypatch) -> None:
    from codecarbon import OfflineEmissionsTracker

    monkeypatch.setattr(OfflineEmissionsTracker, "start", lambda self: None)  # as when it swallows an error
    with pytest.raises(UserError, match="'codecarbon' did not start"):
        create_monitor(_cfg(), CPU, tmp_path).start()


def test_codecarbon_without_a_writable_folder_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write to"):
        create_monitor(_cfg(), CPU, blocker / "out").start()


def test_explicit_nvml_without_nvml_fails_at_start(tmp_path: Path) -> None:
    if nvml.nvml_index(torch.device("cuda")) is not None:
        pytest.skip("NVML works on this machine")
    monitor = create_monitor(_cfg(meters=["nvml"]), torch.device("cuda"), tmp_path)  # no side effects yet
    with pytest.raises(UserError, match="'nvml' cannot start"):
        monitor.start()


def test_nvml_if_gpu_is_dropped_on_cpu_and_none_measures_nothing(tmp_path: Path) -> None:
    assert create_monitor(_cfg(), CPU, tmp_path).meter_names == ["codecarbon"]
    monitor = create_monitor(_cfg(meters=["none"]), CPU, tmp_path)
    assert not monitor.measuring
    assert monitor.measure_baseline(1.0) is None
    monitor.start()
    with monitor.window("epoch-0") as window:
        busy(0.01)
    total = monitor.stop()
    assert window.measurement.duration_s > 0 and window.measurement.energy_j == {}
    assert monitor.epoch_metrics(window.measurement) == {}
    assert set(monitor.run_metrics(total, images_seen=10, duration_s=1.0)) == {"duration_ms_per_image"}
    assert monitor.provenance_tags()["energy_estimated"] == "false"
    assert monitor.artifact_paths() == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"meters": ["codecarbon", "rapl"]}, r"unknown energy meter 'rapl'; choose from codecarbon, nvml"),
        ({"meters": ["none", "codecarbon"]}, "mixes 'none'"),
        ({"sample_interval_s": -1.0}, "sample_interval_s=-1.0 must be positive"),
        ({"sample_interval_s": 0.0}, "sample_interval_s=0.0 must be positive"),
        ({"warmup_s": -5.0}, "warmup_s=-5.0 is negative"),
        ({"cooldown_s": -1.0}, "cooldown_s=-1.0 is negative"),
        ({"baseline_s": -1.0}, "baseline_s=-1.0 is negative"),
        ({"carbon_intensity_g_per_kwh": -1.0}, "carbon_intensity_g_per_kwh=-1.0 is negative"),
        ({"country_iso_code": "XYZ"}, "country_iso_code='XYZ'"),
    ],
)
def test_bad_config_is_a_user_error(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        create_monitor(_cfg(**overrides), CPU, tmp_path)
    assert list(tmp_path.iterdir()) == [], "validation has no side effects"


def test_codecarbon_error_reaches_the_user(tmp_path: Path, monkeypatch) -> None:
    from codecarbon.emissions_tracker import BaseEmissionsTracker

    def no_hardware(self) -> None:
        raise RuntimeError("no hardware found")

    monkeypatch.setattr(BaseEmissionsTracker, "_ensure_hardware_ready", no_hardware)
    with pytest.raises(UserError, match=r"'codecarbon' failed to start \(RuntimeError: no hardware found\)"):
        create_monitor(_cfg(), CPU, tmp_path).start()
