"""Entry point: `python -m repro.train [overrides]`, one measured training job per Hydra job.

    python -m repro.train -m model=resnet18,vgg16 gpu=cpu training=quick

`main()` checks every job of a sweep before the first one trains (`repro.preflight`), then hands
over to Hydra. `run(cfg, context)` is one job; it reads no Hydra globals, so tests call it with a
composed config.
"""

from __future__ import annotations

import csv
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import mlflow
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from repro import loop, names, tracking
from repro.config import CONF_DIR, register_configs
from repro.data import DataBundle, build_data
from repro.energy import EnergyMonitor, cooldown, create_monitor, measurement_lock, warmup
from repro.energy.projection import EnergyProjection
from repro.environments import resolve_device
from repro.errors import exit_on_user_error
from repro.models import check_input_size, create_model, measure_complexity
from repro.preflight import preflight, validate_job
from repro.threads import resolve_threads, use_threads

register_configs()  # the schemas must be in the ConfigStore before Hydra composes anything


@dataclass
class JobContext:
    """What a job knows about its place in a sweep; Hydra fills it, tests build it by hand."""

    output_dir: Path
    choices: dict[str, str] = field(default_factory=dict)  # config group -> chosen option
    job_num: int | None = None  # None for a single run
    sweep_dir: Path | None = None


def run(cfg: DictConfig, context: JobContext) -> float:
    """Train one model, measure its energy and record everything in one MLflow run.

    Returns:
        The validation F1, so that Hydra sweepers that optimise can use it.
    """
    validate_job(cfg, check_hardware=False, check_model=False)  # the model is built and checked below
    cfg.training.threads = resolve_threads(cfg.training.threads)  # logged with the params
    use_threads(cfg.training.threads)
    device = resolve_device(cfg.gpu)
    loop.seed_everything(cfg.seed)
    data = build_data(
        cfg.dataset,
        cfg.training.batch_size,
        cfg.seed,
        preprocessing=cfg.model.preprocessing,
        drop_last=cfg.training.drop_last,
    )
    model = create_model(cfg.model, num_classes=1 if data.binary else data.num_classes)
    check_input_size(model, cfg.dataset.image_size, cfg.model.name)
    complexity = measure_complexity(model, cfg.dataset.image_size)
    monitor = create_monitor(cfg.energy, device.torch_device, context.output_dir / "energy")

    architecture = context.choices.get("model") or cfg.model.name
    run_name = cfg.run_name or f"{architecture}-{cfg.gpu.name}-s{cfg.seed}"
    parent_run_id = cfg.tracking.parent_run_id or tracking.read_parent_run_id(context.output_dir)
    tags = {
        **tracking.provenance_tags(),
        **device.tags(),
        names.TAG_MODEL: architecture,
        names.TAG_GPU: cfg.gpu.name,
        names.TAG_SEED: str(cfg.seed),
        names.TAG_OUTPUT_DIR: str(context.output_dir.resolve()),
    }
    if context.sweep_dir is not None:
        tags[names.TAG_SWEEP_DIR] = str(context.sweep_dir.resolve())
        tags[names.TAG_JOB_NUM] = str(context.job_num)

    with measurement_lock(cfg.energy.lock):
        if not context.job_num:
            warmup(cfg.energy.warmup_s, device.torch_device)  # once per campaign, heating the training device
        else:
            cooldown(cfg.energy.cooldown_s)  # between jobs, so heat from the last one does not carry over
        with tracking.training_run(cfg.tracking.uri, cfg.tracking.experiment, run_name, parent_run_id, tags):
            tracking.log_params(tracking.flatten_config(cfg))
            mlflow.log_dict(OmegaConf.to_container(cfg, resolve=True), "config.yaml")
            tracking.log_metrics({names.GFLOPS: complexity.gflops, names.PARAMS_M: complexity.params_m})
            return _measured_training(cfg, context, model, data, device.torch_device, monitor)


def _measured_training(
    cfg: DictConfig,
    context: JobContext,
    model: torch.nn.Module,
    data: DataBundle,
    device: torch.device,
    monitor: EnergyMonitor,
) -> float:
    """Train inside the meters; whatever happens, stop them and keep what they measured."""
    monitor.measure_baseline(cfg.energy.baseline_s)  # run_metrics then adds idle_power_w and energy_net_j
    monitor.start()
    if monitor.estimated:
        print(
            "note: part of this run's energy is an ESTIMATE, not a measurement (see the run's "
            "energy.method.* tags); no hardware counter was readable for every component.",
            file=sys.stderr,
        )
    recorder = _EpochRecorder(monitor, _projection(cfg, monitor))
    status, reason, result = "FINISHED", "completed", None
    started = time.perf_counter()
    try:
        with _sigterm_requests_stop() as stop_requested:
            over_budget = recorder.projection.budget_exceeded
            hooks = loop.LoopHooks(recorder.scope, recorder.on_epoch_end, stop_requested.is_set, over_budget)
            result = loop.train(model, data, cfg.training, device, hooks)
        reason = recorder.projection.budget_message or reason
    except KeyboardInterrupt:
        status, reason = "KILLED", "interrupted by the user (SIGINT)"
        raise
    except loop.TrainingStopped:
        status, reason = "KILLED", "terminated (SIGTERM)"
        raise
    except BaseException as error:
        status, reason = "FAILED", f"{type(error).__name__}: {error}"
        raise
    finally:
        duration_s = time.perf_counter() - started
        try:
            _record_outcome(monitor, recorder, result, reason, duration_s, context.output_dir)
        finally:
            mlflow.end_run(status=status)  # the run's true status, even if recording failed
    return result.metrics[names.F1]


def _record_outcome(
    monitor: EnergyMonitor,
    recorder: _EpochRecorder,
    result: loop.LoopResult | None,
    reason: str,
    duration_s: float,
    output_dir: Path,
) -> None:
    """Stop the meters and log what the run measured, whether it finished or not."""
    mlflow.set_tag(names.TAG_END_REASON, reason[:4000])
    total = monitor.stop()
    metrics: dict[str, float] = {
        names.DURATION_S: duration_s,
        names.IMAGES_SEEN: recorder.images_seen,
        names.TRAINED_EPOCHS: len(recorder.history),
        **monitor.run_metrics(total, recorder.images_seen, duration_s),
        **recorder.projection.final_metrics(),
    }
    if result is not None:
        metrics.update(result.metrics)
    tracking.log_metrics(metrics)
    mlflow.set_tags(monitor.provenance_tags())
    tracking.describe_run(metrics, monitor.provenance_tags(), reason)
    recorder.write_history(output_dir / "history.csv")
    tracking.log_epoch_figure(recorder.history)
    for path in [output_dir / "history.csv", *monitor.artifact_paths()]:
        if path.exists():
            mlflow.log_artifact(str(path))


def _projection(cfg: DictConfig, monitor: EnergyMonitor) -> EnergyProjection:
    """STEP's projection and the energy budget for this job's epochs (`repro.energy.projection`)."""
    training = cfg.training
    earliest = training.head_epochs + min(training.early_stopping_patience, training.finetune_epochs)
    max_epochs = training.head_epochs + training.finetune_epochs
    return EnergyProjection(cfg.energy, max_epochs, earliest, lambda: monitor.carbon_intensity()[0])


class _EpochRecorder:
    """Per-epoch energy windows, MLflow metrics with step=epoch, and the history table."""

    def __init__(self, monitor: EnergyMonitor, projection: EnergyProjection) -> None:
        self.monitor = monitor
        self.projection = projection
        self.history: list[dict[str, Any]] = []
        self.images_seen = 0
        self._last_window_metrics: dict[str, float] = {}

    @contextmanager
    def scope(self, epoch: int) -> Iterator[None]:
        with self.monitor.window(f"epoch-{epoch}") as window:
            yield
        self._last_window_metrics = self.monitor.epoch_metrics(window.measurement)

    def on_epoch_end(self, record: loop.EpochRecord) -> None:
        self.images_seen += record.images
        metrics = {
            names.TRAIN_LOSS: record.train_loss,
            names.VAL_ACCURACY: record.val_accuracy,
            names.VAL_F1: record.val_f1,
            names.EPOCH_DURATION_S: record.epoch_duration_s,
            names.LEARNING_RATE: record.learning_rate,
            **self._last_window_metrics,
        }
        projected = self.projection.on_epoch(self._last_window_metrics.get("epoch_energy_j"))
        tracking.log_metrics({**metrics, **projected}, step=record.epoch)
        self.history.append({**record.as_row(), **self._last_window_metrics, **projected})

    def write_history(self, path: Path) -> None:
        if not self.history:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = list(dict.fromkeys(key for row in self.history for key in row))
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.history)


@contextmanager
def _sigterm_requests_stop() -> Iterator[threading.Event]:
    """For the duration, SIGTERM (SLURM's time limit, `kill`) only sets the event it yields.

    The training loop checks it between batches and stops there, so the signal never lands in the
    middle of a meter reading or an MLflow write, and the run ends KILLED with its energy.
    """
    stop_requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop_requested  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop_requested.set())
    try:
        yield stop_requested
    finally:
        signal.signal(signal.SIGTERM, previous)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_entry(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    context = JobContext(
        output_dir=Path(hydra_cfg.runtime.output_dir),
        choices={key: str(value) for key, value in hydra_cfg.runtime.choices.items()},
        job_num=hydra_cfg.job.num if multirun else None,
        sweep_dir=Path(hydra_cfg.sweep.dir) if multirun else None,
    )
    if multirun:
        # In a sweep a failing job is recorded as failed and the others go on; the summary says so.
        return run(cfg, context)
    with exit_on_user_error():
        return run(cfg, context)


def main() -> None:
    """Console script `repro-train`: check the whole request, then run it through Hydra."""
    with exit_on_user_error():
        preflight(sys.argv[1:], CONF_DIR)
    try:
        _hydra_entry()
    except SystemExit as stop:
        # Hydra skips its end-of-sweep callback when a job failed; close the sweep ourselves.
        tracking.finish_open_sweeps()
        raise SystemExit(stop.code) from None
    if not tracking.finish_open_sweeps():
        raise SystemExit(1)


if __name__ == "__main__":
    main()
