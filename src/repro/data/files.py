"""Images stored as files: reading one, decoding all once to refuse a broken one, and the link policy."""

from __future__ import annotations

import os
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repro.errors import UserError

# What PIL raises for a file it cannot read: unknown format, truncated file, broken chunk or header.
UNREADABLE = (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError)


def check_links(root: Path) -> None:
    """Refuse symbolic links that leave `root`, and links that reach a folder or file a second time.

    torchvision follows links when it lists a folder: a loop multiplies the images (6 became 246), and
    `ln -s . DIR/b` gives class `b` every image of the other classes, on both sides of the split.
    """
    real_root = root.resolve()
    seen_dirs: dict[Path, Path] = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        real = folder.resolve()
        if real in seen_dirs:
            raise UserError(
                f"dataset.path={root}: {folder} leads back to {seen_dirs[real]} (a symbolic link loop or "
                "duplicate), so its images would count twice; remove the link"
            )
        seen_dirs[real] = folder
        for entry in sorted(os.scandir(folder), key=lambda item: item.name):
            path = Path(entry.path)
            if entry.is_symlink():
                target = path.resolve()
                if target != real_root and real_root not in target.parents:
                    raise UserError(
                        f"dataset.path={root}: {path} is a symbolic link out of the folder (to {target}); "
                        "copy the images in, or point dataset.path at a folder that holds them"
                    )
            if entry.is_dir(follow_symlinks=True):
                stack.append(path)
    # Files: every link stays inside the folder (above), so a linked file duplicates one listed here.
    real_files = Counter(
        Path(dirpath, name).resolve() for dirpath, _, names in os.walk(root) for name in names
    )
    twice = [str(path) for path, count in real_files.items() if count > 1]
    if twice:
        raise UserError(
            f"dataset.path={root}: {twice[0]} is reached twice through symbolic links; remove the link"
        )


def verify_images(files: list[str]) -> None:
    """Decode every image once, as training will; the first that fails stops the job before it starts."""
    unreadable = first_unreadable(files)
    if unreadable is not None:
        _, file, error = unreadable
        raise UserError(f"unreadable image {file} ({error}): replace or delete the file")


def first_unreadable(files: list[str]) -> tuple[int, str, Exception] | None:
    """The index, file and error of the first image PIL cannot decode, or None if all decode."""
    for index, file in enumerate(files):
        try:
            with Image.open(file) as image:
                image.load()
        except UNREADABLE as error:
            return index, file, error
    return None


class ReadFile:
    """Image file i, read as RGB and resized: a uint8 tensor (3, size, size)."""

    def __init__(self, files: list[str], image_size: int) -> None:
        self.files = files
        self.image_size = image_size

    def __call__(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as image:
            # PIL's bilinear resize, antialiased: what torchvision's Resize does to a PIL image
            rgb = image.convert("RGB").resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)
