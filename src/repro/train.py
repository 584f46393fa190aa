"""Entry point: `python -m repro.train [overrides]`, one measured training job per Hydra job.

    python -m repro.train -m model=resnet18,vgg16 gpu=cpu training=quick

`main()` checks every job of a sweep before the first one trains (`repro.preflight`), then hands
over to Hydra. `run(cfg, context)` is one job; it reads no Hydra globals, so tests call it with a
composed config.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import os
import shutil
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
from omegaconf import DictConfig

from repro import loop, names, reconcile, tracking
from repro.config import CONF_DIR, Config, job_config, register_configs
from repro.data import DataBundle, build_data
from repro.energy import EnergyMonitor, cooldown, create_monitor, measurement_lock, warmup
from repro.energy.projection import EnergyProjection
from repro.environments import resolve_device
from repro.errors import UserError, exit_on_user_error
from repro.models import create_model, measure_complexity
from repro.preflight import preflight, runs_elsewhere, validate_job
from repro.spool import SPOOL_FILE, RunSpool
from repro.threads import resolve_threads, use_threads

register_configs()  # the schemas must be in the ConfigStore before Hydra composes anything


@dataclass
class JobContext:
    """What a job knows about its place in a sweep; Hydra fills it, tests build it by hand."""

    output_dir: Path
    choices: dict[str, str] = field(default_factory=dict)  # config group -> chosen option
    job_num: int | None = None  # None for a single run
    sweep_dir: Path | None = None


def run(composed: DictConfig | Config, context: JobContext) -> float:
    """Train one model, measure its energy and record everything in one MLflow run.

    Args:
        composed: the job's config as Hydra composed it; it is converted to the schema dataclasses once.
        context: where the job sits in a sweep.

    Returns:
        The validation F1, so that Hydra sweepers that optimise can use it.
    """
    cfg = job_config(composed)  # every schema checks its own values here
    validate_job(cfg, check_hardware=False, check_model=False)  # the model is built and checked below
    _refuse_planted_links(context.output_dir)
    cfg.training.threads = resolve_threads(cfg.training.threads)  # logged with the params
    use_threads(cfg.training.threads)
    # A new store is created once, under a lock, however many jobs run; meanwhile the data and model build.
    store_opened = tracking.open_store_early(cfg.tracking.uri, cfg.tracking.experiment)
    params = tracking.flatten_config(cfg)
    config_hash = reconcile.config_hash(params)
    if cfg.resume:
        store_opened.result()  # the store decides whether the job trains at all
    done = reconcile.resume_decision(cfg, cfg.tracking.uri, cfg.tracking.experiment, config_hash)
    if done is not None:
        tracking.note_skipped(done)
        return done.data.metrics.get("f1", float("nan"))
    device = resolve_device(cfg.gpu)
    monitor = create_monitor(cfg.energy, device.torch_device, context.output_dir / "energy")
    monitor.prepare()  # the meters' hardware detection runs while the data and the model are built
    loop.seed_everything(cfg.seed)
    data = build_data(
        cfg.dataset,
        cfg.training.batch_size,
        cfg.seed,
        preprocessing=cfg.model.preprocessing,
        drop_last=cfg.training.drop_last,
    )
    model = create_model(cfg.model, num_classes=1 if data.binary else data.num_classes)
    complexity = measure_complexity(model, cfg.dataset.image_size, cfg.model.name)  # and checks the size

    store_opened.result()
    architecture = context.choices.get("model") or cfg.model.name
    run_name = cfg.run_name or f"{architecture}-{cfg.gpu.name}-s{cfg.seed}"
    parent_run_id = cfg.tracking.parent_run_id or tracking.read_parent_run_id(context.output_dir)
    tags = {
        **tracking.provenance_tags(),
        **reconcile.process_tags(),
        **device.tags(),
        names.TAG_MODEL: architecture,
        names.TAG_GPU: cfg.gpu.name,
        names.TAG_SEED: str(cfg.seed),
        names.TAG_OUTPUT_DIR: str(context.output_dir.resolve()),
        names.TAG_CONFIG_HASH: config_hash,
    }
    if context.sweep_dir is not None:
        tags[names.TAG_SWEEP_DIR] = str(context.sweep_dir.resolve())
        tags[names.TAG_JOB_NUM] = str(context.job_num)

    with measurement_lock(cfg.energy.lock), _sigterm_policy(raise_now=True):
        if not context.job_num:
            warmup(cfg.energy.warmup_s, device.torch_device)  # once per campaign, heating the training device
        else:
            cooldown(cfg.energy.cooldown_s)  # between jobs, so heat from the last one does not carry over
        store = cfg.tracking
        tracked = tracking.training_run(store.uri, store.experiment, run_name, parent_run_id, tags)
        with _sigterm_policy(raise_now=False), tracked as active:
            tracking.log_params(params)
            mlflow.log_dict(dataclasses.asdict(cfg), "config.yaml")
            sink = RunSpool(
                store.uri, active.info.run_id, context.output_dir / SPOOL_FILE, heartbeat_s=store.heartbeat_s
            )
            try:
                sink.log_metrics({names.GFLOPS: complexity.gflops, names.PARAMS_M: complexity.params_m})
                return _measured_training(cfg, context, model, data, device.torch_device, monitor, sink)
            finally:
                sink.stop_heartbeat()  # `_end_run` stopped it already, unless the job failed before training


def _refuse_planted_links(output_dir: Path) -> None:
    """Refuse symlinks where the job will write (CodeCarbon and NVML open their files without O_NOFOLLOW)."""
    energy = output_dir / "energy"
    for path in (
        output_dir / "history.csv",
        output_dir / "mlflow_spool.jsonl",
        energy,
        energy / "emissions.csv",
        energy / "gpu_trace.csv",
        energy / "gpu_trace_baseline.csv",
    ):
        if path.is_symlink():
            target = os.readlink(path)
            raise UserError(f"{path} is a symbolic link (to {target}) the job would write through; remove it")


def _measured_training(
    cfg: Config,
    context: JobContext,
    model: torch.nn.Module,
    data: DataBundle,
    device: torch.device,
    monitor: EnergyMonitor,
    sink: RunSpool,
) -> float:
    """Train inside the meters; whatever happens, stop them and keep what they measured.

    Nothing here waits for MLflow while the meters run: metrics go to `sink`, which delivers them
    from its own thread. SIGTERM only sets a flag, which the loop checks between batches; during the
    idle baseline (a plain wait) it stops the wait at once.
    """
    recorder = _EpochRecorder(monitor, sink, context.output_dir / "history.csv", _projection(cfg, monitor))
    status, reason, result = "FINISHED", "completed", None
    started = time.perf_counter()
    try:
        with _sigterm_policy(raise_now=True):
            monitor.measure_baseline(cfg.energy.baseline_s)  # run_metrics then adds idle_power_w, net energy
        monitor.start()
        started = time.perf_counter()
        if monitor.estimated:
            print(
                "note: part of this run's energy is an ESTIMATE, not a measurement (see the run's "
                "energy.method.* tags); no hardware counter was readable for every component.",
                file=sys.stderr,
            )
        over_budget = recorder.projection.budget_exceeded
        hooks = loop.LoopHooks(recorder.scope, recorder.on_epoch_end, _STOP_REQUESTED.is_set, over_budget)
        result = loop.train(model, data, cfg.training, device, hooks)
        reason = recorder.projection.budget_message or reason
    except KeyboardInterrupt:
        status, reason = "KILLED", "interrupted by the user (SIGINT)"
        raise
    except loop.TrainingStopped:
        status, reason = "KILLED", "terminated (SIGTERM)"
        raise
    except BaseException as error:
        status, reason = "FAILED", _failure_reason(error)
        raise
    finally:
        duration_s = time.perf_counter() - started
        try:
            status, reason = _record_outcome(
                monitor, recorder, result, status, reason, duration_s, context.output_dir, sink
            )
        finally:
            _end_run(status, sink, cfg.tracking.flush_timeout_s)  # the true status, even if recording failed
    return result.metrics[names.F1]


def _os_error_reason(error: OSError) -> str:
    """One line for an OS error; a full disk names the path and its free space."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        path = error.filename or "."
        folder = Path(path).parent if not Path(path).is_dir() else Path(path)
        try:
            free = f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free"
        except OSError:
            free = "free space unknown"
        return f"disk full: cannot write {path} ({free})"
    return f"{type(error).__name__}: {error}"


def _record_outcome(
    monitor: EnergyMonitor,
    recorder: _EpochRecorder,
    result: loop.LoopResult | None,
    status: str,
    reason: str,
    duration_s: float,
    output_dir: Path,
    sink: RunSpool,
) -> tuple[str, str]:
    """Stop the meters and log what the run measured, whether it finished or not.

    Returns:
        The run's status and end reason: FAILED if the meters could not write their files (disk full).
    """
    try:
        total = monitor.stop()
    except OSError as error:  # e.g. CodeCarbon's CSV on a full disk
        total = monitor.stop()
        status, reason = "FAILED", _os_error_reason(error)
    sink.pauses.tick()  # counts a pause that ended just now, before the heartbeat's next tick
    paused_s = sink.pauses.paused_s
    if paused_s:
        # Recorded and flagged, not subtracted: every meter measures the whole machine, which drew power
        # while the job was stopped, and CodeCarbon integrates over its own intervals, so the pause's share
        # could only be estimated; an estimate must never pass for a measurement. repro.paper leaves such
        # runs out, naming the pause.
        note = f"stopped for {paused_s:.0f} s (SIGSTOP?), which its energy and duration include"
        reason = f"{reason}; {note}"
        print(f"warning: this job was {note}", file=sys.stderr)
    metrics: dict[str, float] = {
        names.DURATION_S: duration_s,
        names.PAUSED_S: paused_s,
        names.IMAGES_SEEN: recorder.images_seen,
        names.TRAIN_IMAGES_SEEN: recorder.train_images_seen,
        names.TRAINED_EPOCHS: len(recorder.history),
        **monitor.run_metrics(total, recorder.images_seen, duration_s),
        **recorder.projection.final_metrics(),
    }
    if result is not None:
        metrics.update(result.metrics)
    sink.log_metrics(metrics)
    sink.set_tags(monitor.provenance_tags())
    problems = list(recorder.write_errors)
    try:  # the run's description and per-epoch figure: nice to have, never a reason to lose the rest
        sink.set_tags(tracking.describe_run(metrics, monitor.provenance_tags(), reason))
        tracking.log_epoch_figure(recorder.history)
    except Exception as error:
        problems.append(f"run description or epoch figure not logged: {type(error).__name__}: {error}"[:300])
    for path in [output_dir / "history.csv", *monitor.artifact_paths()]:
        if path.name == "history.csv" and not recorder.history:
            continue
        if not path.is_file() or path.is_symlink() or path.stat().st_size == 0:
            problems.append(f"{path} was not written" + (" (empty)" if path.is_file() else ""))
            continue
        try:
            mlflow.log_artifact(str(path))
        except Exception as error:  # the artifact stays in the run folder; the run says so below
            problems.append(f"{path} not logged: {type(error).__name__}: {str(error)[:200]}")
    if problems:  # the run keeps its status (its metrics are whole) but says what is missing
        summary = "; ".join(problems)
        sink.set_tags({names.TAG_ARTIFACT_ERRORS: summary[:8000]})
        print(f"warning: {summary}", file=sys.stderr)
    if status != "FINISHED" and reason.startswith("disk full"):
        print(f"error: {reason}", file=sys.stderr)
    sink.set_tags({names.TAG_END_REASON: reason[:4000]})
    return status, reason


def _end_run(status: str, sink: RunSpool, flush_timeout_s: float) -> None:
    """Deliver the queued records, then end the run; what cannot reach MLflow goes to the spool file.

    Raises:
        OSError: ENOSPC when the store's own disk is full (an SQLite database on a full disk), after the
            records were spooled and one line said where they are and how to import them.
    """
    spooled = sink.close(flush_timeout_s)
    try:
        if spooled is not None:
            raise ConnectionError(sink.last_error or "MLflow did not take every record in time")
        mlflow.end_run(status=status)  # pops the run locally even when the server is away
    except Exception as error:  # the server is away: keep the status with the spooled records
        if mlflow.active_run() is not None:
            mlflow.tracking.fluent._active_run_stack.get().pop()
        sink.append_to_spool([{"kind": "status", "status": status, "end_time": int(time.time() * 1000)}])
        how = f"this run's last records are in {sink.spool_path}; "
        if sink.store_full and sink.uri.startswith("sqlite:///"):
            full = OSError(errno.ENOSPC, "database or disk is full", sink.uri.removeprefix("sqlite:///"))
            print(
                f"error: {_os_error_reason(full)}; {how}free space, then import them with: "
                f"python -m repro.spool {sink.spool_path}",
                file=sys.stderr,
            )
            raise full from None
        print(
            f"warning: MLflow could not be reached ({error}); {how}import them with: "
            f"python -m repro.spool {sink.spool_path}",
            file=sys.stderr,
        )


def _projection(cfg: Config, monitor: EnergyMonitor) -> EnergyProjection:
    """STEP's projection and the energy budget for this job's epochs (`repro.energy.projection`)."""
    training = cfg.training
    earliest = training.head_epochs + min(training.early_stopping_patience, training.finetune_epochs)
    max_epochs = training.head_epochs + training.finetune_epochs
    return EnergyProjection(cfg.energy, max_epochs, earliest, lambda: monitor.carbon_intensity()[0])


class _EpochRecorder:
    """Per-epoch energy windows, MLflow metrics with step=epoch, and the history table.

    `history.csv` gets each epoch's row as soon as the epoch ends, so a job that dies later keeps it.
    """

    def __init__(
        self, monitor: EnergyMonitor, sink: RunSpool, history_path: Path, projection: EnergyProjection
    ) -> None:
        self.monitor = monitor
        self.sink = sink
        self.history_path = history_path
        self.projection = projection
        self.history: list[dict[str, Any]] = []
        self.images_seen = 0  # training and validation passes (names.IMAGES_SEEN)
        self.train_images_seen = 0
        self.write_errors: list[str] = []
        self._last_window_metrics: dict[str, float] = {}

    @contextmanager
    def scope(self, epoch: int) -> Iterator[None]:
        with self.monitor.window(f"epoch-{epoch}") as window:
            yield
        self._last_window_metrics = self.monitor.epoch_metrics(window.measurement)

    def on_epoch_end(self, record: loop.EpochRecord) -> None:
        self.images_seen += record.images
        self.train_images_seen += record.train_images
        metrics = {
            names.TRAIN_LOSS: record.train_loss,
            names.VAL_ACCURACY: record.val_accuracy,
            names.VAL_F1: record.val_f1,
            names.EPOCH_DURATION_S: record.epoch_duration_s,
            names.LEARNING_RATE: record.learning_rate,
            **self._last_window_metrics,
        }
        projected = self.projection.on_epoch(self._last_window_metrics.get("epoch_energy_j"))
        self.sink.log_metrics({**metrics, **projected}, step=record.epoch)
        self.history.append({**record.as_row(), **self._last_window_metrics, **projected})
        self.write_history()

    def write_history(self) -> None:
        """Rewrite the history table (never through a symlink); a full disk fails the run, naming the file."""
        if not self.history:
            return
        self.history_path.parent.mkdir(parents=True, exist_ok=True)
        columns = list(dict.fromkeys(key for row in self.history for key in row))
        fd = os.open(self.history_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.history)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            error.filename = error.filename or str(self.history_path)
            raise


#: Set by SIGTERM; the training loop checks it between batches.
_STOP_REQUESTED = threading.Event()
#: Whether SIGTERM raises `TrainingStopped` at once (waits, between jobs) or only sets the flag.
_raise_on_sigterm = True


def _on_sigterm(_signum: int, _frame: Any) -> None:
    _STOP_REQUESTED.set()
    if _raise_on_sigterm:
        raise loop.TrainingStopped()


@contextmanager
def _sigterm_policy(raise_now: bool) -> Iterator[None]:
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
        if raise_now and _STOP_REQUESTED.is_set():
            raise loop.TrainingStopped()
        yield
    finally:
        _raise_on_sigterm = previous
        signal.signal(signal.SIGTERM, previous_handler)
    if previous and _STOP_REQUESTED.is_set():
        raise loop.TrainingStopped()


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
        try:
            return run(cfg, context)
        except Exception as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise  # Hydra prints the traceback at the sweep's end
            if runs_elsewhere(hydra_cfg.launcher):
                raise  # the job's own process: its launcher reports the failure to the sweep
            # The job's run is FAILED with its reason; the sweep goes on with its other jobs, as a SLURM
            # array would: one bad configuration should not cost a campaign the rest of its measurements,
            # and `resume=true` reruns only what failed. The summary lists it; the exit code is 1.
            overrides = " ".join(hydra_cfg.overrides.task)
            line = f"job {context.job_num} ({overrides}) failed: {_failure_reason(error)}"
            print(f"error: {line}; the sweep goes on with its other jobs", file=sys.stderr)
            tracking.note_failed_job(context.job_num, line)
            return float("nan")
    with exit_on_user_error():
        try:
            return run(cfg, context)
        except UserError:
            raise
        except Exception as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            if not _is_disk_full(error):  # a full disk's line is printed with the run's outcome
                print(f"error: {_failure_reason(error)}", file=sys.stderr)
            raise SystemExit(1) from None  # the run is FAILED with the same reason


def _is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def _failure_reason(error: BaseException) -> str:
    """One line for a job's failure, as its run's `repro.end_reason` says it."""
    reason = _os_error_reason(error) if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
    return (reason.splitlines() or [""])[0][:500]


def main() -> None:
    """Console script `repro-train`: check the whole request, then run it through Hydra.

    Whatever ends the process (a failed job, Ctrl-C, SIGTERM between or during jobs), every sweep it
    opened is closed with its summary, and the exit says how it ended, without a traceback:
    130 for Ctrl-C, 143 for SIGTERM, 1 if any job did not finish.
    """
    with exit_on_user_error():
        preflight(sys.argv[1:], CONF_DIR)
    _STOP_REQUESTED.clear()
    stopped_by: str | None = None
    code: int | str | None = 0
    try:
        with _sigterm_policy(raise_now=True):
            _hydra_entry()
    except SystemExit as stop:
        code = stop.code  # Hydra skips its end-of-sweep callback when a job failed; close the sweep below
    except KeyboardInterrupt:
        stopped_by, code = "interrupted (Ctrl-C)", 130
    except loop.TrainingStopped:
        stopped_by, code = "terminated (SIGTERM)", 143
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the summary below must not be cut short
    all_ok = tracking.finish_open_sweeps(stopped_by)
    if stopped_by is not None:
        print(f"stopped: {stopped_by}; rerun the command with resume=true for the rest", file=sys.stderr)
    if code == 0 and not all_ok:
        code = 1
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    # Run the importable `repro.train`, not this `__main__` copy of it: launchers that pickle the task
    # function (submitit, for SLURM) then pickle it by reference. From `__main__` cloudpickle copies it
    # by value with every global it reaches, and the process-wide stop event cannot be pickled.
    from repro.train import main as _importable_main

    _importable_main()
