"""Mixed precision (`training.amp`): which devices can train at which precision, and the autocast around it.

`false` trains in FP32. `bf16` and `fp16` run the forward pass and the loss under `torch.autocast`
at that precision; `fp16` also scales the loss with a `GradScaler`, so that small gradients do not
underflow FP16's range (BF16 has FP32's range and needs none). Validation runs under the same
autocast, so the energy of an epoch is the energy of one precision.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from repro.errors import UserError

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def precision_name(amp: bool | str) -> str:
    """The precision a job computes at: fp32, fp16 or bf16."""
    return "fp32" if amp is False else str(amp)


def check_device_supports(amp: bool | str, device: torch.device) -> None:
    """Refuse a precision the device cannot train at, before anything trains.

    Raises:
        UserError: fp16 on the CPU, bf16 on a CUDA device without BF16, or a device without autocast.
    """
    if amp is False:
        return
    if device.type == "cpu" and amp == "fp16":
        raise UserError(
            "training.amp=fp16 needs a CUDA GPU (FP16 autocast on the CPU is slow and its gradient scaling "
            "untested here); on the CPU use training.amp=bf16 or training.amp=false"
        )
    if not torch.amp.autocast_mode.is_autocast_available(device.type):
        raise UserError(f"training.amp={amp}: torch {torch.__version__} has no autocast on {device}")
    native_bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported(including_emulation=False)
    if amp == "bf16" and not native_bf16:
        name = torch.cuda.get_device_name(device)
        raise UserError(f"training.amp=bf16: {name} does not compute in BF16; use training.amp=fp16 or false")


def autocast(amp: bool | str, device: torch.device) -> AbstractContextManager:
    """The forward pass's context at `amp`: `torch.autocast` at its precision, or nothing for FP32."""
    if amp is False:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[str(amp)])


def grad_scaler(amp: bool | str, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler for one optimiser: active for fp16 only; otherwise it passes every call through."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")
