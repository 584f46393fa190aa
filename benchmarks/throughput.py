"""Training throughput and time to first step: `repro.train` against a bare timm loop on the same data.

Both sides are fresh processes started the same way, under `_first_step_probe.py`, which times every
optimiser step from the moment the command was started. The repro side is the whole command line
(`python -m repro.train ...`: preflight, Hydra, MLflow, meters off); the bare side builds the same
data with `repro.data.build_data` and the same timm model (laid out channels last on the CPU, as `repro.loop`
does), and loops over Adam steps. The two
alternate, round after round, so drifts in machine load hit both; the figures are medians and the
ratio is the median of the per-round ratios.

    python benchmarks/throughput.py                                  # CPU, MobileNet V2, 128 px
    python benchmarks/throughput.py --models mobilenet_v2 resnet50 --workers 8 --gpu auto --steps 36

Targets (issue 13): CPU images/s >= 0.99 x the bare loop; time to first step < 5 s, without the
data set's decode; GPU usage >= 80 % for ResNet50 at batch 32 on a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from repro.config import DatasetConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).with_name("_first_step_probe.py")


def _probe(command: list[str], steps: int, out: Path, env: dict[str, str]) -> dict:
    """Run `command` under the probe; return its step times and GPU usage."""
    env = {**env, "REPRO_PROBE_OUT": str(out), "REPRO_PROBE_STEPS": str(steps), "REPRO_T0": repr(time.time())}
    done = subprocess.run(
        [sys.executable, str(PROBE), *command],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if not out.exists():
        raise RuntimeError(
            f"{' '.join(command)} ended ({done.returncode}) before {steps} steps:\n{done.stderr[-3000:]}"
        )
    return json.loads(out.read_text())


def _summary(record: dict, batch_size: int, skip: int) -> dict[str, float]:
    """Time to first step, and images/s over the steps after the first `skip` (warm-up)."""
    times = record["step_times_s"]
    steady = times[skip:]
    images_per_s = (len(steady) - 1) * batch_size / (steady[-1] - steady[0])
    usage = record.get("gpu_usage_pct") or []
    return {
        "first_step_s": times[0],
        "images_per_s": images_per_s,
        "gpu_usage_pct": statistics.mean(usage) if usage else float("nan"),
        "threads": record["threads"],
    }


def _repro_command(args: argparse.Namespace, model: str, workdir: Path) -> list[str]:
    return [
        "-m",
        "repro.train",
        f"model={model}",
        "training=quick",
        "training.head_epochs=0",
        "training.finetune_epochs=1",
        f"training.batch_size={args.batch_size}",
        f"dataset={args.dataset}",
        f"dataset.image_size={args.image_size}",
        f"dataset.cache_dir={workdir / 'data'}",
        f"dataset.num_workers={args.workers}",
        "energy=none",
        f"gpu={args.gpu}",
        f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
        f"hydra.run.dir={workdir / 'run'}",
    ]


def _bare_command(args: argparse.Namespace, model: str, workdir: Path) -> list[str]:
    return [
        str(Path(__file__).resolve()),
        "--bare",
        model,
        "--batch-size",
        str(args.batch_size),
        "--image-size",
        str(args.image_size),
        "--dataset",
        args.dataset,
        "--workers",
        str(args.workers),
        "--gpu",
        args.gpu,
        "--workdir",
        str(workdir),
    ]


def _dataset_config(args: argparse.Namespace) -> DatasetConfig:
    """`dataset=args.dataset` as the schema dataclass, composed from the package's configs."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from repro.composition import register_configs
    from repro.config import CONF_DIR

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(overrides=[f"+dataset={args.dataset}"])
    return OmegaConf.to_object(cfg.dataset)


def _steps_per_epoch(args: argparse.Namespace) -> int:
    """Optimiser steps in the repro side's one epoch (`training=quick`: the last partial batch is kept)."""
    from repro.data import dataset_labels
    from repro.data.split import split

    dataset = _dataset_config(args)
    train_indices, _ = split(dataset_labels(dataset).targets, dataset.val_fraction, seed=0)
    return math.ceil(len(train_indices) / args.batch_size)


def _check_args(args: argparse.Namespace) -> None:
    """Refuse what cannot be measured, in one line with exit code 2, before any process starts."""
    problem = None
    if args.rounds < 1:
        problem = f"--rounds {args.rounds}: give at least 1"
    elif args.skip < 0 or args.steps < args.skip + 2:
        problem = f"--steps {args.steps} with --skip {args.skip}: images/s needs at least --skip + 2 steps"
    else:
        per_epoch = _steps_per_epoch(args)
        if args.steps > per_epoch:
            problem = (
                f"--steps {args.steps} is more than one epoch of dataset={args.dataset} at batch size "
                f"{args.batch_size} ({per_epoch} steps), which the repro side trains: "
                f"give --steps {per_epoch} or fewer"
            )
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)


def bare_loop(args: argparse.Namespace) -> None:
    """The bare side: the same data path and timm model, a plain loop of Adam steps, nothing else."""
    import timm  # noqa: F401  (the same imports as a plain timm script)
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from repro.composition import register_configs
    from repro.config import CONF_DIR, DatasetConfig
    from repro.data import build_data

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(overrides=[f"+model={args.bare}", f"+dataset={args.dataset}"])
    dataset = OmegaConf.to_object(cfg.dataset)
    assert isinstance(dataset, DatasetConfig)
    dataset.image_size, dataset.num_workers = args.image_size, args.workers
    dataset.cache_dir = str(Path(args.workdir) / "data")
    started = time.perf_counter()
    data = build_data(dataset, args.batch_size, 0, preprocessing=cfg.model.preprocessing)
    (Path(args.workdir) / "decode_s").write_text(str(time.perf_counter() - started))
    device = torch.device("cuda" if args.gpu != "cpu" and torch.cuda.is_available() else "cpu")
    import repro.models  # noqa: F401  (registers the study's extra architectures with timm)

    model = timm.create_model(cfg.model.name, num_classes=1).to(device).train()
    if device.type == "cpu":  # repro.loop's layout: the ratio is then repro's overhead, not the layout
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    while True:  # the probe ends the process after its steps
        for images, targets in data.train_loader:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True).float().unsqueeze(1)
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(images), targets).backward()
            optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2"], help="model= options")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="dataset.num_workers on both sides")
    parser.add_argument("--gpu", default="cpu", help="gpu= profile (cpu, auto, h200, ...)")
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps per process")
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left out of images/s")
    parser.add_argument("--rounds", type=int, default=3, help="repro/bare pairs, alternating")
    parser.add_argument("--bare", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_loop(args)
        return
    _check_args(args)

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    print(f"{'model':<14} {'side':<6} {'round':>5} {'first step s':>12} {'images/s':>9} {'GPU %':>6} threads")
    for model in args.models:
        with tempfile.TemporaryDirectory(prefix="repro-throughput-") as tmp:
            workdir = Path(tmp)
            rows: dict[str, list[dict[str, float]]] = {"repro": [], "bare": []}
            for round_ in range(args.rounds):
                for side, command in (("repro", _repro_command), ("bare", _bare_command)):
                    out = workdir / f"{side}-{round_}.json"
                    row = _summary(
                        _probe(command(args, model, workdir), args.steps, out, env),
                        args.batch_size,
                        args.skip,
                    )
                    rows[side].append(row)
                    print(
                        f"{model:<14} {side:<6} {round_:>5} {row['first_step_s']:>12.2f} "
                        f"{row['images_per_s']:>9.1f} {row['gpu_usage_pct']:>6.1f} {row['threads']}"
                    )
            ratios = [
                r["images_per_s"] / b["images_per_s"]
                for r, b in zip(rows["repro"], rows["bare"], strict=True)
            ]
            first = {side: statistics.median(row["first_step_s"] for row in rows[side]) for side in rows}
            decode_s = float((workdir / "decode_s").read_text())
            print(
                f"{model}: images/s ratio repro/bare = {statistics.median(ratios):.3f} "
                f"(per round {', '.join(f'{r:.3f}' for r in ratios)}); time to first step (medians): "
                f"repro {first['repro']:.2f} s, bare {first['bare']:.2f} s; data build {decode_s:.2f} s"
            )


if __name__ == "__main__":
    main()
