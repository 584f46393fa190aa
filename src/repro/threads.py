"""How many CPU threads a job uses: set on purpose, from the cores the job may use.

Spinning intra-op threads on cores that other processes hold make a job's time vary several-fold and
burn CPU time that the energy meters then bill to the model; so a job uses exactly the cores it was
given (its affinity mask, or SLURM's `--cpus-per-task`), unless `training.threads` or, failing that,
`OMP_NUM_THREADS` says otherwise.
"""

from __future__ import annotations

import contextlib
import os

from repro.errors import UserError


def available_cores() -> int:
    """The cores this process may run on: its affinity mask, capped by SLURM's CPUs per task."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cores = min(cores, int(slurm))
    return cores


def resolve_threads(threads: int | None) -> int:
    """`training.threads`; when it is null, `OMP_NUM_THREADS` if set, else the available cores.

    Raises:
        UserError: the value is 0 or less, or more than the cores this job may use.
    """
    cores = available_cores()
    if threads is None:
        requested = os.environ.get("OMP_NUM_THREADS", "")
        return min(int(requested), cores) if requested.isdigit() and int(requested) > 0 else cores
    if threads <= 0 or threads > cores:
        raise UserError(
            f"training.threads={threads} must be between 1 and the {cores} core(s) this job may use "
            "(affinity mask / SLURM_CPUS_PER_TASK); leave it unset to use them all"
        )
    return threads


def use_threads(threads: int) -> None:
    """Set torch's intra-op threads, and its inter-op threads where torch still allows it."""
    import torch

    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        # torch allows it once, before any inter-op work; a later job in the same process keeps the first
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(threads)
