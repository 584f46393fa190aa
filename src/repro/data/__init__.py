"""Images for one training job, from a registered source: `digits`, `imagefolder`, `synthetic`, ...

Every source ends as a list of labelled images, split 70/30 (stratified, seeded) and served by two
DataLoaders; only the training set gets the study's augmentation. A data set whose decoded pixels fit
under `dataset.memory_limit_mb` is decoded once and held as one uint8 tensor; a larger one is decoded
per batch, in DataLoader workers. Either way a batch is made on tensors: conversion, the study's
augmentation (a flip per image, colour changes drawn once per batch) and preprocessing, each for the
whole batch at once.
`validate_dataset` runs the cheap checks a sweep needs before any job starts; `build_data` builds one
job's loaders.

Modules: `build` (the entry points), `registry` (sources by name), one module per source, and the
shared machinery: `split`, `loaders`, `files` (images stored as files), `transforms`. A new source is
one module here (imported below with every other module of the package, so it registers itself) plus
`conf/dataset/<name>.yaml`; see CONTRIBUTING.md.
"""

import importlib
import pkgutil

from repro.data.build import DataBundle, build_data, dataset_labels, validate_dataset
from repro.data.loaders import default_workers
from repro.data.registry import (
    DatasetSource,
    Labels,
    dataset_config,
    dataset_names,
    dataset_schemas,
    register_dataset,
)
from repro.data.transforms import PREPROCESSING, check_preprocessing, preprocess

for _module in pkgutil.iter_modules(__path__):  # each source module registers itself on import
    importlib.import_module(f"{__name__}.{_module.name}")
del _module

__all__ = [
    "PREPROCESSING",
    "DataBundle",
    "DatasetSource",
    "Labels",
    "build_data",
    "check_preprocessing",
    "dataset_config",
    "dataset_labels",
    "dataset_names",
    "dataset_schemas",
    "default_workers",
    "preprocess",
    "register_dataset",
    "validate_dataset",
]
