"""Data sets by name: a source registers itself with its config schema, as timm's models do.

A source is a `DatasetSource` subclass in a module of its own, decorated with `@register_dataset(NAME)`;
its `config` is a dataclass subclass of `DatasetConfig` whose `name` defaults to NAME and which holds
the source's own keys. `repro.composition` puts each schema in Hydra's ConfigStore as
`<NAME>_schema`, so a YAML file names it in its defaults list (`- /<NAME>_schema`) and a key the
source lacks fails at composition. `build_data` and `validate_dataset` find the source from
`dataset.name` here.
"""

from __future__ import annotations

import dataclasses
import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from omegaconf import DictConfig, OmegaConf

from repro.config import DatasetConfig
from repro.data.loaders import Reader
from repro.errors import UserError


@dataclass(frozen=True)
class Labels:
    """The class of every image of a data set, in the source's order, and the class names.

    `targets[i]` indexes `class_names`, which are sorted as torchvision's ImageFolder sorts folders.
    """

    targets: list[int]
    class_names: list[str]
    files: list[str] | None = None  # the image files, for a source read from disk: validation decodes each


class DatasetSource(ABC):
    """Where one kind of data set comes from: what `validate_dataset` and `build_data` ask of it."""

    name: ClassVar[str]  # set by `register_dataset`
    config: ClassVar[type[DatasetConfig]]  # the source's schema: DatasetConfig plus its own keys

    @abstractmethod
    def labels(self, cfg: DatasetConfig) -> Labels:
        """List the labelled images without decoding one and without writing anything.

        Raises:
            UserError: for a source that cannot give a data set (a missing folder, one class, ...).
        """

    @abstractmethod
    def load(self, cfg: DatasetConfig, seed: int) -> tuple[Labels, Reader]:
        """What one job trains on: the labelled images and how to read image i (may write a cache)."""

    def verify(self, cfg: DatasetConfig, labels: Labels) -> None:
        """The checks before any job that read the images; by default every file is decoded once.

        Raises:
            UserError: naming the first image that cannot be read.
        """
        from repro.data.files import verify_images

        if labels.files is not None:
            verify_images(labels.files)


_SOURCES: dict[str, DatasetSource] = {}
_Source = TypeVar("_Source", bound=type[DatasetSource])


def register_dataset(name: str) -> Callable[[_Source], _Source]:
    """Class decorator: make a `DatasetSource` available as `dataset=NAME`.

    Its schema reaches the ConfigStore with the next `repro.composition.register_configs()`.
    """

    def register(cls: _Source) -> _Source:
        if getattr(cls.config, "name", None) != name:
            raise ValueError(f"{cls.config.__name__}.name must default to {name!r}, its registered name")
        if name in _SOURCES and type(_SOURCES[name]) is not cls:
            raise ValueError(f"dataset {name!r} is registered twice: by {type(_SOURCES[name])} and {cls}")
        cls.name = name
        _SOURCES[name] = cls()
        return cls

    return register


def dataset_names() -> list[str]:
    """Every registered source, sorted."""
    return sorted(_SOURCES)


def dataset_source(name: str) -> DatasetSource:
    """The source registered as `name`.

    Raises:
        UserError: for an unknown name, suggesting the closest one.
    """
    if name not in _SOURCES:
        close = difflib.get_close_matches(str(name), dataset_names(), n=1)
        hint = f"did you mean dataset={close[0]}? " if close else ""
        raise UserError(f"unknown dataset {name!r}: {hint}choose one of {', '.join(dataset_names())}")
    return _SOURCES[name]


def dataset_config(name: str, **values: Any) -> DatasetConfig:
    """The config of source `name` with `values` set, checked by its schema: e.g.
    `dataset_config("imagefolder", path="pets", image_size=64)`.

    Raises:
        UserError: for an unknown source, a key it does not have, or a bad value.
    """
    source = dataset_source(name)
    keys = {field.name for field in dataclasses.fields(source.config)}
    unknown = sorted(set(values) - keys)
    if unknown:
        raise UserError(
            f"dataset.{unknown[0]} is not a key of dataset={name}: its keys are {', '.join(sorted(keys))}"
        )
    return source.config(name=name, **values)


def resolve(cfg: DatasetConfig | DictConfig) -> tuple[DatasetSource, DatasetConfig]:
    """The source a config names, and the config as that source's dataclass, its checks run.

    A composed DictConfig is converted with its missing values (`???`) kept, for the source to name.
    """
    if isinstance(cfg, DictConfig):
        values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    elif dataclasses.is_dataclass(cfg):
        values = {field.name: getattr(cfg, field.name) for field in dataclasses.fields(cfg)}
    else:
        raise TypeError(f"a dataset config is a DatasetConfig or a DictConfig, not {type(cfg).__name__}")
    source = dataset_source(values.pop("name"))
    if type(cfg) is source.config:
        return source, cfg
    return source, dataset_config(source.name, **values)


def dataset_schemas() -> dict[str, type[DatasetConfig]]:
    """The schema of each registered source, by name."""
    return {name: source.config for name, source in _SOURCES.items()}
