"""The study's measurement protocol around the runs: a warm-up before a campaign, cooldowns between runs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from repro.errors import UserError


def warmup(seconds: float, device: torch.device | None = None) -> None:
    """Keep `device` (the CPU by default) busy with matrix products for `seconds`, with a countdown.

    The study warmed the machine up before a campaign so that the first run does not start cold.
    """
    device = device or torch.device("cpu")
    matrix = torch.randn(512, 512, device=device) if seconds > 0 else None

    def work() -> None:
        nonlocal matrix
        matrix = matrix @ matrix
        matrix = matrix / matrix.norm()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    countdown(seconds, "warm-up", work)


def cooldown(seconds: float) -> None:
    """Sit idle for `seconds`, with a countdown, so the next run starts from a cool machine."""
    countdown(seconds, "cooldown")


def countdown(seconds: float, label: str, work: Callable[[], None] | None = None) -> None:
    """Wait `seconds` while showing a tqdm countdown, calling `work` repeatedly if given; 0 is a no-op."""
    if seconds < 0:
        raise UserError(f"energy {label} of {seconds} s is negative; use 0 to skip it")
    if seconds == 0:
        return
    start = time.perf_counter()
    deadline = start + seconds
    with tqdm(total=math.ceil(seconds), desc=label, unit="s", leave=False) as bar:
        while (now := time.perf_counter()) < deadline:
            if work is None:
                time.sleep(min(0.5, deadline - now))
            else:
                work()
            bar.update(min(int(time.perf_counter() - start), bar.total) - bar.n)
