"""Time of one head-phase training step (frozen base, only the new head trains) in each memory layout.

    python benchmarks/head_step.py                       # MobileNet V2, 128 px, batch 32, 2 threads
    python benchmarks/head_step.py model=resnet50 --steps 30 --rounds 3

The job is composed as `python -m repro.train` would compose it (the overrides after the options), its
data and model built by repro's own functions, and its steps run through `repro.loop`'s epoch function,
so the step is the loop's: forward, loss, backward and the optimiser step. Each round trains a fresh copy
of the model for `--steps` steps in each layout, the two layouts alternating so that drifts in machine
load hit both. A step's time is the time between two batch requests; the first `--skip` steps (oneDNN
builds its kernels there) are left out. Prints the median wall seconds and process CPU seconds per step.
Target (issue 20): MobileNet V2 at 128 px, batch 32, 2 threads, at most 0.13 s.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

LAYOUTS = ("contiguous", "channels_last")


class _TimedLoader:
    """The loader's batches, noting the wall and CPU clocks each time the loop asks for the next one."""

    def __init__(self, loader, steps: int) -> None:  # noqa: ANN001
        self.loader, self.steps = loader, steps
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):  # noqa: ANN204
        served = 0
        while served < self.steps:
            for batch in self.loader:
                if served == self.steps:
                    break
                self.wall.append(time.perf_counter())
                self.cpu.append(time.process_time())
                served += 1
                yield batch
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=25, help="head-phase steps per layout and round")
    parser.add_argument("--skip", type=int, default=5, help="first steps left out (kernel creation)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "overrides", nargs="*", help="repro.train overrides (default: MobileNet V2 at 128 px)"
    )
    args = parser.parse_args()
    if args.steps <= args.skip + 1 or args.rounds < 1:
        asked = f"--steps {args.steps} with --skip {args.skip} and --rounds {args.rounds}"
        print(f"error: {asked} time no step: --steps must exceed --skip by 2 or more", file=sys.stderr)
        sys.exit(2)

    import dataclasses

    import torch

    from repro import loop
    from repro.composition import register_configs
    from repro.config import CONF_DIR
    from repro.data import build_data
    from repro.models import create_model, set_base_trainable
    from repro.preflight import compose_jobs
    from repro.threads import use_threads

    overrides = ["model=mobilenet_v2", "dataset.image_size=128", "training.batch_size=32", *args.overrides]
    register_configs()
    ((_, cfg),) = compose_jobs(overrides, False, CONF_DIR)
    use_threads(args.threads)
    data = build_data(cfg.dataset, cfg.training.batch_size, cfg.seed, drop_last=True)
    torch.manual_seed(0)
    template = create_model(cfg.model, num_classes=1 if data.binary else data.num_classes)
    device = torch.device("cpu")
    per_step: dict[str, dict[str, list[float]]] = {layout: {"wall": [], "cpu": []} for layout in LAYOUTS}
    for _ in range(args.rounds):
        for layout in LAYOUTS:
            model = copy.deepcopy(template)
            loop.lay_out(model, layout, device)
            set_base_trainable(model, False)
            head = torch.optim.Adam(
                [p for p in model.parameters() if p.requires_grad], lr=cfg.training.head_lr
            )
            timed = _TimedLoader(data.train_loader, args.steps)
            loop._train_one_epoch(
                model, dataclasses.replace(data, train_loader=timed), head, device, None, "head step",
                lambda: False, cfg.training.freeze_bn,
            )  # fmt: skip
            for clock in ("wall", "cpu"):
                marks = getattr(timed, clock)[args.skip :]
                per_step[layout][clock] += [b - a for a, b in zip(marks, marks[1:], strict=False)]
    shape = f"{cfg.model.name} at {cfg.dataset.image_size} px, batch {cfg.training.batch_size}"
    print(
        f"head-phase step, {shape}, {args.threads} threads, "
        f"{args.rounds} rounds x {args.steps - args.skip} steps (medians)"
    )
    for layout in LAYOUTS:
        wall, cpu = (statistics.median(per_step[layout][c]) for c in ("wall", "cpu"))
        print(f"  {layout:<14} {wall:.3f} s wall  {cpu:.3f} CPU-s")


if __name__ == "__main__":
    main()
