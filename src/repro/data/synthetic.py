"""`dataset=synthetic`: noise around a class-dependent colour, generated from the seed as images are
read, for scale tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from repro.config import DatasetConfig, is_set
from repro.data.loaders import Reader
from repro.data.registry import DatasetSource, Labels, register_dataset
from repro.errors import UserError


@dataclass
class SyntheticConfig(DatasetConfig):
    name: str = "synthetic"
    num_images: int = 512  # images generated, class i mod num_classes for image i
    num_classes: int = 2  # at least 2, with at least two images each

    def __post_init__(self) -> None:
        super().__post_init__()
        if is_set(self.num_classes) and self.num_classes < 2:
            raise UserError(f"dataset.num_classes={self.num_classes} must be at least 2 for synthetic images")
        if is_set(self.num_classes) and is_set(self.num_images) and self.num_images < 2 * self.num_classes:
            raise UserError(
                f"dataset.num_images={self.num_images} is too few for {self.num_classes} classes: "
                f"give at least {2 * self.num_classes} (two per class)"
            )


@register_dataset("synthetic")
class Synthetic(DatasetSource):
    config = SyntheticConfig

    def labels(self, cfg: SyntheticConfig) -> Labels:
        """Balanced labels: image i is in class i mod num_classes."""
        targets = [i % cfg.num_classes for i in range(cfg.num_images)]
        return Labels(targets, [f"class{c}" for c in range(cfg.num_classes)])

    def load(self, cfg: SyntheticConfig, seed: int) -> tuple[Labels, Reader]:
        labels = self.labels(cfg)
        means = synthetic_class_means(len(labels.class_names), seed)
        return labels, SyntheticImage(means, labels.targets, cfg.image_size, seed)


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
