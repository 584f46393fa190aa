"""`dataset=digits`: scikit-learn's 1,797 handwritten 8x8 digits, written once as PNG files in an
ImageFolder tree under `dataset.cache_dir` and read from there."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from repro.config import DatasetConfig, is_set
from repro.data.files import ReadFile
from repro.data.imagefolder import folder_labels
from repro.data.loaders import Reader
from repro.data.registry import DatasetSource, Labels, register_dataset
from repro.errors import UserError

_TASKS = ("binary", "multiclass")


@dataclass
class DigitsConfig(DatasetConfig):
    name: str = "digits"
    task: str = "binary"  # binary (digit < 5 vs >= 5, the study's kind of task) or multiclass (10 digits)

    def __post_init__(self) -> None:
        super().__post_init__()
        if is_set(self.task) and self.task not in _TASKS:
            raise UserError(f"unknown dataset.task={self.task!r}: choose one of {', '.join(_TASKS)}")


@register_dataset("digits")
class Digits(DatasetSource):
    config = DigitsConfig

    def labels(self, cfg: DigitsConfig) -> Labels:
        return Labels(*digit_targets(cfg.task))  # the tree is not written before a job needs it

    def load(self, cfg: DigitsConfig, seed: int) -> tuple[Labels, Reader]:
        labels = folder_labels(digits_tree(cfg))
        return labels, ReadFile(labels.files, cfg.image_size)


def digit_targets(task: str) -> tuple[list[int], list[str]]:
    """Class index and class names of scikit-learn's 1,797 digits, in file order."""
    from sklearn.datasets import load_digits

    labels = [_digit_class_name(int(digit), task) for digit in load_digits().target]
    class_names = sorted(set(labels))  # the order ImageFolder gives the tree's folders
    class_to_idx = {name: i for i, name in enumerate(class_names)}
    return [class_to_idx[label] for label in labels], class_names


def digits_tree(cfg: DigitsConfig) -> Path:
    """Write scikit-learn's digits once as PNG files in an ImageFolder tree; return its root.

    The tree is written to a temporary folder and renamed into place, so a crash never leaves half
    a tree, and of two jobs that write it at once, one wins and the other uses its tree.
    """
    from sklearn.datasets import load_digits

    cache = Path(cfg.cache_dir).expanduser()
    root = cache / f"digits-{cfg.task}"
    if root.is_dir():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=cache))
    try:
        for index, (image, digit) in enumerate(zip(pixels, digits.target, strict=True)):
            label = _digit_class_name(int(digit), cfg.task)
            (tmp / label).mkdir(exist_ok=True)
            Image.fromarray(image).save(tmp / label / f"{index:04d}.png")
        try:
            os.rename(tmp, root)
        except OSError:
            if not root.is_dir():  # not a lost race with another job: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already gone after a successful rename
    return root


def _digit_class_name(digit: int, task: str) -> str:
    """The tree's folder for a digit: binary `0-lt5`/`1-ge5` (digit >= 5 is positive), or the digit itself."""
    if task == "binary":
        return "1-ge5" if digit >= 5 else "0-lt5"
    return str(digit)
