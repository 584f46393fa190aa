"""The study's two-phase training loop: a head-only phase, then fine-tuning with early stopping."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from repro.config import TrainingConfig
from repro.data import DataBundle
from repro.metrics import classification_metrics, scores_from_logits
from repro.models import freeze_base_batchnorm, set_base_trainable
from repro.precision import autocast, grad_scaler


@dataclass
class EpochRecord:
    """What one epoch did; a row of the history CSV and the per-epoch MLflow metrics."""

    epoch: int  # 0-based over both phases
    phase: str  # "head" or "finetune"
    train_loss: float
    val_accuracy: float
    val_f1: float
    learning_rate: float
    train_images: int  # images through the training pass
    val_images: int  # images through the validation pass
    epoch_duration_s: float

    @property
    def images(self) -> int:
        """The images the epoch processed, training and validation passes, as the study counted them."""
        return self.train_images + self.val_images

    def as_row(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass
class LoopResult:
    """The outcome of a whole training: the final validation metrics and what it took."""

    metrics: dict[str, float]  # validation metrics after the last epoch
    history: list[EpochRecord] = field(default_factory=list)
    images_seen: int = 0  # training and validation passes, as the study's `total seen images`
    train_images_seen: int = 0  # training passes only

    @property
    def trained_epochs(self) -> int:
        return len(self.history)


#: Opens a scope around one epoch (the energy window); receives the epoch number.
EpochScope = Callable[[int], AbstractContextManager]
#: Called after each epoch, inside its scope's exit, with the finished record.
EpochCallback = Callable[[EpochRecord], None]


def _no_scope(_epoch: int) -> AbstractContextManager:
    return nullcontext()


@dataclass
class LoopHooks:
    """How the caller follows and steers a training run."""

    epoch_scope: EpochScope = _no_scope  # e.g. one energy window per epoch
    on_epoch_end: EpochCallback | None = None  # e.g. per-epoch MLflow metrics
    # Checked between batches. A stop (SIGTERM) is honoured there rather than wherever the signal
    # lands, so it never interrupts a meter reading or a database write halfway.
    should_stop: Callable[[], bool] = lambda: False
    # Checked after each epoch: True ends training there, with the epoch's metrics (an energy budget).
    end_after_epoch: Callable[[], bool] = lambda: False


class TrainingStopped(BaseException):
    """Training stopped between two batches because the caller asked it to (`LoopHooks.should_stop`)."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; every later epoch would only burn energy."""


class _EarlyStopping:
    """Keras-style early stopping on a metric that should grow (validation accuracy)."""

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = -float("inf")
        self.epochs_without_gain = 0

    def should_stop(self, value: float) -> bool:
        if value > self.best + self.min_delta:
            self.best = value
            self.epochs_without_gain = 0
        else:
            self.epochs_without_gain += 1
        return self.epochs_without_gain >= self.patience


def _loss_function(binary: bool) -> nn.Module:
    return nn.BCEWithLogitsLoss() if binary else nn.CrossEntropyLoss()


def _targets_for_loss(targets: torch.Tensor, binary: bool) -> torch.Tensor:
    return targets.float().unsqueeze(1) if binary else targets


def _batches(
    loader: torch.utils.data.DataLoader, max_steps: int | None, should_stop: Callable[[], bool]
) -> Iterator:
    for step, batch in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            return
        if should_stop():
            raise TrainingStopped()
        yield batch


def evaluate(
    model: nn.Module,
    data: DataBundle,
    device: torch.device,
    should_stop: Callable[[], bool] = lambda: False,
    amp: bool | str = False,
) -> dict[str, float]:
    """Validation metrics of the model as it is now, computed at `amp`'s precision."""
    return _validate(model, data, device, should_stop, amp)[0]


def _validate(
    model: nn.Module, data: DataBundle, device: torch.device, should_stop: Callable[[], bool], amp: bool | str
) -> tuple[dict[str, float], int]:
    """The validation metrics and the number of images the validation pass processed."""
    model.eval()
    all_logits, all_targets = [], []
    with torch.no_grad(), autocast(amp, device):
        for images, targets in _batches(data.val_loader, None, should_stop):
            all_logits.append(model(images.to(device, non_blocking=True)).float().cpu())
            all_targets.append(targets)
    logits = torch.cat(all_logits)
    targets = torch.cat(all_targets).numpy()
    return classification_metrics(targets, scores_from_logits(logits)), len(targets)


def _train_one_epoch(
    model: nn.Module,
    data: DataBundle,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    max_steps: int | None,
    description: str,
    should_stop: Callable[[], bool],
    freeze_bn: bool = False,
    amp: bool | str = False,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[float, int]:
    """One pass over the training set; returns the mean loss and the images processed.

    With `amp`, the forward pass and the loss run under autocast; `scaler` (fp16) scales the loss.
    """
    model.train()
    if freeze_bn:
        freeze_base_batchnorm(model)
    loss_fn = _loss_function(data.binary)
    # The loss stays on the device: reading it every step (`.item()`) would make the CPU wait for
    # the GPU each batch and slow small models down.
    total_loss = torch.zeros((), device=device)
    scaler = scaler if scaler is not None else grad_scaler(amp, device)
    images = 0
    steps = len(data.train_loader) if max_steps is None else min(max_steps, len(data.train_loader))
    # disable=None: the bar shows on a terminal and stays quiet in logs and CI.
    batches = _batches(data.train_loader, max_steps, should_stop)
    progress = tqdm(batches, total=steps, desc=description, leave=False, disable=None)
    for step, (batch_images, targets) in enumerate(progress):
        batch_images = batch_images.to(device, non_blocking=True)
        targets = _targets_for_loss(targets.to(device, non_blocking=True), data.binary)
        optimizer.zero_grad(set_to_none=True)
        with autocast(amp, device):
            loss = loss_fn(model(batch_images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.detach().float() * len(batch_images)
        images += len(batch_images)
        if not progress.disable and step % 10 == 0:
            progress.set_postfix(loss=f"{loss.item():.4f}")
    return total_loss.item() / max(images, 1), images


def train(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainingConfig,
    device: torch.device,
    hooks: LoopHooks | None = None,
) -> LoopResult:
    """Train with the study's protocol and return the final validation metrics.

    Phase 1 trains only the new head with Adam; phase 2 unfreezes the whole network and trains with
    SGD and momentum, stopping early when validation accuracy stops improving and cutting the
    learning rate on plateaus. With `cfg.freeze_bn` the base's BatchNorm stays in inference mode in
    both phases, as in the study. Each epoch (training and validation) runs inside
    `hooks.epoch_scope`, so an energy window covers exactly one epoch.

    Raises:
        TrainingStopped: `hooks.should_stop` said so between two batches.
        TrainingDiverged: an epoch's training loss was NaN or infinite.
    """
    lay_out(model, cfg.memory_format, device)
    hooks = hooks or LoopHooks()
    result = LoopResult(metrics={})
    epoch = 0

    set_base_trainable(model, False)
    head_params = [p for p in model.parameters() if p.requires_grad]
    head_optimizer = torch.optim.Adam(head_params, lr=cfg.head_lr)
    head_scaler = grad_scaler(cfg.amp, device)  # one loss scale per optimiser
    for _ in range(cfg.head_epochs):
        _run_epoch(model, data, cfg, device, (head_optimizer, head_scaler), "head", epoch, hooks, result)
        epoch += 1
        if hooks.end_after_epoch():
            return result

    set_base_trainable(model, True)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.finetune_lr, momentum=cfg.momentum)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )
    stopper = _EarlyStopping(cfg.early_stopping_patience, cfg.early_stopping_min_delta)
    stepping = (optimizer, grad_scaler(cfg.amp, device))
    for _ in range(cfg.finetune_epochs):
        record = _run_epoch(model, data, cfg, device, stepping, "finetune", epoch, hooks, result)
        epoch += 1
        if hooks.end_after_epoch():
            break
        plateau.step(record.val_accuracy)
        if stopper.should_stop(record.val_accuracy):
            break

    return result


def memory_format(setting: str, device: torch.device) -> str:
    """The layout `training.memory_format` gives the model on `device`: "channels_last" or "contiguous".

    `auto` is channels last on the CPU: there oneDNN's convolutions run faster so (one-thread CPU-s per
    training step at 128 px: 0.55 of the time for MobileNet V2's head phase, 0.11 instead of 0.21 at
    batch 32; 0.7 for its fine-tuning, 0.8-0.9 for ResNet18/50, 0.6 for NASNet Mobile, 0.9-1.0 for
    VGG16), with the same results up to float rounding; TensorFlow, the reference's framework, lays its
    images out the same way. On a GPU (not measured here) `auto` keeps PyTorch's default.
    """
    if setting == "auto":
        return "channels_last" if device.type == "cpu" else "contiguous"
    return setting


def lay_out(model: nn.Module, setting: str, device: torch.device) -> str:
    """Move the model to `device` in the layout `setting` gives there, and return that layout's name.

    The parameters stay the same objects, so an optimiser made before still holds them.
    """
    chosen = memory_format(setting, device)
    layout = torch.channels_last if chosen == "channels_last" else torch.contiguous_format
    model.to(device, memory_format=layout)
    return chosen


def _run_epoch(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainingConfig,
    device: torch.device,
    stepping: tuple[torch.optim.Optimizer, torch.amp.GradScaler],
    phase: str,
    epoch: int,
    hooks: LoopHooks,
    result: LoopResult,
) -> EpochRecord:
    optimizer, scaler = stepping
    with hooks.epoch_scope(epoch):
        started = time.perf_counter()
        loss, train_images = _train_one_epoch(
            model,
            data,
            optimizer,
            device,
            cfg.max_steps_per_epoch,
            f"epoch {epoch + 1} ({phase})",
            hooks.should_stop,
            cfg.freeze_bn,
            cfg.amp,
            scaler,
        )
        if not math.isfinite(loss):
            lr_key = "head_lr" if phase == "head" else "finetune_lr"
            raise TrainingDiverged(
                f"training diverged: the mean loss of epoch {epoch + 1} ({phase}) is {loss}; "
                f"lower training.{lr_key} (now {optimizer.param_groups[0]['lr']:g})"
            )
        # The whole validation set every epoch: early stopping needs it, and the last epoch's
        # figures are the run's final metrics, so no evaluation happens outside an energy window.
        val, val_images = _validate(model, data, device, hooks.should_stop, cfg.amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # so the epoch's time and energy include its queued kernels
        record = EpochRecord(
            epoch=epoch,
            phase=phase,
            train_loss=loss,
            val_accuracy=val["accuracy"],
            val_f1=val["f1"],
            learning_rate=float(optimizer.param_groups[0]["lr"]),
            train_images=train_images,
            val_images=val_images,
            epoch_duration_s=time.perf_counter() - started,
        )
    result.history.append(record)
    result.metrics = val
    result.images_seen += record.images
    result.train_images_seen += record.train_images
    if hooks.on_epoch_end is not None:
        hooks.on_epoch_end(record)
    return record


def seed_everything(seed: int) -> None:
    """Fix Python's, NumPy's and torch's generators."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
