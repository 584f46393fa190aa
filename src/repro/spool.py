"""Metrics and tags on their way to MLflow: sent by a background thread, kept on local disk if undelivered.

A job must never wait for the tracking server inside its energy window: a server that is slow or
down for 30 s would otherwise be billed as 30 s of training. `RunSpool` queues each record and
returns at once; its thread sends records in order and retries while the server is away. What is
still undelivered when the job closes the spool is written to `mlflow_spool.jsonl` in the job's
folder, and one command imports it later:

    python -m repro.spool multirun/DATE/TIME/0/mlflow_spool.jsonl

The spool file holds one JSON object per line: `{"uri", "run_id", "kind": "metric"|"tag"|"status", ...}`.

With `heartbeat_s`, a second daemon thread queues the tag `repro.heartbeat` (the unix time) every
`heartbeat_s` seconds until the spool is closed, so that a later job can tell a run whose process died
from one in a long, quiet epoch (`repro.reconcile`). It only queues a record: it never waits for MLflow.
Its ticks also tell when the process was stopped (SIGSTOP, Ctrl-Z) and for how long (`PauseClock`).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repro import names
from repro.errors import UserError, exit_on_user_error

if TYPE_CHECKING:
    from mlflow.entities import RunTag

log = logging.getLogger(__name__)

#: Name of the spool file in a job's output folder.
SPOOL_FILE = "mlflow_spool.jsonl"
#: Seconds between two delivery attempts while the server is away.
RETRY_INTERVAL_S = 1.0
#: Records per `log_batch` call (MLflow accepts up to 1000 metrics per call).
_BATCH = 500
#: A heartbeat this many periods late means that the process was stopped (SIGSTOP, Ctrl-Z), not busy.
PAUSE_PERIODS = 3


class PauseClock:
    """Adds up the time a process spent stopped, from the gaps between the ticks of a periodic thread.

    A stopped process runs no thread, so its next tick comes late by the length of the stop. A tick more
    than `PAUSE_PERIODS` periods late counts, lateness and all, as a pause; shorter delays (a loaded
    machine, the GIL) count as nothing.
    """

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self.paused_s = 0.0
        self._clock = clock
        self._last_s = clock()
        self._lock = threading.Lock()

    def tick(self) -> float:
        """Note a tick now (from any thread); returns the pause it ends, 0 if none."""
        with self._lock:
            now_s = self._clock()
            late_s = now_s - self._last_s - self.period_s
            self._last_s = now_s
            if self.period_s <= 0 or late_s <= PAUSE_PERIODS * self.period_s:  # no heartbeat, no measure
                return 0.0
            self.paused_s += late_s
            return late_s


class RecordQueue:
    """A run's metrics and tags on their way to MLflow, and its heartbeat; subclasses say where they go.

    `RunSpool` delivers them from a thread of this process; `repro.store_process.StoreRun` hands them
    to the job's store process. Neither ever waits for MLflow.
    """

    def __init__(self, uri: str, run_id: str, spool_path: Path) -> None:
        self.uri = uri
        self.run_id = run_id
        self.spool_path = spool_path
        self.last_error: str | None = None
        self.store_full = False  # whether a delivery failed because the store's disk is full
        self._stop_beating = threading.Event()
        self._beat_thread: threading.Thread | None = None
        #: How long the process was stopped while the heartbeat ran (it only counts with a heartbeat).
        self.pauses = PauseClock(0.0)

    def start_heartbeat(self, heartbeat_s: float | None) -> None:
        """Queue the tag `repro.heartbeat` every `heartbeat_s` seconds from this process, until closed."""
        self.pauses = PauseClock(heartbeat_s or 0.0)
        if not heartbeat_s:
            return
        self.set_tags({names.TAG_HEARTBEAT_S: f"{heartbeat_s:g}"})
        self._beat_thread = threading.Thread(
            target=self._beat, args=(heartbeat_s,), name=f"mlflow-heartbeat-{self.run_id[:8]}", daemon=True
        )
        self._beat_thread.start()

    def _beat(self, period_s: float) -> None:
        while True:
            self.set_tags({names.TAG_HEARTBEAT: f"{time.time():.0f}"})
            stopping = self._stop_beating.wait(period_s)
            pause_s = self.pauses.tick()  # also at the stop: a pause just before it counts
            if pause_s:
                log.warning("this process was stopped for %.0f s (SIGSTOP or Ctrl-Z?)", pause_s)
            if stopping:
                return

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat (at the run's end: a later heartbeat would say a finished run is alive)."""
        self._stop_beating.set()
        if self._beat_thread is not None:
            self._beat_thread.join()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Queue finite metrics; NaN (e.g. AUC on a one-class validation set) is left out, not faked."""
        timestamp_ms = int(time.time() * 1000)
        records = [
            {
                "kind": "metric",
                "key": key,
                "value": float(value),
                "timestamp": timestamp_ms,
                "step": step or 0,
            }
            for key, value in metrics.items()
            if value is not None and math.isfinite(float(value))
        ]
        self._put(records)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Queue tags (values are cut to MLflow's 8000-character limit)."""
        self._put([{"kind": "tag", "key": key, "value": str(value)[:8000]} for key, value in tags.items()])

    def _put(self, records: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self, timeout_s: float) -> Path | None:
        """Deliver what is queued within `timeout_s`; write the rest to the spool file and return its path.

        Returns:
            None when everything reached MLflow, else the spool file (which the caller reports).
        """
        raise NotImplementedError

    def append_to_spool(self, records: list[dict[str, Any]]) -> None:
        """Add records (e.g. the run's final status) to the spool file, without following a symlink."""
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.spool_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "a") as handle:
            for record in records:
                handle.write(json.dumps({"uri": self.uri, "run_id": self.run_id, **record}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class RunSpool(RecordQueue):
    """Ordered, asynchronous delivery of one run's metrics and tags, with a local spool as the fallback."""

    def __init__(self, uri: str, run_id: str, spool_path: Path, heartbeat_s: float | None = None) -> None:
        super().__init__(uri, run_id, spool_path)
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(uri)
        self._pending: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._work, name=f"mlflow-spool-{run_id[:8]}", daemon=True)
        self._thread.start()
        self.start_heartbeat(heartbeat_s)

    def _put(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with self._cond:
            self._pending.extend(records)
            self._cond.notify()

    def _work(self) -> None:
        from mlflow.entities import Metric

        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = self._pending[:_BATCH]
            try:
                self._client.log_batch(
                    self.run_id,
                    metrics=[
                        Metric(r["key"], r["value"], r["timestamp"], r["step"])
                        for r in batch
                        if r["kind"] == "metric"
                    ],
                    tags=_latest_tags(batch),
                )
            except Exception as error:  # any failure to reach the store: keep the records and retry
                root = _root_cause(error)  # "database or disk is full", not SQLAlchemy's autoflush advice
                text = f"{type(root).__name__}: {str(root).splitlines()[0] if str(root) else ''}"
                if text != self.last_error:  # once per distinct error, not once per retry
                    log.warning("MLflow unreachable, %d records kept for later: %s", len(self._pending), text)
                self.last_error = text
                self.store_full = self.store_full or _is_store_full(error)
                with self._cond:
                    if self._closing:
                        return  # close() writes what is left to the spool file
                    self._cond.wait(timeout=RETRY_INTERVAL_S)
                continue
            with self._cond:
                del self._pending[: len(batch)]

    def close(self, timeout_s: float) -> Path | None:
        """Deliver what is queued within `timeout_s`; write the rest to the spool file and return its path.

        Returns:
            None when everything reached MLflow, else the spool file (which the caller reports).
        """
        self.stop_heartbeat()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._thread.is_alive():
            with self._cond:
                if not self._pending:
                    break
            self._thread.join(timeout=min(0.05, max(deadline - time.monotonic(), 0)))
        with self._cond:
            self._closing = True
            left = list(self._pending)
            self._pending.clear()
            self._cond.notify()
        self._thread.join(timeout=0.1)
        if not left:
            return None
        self.append_to_spool(left)
        return self.spool_path


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _is_store_full(error: BaseException) -> bool:
    """Whether `error`'s first cause says the store's disk is full, in SQLite's or the OS's words."""
    root = _root_cause(error)
    return "database or disk is full" in str(root) or getattr(root, "errno", None) == errno.ENOSPC


class _DeliveredBySpool(logging.Filter):
    """Drops MLflow's SQL-store error logs for writes from a spool thread, each with its full traceback.

    The spool retries such a write every second and says once, in one line, why it is waiting; the
    store's own log would print a traceback per retry (hundreds of lines while a disk is full).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.threadName.startswith("mlflow-spool")


logging.getLogger("mlflow.store.db.utils").addFilter(_DeliveredBySpool())


def _latest_tags(records: list[dict[str, Any]]) -> list[RunTag]:
    """The tags among `records`, each key once with its latest value (heartbeats pile up in an outage)."""
    from mlflow.entities import RunTag

    latest = {r["key"]: r["value"] for r in records if r["kind"] == "tag"}
    return [RunTag(key, value) for key, value in latest.items()]


def import_spool(path: Path) -> int:
    """Send a spool file's records to the run they belong to; returns how many were sent.

    The file is renamed to `*.imported` afterwards, so importing twice sends nothing twice.
    """
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    by_run: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in _read_spool(path):
        by_run.setdefault((record["uri"], record["run_id"]), []).append(record)
    sent = 0
    for (uri, run_id), records in by_run.items():
        client = MlflowClient(uri)
        metrics = [
            Metric(r["key"], r["value"], r["timestamp"], r["step"]) for r in records if r["kind"] == "metric"
        ]
        tags = _latest_tags(records)
        for start in range(0, max(len(metrics), len(tags)), _BATCH):
            client.log_batch(
                run_id, metrics=metrics[start : start + _BATCH], tags=tags[start : start + _BATCH]
            )
        for record in records:
            if record["kind"] == "status":
                client.set_terminated(run_id, status=record["status"], end_time=record.get("end_time"))
        sent += len(records)
    path.rename(path.with_name(path.name + ".imported"))
    return sent


#: The keys every spool record has, by its kind (see the module's docstring).
_RECORD_KEYS = {
    "metric": ("key", "value", "timestamp", "step"),
    "tag": ("key", "value"),
    "status": ("status",),
}


def _read_spool(path: Path) -> list[dict[str, Any]]:
    """Every record of a spool file, each checked before any is sent; `UserError` names the first bad line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not a spool file: not text (byte {error.start} is not UTF-8)") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path} line {number} is not a spool record: not JSON ({error.msg})") from None
        kind = record.get("kind") if isinstance(record, dict) else None
        missing = [key for key in ("uri", "run_id", *_RECORD_KEYS.get(kind, ())) if key not in record]
        if kind not in _RECORD_KEYS or missing:
            known = ", ".join(_RECORD_KEYS)
            lacks = f"lacks {', '.join(missing)}" if kind in _RECORD_KEYS else f"has no kind ({known})"
            raise UserError(f"{path} line {number} is not a spool record: it {lacks}")
        records.append(record)
    return records


def main(argv: list[str] | None = None) -> None:
    """`python -m repro.spool FILE...`: import spool files left by jobs whose server was away."""
    paths = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    if not paths or any(arg.startswith("-") for arg in map(str, paths)):
        print("usage: python -m repro.spool RUN_DIR/mlflow_spool.jsonl [...]", file=sys.stderr)
        raise SystemExit(2)
    for path in paths:
        if not path.is_file():
            print(f"error: {path} is not a spool file", file=sys.stderr)
            raise SystemExit(2)
        with exit_on_user_error():
            print(f"{path}: {import_spool(path)} records imported")


if __name__ == "__main__":
    main()
