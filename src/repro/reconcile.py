"""Runs that outlived their process, and jobs that already ran: the bookkeeping behind resume.

Every run and sweep parent carries the host, PID and process start time of the process that
records it (`repro.pid`, `repro.pid_start`), and that process's heartbeat (`repro.heartbeat`, the
unix time, renewed every `repro.heartbeat_s` seconds by `repro.spool.RunSpool`). `kill -9`, the OOM
killer or a node failure leave such a run RUNNING for ever; `end_dead_runs` finds those of this host
whose process is gone (or whose PID now belongs to another process) and ends them FAILED with
`repro.end_reason` "process died (no heartbeat since TIME)", TIME being the last heartbeat. Where the
process start time is unknown, a heartbeat older than `STALE_PERIODS` periods while a process with
that PID exists means the PID was reused. If the dead job left a spool of undelivered metrics
(`repro.spool`), it is imported first, so nothing it measured is lost.

`config_hash` identifies a job by its resolved config, so that `resume=true` can skip the jobs whose
identical config already FINISHED.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from repro import names, spool
from repro.config import Config

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

#: Config keys that do not change what a job computes, left out of `config_hash`.
_NOT_IN_HASH = ("resume", "run_name", "tracking.parent_run_id")
#: A heartbeat this many periods old, from a PID that cannot be told apart from a reused one, is dead.
STALE_PERIODS = 4


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), '' if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    """Tags that let a later process tell whether the one recording this run is still alive."""
    return {
        names.TAG_HOST: socket.gethostname(),
        names.TAG_PID: str(os.getpid()),
        names.TAG_PID_START: _start_ticks(os.getpid()),
    }


def _alive(pid: int, start_ticks: str) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process exists
    # The PID may have been reused by an unrelated process: compare start times where known.
    return not start_ticks or _start_ticks(pid) in ("", start_ticks)


def end_dead_runs(uri: str, experiment: str) -> list[str]:
    """End FAILED every RUNNING run of this host whose recording process is gone; return their ids."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    host = socket.gethostname().replace("'", "")
    running = client.search_runs(
        [found.experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{names.TAG_HOST}` = '{host}'",
        max_results=1000,
    )
    ended: list[str] = []
    for run in running:
        tags = run.data.tags
        if not tags.get(names.TAG_PID, "").isdigit():
            continue
        pid_start = tags.get(names.TAG_PID_START, "")
        if _alive(int(tags[names.TAG_PID]), pid_start) and (pid_start or not _heartbeat_is_stale(tags)):
            continue  # still recording; with no start time to compare, a stale heartbeat means a reused PID
        spool_file = Path(tags.get(names.TAG_OUTPUT_DIR, "")) / spool.SPOOL_FILE
        if tags.get(names.TAG_OUTPUT_DIR) and spool_file.is_file():
            spool.import_spool(spool_file)  # the job ended but could not tell the server; its record says how
            if client.get_run(run.info.run_id).info.status != "RUNNING":
                continue
        since = _iso(_last_sign_of_life(client, run))
        client.set_tag(run.info.run_id, names.TAG_END_REASON, f"process died (no heartbeat since {since})")
        client.set_terminated(run.info.run_id, status="FAILED")
        ended.append(run.info.run_id)
        print(
            f"note: run {run.info.run_id} ({run.info.run_name}) was left RUNNING by process "
            f"{tags[names.TAG_PID]}, "
            f"which is gone (or its PID is another process now); marked FAILED (last sign of life {since})"
        )
    return ended


def _heartbeat_is_stale(tags: dict[str, str]) -> bool:
    """Whether the run's last heartbeat is older than `STALE_PERIODS` of its periods (False without one)."""
    try:
        last_s, period_s = float(tags[names.TAG_HEARTBEAT]), float(tags[names.TAG_HEARTBEAT_S])
    except (KeyError, ValueError):
        return False
    return time.time() - last_s > STALE_PERIODS * period_s


def _last_sign_of_life(client: MlflowClient, run: Run) -> float:
    """When the run last showed life, in unix seconds: its last heartbeat.

    Runs recorded before heartbeats existed fall back to their last metric's time, or their start.
    """
    heartbeat = run.data.tags.get(names.TAG_HEARTBEAT, "")
    if heartbeat.replace(".", "", 1).isdigit():
        return float(heartbeat)
    latest_ms = run.info.start_time or 0
    for key in run.data.metrics:
        for metric in client.get_metric_history(run.info.run_id, key)[-1:]:
            latest_ms = max(latest_ms, metric.timestamp)
    return latest_ms / 1000


def _iso(unix_s: float) -> str:
    """A unix time as UTC ISO 8601, to the second."""
    return datetime.datetime.fromtimestamp(unix_s, tz=datetime.timezone.utc).isoformat(timespec="seconds")


def config_hash(flat_config: dict[str, str]) -> str:
    """A short digest of a job's flattened resolved config, without the keys that do not change the job."""
    kept = {key: value for key, value in flat_config.items() if key not in _NOT_IN_HASH}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def previous_run(uri: str, experiment: str, digest: str) -> Run | None:
    """The most relevant earlier training run with this config: a FINISHED one if any, else the latest."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{names.TAG_CONFIG_HASH}` = '{digest}'",
        order_by=["attributes.start_time DESC"],
        max_results=100,
    )
    finished = [run for run in runs if run.info.status == "FINISHED"]
    return finished[0] if finished else (runs[0] if runs else None)


def resume_decision(cfg: Config, uri: str, experiment: str, digest: str) -> Run | None:
    """With `resume=true`: the FINISHED run that makes this job unnecessary, or None to train it.

    Prints which, so that the user sees every skipped and every rerun job.
    """
    if not cfg.resume:
        return None
    earlier = previous_run(uri, experiment, digest)
    if earlier is None:
        return None
    name = earlier.info.run_name
    if earlier.info.status == "FINISHED":
        print(f"resume: skipping {name}: identical config already FINISHED as run {earlier.info.run_id}")
        return earlier
    print(f"resume: rerunning {name}: its last run {earlier.info.run_id} ended {earlier.info.status}")
    return None
