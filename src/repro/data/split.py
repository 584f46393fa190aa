"""The study's split: stratified and seeded, refused up front where scikit-learn would fail."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from repro.errors import UserError


def check_split(targets: Sequence[int], class_names: list[str], val_fraction: float) -> None:
    """Fail where scikit-learn's stratified split would: a class below 2 images, or a side too small."""
    counts = Counter(targets)
    smallest = min(range(len(class_names)), key=lambda c: counts[c])
    if counts[smallest] < 2:
        raise UserError(
            f"class {class_names[smallest]!r} has {counts[smallest]} image(s): a stratified split needs at "
            "least 2 per class; add images to it or remove it"
        )
    n_val = math.ceil(val_fraction * len(targets))  # how scikit-learn sizes the test side
    for side, n in (("validation", n_val), ("training", len(targets) - n_val)):
        if n < len(class_names):
            raise UserError(
                f"dataset.val_fraction={val_fraction} leaves {n} {side} image(s) for "
                f"{len(class_names)} classes: use a fraction nearer 0.3 or add images"
            )


def split(targets: Sequence[int], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image indices of the training and the validation side."""
    return train_test_split(
        np.arange(len(targets)), test_size=val_fraction, stratify=targets, random_state=seed, shuffle=True
    )
