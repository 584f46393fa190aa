"""A meter added by registration alone: a module of its own (here, this file) plus one YAML.

The toy meter reports a known power for the CPU, so its windows and total are checked exactly, and
its own config key travels from the YAML through Hydra's ConfigStore to the meter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import MISSING, OmegaConf

from repro.composition import register_configs
from repro.config import CONF_DIR, EnergyConfig, job_config
from repro.energy import MarkingMeter, Measurement, MeterContext, Method, create_monitor, register_meter
from repro.energy.measurement import is_estimate, ranked_methods
from repro.errors import UserError


@dataclass
class ToyConfig(EnergyConfig):
    toy_power_w: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.toy_power_w != MISSING and self.toy_power_w <= 0:
            raise UserError(f"energy.toy_power_w={self.toy_power_w} must be positive")


@register_meter("toy", config=ToyConfig, methods=[Method("toy-estimate", rank=45, estimate=True)])
class ToyMeter(MarkingMeter):
    """CPU power is a constant the config gives: energy is power x time."""

    def __init__(self, power_w: float) -> None:
        super().__init__()
        self.power_w = power_w

    @classmethod
    def from_config(cls, cfg: ToyConfig, context: MeterContext) -> ToyMeter:
        return cls(cfg.toy_power_w)

    def _start(self) -> None:
        pass

    def _mark(self) -> float:
        return time.perf_counter()

    def _between(self, start: float, end: float) -> Measurement:
        return Measurement({"cpu": self.power_w * (end - start)}, self.methods(), end - start)

    def _finish(self) -> float:
        return time.perf_counter()

    def methods(self) -> dict[str, str]:
        return {"cpu": "toy-estimate"}

    def provenance(self) -> dict[str, str]:
        return {"energy.toy_power_w": f"{self.power_w:g}"}


@register_meter("absent", methods=[Method("rapl", rank=10, estimate=False)])
class AbsentMeter(ToyMeter):
    """A meter whose hardware this machine never has."""

    @classmethod
    def from_config(cls, cfg: EnergyConfig, context: MeterContext) -> AbsentMeter:
        return cls(1.0)

    @classmethod
    def unavailable(cls, device: torch.device | None) -> str | None:
        return "no absent-meter hardware here"


@register_meter("slow-setup", methods=[Method("toy-estimate", rank=45, estimate=True)])
class SlowSetupMeter(ToyMeter):
    """A meter whose set-up ahead of start (hardware detection, say) finishes when the test lets it."""

    release = threading.Event()
    events: list[str] = []
    hardware_answers = True

    @classmethod
    def from_config(cls, cfg: EnergyConfig, context: MeterContext) -> SlowSetupMeter:
        return cls(1.0)

    @classmethod
    def prepare(cls, device: torch.device) -> None:
        cls.release.wait()
        cls.events.append("prepared")
        if not cls.hardware_answers:
            raise RuntimeError("no answer from the hardware")

    def _start(self) -> None:
        self.events.append("started")
        if not self.hardware_answers:
            raise UserError("energy meter 'slow-setup' failed to start (no answer from the hardware)")


@pytest.fixture
def slow_setup() -> Iterator[type[SlowSetupMeter]]:
    SlowSetupMeter.release.clear()
    SlowSetupMeter.events.clear()
    SlowSetupMeter.hardware_answers = True
    yield SlowSetupMeter
    SlowSetupMeter.release.set()  # a failed test leaves no thread waiting


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    """The real config folder plus `energy/toy.yaml`, as a contributor would add it."""
    register_configs()  # stores toy_schema, as an entry point does once the meters are imported
    conf = tmp_path / "conf"
    conf.mkdir()
    for item in CONF_DIR.iterdir():
        (conf / item.name).symlink_to(item)
    (conf / "energy").unlink()
    (conf / "energy").mkdir()
    for item in (CONF_DIR / "energy").iterdir():
        (conf / "energy" / item.name).symlink_to(item)
    toy_yaml = "defaults:\n  - /toy_schema\n  - _self_\n\nmeters: [toy]\ntoy_power_w: 25.0\n"
    (conf / "energy" / "toy.yaml").write_text(toy_yaml)
    return conf


def test_a_registered_meter_runs_through_the_monitor(conf_dir: Path, tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["energy=toy"])
    assert OmegaConf.get_type(cfg.energy) is ToyConfig and cfg.energy.toy_power_w == 25.0
    monitor = create_monitor(job_config(cfg).energy, torch.device("cpu"), tmp_path)
    monitor.start()
    windows = []
    for epoch in range(2):
        with monitor.window(f"epoch-{epoch}") as window:
            time.sleep(0.05)
        windows.append(window.measurement)
    total = monitor.stop()
    assert total.energy_j["cpu"] == pytest.approx(25.0 * total.duration_s)
    assert sum(w.total_j for w in windows) <= total.total_j
    tags = monitor.provenance_tags()
    assert tags["energy.meters"] == "toy" and tags["energy.toy_power_w"] == "25"
    assert tags["energy.method.cpu"] == "toy-estimate" and tags["energy_estimated"] == "true"
    assert "toy-estimate" in ranked_methods() and is_estimate("toy-estimate")


def test_a_meter_s_own_key_is_checked_at_composition_and_conversion(conf_dir: Path, tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        with pytest.raises(Exception, match="toy_powr_w"):
            compose(config_name="config", overrides=["energy=toy", "energy.toy_powr_w=3"])
        cfg = compose(config_name="config", overrides=["energy=toy", "energy.toy_power_w=-3"])
    with pytest.raises(UserError, match=r"energy.toy_power_w=-3.0 must be positive"):
        job_config(cfg)


def test_the_toy_meter_s_keys_default_under_another_preset(tmp_path: Path) -> None:
    monitor = create_monitor(EnergyConfig(meters=["toy"]), torch.device("cpu"), tmp_path)
    monitor.start()
    total = monitor.stop()
    assert total.energy_j["cpu"] == pytest.approx(10.0 * total.duration_s)


def test_an_optional_meter_the_machine_lacks_is_skipped_and_a_plain_one_refused(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    optional = create_monitor(EnergyConfig(meters=["toy", "absent-if-available"]), cpu, tmp_path)
    assert optional.meter_names == ["toy"]
    monitor = create_monitor(EnergyConfig(meters=["absent"]), cpu, tmp_path)
    with pytest.raises(UserError, match="meter 'absent' is unavailable: no absent-meter hardware here"):
        monitor.start()


def test_the_best_ranked_method_wins_whatever_the_order_of_meters(tmp_path: Path) -> None:
    class Counter(ToyMeter):
        def methods(self) -> dict[str, str]:
            return {"cpu": "rapl"}

        def _between(self, start: float, end: float) -> Measurement:
            return Measurement({"cpu": 1.0}, self.methods(), end - start)

    counter = Method("rapl", rank=10, estimate=False)
    register_meter("toy-counter", config=ToyConfig, methods=[counter])(Counter)
    for meters in (["toy", "toy-counter"], ["toy-counter", "toy"]):
        monitor = create_monitor(EnergyConfig(meters=meters), torch.device("cpu"), tmp_path)
        monitor.start()
        total = monitor.stop()
        assert total.method == {"cpu": "rapl"} and total.energy_j == {"cpu": 1.0}
        assert monitor.provenance_tags()["energy_estimated"] == "false"


def test_a_method_declared_twice_with_another_meaning_is_refused() -> None:
    with pytest.raises(ValueError, match="'rapl' is declared twice"):
        register_meter("liar", methods=[Method("rapl", rank=10, estimate=True)])(ToyMeter)


def test_the_meters_start_only_once_their_set_up_ahead_of_time_is_done(
    slow_setup: type[SlowSetupMeter], tmp_path: Path
) -> None:
    monitor = create_monitor(EnergyConfig(meters=["slow-setup"]), torch.device("cpu"), tmp_path)
    monitor.prepare()  # as a job does before building its data: returns at once, the set-up goes on
    assert slow_setup.events == []
    slow_setup.release.set()
    monitor.start()
    assert slow_setup.events == ["prepared", "started"]
    assert monitor.stop().energy_j["cpu"] >= 0


def test_a_set_up_ahead_of_time_that_fails_stops_the_job_at_start_as_it_did_without_it(
    slow_setup: type[SlowSetupMeter], tmp_path: Path
) -> None:
    slow_setup.hardware_answers = False
    slow_setup.release.set()
    errors = []
    for prepared in (False, True):
        monitor = create_monitor(EnergyConfig(meters=["slow-setup"]), torch.device("cpu"), tmp_path)
        if prepared:
            monitor.prepare()
        with pytest.raises(UserError) as error:
            monitor.start()
        errors.append(str(error.value))
    assert errors[0] == errors[1] == "energy meter 'slow-setup' failed to start (no answer from the hardware)"
    assert slow_setup.events == ["started", "prepared", "started"]
