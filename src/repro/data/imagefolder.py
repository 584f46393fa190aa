"""`dataset=imagefolder`: a user's folder of class sub-folders (DIR/CLASS/IMAGE), listed as torchvision's
ImageFolder lists it."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from repro.config import DatasetConfig
from repro.data.files import ReadFile, check_links
from repro.data.loaders import Reader
from repro.data.registry import DatasetSource, Labels, register_dataset
from repro.errors import UserError


@dataclass
class ImageFolderConfig(DatasetConfig):
    name: str = "imagefolder"
    path: str = MISSING  # a folder with one sub-folder per class


@register_dataset("imagefolder")
class ImageFolder(DatasetSource):
    config = ImageFolderConfig

    def labels(self, cfg: ImageFolderConfig) -> Labels:
        return folder_labels(folder(cfg))

    def load(self, cfg: ImageFolderConfig, seed: int) -> tuple[Labels, Reader]:
        labels = self.labels(cfg)
        return labels, ReadFile(labels.files, cfg.image_size)


def folder(cfg: ImageFolderConfig) -> Path:
    """The image folder a user gave, checked to be an existing directory."""
    if cfg.path in (None, MISSING):
        raise UserError(
            "dataset.path is not set: give dataset.path=DIR, a folder with one sub-folder per class"
        )
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise UserError(
            f"dataset.path={cfg.path} does not exist: give a folder with one sub-folder per class"
        )
    if not path.is_dir():
        raise UserError(
            f"dataset.path={cfg.path} is not a folder: give a folder with one sub-folder per class"
        )
    return path


def folder_labels(root: Path) -> Labels:
    """The images that torchvision's ImageFolder would load from `root`, with their classes."""
    samples, class_names = scan_folder(root)
    return Labels([t for _, t in samples], class_names, [file for file, _ in samples])


def scan_folder(root: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """List the (file, class index) pairs that torchvision's ImageFolder would load, and the class names."""
    check_links(root)
    class_names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not class_names:
        raise UserError(
            f"dataset.path={root} holds no class sub-folders: put each class's images in DIR/CLASS/"
        )
    if len(class_names) == 1:
        raise UserError(
            f"dataset.path={root} holds one class only ({class_names[0]!r}): "
            "a classifier needs at least two class sub-folders"
        )
    class_to_idx = {name: i for i, name in enumerate(class_names)}
    samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    counts = Counter(t for _, t in samples)
    empty = [name for name, i in class_to_idx.items() if counts[i] == 0]
    if empty:
        raise UserError(
            f"dataset.path={root}: class folder {empty[0]!r} holds no images ({', '.join(IMG_EXTENSIONS)}): "
            "add images or remove the folder"
        )
    return samples, class_names
