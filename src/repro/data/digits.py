"""scikit-learn's 1,797 handwritten 8x8 digits, written once as PNG files in an ImageFolder tree."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from repro.config import DatasetConfig


def digit_targets(task: str) -> tuple[list[int], list[str]]:
    """Class index and class names of scikit-learn's 1,797 digits, in file order."""
    from sklearn.datasets import load_digits

    labels = [_digit_class_name(int(digit), task) for digit in load_digits().target]
    class_names = sorted(set(labels))  # the order ImageFolder gives the tree's folders
    class_to_idx = {name: i for i, name in enumerate(class_names)}
    return [class_to_idx[label] for label in labels], class_names


def digits_tree(cfg: DatasetConfig) -> Path:
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
