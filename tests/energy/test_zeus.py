"""The Zeus meter: refused in one line where it cannot measure, and a real window where it can."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from tests.support import refused_in_process

from repro.config import EnergyConfig
from repro.energy import create_monitor
from repro.energy.meters import __main__ as listing
from repro.energy.meters import zeus as zeus_meter

_REASON_HERE = zeus_meter.ZeusMonitorMeter.unavailable(None)


def test_zeus_not_installed_is_refused_and_listed(monkeypatch, capsys, smoke_overrides) -> None:
    monkeypatch.setattr(zeus_meter, "_zeus_installed", lambda: False)
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, "energy=zeus")
    assert (
        err == "error: energy meter 'zeus' is unavailable: Zeus is not installed; pip install 'repro[zeus]'"
    )
    listing.main()
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("zeus ")]
    assert "unavailable: Zeus is not installed; pip install 'repro[zeus]'" in line


@pytest.mark.skipif(_REASON_HERE is None, reason="Zeus can measure on this machine (an NVIDIA GPU or RAPL)")
def test_energy_zeus_stops_before_training_where_it_cannot_measure(
    monkeypatch, capsys, smoke_overrides, tmp_path
) -> None:
    # repro-train's main in this process: exit 2 and this one line on stderr, checked by the helper
    run_dir = f"hydra.run.dir={tmp_path / 'run'}"
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, "energy=zeus", run_dir)
    assert err == f"error: energy meter 'zeus' is unavailable: {_REASON_HERE}"
    assert not (tmp_path / "run" / "history.csv").exists(), "nothing trained"


@pytest.mark.slow
@pytest.mark.skipif(_REASON_HERE is not None, reason=f"no Zeus measurement here: {_REASON_HERE}")
def test_a_real_zeus_window(tmp_path: Path) -> None:
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    monitor = create_monitor(EnergyConfig(meters=["zeus"]), device, tmp_path)
    monitor.start()
    with monitor.window("epoch-0") as window:
        x = torch.randn(2048, 2048, device=device)
        deadline = time.perf_counter() + 2.0
        while time.perf_counter() < deadline:
            x = torch.tanh(x @ x)
    total = monitor.stop()
    measured = window.measurement
    assert measured.total_j > 0 and total.total_j >= measured.total_j
    if device.type == "cuda":
        assert total.method["gpu"] in ("nvml-counter", "nvml-sampled") and total.energy_j["gpu"] > 0
    if zeus_meter.rapl_readable():
        assert total.method["cpu"] == "rapl" and total.energy_j["cpu"] > 0
    tags = monitor.provenance_tags()
    assert tags["energy.zeus_version"] and tags["energy_estimated"] == "false"
