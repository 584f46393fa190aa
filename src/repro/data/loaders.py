"""Serving one side of the split: the batch-at-a-time dataset, the in-memory decode and the DataLoader."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from repro.data.transforms import preprocess
from repro.threads import available_cores

#: How a source hands over image i: a uint8 tensor (3, size, size).
Reader = Callable[[int], torch.Tensor]
#: What a batch of float pixels in 0..1, (N, 3, size, size), goes through in training (`transforms.augment`).
Augmentation = Callable[[torch.Tensor], torch.Tensor]


class Images(Dataset):
    """One side of the split, served a batch at a time (`__getitems__`) as model inputs and targets.

    The pixels come from `pixels` (every image of the data set, held as uint8) or are read per batch
    with `read`. Conversion to float, the augmentation and the preprocessing each run once on the
    whole batch, as tensor operations, in the DataLoader's worker where it has some. The study's
    augmentation draws its flip per image and its colour changes once per batch (`transforms.augment`).
    """

    def __init__(
        self,
        indices: np.ndarray,
        targets: torch.Tensor,
        read: Reader,
        pixels: torch.Tensor | None,
        augmentation: Augmentation | None,
        preprocessing: str,
    ) -> None:
        self.indices = torch.as_tensor(indices, dtype=torch.int64)
        self.targets = targets
        self.read = read
        self.pixels = pixels
        self.augmentation = augmentation
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.indices[positions]
        if self.pixels is not None:
            batch = self.pixels[images]
        else:
            batch = torch.stack([self.read(int(i)) for i in images])
        batch = batch.float().div_(255)
        if self.augmentation is not None:
            batch = self.augmentation(batch)
        return preprocess(batch, self.preprocessing), self.targets[images]

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        images, targets = self.__getitems__([position])
        return images[0], int(targets[0])


def decode_all(read: Reader, count: int) -> torch.Tensor:
    """Every image as one uint8 tensor (count, 3, size, size); PIL decodes without the GIL: threads help."""
    with ThreadPoolExecutor(max_workers=available_cores()) as pool:
        return torch.stack(list(pool.map(read, range(count), chunksize=64)))


def default_workers(in_memory: bool) -> int:
    """DataLoader workers when `dataset.num_workers` is null: none for held data (a batch is cut from a
    tensor), otherwise one per core left over by training, at least 1 and at most 8."""
    if in_memory:
        return 0
    return max(1, min(8, available_cores() - 1))


def _already_batched(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`collate_fn` for datasets whose `__getitems__` returns a whole batch."""
    return batch


def make_loader(
    dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool, seed: int, drop_last: bool
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        drop_last=drop_last,
        collate_fn=_already_batched,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )
