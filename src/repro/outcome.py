"""How a training job ends: its run's last metrics, tags and artifacts, its status, and one line why.

Whatever ended the job (it finished, failed, was interrupted, or the disk filled), `record_outcome`
stops the meters and logs what they measured, and `end_run` ends the MLflow run with the true status;
what MLflow cannot take goes to the spool file (`repro.spool`).
"""

from __future__ import annotations

import errno
import shutil
import sys
from pathlib import Path

from repro import loop, names, tracking
from repro.energy import EnergyMonitor
from repro.recorder import EpochRecorder
from repro.store_process import StoreProcessError, StoreRun


def record_outcome(
    monitor: EnergyMonitor,
    recorder: EpochRecorder,
    result: loop.LoopResult | None,
    status: str,
    reason: str,
    duration_s: float,
    output_dir: Path,
    sink: StoreRun,
) -> tuple[str, str]:
    """Stop the meters and log what the run measured, whether it finished or not.

    Returns:
        The run's status and end reason: FAILED if the meters could not write their files (disk full).
    """

    try:
        total = monitor.stop()
    except OSError as error:  # e.g. CodeCarbon's CSV on a full disk
        total = monitor.stop()
        status, reason = "FAILED", os_error_reason(error)
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
        figure = tracking.save_epoch_figure(recorder.history, output_dir / tracking.EPOCH_FIGURE)
        if figure is not None:
            sink.log_artifact(figure)
    except Exception as error:
        problems.append(f"run description or epoch figure not logged: {type(error).__name__}: {error}"[:300])
    for path in [output_dir / "history.csv", *monitor.artifact_paths()]:
        if path.name == "history.csv" and not recorder.history:
            continue
        if not path.is_file() or path.is_symlink() or path.stat().st_size == 0:
            problems.append(f"{path} was not written" + (" (empty)" if path.is_file() else ""))
            continue
        try:
            sink.log_artifact(path)
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


def end_run(status: str, sink: StoreRun, flush_timeout_s: float) -> None:
    """Deliver the queued records, then end the run; what cannot reach MLflow goes to the spool file.

    Raises:
        OSError: ENOSPC when the store's own disk is full (an SQLite database on a full disk), after the
            records were spooled and one line said where they are and how to import them.
    """

    spooled = sink.close(flush_timeout_s)
    try:
        if spooled is not None:
            raise ConnectionError(sink.last_error or "MLflow did not take every record in time")
        sink.end_run(status)
    except Exception as error:  # the server is away: keep the status with the spooled records
        sink.spool_status(status)
        how = f"this run's last records are in {sink.spool_path}; "
        if sink.store_full and sink.uri.startswith("sqlite:///"):
            full = OSError(errno.ENOSPC, "database or disk is full", sink.uri.removeprefix("sqlite:///"))
            print(
                f"error: {os_error_reason(full)}; {how}free space, then import them with: "
                f"python -m repro.spool {sink.spool_path}",
                file=sys.stderr,
            )
            raise full from None
        print(
            f"warning: MLflow could not be reached ({error}); {how}import them with: "
            f"python -m repro.spool {sink.spool_path}",
            file=sys.stderr,
        )


def os_error_reason(error: OSError) -> str:
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


def failure_reason(error: BaseException) -> str:
    """One line for a job's failure, as its run's `repro.end_reason` says it."""
    if isinstance(error, OSError):
        reason = os_error_reason(error)
    elif isinstance(error, StoreProcessError):
        reason = str(error)  # the store process's own error, named already
    else:
        reason = f"{type(error).__name__}: {error}"
    return (reason.splitlines() or [""])[0][:500]


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
