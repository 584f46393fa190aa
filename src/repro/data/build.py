"""One job's data: `validate_dataset` before any job starts, `build_data` for the job's loaders."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from repro.config import DatasetConfig
from repro.data.digits import digit_targets, digits_tree
from repro.data.files import ReadFile, verify_images
from repro.data.imagefolder import folder, scan_folder
from repro.data.loaders import Images, decode_all, default_workers, make_loader
from repro.data.split import check_split, split
from repro.data.synthetic import (
    SyntheticImage,
    synthetic_class_means,
    synthetic_class_names,
    synthetic_targets,
)
from repro.data.transforms import augmentation, check_preprocessing
from repro.errors import UserError

_DATASETS = ("digits", "imagefolder", "synthetic")
_TASKS = ("binary", "multiclass")


@dataclass
class DataBundle:
    """One job's data: loaders over a stratified split, and what the model needs to know about it.

    Targets are int64 class indices in both tasks; with two classes (`binary`) the model gets one
    logit and the training loop turns the targets into float 0/1.
    """

    train_loader: DataLoader
    val_loader: DataLoader
    num_classes: int
    class_names: list[str]
    n_train: int
    n_val: int
    binary: bool
    in_memory: bool = False  # decoded once and held as a uint8 tensor


def validate_dataset(cfg: DatasetConfig) -> None:
    """Check a dataset config before any training starts, so a sweep fails on its first line.

    Decodes every image of an image folder once (a truncated JPEG passes a header check but not this),
    refuses symbolic links that leave the folder or loop, and writes nothing.

    Raises:
        UserError: naming the bad value and what to do.
    """
    _check_options(cfg)
    if cfg.name == "imagefolder":
        samples, class_names = scan_folder(folder(cfg))
        verify_images(samples)
        check_split([t for _, t in samples], class_names, cfg.val_fraction)
    elif cfg.name == "digits":
        targets, class_names = digit_targets(cfg.task)
        check_split(targets, class_names, cfg.val_fraction)
    else:
        check_split(synthetic_targets(cfg), synthetic_class_names(cfg), cfg.val_fraction)


def build_data(
    cfg: DatasetConfig,
    batch_size: int,
    seed: int,
    preprocessing: str = "torch",
    drop_last: bool = False,
) -> DataBundle:
    """Build the seeded, stratified train/validation loaders of one job.

    `digits` is written once as PNG files under `cfg.cache_dir` and then read like `imagefolder`.
    Image headers are not re-read here: `validate_dataset` does that once per sweep.

    Args:
        cfg: the `dataset` config group.
        batch_size: images per batch, for both loaders.
        seed: fixes the split, the shuffling and the synthetic images.
        preprocessing: how pixels reach the model (`model.preprocessing`, see `preprocess`).
        drop_last: drop the last partial batch of both loaders, as the study's step counts did.

    Raises:
        UserError: for a bad config value, an unusable image folder, or a side smaller than one batch
            when `drop_last` is set.
    """
    _check_options(cfg)
    check_preprocessing(preprocessing)
    if batch_size <= 0:
        raise UserError(
            f"training.batch_size={batch_size} must be positive: set training.batch_size=32 or similar"
        )
    if cfg.name == "synthetic":
        targets = synthetic_targets(cfg)
        class_names = synthetic_class_names(cfg)
    else:
        root = digits_tree(cfg) if cfg.name == "digits" else folder(cfg)
        samples, class_names = scan_folder(root)
        targets = [t for _, t in samples]
    check_split(targets, class_names, cfg.val_fraction)
    train_idx, val_idx = split(targets, cfg.val_fraction, seed)
    for side, n in (("training", len(train_idx)), ("validation", len(val_idx))):
        if drop_last and n < batch_size:
            raise UserError(
                f"training.drop_last=true leaves no {side} batch: {n} {side} image(s) for "
                f"training.batch_size={batch_size}; lower the batch size or set training.drop_last=false"
            )
    if cfg.name == "synthetic":
        means = synthetic_class_means(len(class_names), seed)
        read: Callable[[int], torch.Tensor] = SyntheticImage(means, targets, cfg.image_size, seed)
    else:
        read = ReadFile([file for file, _ in samples], cfg.image_size)
    in_memory = len(targets) * 3 * cfg.image_size**2 <= cfg.memory_limit_mb * 1e6
    pixels = decode_all(read, len(targets)) if in_memory else None
    all_targets = torch.tensor(targets, dtype=torch.int64)
    train_augmentation = augmentation() if cfg.augment else None
    train_set = Images(train_idx, all_targets, read, pixels, train_augmentation, preprocessing)
    val_set = Images(val_idx, all_targets, read, pixels, None, preprocessing)
    workers = cfg.num_workers if cfg.num_workers is not None else default_workers(in_memory)
    return DataBundle(
        train_loader=make_loader(train_set, batch_size, workers, True, seed, drop_last),
        val_loader=make_loader(val_set, batch_size, workers, False, seed, drop_last),
        num_classes=len(class_names),
        class_names=class_names,
        n_train=len(train_idx),
        n_val=len(val_idx),
        binary=len(class_names) == 2,
        in_memory=in_memory,
    )


def _check_options(cfg: DatasetConfig) -> None:
    """The checks that need no file: names, sizes and fractions."""
    if cfg.name not in _DATASETS:
        close = difflib.get_close_matches(str(cfg.name), _DATASETS, n=1)
        hint = f"did you mean dataset={close[0]}? " if close else ""
        raise UserError(f"unknown dataset {cfg.name!r}: {hint}choose one of {', '.join(_DATASETS)}")
    if cfg.task not in _TASKS:
        raise UserError(f"unknown dataset.task={cfg.task!r}: choose one of {', '.join(_TASKS)}")
    if cfg.image_size <= 0:
        raise UserError(
            f"dataset.image_size={cfg.image_size} must be positive: set e.g. dataset.image_size=128"
        )
    if not 0 < cfg.val_fraction < 1:
        raise UserError(
            f"dataset.val_fraction={cfg.val_fraction} must lie between 0 and 1: the study uses 0.3"
        )
    if cfg.num_workers is not None and cfg.num_workers < 0:
        raise UserError(f"dataset.num_workers={cfg.num_workers} must be 0 (load in the main process) or more")
    if cfg.memory_limit_mb < 0:
        raise UserError(f"dataset.memory_limit_mb={cfg.memory_limit_mb} must be 0 (never hold) or more")
    if cfg.name == "synthetic":
        if cfg.num_classes < 2:
            raise UserError(f"dataset.num_classes={cfg.num_classes} must be at least 2 for synthetic images")
        if cfg.num_images < 2 * cfg.num_classes:
            raise UserError(
                f"dataset.num_images={cfg.num_images} is too few for {cfg.num_classes} classes: "
                f"give at least {2 * cfg.num_classes} (two per class)"
            )
