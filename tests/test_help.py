"""`python -m repro.train --help` offers what a user may pick, and no schema among the options."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from repro import data
from repro.composition import register_configs
from repro.config import CONF_DIR, GpuConfig
from repro.data.digits import DigitsConfig

GROUPS = ["dataset", "energy", "experiment", "gpu", "model", "tracking", "training"]


def test_help_lists_each_group_s_yaml_options_and_no_schema(cli_env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "repro.train", "--help"]
    result = subprocess.run(command, capture_output=True, text=True, env=cli_env, timeout=300)
    assert result.returncode == 0, result.stderr
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    lines = [line.split(": ") for line in groups.splitlines() if ": " in line]
    listed = {group: options.split(", ") for group, options in lines}
    assert sorted(listed) == GROUPS
    for group, options in listed.items():
        assert options == sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml")), group
    assert "_schema" not in result.stdout


def test_a_group_yaml_still_gets_its_schema_and_its_plugin_s() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["gpu=cpu", "dataset=digits"])
    assert OmegaConf.get_type(cfg.gpu) is GpuConfig
    assert OmegaConf.get_type(cfg.dataset) is DigitsConfig


def test_a_plugin_whose_schema_name_is_taken_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A data set named `gpu` would shadow the gpu group's schema, `gpu_schema`."""
    monkeypatch.setattr(data.registry, "_SOURCES", dict(data.registry._SOURCES))
    source = type("GpuNamedSource", (), {"config": DigitsConfig})()
    data.registry._SOURCES["gpu"] = source
    with pytest.raises(ValueError, match="dataset plugin 'gpu': the schema name gpu_schema is taken by Gpu"):
        register_configs()
