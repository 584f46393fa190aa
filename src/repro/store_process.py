"""MLflow in a process of its own, so that a job's first optimiser step never waits for MLflow's imports.

Importing MLflow and its SQL store costs about 2 s of one core, and Python runs one thread at a time:
in the job's own process that time adds to the wait for the first step, whichever thread pays it
(issue 20 measured 2.3-3.1 s). A second process pays it on the machine's other core instead, while the
job imports torch and timm, checks the request and builds its data.

`start()` launches `python -m repro.store_process` at once; `repro.train` calls it before its own
imports. The job later asks it, over a pipe of JSON lines, to open the store (`StoreProcess.open`)
and to create its run (`StoreProcess.start_run`), whose metrics and tags then flow through a
`StoreRun`. The store process delivers them with a `repro.spool.RunSpool`, as the job itself did
before: in order, retrying while the store is away, and what is left at the end goes to the job's
spool file. The heartbeat stays in the job's process, so that it still says whether the job is alive.

The store process ignores Ctrl-C and SIGTERM: the job decides how its run ends and tells it. When the
job's process is gone (its end of the pipe closes), the store process writes whatever it still holds
to the spool file and exits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import repro
from repro import names, spool
from repro.errors import UserError

log = logging.getLogger(__name__)


class StoreProcessError(RuntimeError):
    """The store process failed a request, or is gone."""


class StoreProcess:
    """The job's end of the pipe to its store process; one per job process, shared by its jobs."""

    def __init__(self) -> None:
        package_root = str(Path(repro.__file__).resolve().parents[1])  # the same `repro` as this process
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
        }
        self._process = subprocess.Popen(
            [sys.executable, "-m", "repro.store_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            bufsize=1,
        )
        self._lock = threading.Lock()  # a request's reply slot and its line are queued together
        self._replies: deque[Future[dict[str, Any]]] = deque()
        self._lines: deque[str | None] = deque()
        self._has_lines = threading.Condition()
        self.ended: str | None = None  # why the process is gone, once it is
        self._writer = threading.Thread(target=self._write, name="repro-store-writer", daemon=True)
        self._reader = threading.Thread(target=self._read, name="repro-store-reader", daemon=True)
        self._writer.start()
        self._reader.start()

    def send(self, op: str, **fields: Any) -> None:
        """Queue a message that needs no answer; it never waits for the store process."""
        self._queue(json.dumps({"op": op, **fields}))

    def request(self, op: str, **fields: Any) -> Future[dict[str, Any]]:
        """Queue a message whose answer the returned future gets; it fails with `StoreProcessError`."""
        reply: Future[dict[str, Any]] = Future()
        with self._lock:
            if self.ended is not None:
                reply.set_exception(StoreProcessError(self.ended))
                return reply
            self._replies.append(reply)
            # In this process's current folder, as the same call made here would be: MLflow puts a new
            # experiment's artifacts in ./mlruns, and paths may be relative.
            self._queue(json.dumps({"op": op, "cwd": os.getcwd(), **fields}))
        return reply

    def open(self, uri: str, experiment: str) -> Future[None]:
        """Create or open the store and end this host's dead runs in it (`tracking.open_store`, `reconcile`).

        The future's `result()` raises what the store process raised: a `UserError` for a store that
        cannot be opened, as the same call in this process would have.
        """
        opened: Future[None] = Future()

        def _done(reply: Future[dict[str, Any]]) -> None:
            try:
                _answer(reply)
            except BaseException as error:  # noqa: BLE001 (handed on to whoever waits)
                opened.set_exception(error)
            else:
                opened.set_result(None)

        self.request("open", uri=uri, experiment=experiment).add_done_callback(_done)
        return opened

    def start_run(
        self,
        uri: str,
        experiment: str,
        run_name: str,
        parent_run_id: str | None,
        tags: Mapping[str, str],
        params: Mapping[str, str],
        config: Mapping[str, Any],
        spool_path: Path,
    ) -> StoreRun:
        """Create the job's run, with its tags, params and `config.yaml`, and return its record sink."""
        reply = _answer(
            self.request(
                "start_run",
                uri=uri,
                experiment=experiment,
                run_name=run_name,
                parent_run_id=parent_run_id,
                tags=dict(tags),
                params=dict(params),
                config=config,
                spool_path=str(spool_path),
            )
        )
        return StoreRun(self, uri, reply["run_id"], spool_path)

    def close(self) -> None:
        """Close the pipe; the store process then finishes what it holds and exits."""
        self._queue(None)

    def _queue(self, line: str | None) -> None:
        with self._has_lines:
            self._lines.append(line)
            self._has_lines.notify()

    def _write(self) -> None:
        # Its own thread: a store process busy opening a store may leave the pipe full for a while, and
        # no caller (least of all the training loop's heartbeat and metrics) may wait for that.
        assert self._process.stdin is not None
        while True:
            with self._has_lines:
                while not self._lines:
                    self._has_lines.wait()
                line = self._lines.popleft()
            try:
                if line is None:
                    self._process.stdin.close()
                    return
                self._process.stdin.write(line + "\n")
                self._process.stdin.flush()
            except OSError as error:  # the process is gone; the reader fails what waits for it
                log.debug("store process pipe closed: %s", error)
                return

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            with self._lock:
                reply = self._replies.popleft() if self._replies else None
            if reply is not None:
                reply.set_result(json.loads(line))
        code = self._process.wait()
        with self._lock:
            self.ended = f"the store process ended (exit code {code}) before it answered"
            waiting, self._replies = list(self._replies), deque()
        for reply in waiting:
            reply.set_exception(StoreProcessError(self.ended))


#: Seconds a job waits past its own deadlines for the store process to answer at the run's end.
_ANSWER_MARGIN_S = 60.0


def _answer(reply: Future[dict[str, Any]], timeout_s: float | None = None) -> dict[str, Any]:
    """A reply's fields, or the error the store process met, raised here as the same kind."""
    try:
        answer = reply.result(timeout=timeout_s)
    except TimeoutError:
        raise StoreProcessError(f"the store process did not answer within {timeout_s:.0f} s") from None
    if "user_error" in answer:
        raise UserError(answer["user_error"])
    if "error" in answer:
        raise StoreProcessError(answer["error"])
    return answer


class StoreRun(spool.RecordQueue):
    """One job's run in the store process: its records go there in order, and it ends the run there."""

    def __init__(self, store: StoreProcess, uri: str, run_id: str, spool_path: Path) -> None:
        super().__init__(uri, run_id, spool_path)
        self._store = store
        self._unsent_records: list[dict[str, Any]] = []  # queued once the store process was gone
        self.ended = False

    def _put(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        if self._store.ended is not None:
            self._unsent_records.extend(records)  # written to the spool file by `close`
            return
        self._store.send("records", run_id=self.run_id, records=records)

    def close(self, timeout_s: float) -> Path | None:
        """Deliver what is queued within `timeout_s`; the rest goes to the spool file (its path returned)."""
        self.stop_heartbeat()
        try:
            closed = self._store.request("close", run_id=self.run_id, timeout_s=timeout_s)
            answer = _answer(closed, timeout_s + _ANSWER_MARGIN_S)  # it keeps the deadline itself
        except StoreProcessError as error:
            self.last_error = str(error)
            answer = {"spooled": None}
        self.last_error = answer.get("last_error") or self.last_error
        self.store_full = bool(answer.get("store_full"))
        spooled = Path(answer["spooled"]) if answer.get("spooled") else None
        if self._unsent_records:
            self.append_to_spool(self._unsent_records)
            self._unsent_records = []
            spooled = self.spool_path
        return spooled

    def log_artifact(self, path: Path) -> None:
        """Log a file as an artifact of the run; raises what MLflow raised, as one line."""
        logged = self._store.request("log_artifact", run_id=self.run_id, path=str(path.resolve()))
        _answer(logged, _ANSWER_MARGIN_S)

    def end_run(self, status: str) -> None:
        """End the run with `status`; raises `StoreProcessError` when the store did not take it."""
        self.ended = True
        _answer(self._store.request("end_run", run_id=self.run_id, status=status), _ANSWER_MARGIN_S)

    def spool_status(self, status: str) -> None:
        """Keep the run's final status in the spool file, with its records, when the store did not take it."""
        self.ended = True
        self.append_to_spool([{"kind": "status", "status": status, "end_time": int(time.time() * 1000)}])
        self._store.send("forget_run", run_id=self.run_id)  # its next run must not open nested in this one

    def fail(self, reason: str, flush_timeout_s: float) -> None:
        """End a run that failed before its training recorded an outcome: FAILED, with `reason`."""
        if self.ended:
            return
        self.set_tags({names.TAG_END_REASON: reason[:500]})
        spooled = self.close(flush_timeout_s)
        try:
            self.end_run("FAILED")
        except StoreProcessError as error:
            log.warning("the run's end was not recorded: %s", error)
            self.spool_status("FAILED")
        if spooled is not None:
            log.warning("this run's last records are in %s", spooled)


_SHARED: StoreProcess | None = None
#: Hydra's flags for a command that only prints (its help, a config, its search path): it runs no job.
_PRINT_ONLY_FLAGS = frozenset(
    {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}
)


def start_for(argv: list[str]) -> None:
    """Start the store process now, unless the command line only prints (`--help`, `--cfg job`, ...)."""
    if not _PRINT_ONLY_FLAGS.intersection(arg.split("=", 1)[0] for arg in argv):
        start()


def start() -> StoreProcess:
    """This process's store process, launched now if it is not running yet."""
    global _SHARED
    if _SHARED is None or _SHARED.ended is not None:
        _SHARED = StoreProcess()
    return _SHARED


# --- the store process itself -------------------------------------------------------------------------


def serve() -> None:
    """`python -m repro.store_process`: answer one job process's messages, on stdin, until it closes."""
    # The job decides how its run ends and says so; a Ctrl-C or SIGTERM sent to the whole process group
    # must not end this process first and lose what it still has to deliver.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(format="[store process] %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    reply_to = sys.stdout
    sys.stdout = sys.stderr  # anything printed here must not be taken for a reply
    # MLflow's imports start at once, in a thread, so that they are done by the time the job first asks.
    # A job that ends before it asks anything (a refused command line, --help) closes the pipe, and this
    # process then exits at once instead of finishing imports that nobody needs.
    warm_up = threading.Thread(target=_import_mlflow, name="repro-store-imports", daemon=True)
    warm_up.start()
    server: _Server | None = None
    for line in sys.stdin:
        if server is None:
            warm_up.join()
            server = _Server()
        message = json.loads(line)
        try:
            answer = server.handle(message)
        except UserError as error:
            answer = {"user_error": str(error)}
        except Exception as error:  # noqa: BLE001 (the job process decides what a failure means)
            first_line = (str(error).splitlines() or [""])[0]
            answer = {"error": f"{type(error).__name__}: {first_line}"[:2000]}
        if message["op"] in _UNANSWERED:  # the job waits for no answer: one here would answer another
            if answer:
                log.warning("%s failed: %s", message["op"], answer)
            continue
        reply_to.write(json.dumps(answer) + "\n")
        reply_to.flush()
    if server is not None:
        server.spool_everything()
    # The job's process is gone. Its runs stay RUNNING until a later job finds them dead (repro.reconcile)
    # and ends them FAILED; MLflow's exit hook would end the active one FINISHED, so it must not run.
    sys.stderr.flush()
    os._exit(0)


#: Messages that the job sends without waiting for an answer (`StoreProcess.send`).
_UNANSWERED = ("records", "forget_run")


def _import_mlflow() -> None:
    import mlflow  # noqa: F401
    from mlflow.store.tracking import sqlalchemy_store  # noqa: F401  (the SQL store: half of the cost)


class _Server:
    """What the store process holds: its open runs and their `RunSpool`s."""

    def __init__(self) -> None:
        import mlflow  # here, not at the top: `StoreRun` lives in the job's process, which must not pay

        from repro import reconcile, tracking

        self._mlflow, self._tracking, self._reconcile = mlflow, tracking, reconcile
        self._spools: dict[str, spool.RunSpool] = {}

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        op = message["op"]
        if op == "records":
            run_spool = self._spools.get(message["run_id"])
            if run_spool is None:  # queued after the run was closed: as late as a record in `RunSpool.close`
                late = len(message["records"])
                log.warning("%d records for run %s came after its end", late, message["run_id"])
            else:
                run_spool._put(message["records"])
            return None
        if op == "forget_run":  # the run's status waits in its spool file: drop it here, unended
            self._spools.pop(message["run_id"], None)
            self._tracking.forget_active_run()
            return None
        os.chdir(message["cwd"])
        if op == "open":
            self._tracking.open_store(message["uri"])
            self._reconcile.end_dead_runs(message["uri"], message["experiment"])
            return {}
        if op == "start_run":
            return {"run_id": self._start_run(message)}
        if op == "close":
            run_spool = self._spools[message["run_id"]]
            spooled = run_spool.close(message["timeout_s"])
            return {
                "spooled": str(spooled) if spooled is not None else None,
                "last_error": run_spool.last_error,
                "store_full": run_spool.store_full,
            }
        if op == "log_artifact":
            self._mlflow.log_artifact(message["path"])
            return {}
        if op == "end_run":
            self._spools.pop(message["run_id"], None)
            try:
                self._mlflow.end_run(status=message["status"])
            except Exception:
                self._tracking.forget_active_run()  # the next run must not open nested in this one
                raise
            return {}
        raise ValueError(f"unknown message {op!r}")

    def _start_run(self, message: dict[str, Any]) -> str:
        uri, experiment = message["uri"], message["experiment"]
        tracking = self._tracking
        tracking.open_experiment(uri, experiment)
        left = self._mlflow.active_run()
        if left is not None:  # a job of this process left it unended; it must not become this one's parent
            log.warning("run %s was left active by an earlier job; it stays as it is", left.info.run_id)
            tracking.forget_active_run()
        run = self._mlflow.start_run(
            run_name=message["run_name"], parent_run_id=message["parent_run_id"], tags=message["tags"]
        )
        try:
            tracking.log_params(message["params"])
            self._mlflow.log_dict(message["config"], "config.yaml")
        except BaseException as error:
            reason = (f"{type(error).__name__}: {error}".splitlines() or [""])[0][:500]
            self._mlflow.set_tag(names.TAG_END_REASON, reason)
            self._mlflow.end_run(status="FAILED")
            raise
        run_id = run.info.run_id
        self._spools[run_id] = spool.RunSpool(uri, run_id, Path(message["spool_path"]))
        return run_id

    def spool_everything(self) -> None:
        """The job's process is gone: write what is undelivered to each run's spool file."""
        for run_spool in self._spools.values():
            run_spool.close(0)


if __name__ == "__main__":
    serve()
