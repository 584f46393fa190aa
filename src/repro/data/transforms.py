"""What happens to pixels on their way to the model: the study's augmentation and the preprocessing modes."""

from __future__ import annotations

import torch

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


#: The study's augmentation (PROTOCOL.md; its `data_augmentation`): TensorFlow's `random_brightness(x, 0.2)`,
#: `random_contrast(x, 0.5, 2.0)`, `random_saturation(x, 0.75, 1.25)` and `random_hue(x, 0.1)`.
BRIGHTNESS_MAX_DELTA = 0.2
CONTRAST_RANGE = (0.5, 2.0)
SATURATION_RANGE = (0.75, 1.25)
HUE_MAX_DELTA = 0.1
#: The pure colour of a hue h, 0..1 per channel (R, G, B): |6h - 3| - 1, 2 - |6h - 2|, 2 - |6h - 4|.
_PURE_CENTRE = torch.tensor([3.0, 2.0, 4.0]).view(3, 1, 1)
_PURE_SIGN = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1)
_PURE_OFFSET = torch.tensor([-1.0, 2.0, 2.0]).view(3, 1, 1)


def augment(images: torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """The study's augmentation of a batch of RGB pixels in 0..1, (N, 3, H, W), as a few tensor operations.

    As the study's `data_augmentation`, mapped over batches (`ds.batch(...).map(...)`): a left-right flip
    drawn per image, then a brightness delta, a contrast factor, a saturation factor and a hue delta
    drawn once for the whole batch (each `tf.image.random_*` call draws one scalar), applied in that
    order with TensorFlow's formulas, then clipped to [0, 1]. `per_image=True` draws the four colour
    values per image instead (`dataset.augment_per_image`), which the study did not.

    As we read the study's code, it applied them to Keras' float pixels in 0..255 (`convert_image_dtype`
    leaves floats unscaled), so its brightness delta was 0.2/255 of the range and its final clip to
    [0, 1] left nearly every training pixel at 0 or 1; here they act on 0..1, as that clip intends.
    The draws use torch's global generator (seeded per job, and per DataLoader worker by torch).

    Returns:
        A new tensor; `images` is left unchanged.
    """
    n = len(images)
    shape = (n, 1, 1, 1) if per_image else (1, 1, 1, 1)
    flip = torch.rand(n) < 0.5
    delta = _uniform(shape, -BRIGHTNESS_MAX_DELTA, BRIGHTNESS_MAX_DELTA)
    contrast = _uniform(shape, *CONTRAST_RANGE)
    saturation = _uniform(shape, *SATURATION_RANGE)
    hue = _uniform(shape, -HUE_MAX_DELTA, HUE_MAX_DELTA)
    out = _saturation_and_hue(_brightness_and_contrast(images, delta, contrast), saturation, hue).clamp_(0, 1)
    # Flipping last gives the same images: every step above works per pixel or on an image's mean.
    for i in flip.nonzero().flatten().tolist():
        out[i] = out[i].flip(-1)
    return out


def _uniform(shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return torch.rand(shape) * (high - low) + low


def _brightness_and_contrast(images: torch.Tensor, delta: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`tf.image.adjust_brightness` (add `delta`), then `adjust_contrast` ((x - mean) * factor + mean, with
    the mean per image and channel), in one pass: x * factor + mean(x) * (1 - factor) + delta. No clipping.
    """
    bias = images.mean(dim=(-2, -1), keepdim=True).mul_(1.0 - factor).add_(delta)
    return images.mul(factor).add_(bias)


def _saturation_and_hue(images: torch.Tensor, factor: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """`tf.image.adjust_saturation`, then `adjust_hue`, in one HSV round trip.

    With value v = max(r, g, b) and chroma c = v - min(r, g, b), TensorFlow's saturation is s = c / v
    (0 where v <= 0); adjust_saturation makes it min(s * factor, 1), so c becomes v * min(s * factor, 1)
    while hue and value stay; adjust_hue then turns the hue by `delta` (a fraction of the circle),
    keeping v and c. Back to RGB, a pixel is (v - c) + c * (the pure colour of its hue).
    """
    red, green, blue = images.unbind(-3)
    value = torch.maximum(torch.maximum(red, green), blue)
    chroma = value - torch.minimum(torch.minimum(red, green), blue)
    inverse = chroma.clamp_min(torch.finfo(images.dtype).tiny).reciprocal_()
    # hue x 6 from the brightest channel, the first among equals as in TensorFlow:
    # (g - b) / c for red, (b - r) / c + 2 for green, (r - g) / c + 4 for blue
    hue6 = torch.where(
        red == value,
        green - blue,
        torch.where(
            green == value, (blue - red).add_(chroma, alpha=2.0), (red - green).add_(chroma, alpha=4.0)
        ),
    )
    hue6.mul_(inverse).add_(delta.squeeze(-3) * 6.0).remainder_(6.0)
    chroma.mul_(torch.minimum(factor.squeeze(-3), value.mul(inverse).clamp_min_(0.0)))  # 0 where v <= 0: grey
    pure = (hue6.unsqueeze(-3) - _PURE_CENTRE).abs_().mul_(_PURE_SIGN).add_(_PURE_OFFSET).clamp_(0.0, 1.0)
    return torch.addcmul((value - chroma).unsqueeze(-3), chroma.unsqueeze(-3), pure)
