"""One job's data: `validate_dataset` before any job starts, `build_data` for the job's loaders.

Both find the source from `dataset.name` in the registry and know none by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from repro.config import DatasetConfig
from repro.data.loaders import Images, decode_all, default_workers, make_loader
from repro.data.registry import Labels, resolve
from repro.data.split import check_split, split
from repro.data.transforms import augment, check_preprocessing
from repro.errors import UserError


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


def validate_dataset(cfg: DatasetConfig | DictConfig) -> None:
    """Check a dataset config before any training starts, so a sweep fails on its first line.

    Runs the schema's value checks, lists the labelled images, decodes every image file once (a
    truncated JPEG passes a header check but not this) and checks the split; writes nothing.

    Raises:
        UserError: naming the bad value and what to do.
    """
    source, cfg = resolve(cfg)
    labels = source.labels(cfg)
    source.verify(cfg, labels)
    check_split(labels.targets, labels.class_names, cfg.val_fraction)


def dataset_labels(cfg: DatasetConfig | DictConfig) -> Labels:
    """The labelled images of a dataset config, without decoding or writing any (e.g. to count them)."""
    source, cfg = resolve(cfg)
    return source.labels(cfg)


def build_data(
    cfg: DatasetConfig | DictConfig,
    batch_size: int,
    seed: int,
    preprocessing: str = "torch",
    drop_last: bool = False,
) -> DataBundle:
    """Build the seeded, stratified train/validation loaders of one job.

    Images are not decoded ahead here: `validate_dataset` does that once per sweep.

    Args:
        cfg: the `dataset` config group.
        batch_size: images per batch, for both loaders.
        seed: fixes the split, the shuffling and the synthetic images.
        preprocessing: how pixels reach the model (`model.preprocessing`, see `preprocess`).
        drop_last: drop the last partial batch of both loaders, as the study's step counts did.

    Raises:
        UserError: for a bad config value, an unusable source, or a side smaller than one batch
            when `drop_last` is set.
    """
    source, cfg = resolve(cfg)
    check_preprocessing(preprocessing)
    if batch_size <= 0:
        raise UserError(
            f"training.batch_size={batch_size} must be positive: set training.batch_size=32 or similar"
        )
    labels, read = source.load(cfg, seed)
    targets, class_names = labels.targets, labels.class_names
    check_split(targets, class_names, cfg.val_fraction)
    train_idx, val_idx = split(targets, cfg.val_fraction, seed)
    for side, n in (("training", len(train_idx)), ("validation", len(val_idx))):
        if drop_last and n < batch_size:
            raise UserError(
                f"training.drop_last=true leaves no {side} batch: {n} {side} image(s) for "
                f"training.batch_size={batch_size}; lower the batch size or set training.drop_last=false"
            )
    in_memory = len(targets) * 3 * cfg.image_size**2 <= cfg.memory_limit_mb * 1e6
    pixels = decode_all(read, len(targets)) if in_memory else None
    all_targets = torch.tensor(targets, dtype=torch.int64)
    train_augmentation = partial(augment, per_image=cfg.augment_per_image) if cfg.augment else None
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
