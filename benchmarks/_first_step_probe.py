"""Run a Python module or script with a stopwatch on its optimiser steps; used by throughput.py.

    REPRO_T0=$(date +%s.%N) REPRO_PROBE_OUT=out.json REPRO_PROBE_STEPS=20 \
        python benchmarks/_first_step_probe.py -m repro.train ...

A global optimiser pre-hook notes the time of every step (from `REPRO_T0`, when the command was
started), and every image count. After `REPRO_PROBE_STEPS` steps it writes what it saw as JSON and
ends the process, so no validation or clean-up is timed. On a GPU it samples NVML's utilisation
between the first and the last step. It imports nothing of the command's own, so the command's
imports are timed as they are.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import threading
import time

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

_T0 = float(os.environ.get("REPRO_T0", time.time()))
_OUT = os.environ["REPRO_PROBE_OUT"]
_STEPS = int(os.environ.get("REPRO_PROBE_STEPS", "20"))
_step_times_s: list[float] = []
_gpu_usage_pct: list[float] = []
_stop_sampling = threading.Event()


def _sample_gpu() -> None:
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    while not _stop_sampling.wait(0.05):
        _gpu_usage_pct.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))


def _on_step(_optimizer: torch.optim.Optimizer, _args: object, _kwargs: object) -> None:
    now = time.time()
    _step_times_s.append(now - _T0)
    if len(_step_times_s) == 1 and torch.cuda.is_available():
        threading.Thread(target=_sample_gpu, daemon=True).start()
    if len(_step_times_s) >= _STEPS:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            _step_times_s[-1] = time.time() - _T0
        _stop_sampling.set()
        record = {
            "step_times_s": _step_times_s,
            "gpu_usage_pct": _gpu_usage_pct,
            "threads": torch.get_num_threads(),
        }
        with open(_OUT, "w") as handle:
            json.dump(record, handle)
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    register_optimizer_step_pre_hook(_on_step)
    if sys.argv[1] == "-m":
        sys.argv = [sys.argv[2], *sys.argv[3:]]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
