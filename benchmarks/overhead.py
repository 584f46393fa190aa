"""What does measuring cost? repro's measured training against a bare torch/timm loop.

Both sides train the same model on the same data for the same number of steps, with the same
optimisers and a full validation pass per epoch. The measured side is `repro.train.run`: energy
meters (CodeCarbon, plus the NVML sampler on a GPU), per-epoch energy windows and MLflow logging.
The bare side is a plain loop with none of that. The two alternate, pair after pair, in one
process, so drifts in machine load hit both; the figure is the median of the per-pair ratios of
training throughput (images/s, timed over the training epochs alone on both sides).

    .venv/bin/python benchmarks/overhead.py --pairs 5
    .venv/bin/python benchmarks/overhead.py --gpu auto --image-size 128 --steps 50 --workers 8  # GPU

Target: ratio >= 0.98, i.e. measuring costs at most 2 % of throughput.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from repro.config import CONF_DIR, ModelConfig
from repro.data import build_data
from repro.environments import resolve_device
from repro.loop import seed_everything
from repro.models import create_model, set_base_trainable
from repro.train import JobContext, run


def _compose(args: argparse.Namespace, workdir: Path, pair: int) -> object:
    overrides = [
        f"model={args.model}",
        "training=quick",
        f"training.max_steps_per_epoch={args.steps}",
        f"dataset.image_size={args.image_size}",
        "dataset.augment=false",
        f"dataset.num_workers={args.workers}",
        f"dataset.cache_dir={workdir / 'data'}",
        f"gpu={args.gpu}",
        "energy=default",
        f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
        f"run_name=overhead-{pair}",
        f"seed={args.seed}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _measured(cfg: object, workdir: Path, pair: int) -> float:
    """Images/s of repro's measured job, from the run's own `images_seen` and `duration_s`."""
    run(cfg, JobContext(output_dir=workdir / f"measured-{pair}"))
    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    (recorded,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.run_name = 'overhead-{pair}'"
    )
    return recorded.data.metrics["images_seen"] / recorded.data.metrics["duration_s"]


def _bare(cfg: object) -> float:
    """Images/s of the same training as a plain torch/timm loop: no meters, no logging."""
    device = resolve_device(cfg.gpu).torch_device
    seed_everything(cfg.seed)
    data = build_data(cfg.dataset, cfg.training.batch_size, cfg.seed)
    model = create_model(
        ModelConfig(name=cfg.model.name), num_classes=1 if data.binary else data.num_classes
    ).to(device)
    loss_fn = torch.nn.BCEWithLogitsLoss() if data.binary else torch.nn.CrossEntropyLoss()
    training = cfg.training

    set_base_trainable(model, False)
    head = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=training.head_lr)
    phases = [(head, training.head_epochs)]
    images = 0
    started = time.perf_counter()
    for phase, (optimizer, epochs) in enumerate(phases + [(None, training.finetune_epochs)]):
        if phase == 1:
            set_base_trainable(model, True)
            optimizer = torch.optim.SGD(
                model.parameters(), lr=training.finetune_lr, momentum=training.momentum
            )
        for _ in range(epochs):
            model.train()
            for step, (batch, targets) in enumerate(data.train_loader):
                if step >= training.max_steps_per_epoch:
                    break
                batch, targets = batch.to(device), targets.to(device)
                targets = targets.float().unsqueeze(1) if data.binary else targets
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(batch), targets).backward()
                optimizer.step()
                images += len(batch)
            model.eval()
            with torch.no_grad():
                for batch, _ in data.val_loader:
                    model(batch.to(device))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument(
        "--steps", type=int, default=20, help="steps per epoch, 3 epochs; digits has 40 batches of 32 at most"
    )
    parser.add_argument("--gpu", default="cpu", help="gpu profile: cpu, auto, h200, ...")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (dataset.num_workers)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.pairs < 1 or args.steps < 1:
        parser.error("--pairs and --steps must be positive")

    with tempfile.TemporaryDirectory(prefix="repro-overhead-") as tmp:
        workdir = Path(tmp)
        ratios = []
        for pair in range(args.pairs):
            cfg = _compose(args, workdir, pair)
            # Alternate which side goes first, so warm caches and load drift favour neither.
            if pair % 2 == 0:
                bare = _bare(cfg)
                measured = _measured(cfg, workdir, pair)
            else:
                measured = _measured(cfg, workdir, pair)
                bare = _bare(cfg)
            ratios.append(measured / bare)
            print(f"pair {pair + 1}: bare {bare:8.1f} img/s   measured {measured:8.1f} img/s   ", end="")
            print(f"ratio {ratios[-1]:.4f}", flush=True)
        median = statistics.median(ratios)
        verdict = "meets" if median >= 0.98 else "MISSES"
        print(f"\nmedian ratio measured/bare over {args.pairs} pairs: {median:.4f}", end=" ")
        print(f"({verdict} the >= 0.98 target)")
        print(f"spread of the ratios: min {min(ratios):.4f}, max {max(ratios):.4f} (this machine's noise)")
        print(f"model={args.model} image_size={args.image_size} steps/epoch={args.steps} ", end="")
        print(f"gpu={args.gpu} workers={args.workers}")


if __name__ == "__main__":
    main()
