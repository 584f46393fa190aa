"""Where the time before a job's first optimiser step goes: a start-up trace of `python -m repro.train`.

    python benchmarks/startup_trace.py model=mobilenet_v2 dataset.image_size=128 training=quick
    python benchmarks/startup_trace.py --rounds 3 energy=none ...     # medians over fresh processes

Each round is a fresh process that imports torch, starts the store process (where `python -m
repro.train` starts it, before its own imports), imports `repro.train`, wraps the steps of a job that
`repro.train` looks up by name (pre-run checks, data, model, FLOP count, meters, the requests to the
store process: `open` returns at once, `start_run` waits for the run to exist) so that each notes when
it started and ended, and runs `repro.train.main()` with the overrides given. At the first optimiser
step it prints the trace and ends the process, so no training is timed. Times are seconds since the
process started (`REPRO_T0`, else the interpreter's start). The trace names what ran; a step that is
not listed took no wrapped call. The store process's own work (MLflow's imports, the store's schema,
the run) runs on another core and shows only as the wait in `start_run`; the meters' `prepare` runs in
a thread of its own. Nothing in `repro` knows about it. Compare traces taken in the same run on the
same machine: a shared machine's load moves them. The last column, the CPU time of the thread that
ran the step (the main thread for all but the threaded steps), moves least with the load: on an idle
machine the main thread's CPU time at the first step is close to the wall time to it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Names that `repro.train` (and the modules it calls through) looks up when a job starts, in order.
_TRAIN_STEPS = (
    "preflight",
    "job_config",
    "validate_job",
    "use_threads",
    "resolve_device",
    "build_data",
    "create_model",
    "check_input_size",
    "measure_complexity",
    "create_monitor",
    "measurement_lock",
    "warmup",
    "cooldown",
)
_MODULE_STEPS = {
    "repro.reconcile": ("resume_decision", "process_tags", "config_hash"),
    "repro.tracking": ("provenance_tags", "flatten_config"),
    "repro.energy.monitor": (),
}
#: The job's requests to its store process (`repro.store_process`), which does MLflow's work in parallel.
_STORE_STEPS = ("open", "start_run")


def _child(out: Path, argv: list[str]) -> None:
    """One traced job, in this process."""
    t0 = float(os.environ.get("REPRO_T0", time.time()))
    # label, start s, end s, process CPU s at the end, CPU s of the step's thread at the end
    events: list[tuple[str, float, float, float, float]] = []

    def now() -> float:
        return time.time() - t0

    def note(label: str, start: float) -> None:
        events.append((label, start, now(), time.process_time(), time.thread_time()))

    def mark(label: str) -> None:
        note(label, now())

    def wrap(owner: object, name: str) -> None:
        inner = getattr(owner, name, None)
        if inner is None:
            return
        if isinstance(inner, type):  # a class: time its construction
            original_init = inner.__init__

            @functools.wraps(original_init)
            def init(self: object, *args: object, **kwargs: object) -> None:
                start = now()
                try:
                    original_init(self, *args, **kwargs)
                finally:
                    note(name, start)

            inner.__init__ = init
            return

        @functools.wraps(inner)
        def timed(*args: object, **kwargs: object) -> object:
            start = now()
            try:
                return inner(*args, **kwargs)
            finally:
                note(name, start)

        setattr(owner, name, timed)

    mark("interpreter up")
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    mark("torch imported")
    from repro import store_process

    store_process.start()  # where `python -m repro.train` starts it: before its own imports
    mark("store process started")
    import repro.train as train

    mark("repro.train imported")
    import importlib

    for name in _TRAIN_STEPS:
        wrap(train, name)
    for module_name, names in _MODULE_STEPS.items():
        module = importlib.import_module(module_name)
        for name in names:
            wrap(module, name)
    for name in _STORE_STEPS:
        wrap(store_process.StoreProcess, name)
    wrap(train.EnergyMonitor, "measure_baseline")
    wrap(train.EnergyMonitor, "start")
    from repro.energy.meters import CodeCarbonMeter

    wrap(CodeCarbonMeter, "prepare")  # in the meters' own thread, while the data and the model build

    def first_step(_optimizer: object, _args: object, _kwargs: object) -> None:
        mark("first optimiser step")
        out.write_text(json.dumps(events))
        sys.stdout.flush()
        os._exit(0)

    register_optimizer_step_pre_hook(first_step)
    sys.argv = ["repro.train", *argv]
    train.main()


def _run_round(argv: list[str], workdir: Path, round_: int) -> list[tuple[str, float, float, float, float]]:
    out = workdir / f"trace-{round_}.json"
    overrides = [
        f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",  # one store, as a user's: round 0 creates it
        f"hydra.run.dir={workdir / f'run-{round_}'}",
        *argv,
    ]
    env = {**os.environ, "REPRO_T0": repr(time.time())}
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(out), *overrides],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if not out.exists():
        tail = done.stderr[-3000:]
        raise SystemExit(f"error: the job ended ({done.returncode}) before its first step:\n{tail}")
    return [tuple(event) for event in json.loads(out.read_text())]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=1, help="fresh processes; the table shows medians")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.child:
        _child(Path(args.child), overrides)
        return
    if args.rounds < 1:
        print("error: --rounds must be at least 1", file=sys.stderr)
        raise SystemExit(2)
    with tempfile.TemporaryDirectory(prefix="repro-startup-") as tmp:
        rounds = [_run_round(overrides, Path(tmp), i) for i in range(args.rounds)]
    # the median of each step's times over the rounds in which it ran; a repeated step is numbered
    times: dict[str, list[tuple[float, float, float, float]]] = {}
    for events in rounds:
        seen: dict[str, int] = {}
        for label, start, end, cpu, thread_cpu in events:
            seen[label] = seen.get(label, 0) + 1
            key = label if seen[label] == 1 else f"{label} #{seen[label]}"
            times.setdefault(key, []).append((start, end, cpu, thread_cpu))
    print(f"{'step':<28} {'start s':>8} {'end s':>8} {'took s':>7} {'CPU s at end':>12} {'its thread':>10}")
    for key, rows in sorted(times.items(), key=lambda item: statistics.median(row[0] for row in item[1])):
        start, end, cpu, thread_cpu = (statistics.median(row[i] for row in rows) for i in range(4))
        print(f"{key:<28} {start:>8.2f} {end:>8.2f} {end - start:>7.2f} {cpu:>12.2f} {thread_cpu:>10.2f}")


if __name__ == "__main__":
    main()
