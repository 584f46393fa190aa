"""Data that keeps up: held in memory when it fits, read by workers when not; the same images either way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from repro.data import build_data, dataset_config, default_workers


def _batches(loader: torch.utils.data.DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(targets)


def test_digits_are_decoded_once_and_held_as_uint8(data_cache: Path) -> None:
    bundle = build_data(dataset_config(name="digits", cache_dir=str(data_cache), image_size=16), 64, 0)
    assert bundle.in_memory
    pixels = bundle.train_loader.dataset.pixels
    assert pixels.dtype == torch.uint8 and pixels.shape == (1797, 3, 16, 16)
    assert bundle.train_loader.num_workers == 0  # cutting a batch from a tensor needs no worker
    images, targets = next(iter(bundle.train_loader))
    assert images.dtype == torch.float32 and images.shape == (64, 3, 16, 16) and targets.dtype == torch.int64


def test_a_folder_over_the_memory_limit_is_read_per_batch_with_the_same_pixels(
    data_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("repro.data.loaders.available_cores", lambda: 3)
    cfg = dataset_config(name="digits", cache_dir=str(data_cache), image_size=16, augment=False)
    held = build_data(cfg, 128, 0, preprocessing="caffe")
    cfg.memory_limit_mb = 1.0  # 1797 x 3 x 16 x 16 bytes = 1.4 MB
    read = build_data(cfg, 128, 0, preprocessing="caffe")
    assert held.in_memory and not read.in_memory and read.train_loader.dataset.pixels is None
    assert read.val_loader.num_workers == 2 == default_workers(in_memory=False)  # 3 cores, 1 left to training
    assert read.val_loader.prefetch_factor == 4 and read.val_loader.persistent_workers
    pairs = ((held.val_loader, read.val_loader), (held.train_loader, read.train_loader))
    for loader_held, loader_read in pairs:
        images_held, targets_held = _batches(loader_held)
        images_read, targets_read = _batches(loader_read)
        assert torch.equal(targets_held, targets_read)
        torch.testing.assert_close(images_held, images_read, rtol=0, atol=0)


def _same_picture_everywhere(root: Path) -> Path:
    """Two classes of 12 copies of one picture that is not mirror-symmetric: only the augmentation can
    make two of them differ."""
    pixels = torch.arange(8 * 8 * 3, dtype=torch.uint8).reshape(8, 8, 3).mul(2).numpy()
    for name in ("a", "b"):
        (root / name).mkdir()
        for i in range(12):
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _up_to_a_flip(images: torch.Tensor) -> set[tuple[float, ...]]:
    """The distinct images of a batch, an image and its mirror image counted as one."""
    return {
        min(tuple(image.flatten().tolist()), tuple(image.flip(-1).flatten().tolist())) for image in images
    }


def test_a_batch_shares_its_colour_draws_and_flips_each_image_on_its_own(tmp_path: Path) -> None:
    cfg = dataset_config(name="imagefolder", path=str(_same_picture_everywhere(tmp_path)), image_size=8)
    torch.manual_seed(0)
    images, _ = next(iter(build_data(cfg, 16, 0).train_loader))
    assert len(_up_to_a_flip(images)) == 1  # one brightness, contrast, saturation and hue for the batch
    flipped = [torch.equal(image, images[0].flip(-1)) for image in images]
    assert any(flipped) and not all(flipped)  # but a flip of its own for each image
    assert not torch.equal(images[0], images[0].flip(-1))
    second, _ = next(iter(build_data(cfg, 16, 0).train_loader))
    assert _up_to_a_flip(second) != _up_to_a_flip(images)  # the next batch draws its own


def test_per_image_colour_draws_are_an_option(tmp_path: Path) -> None:
    root = _same_picture_everywhere(tmp_path)
    cfg = dataset_config(name="imagefolder", path=str(root), image_size=8, augment_per_image=True)
    torch.manual_seed(0)
    images, _ = next(iter(build_data(cfg, 16, 0).train_loader))
    assert len(_up_to_a_flip(images)) == 16
    val_images, _ = next(iter(build_data(cfg, 16, 0).val_loader))
    assert all(torch.equal(image, val_images[0]) for image in val_images)  # validation is never augmented
