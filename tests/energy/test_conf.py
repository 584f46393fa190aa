"""Every energy preset is one create_monitor accepts, with the protocol off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from repro.config import CONF_DIR, EnergyConfig
from repro.energy import create_monitor

OPTIONS = sorted(path.stem for path in (CONF_DIR / "energy").glob("*.yaml"))


@pytest.mark.parametrize("option", OPTIONS)
def test_preset_is_valid_and_protocol_free(option: str, tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"energy={option}"])
    energy: EnergyConfig = OmegaConf.to_object(cfg.energy)
    assert (energy.warmup_s, energy.cooldown_s, energy.baseline_s) == (0, 0, 0)
    for device in (torch.device("cpu"), torch.device("cuda")):
        create_monitor(energy, device, tmp_path)


def test_default_adds_nvml_on_a_gpu_only(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        energy = OmegaConf.to_object(compose(config_name="config", overrides=["energy=default"]).energy)
    assert create_monitor(energy, torch.device("cpu"), tmp_path).meter_names == ["codecarbon"]
    assert create_monitor(energy, torch.device("cuda"), tmp_path).meter_names == ["codecarbon", "nvml"]
