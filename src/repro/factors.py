"""The study's factors, declared once: what a run's setting is called, where it is read, how it is shown.

A factor is a setting whose levels the analyses compare (`python -m repro.paper study.factors=[...]`).
Each declaration says where a run's level comes from in MLflow (a param or a tag, by its `repro.names`
constant) and in the published data (a column, or the value the study's protocol fixed for every run),
its label, the order of its levels, whether it is numeric, and how a run name shows a level that is not
the default. The loaders (`repro.stats.runs`), the analyses, the tables, the figures, the report and the
run names read these declarations; a new factor is its config key, its effect in the training loop,
and one entry in `FACTORS`.

This module imports neither torch nor MLflow, so that `repro.stats` and `repro.train` can both read it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from repro import names

#: The published runs' settings fixed by the study's protocol (paper/data/README.md): every run used
#: batch 32, 128x128 images and full (fp32) precision.
PUBLISHED_BATCH_SIZE = 32
PUBLISHED_IMAGE_SIZE = 128
PUBLISHED_PRECISION = "fp32"


def _precision(value: Any) -> str | None:
    """`training.amp` as a level: false (or no autocast) is "fp32", else the autocast dtype."""
    if value is None:
        return None
    text = str(value).strip().lower()
    return "fp32" if text in ("false", "none", "fp32", "0", "") else text


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


@dataclass(frozen=True)
class Factor:
    """One study factor.

    Attributes:
        name: what `study.factors` calls it.
        label: its name in tables and figures ("Batch size").
        column: the tidy runs table's column with each run's level (`repro.stats.runs`).
        param: the MLflow param (flattened config key) a run's level is read from, or None.
        tag: the MLflow tag a run's level is read from, or None (a param wins where both are given).
        published_column: the published data's column with each run's level, or None.
        published_value: the level of every published run where the data has no column: the value
            the study's protocol fixed (None: the published runs lack this factor).
        numeric: whether levels are numbers (ordered by value, and correlated with the metrics).
        levels: the order in which to show levels ("" where the data decides: by value for a numeric
            factor, else by `order_by`, else by name); levels not listed follow in name order.
        order_by: a tidy column whose median per level orders the levels (architecture by GFLOPs).
        convert: turns a raw param or tag value into a level (None: not recorded).
        config_key: the training config key that sets it, for run names (None: not a setting).
        default: the config default; a run name shows the level only where it differs from this.
        run_name: how a run name shows a non-default level, e.g. "bs{}" -> "bs64".
        short: the abbreviated label of narrow table columns ("env." in "From env."); the label if "".
        noun: how a sentence names it ("batch size"; the label in lower case if "").
        level_labels: how tables show some levels ("mobilenet_v2" -> "MobileNet V2"); others as they are.
    """

    name: str
    label: str
    column: str
    param: str | None = None
    tag: str | None = None
    published_column: str | None = None
    published_value: Any = None
    numeric: bool = False
    levels: tuple[str, ...] = ()
    order_by: str | None = None
    convert: Callable[[Any], Any] = field(default=lambda value: value, repr=False)
    config_key: str | None = None
    default: Any = None
    run_name: str = ""
    short: str = ""
    noun: str = ""
    level_labels: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def short_label(self) -> str:
        return self.short or self.label

    @property
    def noun_text(self) -> str:
        return self.noun or self.label.lower()

    def level_label(self, value: object) -> str:
        """How tables and figures show a level."""
        return self.level_labels.get(str(value), str(value))

    def within_text(self, level: object) -> str:
        """A level named in a sentence: "Cloud" for the study's factors, "batch size 64" for the others."""
        shown = self.level_label(level)
        return shown if self.name in (*STUDY_FACTORS, "all_runs") else f"{self.noun_text} {shown}"

    def level(self, value: Any) -> Any:
        """A raw param, tag or published value as this factor's level (None: the run lacks it)."""
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            return None
        converted = self.convert(value)
        return _number(converted) if self.numeric else converted

    def name_part(self, value: Any) -> str:
        """What a run name adds for this factor's configured `value` ("" at the default)."""
        if not self.run_name or value is None or self.level(value) == self.level(self.default):
            return ""
        level = self.level(value)
        shown = f"{level:g}" if isinstance(level, float) else str(level)
        return self.run_name.format(shown)


#: How the tables name the study's architectures; other names are shown as they are.
ARCHITECTURE_LABELS: dict[str, str] = {
    "mobilenet_v2": "MobileNet V2",
    "nasnet_mobile": "NASNet Mobile",
    "resnet50": "ResNet50",
    "xception": "Xception",
    "vgg16": "VGG16",
}
#: The study's design: RQ1 compares architectures within an environment, RQ2 environments for one
#: architecture, T7 their interaction.
STUDY_FACTORS: tuple[str, ...] = ("architecture", "environment")

#: Every factor a study may analyse, in the order `study.factors` errors list them.
FACTORS: dict[str, Factor] = {
    factor.name: factor
    for factor in (
        Factor(
            "architecture",
            "Architecture",
            "architecture",
            tag=names.TAG_MODEL,
            published_column="architecture",
            order_by=names.GFLOPS,
            level_labels=ARCHITECTURE_LABELS,
        ),
        Factor(
            "environment",
            "Environment",
            "environment",
            tag=names.TAG_GPU,  # with the detected device beside the profile (repro.stats.runs)
            published_column="training environment",
            order_by="power_limit_w",
            short="env.",
        ),
        Factor(
            "batch_size",
            "Batch size",
            "batch_size",
            param="training.batch_size",
            published_column="batch size",
            numeric=True,
            config_key="training.batch_size",
            default=32,
            run_name="bs{}",
            short="batch",
        ),
        Factor(
            "image_size",
            "Image size (px)",
            "image_size",
            param="dataset.image_size",
            published_value=PUBLISHED_IMAGE_SIZE,
            numeric=True,
            config_key="dataset.image_size",
            default=128,
            run_name="px{}",
            short="px",
        ),
        Factor(
            "precision",
            "Precision",
            "precision",
            param="training.amp",
            published_value=PUBLISHED_PRECISION,
            levels=("fp32", "bf16", "fp16"),
            convert=_precision,
            config_key="training.amp",
            default=False,
            run_name="{}",
            short="precision",
        ),
        Factor(
            "power_limit_w",
            "Power limit (W)",
            "power_limit_in_force_w",  # NVML's; the tidy `power_limit_w` falls back on the profile's TDP
            tag=names.TAG_DEVICE_POWER_LIMIT_W,
            published_column="max power limit (W)",
            numeric=True,
            config_key="gpu.power_limit_w",
            run_name="{}w",
            noun="power limit",
            short="limit (W)",
        ),
    )
}
#: A one-factor study's stand-in for the second factor: one level that holds every run.
ALL_RUNS = Factor("all_runs", "Runs", "all_runs", noun="runs")
ALL_RUNS_LEVEL = "all runs"
#: Factors read from the run's settings (params and tags) beside the two the loaders build by hand.
SETTING_FACTORS: tuple[Factor, ...] = tuple(f for f in FACTORS.values() if f.name not in STUDY_FACTORS)


def by_column(column: str) -> Factor:
    """The factor whose tidy column is `column` (the one-factor stand-in included)."""
    return next(f for f in (*FACTORS.values(), ALL_RUNS) if f.column == column)


def factor(name: str) -> Factor:
    """The declaration of `name`; a `KeyError` names the declared factors."""
    try:
        return FACTORS[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a declared factor; declared: {', '.join(FACTORS)}") from None


def command_line_settings(cfg: Any, overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The setting factors' config keys that the job's command line set (Hydra's task overrides), with
    their values in `cfg`: what tells apart the jobs of a sweep over settings."""
    from omegaconf import OmegaConf

    keys = {override.split("=", 1)[0].lstrip("+~") for override in overrides}
    return {
        f.config_key: OmegaConf.select(cfg, f.config_key, default=None)
        for f in SETTING_FACTORS
        if f.config_key in keys
    }


def run_name_suffix(settings: Mapping[str, Any]) -> str:
    """The run-name parts of the non-default settings, e.g. "-bs64-bf16" (keys: config keys)."""
    parts = [
        f.name_part(settings[f.config_key])
        for f in SETTING_FACTORS
        if f.config_key is not None and f.config_key in settings
    ]
    return "".join(f"-{part}" for part in parts if part)
