"""The CodeCarbon meter on this machine's real CodeCarbon: public task API, one tested adapter."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from repro.energy.meters.codecarbon import CodeCarbonMeter, codecarbon_version, read_internals
from repro.errors import UserError

#: Where CodeCarbon looks for RAPL; without it CPU energy can only be an estimate.
_RAPL_READABLE = Path("/sys/class/powercap/intel-rapl/subsystem").exists()


def busy(seconds: float) -> None:
    """Keep one core busy, so the CPU meters see some load."""
    deadline = time.perf_counter() + seconds
    x = 1.0
    while time.perf_counter() < deadline:
        x = (x * 1.000001) % 7.0


@pytest.mark.slow
def test_epoch_windows_add_up_to_the_run_total(tmp_path: Path) -> None:
    # Readings every 0.2 s, so several land inside each window, as CodeCarbon's 15 s do in real epochs.
    meter = CodeCarbonMeter(tmp_path, measure_power_s=0.2, carbon_intensity_g_per_kwh=232.0)
    meter.start()
    windows = []
    for epoch in range(4):
        meter.open_window(f"epoch-{epoch}")
        busy(0.7)
        windows.append(meter.close_window(f"epoch-{epoch}"))
    total = meter.stop()

    assert total.total_j > 0 and all(window.total_j > 0 for window in windows)
    # The windows are disjoint parts of the run: they hold its time and energy but for the moments
    # between them, which a busy machine stretches; those hold at most the assumed full power.
    between_s = total.duration_s - sum(window.duration_s for window in windows)
    assert 0 <= between_s < total.duration_s
    tags = meter.provenance()
    if _RAPL_READABLE:
        assert sum(window.total_j for window in windows) == pytest.approx(total.total_j, rel=0.01)
    else:
        full_w = {"cpu": tags["energy.assumed_cpu_tdp_w"], "ram": tags["energy.assumed_ram_power_w"]}
        for part in ("cpu", "ram"):
            windows_j, total_j = sum(w.energy_j[part] for w in windows), total.energy_j[part]
            assert total_j * 0.99 - float(full_w[part]) * between_s <= windows_j <= total_j * 1.01, part

    (path,) = meter.artifact_paths()
    with path.open() as stream:
        (row,) = list(csv.DictReader(stream))
    assert float(row["duration"]) == pytest.approx(total.duration_s, rel=1e-3), "the run's, not a task's"
    assert float(row["energy_consumed"]) * 3.6e6 == pytest.approx(total.total_j, rel=1e-3)
    assert float(row["emissions"]) * 1000 == pytest.approx(total.total_j / 3.6e6 * 232.0, rel=1e-3)
    assert meter.intensity_g_per_kwh == pytest.approx(232.0)


def test_what_only_codecarbon_s_internals_say(tmp_path: Path) -> None:
    """Fails, naming the version, on a CodeCarbon release that changed what `read_internals` reads."""
    version = codecarbon_version()
    meter = CodeCarbonMeter(tmp_path, write_csv=False)
    meter.start()
    try:
        internals = meter.internals
        assert internals is not None and internals.started, f"CodeCarbon {version}: started, not reported"
        expected = "intel_rapl" if _RAPL_READABLE else "cpu_load"
        assert internals.cpu_mode == expected, f"CodeCarbon {version}: CPU mode {internals.cpu_mode}"
        if expected == "cpu_load":
            assert internals.cpu_tdp_w and internals.cpu_tdp_w > 0, f"CodeCarbon {version}: no TDP"
            assert internals.cpu_tdp_source.startswith("codecarbon-")
            assert meter.methods()["cpu"] == "tdp-load-estimate", "an estimate must never look like a reading"
        else:
            assert meter.methods()["cpu"] == "rapl"
        assert internals.gpu_power_fallback is None and "gpu" not in meter.methods(), "no GPU tracked here"
    finally:
        meter.stop()


def test_a_codecarbon_that_changed_is_named(tmp_path: Path) -> None:
    changed = types.SimpleNamespace(_start_time=1.0)  # e.g. a release that renamed `_hardware`
    with pytest.raises(UserError, match=rf"CodeCarbon {codecarbon_version()} no longer has what repro reads"):
        read_internals(changed)


@pytest.mark.parametrize("blocker", ["folder", "symlink"])
def test_an_emissions_file_it_cannot_write_stops_the_job_at_start(tmp_path: Path, blocker: str) -> None:
    target = tmp_path / "emissions.csv"
    if blocker == "folder":
        target.mkdir()
    else:
        target.symlink_to(tmp_path / "elsewhere.csv")
    with pytest.raises(UserError, match="'codecarbon' cannot write to"):
        CodeCarbonMeter(tmp_path).start()
    assert not (tmp_path / "elsewhere.csv").exists(), "nothing written through the link"


def test_an_emissions_file_that_fails_at_stop_keeps_the_measurement(tmp_path: Path) -> None:
    """A full disk at the end must not cost the run its energy: the error comes after the measurement."""
    import shutil

    import torch

    from repro.config import EnergyConfig
    from repro.energy.monitor import create_monitor

    monitor = create_monitor(EnergyConfig(meters=["codecarbon"]), torch.device("cpu"), tmp_path)
    monitor.start()
    busy(0.5)
    csv_path = tmp_path / "emissions.csv"
    csv_path.unlink()
    csv_path.mkdir()  # the file cannot be written any more, as on a full disk
    with pytest.raises(OSError):
        monitor.stop()
    total = monitor.stop()
    assert total.energy_j["cpu"] > 0 and total.energy_j["ram"] > 0
    assert total.duration_s > 0.4
    shutil.rmtree(csv_path)


_PROVENANCE_SCRIPT = """
import json, sys
from pathlib import Path
import torch
from repro.energy.meters.codecarbon import CodeCarbonMeter
if sys.argv[1] == "prepared":
    CodeCarbonMeter.prepare(torch.device("cpu"))
meter = CodeCarbonMeter(Path(sys.argv[2]), write_csv=False)
meter.start()
try:
    print(json.dumps({**meter.provenance(), **meter.methods(), "internals": repr(meter.internals)}))
finally:
    meter.stop()
"""


@pytest.mark.slow
def test_hardware_detection_ahead_of_start_changes_nothing_the_meter_reports(tmp_path: Path) -> None:
    """Each in a fresh process, as CodeCarbon keeps what it detected for the process."""
    reports = {}
    for way in ("plain", "prepared"):
        done = subprocess.run(
            [sys.executable, "-c", _PROVENANCE_SCRIPT, way, str(tmp_path / way)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        reports[way] = json.loads(done.stdout.strip().splitlines()[-1])
    assert reports["prepared"] == reports["plain"]
    assert reports["plain"]["cpu"] in ("rapl", "tdp-load-estimate")
