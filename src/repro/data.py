"""Images for one training job: scikit-learn's digits, a user's image folder or synthetic images.

Every source ends as a list of labelled images, split 70/30 (stratified, seeded) and served by two
DataLoaders; only the training set gets the study's augmentation. A data set whose decoded pixels fit
under `dataset.memory_limit_mb` is decoded once and held as one uint8 tensor; a larger one is decoded
per batch, in DataLoader workers. Either way a batch is made on tensors: augmentation per image
(torchvision.transforms.v2), then conversion and preprocessing for the whole batch.
`validate_dataset` runs the cheap checks a sweep needs before any job starts; `build_data` builds one
job's loaders.
"""

from __future__ import annotations

import difflib
import math
import os
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.transforms import v2

from repro.config import DatasetConfig
from repro.errors import UserError
from repro.threads import available_cores

_DATASETS = ("digits", "imagefolder", "synthetic")
_TASKS = ("binary", "multiclass")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: Keras' caffe mode subtracts these from 0..255 pixels in BGR order (B, G, R).
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
#: `model.preprocessing` options, named after the modes of Keras' `preprocess_input`.
PREPROCESSING = ("torch", "tf", "caffe")
# What PIL raises for a file it cannot read: unknown format, truncated file, broken chunk or header.
_UNREADABLE = (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError)


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


def validate_dataset(cfg: DatasetConfig) -> None:
    """Check a dataset config before any training starts, so a sweep fails on its first line.

    Decodes every image of an image folder once (a truncated JPEG passes a header check but not this),
    refuses symbolic links that leave the folder or loop, and writes nothing.

    Raises:
        UserError: naming the bad value and what to do.
    """
    _check_options(cfg)
    if cfg.name == "imagefolder":
        samples, class_names = _scan_folder(_folder(cfg))
        _verify_images(samples)
        _check_split([t for _, t in samples], class_names, cfg.val_fraction)
    elif cfg.name == "digits":
        targets, class_names = _digit_targets(cfg.task)
        _check_split(targets, class_names, cfg.val_fraction)
    else:
        _check_split(_synthetic_targets(cfg), _synthetic_class_names(cfg), cfg.val_fraction)


def build_data(
    cfg: DatasetConfig,
    batch_size: int,
    seed: int,
    preprocessing: str = "torch",
    drop_last: bool = False,
) -> DataBundle:
    """Build the seeded, stratified train/validation loaders of one job.

    `digits` is written once as PNG files under `cfg.cache_dir` and then read like `imagefolder`.
    Image headers are not re-read here: `validate_dataset` does that once per sweep.

    Args:
        cfg: the `dataset` config group.
        batch_size: images per batch, for both loaders.
        seed: fixes the split, the shuffling and the synthetic images.
        preprocessing: how pixels reach the model (`model.preprocessing`, see `preprocess`).
        drop_last: drop the last partial batch of both loaders, as the study's step counts did.

    Raises:
        UserError: for a bad config value, an unusable image folder, or a side smaller than one batch
            when `drop_last` is set.
    """
    _check_options(cfg)
    check_preprocessing(preprocessing)
    if batch_size <= 0:
        raise UserError(
            f"training.batch_size={batch_size} must be positive: set training.batch_size=32 or similar"
        )
    if cfg.name == "synthetic":
        targets = _synthetic_targets(cfg)
        class_names = _synthetic_class_names(cfg)
    else:
        root = _digits_tree(cfg) if cfg.name == "digits" else _folder(cfg)
        samples, class_names = _scan_folder(root)
        targets = [t for _, t in samples]
    _check_split(targets, class_names, cfg.val_fraction)
    train_idx, val_idx = train_test_split(
        np.arange(len(targets)), test_size=cfg.val_fraction, stratify=targets, random_state=seed, shuffle=True
    )
    for side, n in (("training", len(train_idx)), ("validation", len(val_idx))):
        if drop_last and n < batch_size:
            raise UserError(
                f"training.drop_last=true leaves no {side} batch: {n} {side} image(s) for "
                f"training.batch_size={batch_size}; lower the batch size or set training.drop_last=false"
            )
    if cfg.name == "synthetic":
        means = _synthetic_class_means(len(class_names), seed)
        read: Callable[[int], torch.Tensor] = _SyntheticImage(means, targets, cfg.image_size, seed)
    else:
        read = _ReadFile([file for file, _ in samples], cfg.image_size)
    in_memory = len(targets) * 3 * cfg.image_size**2 <= cfg.memory_limit_mb * 1e6
    pixels = _decode_all(read, len(targets)) if in_memory else None
    all_targets = torch.tensor(targets, dtype=torch.int64)
    augmentation = _augmentation() if cfg.augment else None
    train_set = _Images(train_idx, all_targets, read, pixels, augmentation, preprocessing)
    val_set = _Images(val_idx, all_targets, read, pixels, None, preprocessing)
    workers = cfg.num_workers if cfg.num_workers is not None else default_workers(in_memory)
    return DataBundle(
        train_loader=_loader(train_set, batch_size, workers, True, seed, drop_last),
        val_loader=_loader(val_set, batch_size, workers, False, seed, drop_last),
        num_classes=len(class_names),
        class_names=class_names,
        n_train=len(train_idx),
        n_val=len(val_idx),
        binary=len(class_names) == 2,
        in_memory=in_memory,
    )


def _decode_all(read: Callable[[int], torch.Tensor], count: int) -> torch.Tensor:
    """Every image as one uint8 tensor (count, 3, size, size); PIL decodes without the GIL: threads help."""
    with ThreadPoolExecutor(max_workers=available_cores()) as pool:
        return torch.stack(list(pool.map(read, range(count), chunksize=64)))


def default_workers(in_memory: bool) -> int:
    """DataLoader workers when `dataset.num_workers` is null: none for held data (a batch is cut from a
    tensor), otherwise one per core left over by training, at least 1 and at most 8."""
    if in_memory:
        return 0
    return max(1, min(8, available_cores() - 1))


# --- checks ---------------------------------------------------------------------------------------


def _check_options(cfg: DatasetConfig) -> None:
    """The checks that need no file: names, sizes and fractions."""
    if cfg.name not in _DATASETS:
        close = difflib.get_close_matches(str(cfg.name), _DATASETS, n=1)
        hint = f"did you mean dataset={close[0]}? " if close else ""
        raise UserError(f"unknown dataset {cfg.name!r}: {hint}choose one of {', '.join(_DATASETS)}")
    if cfg.task not in _TASKS:
        raise UserError(f"unknown dataset.task={cfg.task!r}: choose one of {', '.join(_TASKS)}")
    if cfg.image_size <= 0:
        raise UserError(
            f"dataset.image_size={cfg.image_size} must be positive: set e.g. dataset.image_size=128"
        )
    if not 0 < cfg.val_fraction < 1:
        raise UserError(
            f"dataset.val_fraction={cfg.val_fraction} must lie between 0 and 1: the study uses 0.3"
        )
    if cfg.num_workers is not None and cfg.num_workers < 0:
        raise UserError(f"dataset.num_workers={cfg.num_workers} must be 0 (load in the main process) or more")
    if cfg.memory_limit_mb < 0:
        raise UserError(f"dataset.memory_limit_mb={cfg.memory_limit_mb} must be 0 (never hold) or more")
    if cfg.name == "synthetic":
        if cfg.num_classes < 2:
            raise UserError(f"dataset.num_classes={cfg.num_classes} must be at least 2 for synthetic images")
        if cfg.num_images < 2 * cfg.num_classes:
            raise UserError(
                f"dataset.num_images={cfg.num_images} is too few for {cfg.num_classes} classes: "
                f"give at least {2 * cfg.num_classes} (two per class)"
            )


def _check_split(targets: Sequence[int], class_names: list[str], val_fraction: float) -> None:
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


def _folder(cfg: DatasetConfig) -> Path:
    """The image folder a user gave, checked to be an existing directory."""
    if isinstance(cfg, DictConfig) and OmegaConf.is_missing(cfg, "path") or cfg.path in (None, MISSING):
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


def _check_links(root: Path) -> None:
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


def _scan_folder(root: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """List the (file, class index) pairs that torchvision's ImageFolder would load, and the class names."""
    _check_links(root)
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


def _verify_images(samples: list[tuple[str, int]]) -> None:
    """Decode every image once, as training will; the first that fails stops the job before it starts."""
    for file, _ in samples:
        try:
            with Image.open(file) as image:
                image.load()
        except _UNREADABLE as error:
            raise UserError(f"unreadable image {file} ({error}): replace or delete the file") from None


# --- sources --------------------------------------------------------------------------------------


def _digit_targets(task: str) -> tuple[list[int], list[str]]:
    """Class index and class names of scikit-learn's 1,797 digits, in file order."""
    from sklearn.datasets import load_digits

    labels = [_digit_class_name(int(digit), task) for digit in load_digits().target]
    class_names = sorted(set(labels))  # the order ImageFolder gives the tree's folders
    class_to_idx = {name: i for i, name in enumerate(class_names)}
    return [class_to_idx[label] for label in labels], class_names


def _digits_tree(cfg: DatasetConfig) -> Path:
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


def _synthetic_targets(cfg: DatasetConfig) -> list[int]:
    """Balanced labels: image i is in class i mod num_classes."""
    return [i % cfg.num_classes for i in range(cfg.num_images)]


def _synthetic_class_names(cfg: DatasetConfig) -> list[str]:
    return [f"class{c}" for c in range(cfg.num_classes)]


def _synthetic_class_means(num_classes: int, seed: int) -> np.ndarray:
    """One mean RGB colour per class, in 0..255, so that a model can tell the classes apart."""
    return np.random.default_rng([seed, num_classes]).uniform(40, 215, size=(num_classes, 3))


class _ReadFile:
    """Image file i, read as RGB and resized: a uint8 tensor (3, size, size)."""

    def __init__(self, files: list[str], image_size: int) -> None:
        self.files = files
        self.image_size = image_size

    def __call__(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as image:
            # PIL's bilinear resize, antialiased: what torchvision's Resize does to a PIL image
            rgb = image.convert("RGB").resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


class _SyntheticImage:
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


class _Images(Dataset):
    """One side of the split, served a batch at a time (`__getitems__`) as model inputs and targets.

    The pixels come from `pixels` (every image of the data set, held as uint8) or are read per batch
    with `read`. The augmentation runs per image on uint8 tensors, so each image gets its own random
    draw as in the study; conversion to float and preprocessing run once per batch.
    """

    def __init__(
        self,
        indices: np.ndarray,
        targets: torch.Tensor,
        read: Callable[[int], torch.Tensor],
        pixels: torch.Tensor | None,
        augmentation: v2.Transform | None,
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
        if self.augmentation is not None:
            batch = torch.stack([self.augmentation(image) for image in batch])
        return preprocess(batch.float().div_(255), self.preprocessing), self.targets[images]

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        images, targets = self.__getitems__([position])
        return images[0], int(targets[0])


# --- transforms and loaders -----------------------------------------------------------------------


def check_preprocessing(preprocessing: str) -> None:
    """Raises: UserError for an unknown `model.preprocessing`."""
    if preprocessing not in PREPROCESSING:
        raise UserError(
            f"unknown model.preprocessing={preprocessing!r}: choose one of {', '.join(PREPROCESSING)}"
        )


def preprocess(images: torch.Tensor, preprocessing: str) -> torch.Tensor:
    """Map RGB pixels in 0..1 (channels at dim -3, one image or a batch) to the model's input.

    As Keras' `preprocess_input` modes: `torch` subtracts ImageNet's mean and divides by its standard
    deviation; `tf` scales to [-1, 1] (x / 127.5 - 1 on 0..255); `caffe` reorders the channels to BGR
    and subtracts ImageNet's BGR means (103.939, 116.779, 123.68) from the 0..255 values.
    """
    shape = (3, 1, 1)
    if preprocessing == "torch":
        mean = torch.tensor(_IMAGENET_MEAN, dtype=images.dtype).view(shape)
        return (images - mean) / torch.tensor(_IMAGENET_STD, dtype=images.dtype).view(shape)
    if preprocessing == "tf":
        return images * 2.0 - 1.0
    if preprocessing == "caffe":
        bgr = images.flip(-3) * 255.0
        return bgr - torch.tensor(_CAFFE_BGR_MEAN, dtype=images.dtype).view(shape)
    check_preprocessing(preprocessing)
    raise AssertionError(preprocessing)  # unreachable: check_preprocessing raised


def _augmentation() -> v2.Transform:
    """The study's augmentation, drawn per image: a horizontal flip and colour jitter."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=(0.5, 2.0), saturation=(0.75, 1.25), hue=0.1),
        ]
    )


def _already_batched(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`collate_fn` for datasets whose `__getitems__` returns a whole batch."""
    return batch


def _loader(
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
