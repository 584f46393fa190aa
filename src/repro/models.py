"""The model factory: timm's `create_model` plus the study's extra architectures, its heads and its checks.

Importing this module registers `nasnet_mobile` (NASNet-A Mobile), `vgg16_gap` (VGG16 without its fully
connected block) and `resnet50_v1` (Keras' ResNet50: stride in the 1x1 convolution) with timm, so
`timm.create_model` finds them too.
"""

from __future__ import annotations

import difflib
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import timm
import torch
from timm.layers import ClassifierHead
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import Bottleneck, ResNet
from timm.models.vgg import VGG
from timm.models.vgg import cfgs as _vgg_cfgs
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from repro import nasnet as _nasnet  # noqa: F401  (registers nasnet_mobile with timm)
from repro.config import ModelConfig
from repro.errors import UserError

__all__ = [
    "ModelComplexity",
    "check_input_size",
    "create_model",
    "freeze_base_batchnorm",
    "measure_complexity",
    "set_base_trainable",
]

@dataclass(frozen=True)
class ModelComplexity:
    """Cost of one forward pass of one image."""

    gflops: float  # 2 x multiply-accumulates, in 1e9
    params_m: float  # parameters, in 1e6


def create_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Create `cfg.name` from timm's registry with a new head after global average pooling.

    `cfg.head="linear"` is one linear layer; `cfg.head="study"` is the study's dense head for the
    architecture (`cfg.study_head_hidden`: ReLU layers of those widths, then the output layer).

    Args:
        cfg: The model config: any timm name, its head, and where its weights come from.
        num_classes: Outputs of the head; binary tasks use 1 (one logit).

    Raises:
        UserError: The name or head is unknown, the weights file is missing or does not fit, or hub weights
            are unavailable (no network, or none published).
    """
    _check_name(cfg.name)
    kwargs: dict[str, Any] = dict(num_classes=num_classes, global_pool="avg", drop_rate=cfg.drop_rate)
    if cfg.weights_file is not None:
        model = _create_from_file(cfg.name, cfg.weights_file, kwargs)
    elif cfg.pretrained:
        model = _create_from_hub(cfg.name, kwargs)
    else:
        model = timm.create_model(cfg.name, pretrained=False, **kwargs)
    if cfg.head == "study":
        hidden = list(cfg.study_head_hidden or [])
        _set_classifier(model, _study_head(model.num_features, hidden, num_classes))
    return model


def freeze_base_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm layer outside the classifier in inference mode (the study's `training=False`).

    Its running statistics then stay as they are and normalise with them; its scale and shift still
    train wherever their parameters require gradients. Call it after every `model.train()`.
    """
    head = {id(module) for module in model.get_classifier().modules()}
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and id(module) not in head:
            module.eval()


def set_base_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze every parameter except the classifier's (the study's head-only phase)."""
    head = {id(p) for p in model.get_classifier().parameters()}
    for parameter in model.parameters():
        if id(parameter) not in head:
            parameter.requires_grad_(trainable)


def measure_complexity(model: nn.Module, image_size: int, name: str | None = None) -> ModelComplexity:
    """FLOPs (2 x multiply-accumulates of convolutions and matmuls) of one image, and the parameters.

    Args:
        name: The model's name: given, the one forward pass also checks the image size, as
            `check_input_size` would with a pass of its own.

    Raises:
        UserError: With `name`, the model rejects `image_size` (`check_input_size`'s message).
    """
    try:
        with _eval_no_grad(model), FlopCounterMode(display=False) as counter:
            model(_probe_image(model, image_size))
    except _SIZE_REJECTED:
        if name is None:
            raise
        check_input_size(model, image_size, name)  # names the smallest size that works
        raise
    params = sum(p.numel() for p in model.parameters())
    return ModelComplexity(gflops=counter.get_total_flops() / 1e9, params_m=params / 1e6)


def check_input_size(model: nn.Module, image_size: int, name: str) -> None:
    """Run one image of `image_size` through `model` and turn a failure into a one-line error.

    Raises:
        UserError: The model rejects that size; the message names the next larger size that works, if any.
    """
    if _forward_works(model, image_size):
        return
    larger = next(
        (size for size in _CANDIDATE_SIZES if size > image_size and _forward_works(model, size)), None
    )
    if larger is None:
        raise UserError(f"dataset.image_size={image_size} does not fit model {name!r}: try another size")
    smallest = _smallest_working_size(model, image_size, larger)
    raise UserError(
        f"dataset.image_size={image_size} is too small for model {name!r}: "
        f"the smallest size that works is {smallest}"
    )


# ----------------------------------------------------------------------------------------------------
# VGG16 the study's way: convolutional base, global average pooling, new linear head (no fc6/fc7).


class _VggGap(VGG):
    """timm's VGG without its fully connected block (`pre_logits`: fc6, fc7): conv base, pool, linear."""

    def __init__(
        self,
        cfg: list[Any],
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        device: Any = None,
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        # Build on the meta device so fc6/fc7 (~120M parameters) are never allocated; then materialise.
        super().__init__(
            cfg,
            num_classes=num_classes,
            global_pool=global_pool,
            drop_rate=drop_rate,
            device="meta",
            dtype=dtype,
            **kwargs,
        )
        self.pre_logits = nn.Identity()
        self.head = ClassifierHead(
            self.num_features,
            num_classes,
            pool_type=global_pool,
            drop_rate=drop_rate,
            device="meta",
            dtype=dtype,
        )
        self.head_hidden_size = self.num_features
        self.to_empty(device=device if device is not None else torch.get_default_device())
        self._initialize_weights()


def _vgg_gap_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Keep the convolutional base of a timm or torchvision VGG16 checkpoint (both name it `features.N`).

    fc6, fc7 and the checkpoint's classifier go: no classifier fits this model, whose head takes the
    512 pooled channels of the base rather than fc7's 4096 features.
    """
    return {k: v for k, v in state_dict.items() if k.startswith("features.")}


default_cfgs = generate_default_cfgs(
    {
        "vgg16_gap.tv_in1k": dict(
            hf_hub_id="timm/vgg16.tv_in1k",
            input_size=(3, 224, 224),
            pool_size=(7, 7),
            crop_pct=0.875,
            interpolation="bilinear",
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            num_classes=1000,
            first_conv="features.0",
            classifier="head.fc",
            license="bsd-3-clause",
        ),
    }
)


@register_model
def vgg16_gap(pretrained: bool = False, **kwargs: Any) -> VGG:
    """VGG16 without fc6/fc7 (Keras `VGG16(include_top=False)` + global average pooling + a new dense head).

    Pretrained weights are VGG16's ImageNet convolutional base (`vgg16.tv_in1k`).
    """
    return build_model_with_cfg(
        _VggGap,
        "vgg16_gap",
        pretrained,
        model_cfg=_vgg_cfgs["vgg16"],
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3, 4, 5)),
        pretrained_filter_fn=_vgg_gap_filter_fn,
        pretrained_strict=False,
        **kwargs,
    )


# ----------------------------------------------------------------------------------------------------
# The study's heads (Keras Dense layers after GlobalAveragePooling2D) and ResNet50 v1.


def _study_head(in_features: int, hidden: list[int], num_classes: int) -> nn.Sequential:
    """Dense(h, relu) for each h in `hidden`, then Dense(num_classes); Keras' initialisation."""
    layers: list[nn.Module] = []
    for width in [*hidden, num_classes]:
        linear = nn.Linear(in_features, width)
        nn.init.xavier_uniform_(linear.weight)  # Keras' glorot_uniform kernel, zero bias
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU(inplace=True)]
        in_features = width
    return nn.Sequential(*layers[:-1])  # no activation after the output: the loss takes logits


def _set_classifier(model: nn.Module, head: nn.Module) -> None:
    """Replace the module that timm's `pretrained_cfg["classifier"]` names (`fc`, `head.fc`, ...)."""
    *parents, name = model.pretrained_cfg["classifier"].split(".")
    owner = model
    for parent in parents:
        owner = getattr(owner, parent)
    setattr(owner, name, head)
    assert model.get_classifier() is head, f"{type(model).__name__}: the classifier was not replaced"


class _BottleneckV1(Bottleneck):
    """ResNet v1's bottleneck (Keras, Caffe): the stride sits in the first 1x1 convolution, not the 3x3.

    The shapes of every tensor and weight are those of timm's v1.5 block, so v1.5 checkpoints load.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *args: Any, **kwargs: Any) -> None:
        super().__init__(inplanes, planes, stride, *args, **kwargs)
        self.conv1.stride = (stride, stride)
        self.conv2.stride = (1, 1)


default_cfgs |= generate_default_cfgs(
    {
        "resnet50_v1.tv_in1k": dict(
            hf_hub_id="timm/resnet50.tv_in1k",
            input_size=(3, 224, 224),
            pool_size=(7, 7),
            crop_pct=0.875,
            interpolation="bilinear",
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            num_classes=1000,
            first_conv="conv1",
            classifier="fc",
            license="bsd-3-clause",
        ),
    }
)


@register_model
def resnet50_v1(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet50 v1, as Keras' `ResNet50`: about 5% fewer FLOPs than timm's v1.5 `resnet50`.

    Pretrained weights are torchvision's v1.5 ImageNet weights (`resnet50.tv_in1k`): no v1 weights are
    published for PyTorch, and Keras' cannot be loaded.
    """
    return build_model_with_cfg(
        ResNet, "resnet50_v1", pretrained, block=_BottleneckV1, layers=(3, 4, 6, 3), **kwargs
    )


# ----------------------------------------------------------------------------------------------------

# Sizes tried, smallest first, when an image size is too small; the search then narrows down below the first
# that works.
_CANDIDATE_SIZES = (8, 16, 32, 64, 128, 224, 299, 512)


def _check_name(name: str) -> None:
    source, _ = timm.models.parse_model_name(name)
    if source is not None or timm.is_model(name):
        return  # hf-hub:... and local-dir:... names are resolved by timm itself
    close = difflib.get_close_matches(timm.models.get_arch_name(name), timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models() for the names"
    raise UserError(f"unknown model.name={name!r}: {hint}")


#: A checkpoint must fill at least this fraction of the model's tensors (its new head aside), or it is
#: refused: a checkpoint of another architecture would otherwise train from random weights in silence.
MIN_LOADED_FRACTION = 0.9


def _create_from_file(name: str, weights_file: str, kwargs: dict[str, Any]) -> nn.Module:
    if not os.path.isfile(weights_file):
        raise UserError(
            f"model.weights_file={weights_file!r} does not exist: give the path of a checkpoint file"
        )
    check_checkpoint(name, weights_file, kwargs)
    # num_classes=0 in the overlay makes timm drop the checkpoint's head, whatever its size, so the new head
    # keeps the model's own initialisation, exactly as without a checkpoint.
    overlay = dict(file=os.path.abspath(weights_file), num_classes=0)
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as error:  # shape mismatch, corrupt file
        reason = " ".join(str(error).split())[:300]
        raise UserError(
            f"model.weights_file={weights_file!r} does not fit model {name!r}: {reason}"
        ) from error


def check_checkpoint(name: str, weights_file: str, kwargs: dict[str, Any] | None = None) -> None:
    """Refuse a checkpoint that is unreadable, empty, or fills less than `MIN_LOADED_FRACTION` of the model.

    Raises:
        UserError: one line naming the file, how much of the model it fills, and the first missing and
            unexpected tensor names.
    """
    try:
        state = _read_state_dict(weights_file)
    except Exception as error:  # torch.load's errors for a truncated, corrupt or foreign file vary
        raise UserError(
            f"model.weights_file={weights_file!r} is not a readable PyTorch checkpoint "
            f"({type(error).__name__}); give a file written by torch.save(model.state_dict(), PATH) "
            "or a .safetensors file"
        ) from None
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise UserError(f"model.weights_file={weights_file!r} holds no tensors: it is not a model checkpoint")
    model = timm.create_model(name, pretrained=False, **{**(kwargs or {}), "num_classes": 0})
    expected = {key: value.shape for key, value in model.state_dict().items()}
    fitting = [key for key, shape in expected.items() if key in tensors and tensors[key].shape == shape]
    fraction = len(fitting) / max(len(expected), 1)
    if fraction < MIN_LOADED_FRACTION:
        missing = [key for key in expected if key not in tensors]
        wrong_shape = [key for key in expected if key in tensors and tensors[key].shape != expected[key]]
        unexpected = [key for key in tensors if key not in expected]
        details = [
            f"missing {len(missing)} (e.g. {', '.join(missing[:3])})" if missing else "",
            f"wrong shape {len(wrong_shape)} (e.g. {', '.join(wrong_shape[:3])})" if wrong_shape else "",
            f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})" if unexpected else "",
        ]
        raise UserError(
            f"model.weights_file={weights_file!r} fills {len(fitting)} of {len(expected)} tensors of model "
            f"{name!r} ({fraction:.0%}, at least {MIN_LOADED_FRACTION:.0%} needed): "
            f"{'; '.join(part for part in details if part)}; is it a checkpoint of another architecture?"
        )


def _read_state_dict(weights_file: str) -> dict[str, Any]:
    """A checkpoint's tensors as timm reads them: the `state_dict` or `model` entry, `module.` prefix off."""
    if weights_file.endswith(".safetensors"):
        import safetensors.torch

        return safetensors.torch.load_file(weights_file, device="cpu")
    checkpoint = torch.load(weights_file, map_location="cpu", weights_only=True)  # never runs pickled code
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict):
        raise TypeError(f"a {type(checkpoint).__name__}, not a dict of tensors")
    return {str(key).removeprefix("module."): value for key, value in checkpoint.items()}


def _create_from_hub(name: str, kwargs: dict[str, Any]) -> nn.Module:
    source, model_name = timm.models.parse_model_name(name)
    pretrained_cfg = None if source else timm.models.get_pretrained_cfg(model_name)
    if not source and not (pretrained_cfg and (pretrained_cfg.hf_hub_id or pretrained_cfg.url)):
        raise UserError(
            f"model.pretrained=true: timm publishes no weights for {name!r}; "
            "use model.weights_file=PATH with a local checkpoint, or model.pretrained=false"
        )
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as error:  # no network: huggingface_hub's and urllib's connection errors are all OSErrors
        raise UserError(
            f"model.pretrained=true could not download the weights of {name!r} "
            f"({type(error).__name__}); offline, use model.weights_file=PATH with a local checkpoint"
        ) from error


@contextmanager
def _eval_no_grad(model: nn.Module) -> Iterator[None]:
    """Eval mode without gradients for a probe; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _probe_image(model: nn.Module, image_size: int) -> torch.Tensor:
    parameter = next(model.parameters())
    return torch.zeros(1, 3, image_size, image_size, device=parameter.device, dtype=parameter.dtype)


def _smallest_working_size(model: nn.Module, failing: int, working: int) -> int:
    """Bisect between a size that fails and one that works; the result always works."""
    while working - failing > 1:
        middle = (failing + working) // 2
        if _forward_works(model, middle):
            working = middle
        else:
            failing = middle
    return working


#: How PyTorch and timm models reject an input size.
_SIZE_REJECTED = (RuntimeError, ValueError, AssertionError)


def _forward_works(model: nn.Module, image_size: int) -> bool:
    try:
        with _eval_no_grad(model):
            model(_probe_image(model, image_size))
    except _SIZE_REJECTED:
        return False
    return True
