"""NASNet-A Mobile (4 @ 1056), built from timm's NASNet-A cells and registered as `nasnet_mobile`.

timm ships only NASNet-A Large (6 @ 4032). Mobile is the same cell search result with fewer, narrower
cells: a 32-filter stem, 4 cells per stack and 1056 penultimate filters (Zoph et al., CVPR 2018; the
Keras `NASNetMobile` the study trained). Importing this module makes `timm.create_model("nasnet_mobile")`
work. timm hosts no weights for it; load a local checkpoint with `pretrained_cfg_overlay=dict(file=...)`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import ConvNormAct, create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.nasnet import CellStem0, CellStem1, FirstCell, NormalCell, ReductionCell0, ReductionCell1
from torch import nn

__all__ = ["NASNetA"]


class NASNetA(nn.Module):
    """NASNet-A of any size ("N @ P"): N = `cells_per_stack` normal cells in each of 3 stacks and P =
    `num_features` filters before the head, so a cell's branches have P / 24 filters in the first stack,
    doubling after each reduction.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_size: int = 32,
        num_features: int = 1056,
        cells_per_stack: int = 4,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        pad_type: str = "same",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = num_features
        filters = num_features // 24

        self.conv0 = ConvNormAct(
            in_chans,
            stem_size,
            kernel_size=3,
            stride=2,
            padding=0,
            apply_act=False,
            norm_layer=partial(nn.BatchNorm2d, eps=0.001, momentum=0.1),
        )
        self.cell_stem_0 = CellStem0(stem_size, num_channels=filters // 4, pad_type=pad_type)
        self.cell_stem_1 = CellStem1(stem_size, num_channels=filters // 2, pad_type=pad_type)

        # Channels of the two inputs every cell sees: the previous cell's output and the one before it.
        prev_chs, chs = filters, 2 * filters
        self._cell_names: list[str] = []
        cell_index = 0
        for stack in range(3):
            stack_filters = filters * 2**stack
            if stack > 0:
                name = f"reduction_cell_{stack - 1}"
                reduction_cls = ReductionCell0 if stack == 1 else ReductionCell1
                self.add_module(
                    name, reduction_cls(prev_chs, stack_filters, chs, stack_filters, pad_type=pad_type)
                )
                self._cell_names.append(name)
                chs = 4 * stack_filters  # the cell after a reduction still sees the cell before it as prev
            for position in range(cells_per_stack):
                name = f"cell_{cell_index}"
                if position == 0:
                    cell = FirstCell(prev_chs, stack_filters // 2, chs, stack_filters, pad_type=pad_type)
                else:
                    cell = NormalCell(prev_chs, stack_filters, chs, stack_filters, pad_type=pad_type)
                self.add_module(name, cell)
                self._cell_names.append(name)
                prev_chs, chs = chs, 6 * stack_filters
                cell_index += 1
        self.act = nn.ReLU(inplace=True)
        self.feature_info = [
            dict(num_chs=stem_size, reduction=2, module="conv0"),
            dict(num_chs=filters, reduction=4, module="cell_stem_1.conv_1x1.act"),
            dict(num_chs=6 * filters, reduction=8, module="reduction_cell_0.conv_1x1.act"),
            dict(num_chs=12 * filters, reduction=16, module="reduction_cell_1.conv_1x1.act"),
            dict(num_chs=num_features, reduction=32, module="act"),
        ]
        self.global_pool, self.head_drop, self.last_linear = create_classifier(
            num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate
        )

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^conv0|cell_stem_[01]", blocks=[(r"^cell_(\d+)", None), (r"^reduction_cell_(\d+)", None)]
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        assert not enable, "gradient checkpointing not supported"

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.last_linear

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool, self.last_linear = create_classifier(
            self.num_features, num_classes, pool_type=global_pool
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x_conv0 = self.conv0(x)
        x_prev = self.cell_stem_0(x_conv0)
        x = self.cell_stem_1(x_conv0, x_prev)
        for name in self._cell_names:
            cell = getattr(self, name)
            if name.startswith("reduction"):
                x = cell(
                    x, x_prev
                )  # x_prev stays: the next cell reaches back past the reduction (as in TF-slim)
            else:
                x_prev, x = x, cell(x, x_prev)
        return self.act(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.last_linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs(
    {
        "nasnet_mobile": dict(
            input_size=(3, 224, 224),
            pool_size=(7, 7),
            crop_pct=0.875,
            interpolation="bicubic",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            num_classes=1000,
            first_conv="conv0.conv",
            classifier="last_linear",
        ),
    }
)


@register_model
def nasnet_mobile(pretrained: bool = False, **kwargs: Any) -> NASNetA:
    """NASNet-A Mobile (4 @ 1056): 32-filter stem, 4 cells per stack, 1056 penultimate filters."""
    model_args = dict(stem_size=32, num_features=1056, cells_per_stack=4, pad_type="same")
    return build_model_with_cfg(
        NASNetA,
        "nasnet_mobile",
        pretrained,
        feature_cfg=dict(feature_cls="hook", no_rewrite=True),
        **dict(model_args, **kwargs),
    )
