"""The energy meters: every module in this package registers one with `@register_meter`.

Importing the package imports each module (the order of the registry is alphabetical), so a new
meter is one new module here plus its `conf/energy/<name>.yaml`. `python -m repro.energy.meters`
lists them and says which this machine lacks, and why.
"""

from __future__ import annotations

import importlib
import pkgutil

import torch

from repro.energy.registry import OPTIONAL_SUFFIX, Meter, get_spec, meter_names

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda module: module.name):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

from repro.energy.meters.codecarbon import CodeCarbonMeter  # noqa: E402  (registered above)
from repro.energy.meters.nvml import NvmlMeter  # noqa: E402

__all__ = ["OPTIONAL_SUFFIX", "CodeCarbonMeter", "Meter", "NvmlMeter", "availability", "names"]


def names() -> tuple[str, ...]:
    """Every meter `energy.meters` may name (each also as `NAME-if-available`), plus `none`."""
    return meter_names()


def availability(device: torch.device | None = None) -> dict[str, str | None]:
    """Per meter, why it cannot measure here (None: it may; a start can still fail)."""
    return {name: get_spec(name).cls.unavailable(device) for name in meter_names()}
