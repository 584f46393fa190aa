"""Noise around a class-dependent colour, generated from the seed as images are read, for scale tests."""

from __future__ import annotations

import numpy as np
import torch

from repro.config import DatasetConfig


def synthetic_targets(cfg: DatasetConfig) -> list[int]:
    """Balanced labels: image i is in class i mod num_classes."""
    return [i % cfg.num_classes for i in range(cfg.num_images)]


def synthetic_class_names(cfg: DatasetConfig) -> list[str]:
    return [f"class{c}" for c in range(cfg.num_classes)]


def synthetic_class_means(num_classes: int, seed: int) -> np.ndarray:
    """One mean RGB colour per class, in 0..255, so that a model can tell the classes apart."""
    return np.random.default_rng([seed, num_classes]).uniform(40, 215, size=(num_classes, 3))


class SyntheticImage:
    """Noise around a class colour, generated from (seed, image index): a uint8 tensor (3, size, size)."""

    def __init__(self, class_means: np.ndarray, targets: list[int], image_size: int, seed: int) -> None:
        self.class_means = class_means
        self.targets = targets
        self.image_size = image_size
        self.seed = seed

    def __call__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, index])
        noise = rng.normal(0, 40, size=(self.image_size, self.image_size, 3))
        pixels = np.clip(self.class_means[self.targets[index]] + noise, 0, 255).astype(np.uint8)
        return torch.from_numpy(pixels).permute(2, 0, 1)
