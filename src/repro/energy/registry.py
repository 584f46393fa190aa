"""The meter interface and the registry that names meters, as timm's `register_model` names models.

A meter is one module under `repro.energy.meters`: a `Meter` subclass decorated with
`@register_meter("name", config=..., methods=...)`. The decorator records

- the meter's config schema, a subclass of `EnergyConfig` holding the meter's own keys, which
  `repro.composition` stores in Hydra's ConfigStore as `<name>_schema` so that
  `conf/energy/<name>.yaml` can build on it;
- the provenance methods the meter can report, each with its rank among every meter's methods and
  whether it is an estimate (a model of power, not a reading of the hardware).

`energy.meters` lists names. `NAME-if-available` asks for a meter that is skipped, with a warning,
when `Meter.unavailable` gives a reason or the meter fails to start; `NAME` alone stops the job.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from repro.config import EnergyConfig
from repro.energy.measurement import Measurement, Method, register_methods
from repro.errors import UserError

#: The suffix of an optional meter in `energy.meters`.
OPTIONAL_SUFFIX = "-if-available"
#: `energy.meters=[none]`: measure nothing.
NONE = "none"


@dataclass(frozen=True)
class MeterContext:
    """What the monitor gives a meter it builds: the job's device, its output folder, and the phase."""

    device: torch.device
    output_dir: Path
    baseline: bool = False  # the idle baseline before the run, not the run itself


class Meter(ABC):
    """One source of energy readings: start, open and close named windows, stop.

    Windows are opened and closed one at a time (one per epoch); `stop` returns the whole span since
    `start`, and later calls return the same.
    """

    name: str = "meter"
    #: Tie-break weight per component when two meters use an equally good method (higher wins).
    preference: dict[str, int] = {}

    def __init__(self) -> None:
        self._started = False
        self._total: Measurement | None = None

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: Any, context: MeterContext) -> Meter:
        """Build an unstarted meter from its config (an instance of its registered schema)."""

    @classmethod
    def unavailable(cls, device: torch.device | None) -> str | None:
        """Why this meter cannot measure on this machine (None: it may), checked cheaply and without effects.

        Args:
            device: The job's device, or None to ask about the machine as a whole (the preflight checks).
        """
        return None

    @classmethod
    def prepare(cls, device: torch.device) -> None:
        """Do ahead of time the slow one-off set-up that `start` would wait for (hardware detection).

        The monitor runs it in a thread of its own while the job builds its data and model, and waits for
        it before any meter starts. It starts nothing and changes nothing a meter reports: what it does
        is what `start` would do anyway, cached for the process. If it fails, `start` meets the failure
        again and reports it as it would have without `prepare`.

        Args:
            device: The job's device.
        """
        return None

    @property
    def started(self) -> bool:
        return self._started

    @property
    def stopped(self) -> bool:
        return self._total is not None

    def start(self) -> None:
        """Start measuring; raise `UserError` if the meter cannot."""
        self._start()
        self._started = True

    def stop(self) -> Measurement:
        """Stop measuring and return the whole span since `start`; later calls return the same."""
        if self._total is None:
            self._total = self._stop()
        return self._total

    @abstractmethod
    def open_window(self, name: str) -> None: ...

    @abstractmethod
    def close_window(self, name: str) -> Measurement: ...

    @abstractmethod
    def methods(self) -> dict[str, str]:
        """How each component this meter measures is obtained (valid once started)."""

    def provenance(self) -> dict[str, str]:
        """Tags that say how this meter measured (valid once started)."""
        return {}

    def artifact_paths(self) -> list[Path]:
        return []

    @property
    def intensity_g_per_kwh(self) -> float | None:
        """The grid's carbon intensity this meter looked up, if it does that (valid once stopped)."""
        return None

    intensity_source: str = "none"

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def _stop(self) -> Measurement: ...


class MarkingMeter(Meter):
    """A meter whose windows are differences of marks (opaque readings of "now").

    Windows then cost one reading each and always add up to the whole run. Subclasses implement
    `_start`, `_mark`, `_between` (a Measurement from two marks) and `_finish` (stop the hardware
    and return the final mark).
    """

    def __init__(self) -> None:
        super().__init__()
        self._start_mark: Any = None
        self._windows: dict[str, Any] = {}

    def start(self) -> None:
        super().start()
        self._start_mark = self._mark()

    def open_window(self, name: str) -> None:
        self._windows[name] = self._mark()

    def close_window(self, name: str) -> Measurement:
        return self._between(self._windows.pop(name), self._mark())

    def _stop(self) -> Measurement:
        return self._between(self._start_mark, self._finish())

    @abstractmethod
    def _mark(self) -> Any: ...

    @abstractmethod
    def _between(self, start: Any, end: Any) -> Measurement: ...

    @abstractmethod
    def _finish(self) -> Any: ...


@dataclass(frozen=True)
class MeterSpec:
    """A registered meter: its class, its config schema and the methods it may report."""

    name: str
    cls: type[Meter]
    config: type[EnergyConfig]
    methods: tuple[Method, ...]

    def settings(self, cfg: EnergyConfig) -> EnergyConfig:
        """This meter's config: `cfg` itself when it is of the meter's schema, else `cfg`'s shared keys
        lifted into the schema, the meter's own keys at their defaults."""
        if isinstance(cfg, self.config):
            return cfg
        shared = {field.name: getattr(cfg, field.name) for field in dataclasses.fields(EnergyConfig)}
        return self.config(**shared)


_REGISTRY: dict[str, MeterSpec] = {}
_ALIASES: dict[str, str] = {}
_M = TypeVar("_M", bound=type[Meter])


def register_meter(
    name: str,
    *,
    config: type[EnergyConfig] = EnergyConfig,
    methods: Sequence[Method] = (),
    aliases: dict[str, str] | None = None,
) -> Callable[[_M], _M]:
    """Register a `Meter` subclass under `name` (a class decorator).

    Args:
        name: What `energy.meters` calls it.
        config: Its schema: `EnergyConfig` or a subclass with the meter's own keys, stored in the
            ConfigStore as `<name>_schema` by `repro.composition.register_configs`.
        methods: Every method its `methods()` may report, ranked among all meters' methods.
        aliases: Other entries accepted in `energy.meters` and what they mean, e.g.
            `{"nvml-if-gpu": "nvml-if-available"}`, kept for old configs.
    """
    if name == NONE or name.endswith(OPTIONAL_SUFFIX):
        raise ValueError(f"a meter may not be called {name!r}")
    if not (isinstance(config, type) and issubclass(config, EnergyConfig)):
        raise TypeError(f"meter {name!r}: config must be EnergyConfig or a subclass of it")

    def decorate(cls: _M) -> _M:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"energy meter {name!r} is registered twice")
        register_methods(methods)
        cls.name = name
        _REGISTRY[name] = MeterSpec(name, cls, config, tuple(methods))
        _ALIASES.update(aliases or {})
        return cls

    return decorate


def meter_schemas() -> dict[str, type[EnergyConfig]]:
    """The schema of each meter that has keys of its own (a subclass of `EnergyConfig`), by name."""
    return {name: spec.config for name, spec in _REGISTRY.items() if spec.config is not EnergyConfig}


def meter_names() -> tuple[str, ...]:
    """Every registered meter, in registration order."""
    return tuple(_REGISTRY)


def get_spec(name: str) -> MeterSpec:
    return _REGISTRY[name]


def parse(entry: str) -> tuple[str, bool] | None:
    """(meter name, optional) of one `energy.meters` entry; None for `none`; `UserError` if unknown."""
    if entry == NONE:
        return None
    entry = _ALIASES.get(entry, entry)
    optional = entry.endswith(OPTIONAL_SUFFIX)
    name = entry.removesuffix(OPTIONAL_SUFFIX) if optional else entry
    if name not in _REGISTRY:
        choices = ", ".join([*_REGISTRY, NONE])
        raise UserError(
            f"unknown energy meter {entry!r}; choose from {choices} (NAME{OPTIONAL_SUFFIX} skips a meter "
            "this machine lacks)"
        )
    return name, optional


def check_names(entries: Sequence[str]) -> None:
    """Raise `UserError` on an unknown name or on `none` mixed with meters."""
    entries = list(entries)
    for entry in entries:
        parse(entry)
    if NONE in entries and len(entries) > 1:
        raise UserError(f"energy.meters={entries} mixes 'none' with meters; use energy=none alone")
