"""The job's SIGTERM policy: raise at once outside a run's recording, only set a flag inside it.

SLURM's time limit and `kill` send SIGTERM. `main` and `run` in `repro.train` choose the policy per
block with `sigterm_policy`; the training loop reads `STOP_REQUESTED` between batches.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from repro import loop

#: Set by SIGTERM; the training loop checks it between batches.
STOP_REQUESTED = threading.Event()
#: Whether SIGTERM raises `TrainingStopped` at once (waits, between jobs) or only sets the flag.
_raise_on_sigterm = True


def _on_sigterm(_signum: int, _frame: Any) -> None:
    STOP_REQUESTED.set()
    if _raise_on_sigterm:
        raise loop.TrainingStopped()


@contextmanager
def sigterm_policy(raise_now: bool) -> Iterator[None]:
    """For the duration, SIGTERM (SLURM's time limit, `kill`) raises `TrainingStopped` or only sets a flag.

    Outside a run's recording (warm-up, cooldown, the idle baseline, between jobs) it raises at once.
    While a run records, it only sets the flag: the loop stops between batches, so the signal never
    lands in the middle of a meter reading or an MLflow write, and the run ends KILLED with its energy.
    A flag set during such a block raises when the block is left for a raising one.
    """
    global _raise_on_sigterm
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    previous, _raise_on_sigterm = _raise_on_sigterm, raise_now
    try:
        if raise_now and STOP_REQUESTED.is_set():
            raise loop.TrainingStopped()
        yield
    finally:
        _raise_on_sigterm = previous
        signal.signal(signal.SIGTERM, previous_handler)
    if previous and STOP_REQUESTED.is_set():
        raise loop.TrainingStopped()
