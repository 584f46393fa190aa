"""Entry point: `python -m repro.train [overrides]`, one measured training job per Hydra job.

    python -m repro.train -m model=resnet18,vgg16 gpu=cpu training=quick

`main()` checks every job of a sweep before the first one trains (`repro.preflight`), then hands
over to Hydra. `run(cfg, context)` is one job; it reads no Hydra globals, so tests call it with a
composed config.
"""

from __future__ import annotations

if __name__ == "__main__":
    # `python -m repro.train`: the store process imports MLflow on another core while this one imports
    # torch and timm below (repro.store_process); the importable copy run at the bottom finds it started.
    import sys

    from repro import store_process

    store_process.start_for(sys.argv[1:])

import dataclasses
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from repro import factors, loop, names, reconcile, store_process, tracking
from repro.composition import register_configs
from repro.config import CONF_DIR, Config, job_config
from repro.data import DataBundle, build_data
from repro.energy import EnergyMonitor, cooldown, create_monitor, measurement_lock, warmup
from repro.energy.nvml import power_limit
from repro.environments import resolve_device
from repro.errors import UserError, exit_on_user_error
from repro.models import create_model, measure_complexity
from repro.outcome import end_run, failure_reason, is_disk_full, record_outcome
from repro.precision import check_device_supports
from repro.preflight import preflight, runs_elsewhere, validate_job
from repro.recorder import EpochRecorder, epoch_projection
from repro.sigterm import STOP_REQUESTED, sigterm_policy
from repro.spool import SPOOL_FILE
from repro.store_process import StoreRun
from repro.threads import resolve_threads, use_threads

register_configs()  # the schemas must be in the ConfigStore before Hydra composes anything


@dataclass
class JobContext:
    """What a job knows about its place in a sweep; Hydra fills it, tests build it by hand."""

    output_dir: Path
    choices: dict[str, str] = field(default_factory=dict)  # config group -> chosen option
    job_num: int | None = None  # None for a single run
    sweep_dir: Path | None = None
    settings: dict[str, object] = field(default_factory=dict)  # study factors set on the command line


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
    # The store process (started with this process) opens the store while the data and the model build.
    store = store_process.start()
    store_opened = store.open(cfg.tracking.uri, cfg.tracking.experiment)
    params = tracking.flatten_config(cfg)
    config_hash = reconcile.config_hash(params)
    done = tracking.finished_before(cfg, config_hash, store_opened)  # with resume=true, the run to skip to
    if done is not None:
        return done.data.metrics.get("f1", float("nan"))
    device = resolve_device(cfg.gpu)
    check_device_supports(cfg.training.amp, device.torch_device)  # again here: a launcher's own node
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
    suffix = factors.run_name_suffix(context.settings)  # e.g. -bs64-bf16: a sweep names its jobs apart
    run_name = cfg.run_name or f"{architecture}-{cfg.gpu.name}{suffix}-s{cfg.seed}"
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
        names.TAG_DEVICE_MEMORY_FORMAT: loop.memory_format(cfg.training.memory_format, device.torch_device),
    }
    if context.sweep_dir is not None:
        tags[names.TAG_SWEEP_DIR] = str(context.sweep_dir.resolve())
        tags[names.TAG_JOB_NUM] = str(context.job_num)

    with (
        measurement_lock(cfg.energy.lock),
        sigterm_policy(raise_now=True),
        power_limit(device.torch_device, cfg.gpu.power_limit_w) as limit_w,  # restored however the job ends
    ):
        if limit_w is not None:
            tags[names.TAG_DEVICE_POWER_LIMIT_W] = f"{limit_w:g}"  # the limit in force, read back from NVML
        if not context.job_num:
            warmup(cfg.energy.warmup_s, device.torch_device)  # once per campaign, heating the training device
        else:
            cooldown(cfg.energy.cooldown_s)  # between jobs, so heat from the last one does not carry over
        with sigterm_policy(raise_now=False):  # a SIGTERM now waits for the run to record why it ended
            sink = store.start_run(
                cfg.tracking.uri,
                cfg.tracking.experiment,
                run_name,
                parent_run_id,
                tags,
                params,
                dataclasses.asdict(cfg),
                context.output_dir / SPOOL_FILE,
            )
            try:
                sink.start_heartbeat(cfg.tracking.heartbeat_s)
                sink.log_metrics({names.GFLOPS: complexity.gflops, names.PARAMS_M: complexity.params_m})
                return _measured_training(cfg, context, model, data, device.torch_device, monitor, sink)
            except BaseException as error:
                sink.fail(failure_reason(error), cfg.tracking.flush_timeout_s)  # unless training ended it
                raise
            finally:
                sink.stop_heartbeat()  # `end_run` stopped it already, unless the job failed before training


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
    sink: StoreRun,
) -> float:
    """Train inside the meters; whatever happens, stop them and keep what they measured.

    Nothing here waits for MLflow while the meters run: metrics go to `sink`, which delivers them
    from its own thread. SIGTERM only sets a flag, which the loop checks between batches; during the
    idle baseline (a plain wait) it stops the wait at once.
    """
    projection = epoch_projection(cfg, monitor)
    recorder = EpochRecorder(monitor, sink, context.output_dir / "history.csv", projection)
    status, reason, result = "FINISHED", "completed", None
    started = time.perf_counter()
    try:
        with sigterm_policy(raise_now=True):
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
        hooks = loop.LoopHooks(recorder.scope, recorder.on_epoch_end, STOP_REQUESTED.is_set, over_budget)
        result = loop.train(model, data, cfg.training, device, hooks)
        reason = recorder.projection.budget_message or reason
    except KeyboardInterrupt:
        status, reason = "KILLED", "interrupted by the user (SIGINT)"
        raise
    except loop.TrainingStopped:
        status, reason = "KILLED", "terminated (SIGTERM)"
        raise
    except BaseException as error:
        status, reason = "FAILED", failure_reason(error)
        raise
    finally:
        duration_s = time.perf_counter() - started
        try:
            status, reason = record_outcome(
                monitor, recorder, result, status, reason, duration_s, context.output_dir, sink
            )
        finally:
            end_run(status, sink, cfg.tracking.flush_timeout_s)  # the true status, even if recording failed
    return result.metrics[names.F1]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_entry(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    context = JobContext(
        output_dir=Path(hydra_cfg.runtime.output_dir),
        choices={key: str(value) for key, value in hydra_cfg.runtime.choices.items()},
        job_num=hydra_cfg.job.num if multirun else None,
        sweep_dir=Path(hydra_cfg.sweep.dir) if multirun else None,
        settings=factors.command_line_settings(cfg, list(hydra_cfg.overrides.task)),
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
            line = f"job {context.job_num} ({overrides}) failed: {failure_reason(error)}"
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
            if not is_disk_full(error):  # a full disk's line is printed with the run's outcome
                print(f"error: {failure_reason(error)}", file=sys.stderr)
            raise SystemExit(1) from None  # the run is FAILED with the same reason


def main() -> None:
    """Console script `repro-train`: check the whole request, then run it through Hydra.

    Whatever ends the process (a failed job, Ctrl-C, SIGTERM between or during jobs), every sweep it
    opened is closed with its summary, and the exit says how it ended, without a traceback:
    130 for Ctrl-C, 143 for SIGTERM, 1 if any job did not finish.
    """
    store_process.start_for(sys.argv[1:])  # running already under `python -m repro.train`, not `repro-train`
    with exit_on_user_error():
        preflight(sys.argv[1:], CONF_DIR)
    STOP_REQUESTED.clear()
    stopped_by: str | None = None
    code: int | str | None = 0
    try:
        with sigterm_policy(raise_now=True):
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
