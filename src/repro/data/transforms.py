"""What happens to pixels on their way to the model: the study's augmentation and the preprocessing modes."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from repro.config import PREPROCESSING
from repro.errors import UserError

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: Keras' caffe mode subtracts these from 0..255 pixels in BGR order (B, G, R).
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


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


def augmentation() -> v2.Transform:
    """The study's augmentation, drawn per image: a horizontal flip and colour jitter."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=(0.5, 2.0), saturation=(0.75, 1.25), hue=0.1),
        ]
    )
