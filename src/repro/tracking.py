"""Everything that talks to MLflow: runs, sweep parent runs, params, tags and the reachability check.

One training job is one MLflow run. A multirun sweep is a parent run; the Hydra callback below
creates it and writes its id into the sweep folder, and every job (in this process, another
process or another node) reads that file and becomes a child through `parent_run_id`.

MLflow itself is imported inside the functions that use it, so that importing this module (as
repro.train does, and Hydra does for `SweepCallback` even for a single run) loads neither MLflow nor
its SQL store, about two CPU-seconds together; tests/test_imports.py checks it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import logging
import os
import platform
import socket
import sqlite3
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from repro import names, reconcile, ui_views
from repro.config import Config
from repro.errors import UserError, exit_on_user_error
from repro.hydra_adapter import job_exception
from repro.paths import check_output_folder, repo_root, writable_folder
from repro.spool import SPOOL_FILE, RunSpool
from repro.sweep_summary import JobRow, summary_lines
from repro.ui_url import ui_link

log = logging.getLogger(__name__)

#: File in the sweep folder that holds the id of the sweep's parent run.
PARENT_RUN_FILE = "mlflow_parent_run_id"
#: File that a sweep creates first in its folder, exclusively, to make the folder its own.
SWEEP_CLAIM_FILE = ".repro-sweep"
#: MLflow 3's UI reads this experiment tag to tell model-training from GenAI experiments (the value of
#: its ExperimentKind enum); newer UIs also follow a view switch that `repro.ui_url` sets in the URL.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: The run page shows this tag as the run's description.
RUN_NOTE_TAG = "mlflow.note.content"
#: The per-epoch chart logged with every run.
EPOCH_FIGURE = "epoch_energy_f1.png"
_REPO_ROOT = repo_root()


def check_tracking_uri(uri: str) -> None:
    """Fail with a one-line error when the tracking store cannot be opened from here; create nothing."""
    if uri.startswith("sqlite:///"):
        db_path = Path(uri.removeprefix("sqlite:///"))
        folder = db_path.parent if str(db_path.parent) else Path(".")
        if folder.exists() and not folder.is_dir():
            raise UserError(f"tracking.uri={uri} points into {folder}, which is a file, not a folder")
        if not folder.is_dir():
            raise UserError(
                f"tracking.uri={uri} points into {folder}, which does not exist; create it or fix the URI"
            )
        if db_path.is_dir():
            raise UserError(
                f"tracking.uri={uri} names a folder, not a database file; use sqlite:///{db_path}/mlflow.db"
            )
        if not writable_folder(folder):
            raise UserError(f"tracking.uri={uri} points into {folder}, where no file can be created")
        check_sqlite_file(db_path, f"tracking.uri={uri}")
        return
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
                return
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise UserError(
                f"tracking.uri={uri} cannot be reached ({reason}); start it with `make mlflow-server` "
                "or check the host and port"
            ) from None
    if uri.startswith("file:") or "://" not in uri:
        raise UserError(
            f"tracking.uri={uri} is a file store, which MLflow has deprecated; use sqlite:///mlflow.db "
            "or http://HOST:PORT"
        )
    _check_database_driver(uri)  # other schemes (databricks, ...) are left to MLflow itself


def check_sqlite_file(db_path: Path, what: str) -> None:
    """Refuse a file that exists but is not a whole SQLite database (another file, truncated, damaged).

    The file is read inside a read transaction, so a commit of another process is never seen half-done;
    if another process keeps it locked, nothing is refused.

    Args:
        what: how the user named the file, for the message (`tracking.uri=...`).
    """
    if not db_path.is_file() or db_path.stat().st_size == 0:
        return  # a new store; MLflow creates it
    stat = db_path.stat()
    seen = (str(db_path.resolve()), stat.st_size, stat.st_mtime_ns)
    if seen in _SOUND_FILES:
        return  # checked in this process, unchanged since (quick_check reads every page: 1 s at 15,000 runs)
    if _check_sqlite_file(db_path, what):
        _SOUND_FILES.add(seen)


#: SQLite files found whole in this process: (resolved path, size, mtime in ns) when they were checked.
_SOUND_FILES: set[tuple[str, int, int]] = set()


def _check_sqlite_file(db_path: Path, what: str) -> bool:
    """`check_sqlite_file`'s reading: True when the file was read and found whole, False when locked."""
    with db_path.open("rb") as handle:
        header = handle.read(100)
    if not header.startswith(b"SQLite format 3\0"):
        raise UserError(f"{what}: {db_path} is not an SQLite database; name another file")
    truncated = UserError(
        f"{what}: {db_path} is truncated ({db_path.stat().st_size} of {_header_size(header)} bytes); restore "
        "it from a copy or name a new file"
    )
    try:
        with closing(sqlite3.connect(db_path, timeout=30, isolation_level=None)) as connection:
            connection.execute("BEGIN")
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a shared lock from here on
            expected = connection.execute("PRAGMA page_count").fetchone()[0]
            expected *= connection.execute("PRAGMA page_size").fetchone()[0]
            size = db_path.stat().st_size
            verdict = connection.execute("PRAGMA quick_check").fetchone() if size >= expected else None
            connection.execute("ROLLBACK")
    except sqlite3.OperationalError as error:
        if "locked" in str(error) or "busy" in str(error):
            return False  # another process is writing it, so it opens
        raise UserError(f"{what}: {db_path} cannot be read as an SQLite database ({error})") from None
    except sqlite3.DatabaseError as error:
        if db_path.stat().st_size < _header_size(header):
            raise truncated from None
        raise UserError(f"{what}: {db_path} cannot be read as an SQLite database ({error})") from None
    if size < expected:
        raise truncated
    if verdict != ("ok",):
        raise UserError(f"{what}: {db_path} is damaged (SQLite's check: {verdict[0] if verdict else '?'})")
    return True


def _header_size(header: bytes) -> int:
    """The database's size in bytes as its 100-byte header records it (0 if the header does not say)."""
    page_size = int.from_bytes(header[16:18], "big")
    pages = int.from_bytes(header[28:32], "big")
    valid = len(header) == 100 and header[24:28] == header[92:96]  # SQLite's rule for the size field
    return (65536 if page_size == 1 else page_size) * pages if valid else 0


def check_artifact_root(uri: str, experiment: str) -> None:
    """Refuse an SQLite store whose experiment would keep its artifacts where no file can be created.

    MLflow puts a new experiment's artifacts in `./mlruns` of the current directory (an existing one's
    where it was created), and only learns that it cannot write there after the run has started.
    """
    if not uri.startswith("sqlite:///"):
        return
    location = _artifact_location(Path(uri.removeprefix("sqlite:///")), experiment)
    if location is None:
        folder, whose = Path.cwd() / "mlruns", "a new experiment's artifacts go to ./mlruns"
    elif urllib.parse.urlparse(location).scheme in ("", "file"):
        folder = Path(urllib.parse.urlparse(location).path)
        whose = f"experiment {experiment!r} keeps its artifacts there"
    else:
        return  # a remote artifact store (s3://, mlflow-artifacts:): MLflow reports it
    try:
        check_output_folder(folder, "artifacts")
    except UserError as error:
        raise UserError(f"{error} ({whose}; run from a writable folder or use another store)") from None


def _artifact_location(db_path: Path, experiment: str) -> str | None:
    """The experiment's artifact location as the store records it; None if the store or experiment is new."""
    if not db_path.is_file() or db_path.stat().st_size == 0:
        return None
    try:
        with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)) as connection:
            row = connection.execute(
                "SELECT artifact_location FROM experiments WHERE name = ?", (experiment,)
            ).fetchone()
    except sqlite3.Error:  # no tables yet: MLflow creates them with the experiment
        return None
    return row[0] if row else None


#: Python packages that provide SQLAlchemy's database drivers, by the module each driver imports.
_DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pymysql": "PyMySQL",
    "MySQLdb": "mysqlclient",
    "pyodbc": "pyodbc",
}


def _check_database_driver(uri: str) -> None:
    """Refuse a database URI (postgresql://, mysql://) whose driver is not installed, naming its package."""
    scheme = uri.split("://", 1)[0]
    if scheme.split("+", 1)[0] not in ("postgresql", "mysql", "mssql"):
        return
    import sqlalchemy

    try:
        sqlalchemy.engine.make_url(uri).get_dialect().import_dbapi()
    except ModuleNotFoundError as error:
        module = (error.name or "").split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module)
        raise UserError(
            f"tracking.uri={scheme}://... needs the database driver {module}, which is not installed; "
            f"pip install '{package}' into this environment"
        ) from None
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        raise UserError(f"tracking.uri={scheme}://... is not a database URL ({error})") from None


def open_store(uri: str) -> None:
    """Create or open the store once per process, under a lock, so that two jobs may start at once.

    MLflow creates a new SQLite store's tables and then migrates them, without a lock; two processes
    doing it at once on the same new file fail (alembic: "Online migration expected to match one row").
    Here each process creates or opens it while holding an exclusive `flock` on the database's folder,
    so the second waits for the first, then finds the tables made. A store SQLite cannot open fails at
    once, naming the file, instead of after MLflow's ten retries (about 100 s).
    """
    with _store_lock(uri):
        if not uri.startswith("sqlite:///"):
            return
        db_path = Path(uri.removeprefix("sqlite:///"))
        try:
            with closing(sqlite3.connect(db_path, timeout=30)) as connection:
                connection.execute("PRAGMA schema_version").fetchone()
        except sqlite3.Error as error:
            raise UserError(f"tracking.uri={uri}: SQLite cannot open {db_path} ({error})") from None
        from mlflow.tracking import MlflowClient

        with _mlflow_quiet():
            MlflowClient(uri).search_experiments(max_results=1)  # MLflow creates and migrates its tables


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive `flock` on a SQLite store's folder, so that jobs starting at once write it one by one.

    Nothing to lock for a server, which serialises its own writes.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    db_path = Path(uri.removeprefix("sqlite:///"))
    try:
        folder = os.open(db_path.parent if str(db_path.parent) else ".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise UserError(f"tracking.uri={uri}: its folder cannot be opened ({error.strerror})") from None
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the flock


@contextmanager
def _mlflow_quiet() -> Iterator[None]:
    """Hide the INFO lines MLflow and alembic log while a new store's tables are created."""
    loggers = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def open_experiment(uri: str, experiment: str) -> str:
    """Point MLflow at the store and return the experiment's id, creating it if needed."""
    import mlflow

    open_store(uri)
    mlflow.set_tracking_uri(uri)
    # Under the store's lock: jobs starting at once would both create the experiment, or both add its
    # tags, and the second insert fails on SQLite's unique key.
    try:
        with _store_lock(uri):
            return _create_or_tag_experiment(uri, experiment)
    except mlflow.exceptions.MlflowException as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"tracking.experiment={experiment!r} cannot be opened in {uri}: {first_line}"
        ) from None


def _create_or_tag_experiment(uri: str, experiment: str) -> str:
    """The experiment's id, created if needed, with repro's kind tag and saved views."""
    import mlflow
    from mlflow.tracking import MlflowClient

    found = mlflow.set_experiment(experiment)
    if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        MlflowClient(uri).set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    ui_views.write_views(MlflowClient(uri), found.experiment_id, found.tags)  # a warning at worst
    return found.experiment_id


def flatten_config(cfg: Config) -> dict[str, str]:
    """The job's config as `group.key` -> string, the form MLflow params take."""
    flat: dict[str, str] = {}

    def _walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                _walk(value, f"{prefix}{key}.")
        else:
            flat[prefix.rstrip(".")] = str(node)

    _walk(dataclasses.asdict(cfg), "")
    return flat


def provenance_tags() -> dict[str, str]:
    """Where and with what this run ran: git SHA, host, CPU model, library versions."""
    import timm
    import torch

    return {
        names.TAG_GIT_SHA: _git_sha(),
        names.TAG_HOST: socket.gethostname(),
        names.TAG_CPU_MODEL: _cpu_model(),
        names.TAG_PYTHON: platform.python_version(),
        names.TAG_TORCH_VERSION: torch.__version__,
        names.TAG_TIMM_VERSION: timm.__version__,
        "mlflow.source.name": "repro.train",
    }


@functools.cache  # read once: the code this process runs is what was checked out when it started
def _git_sha() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=_REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def log_params(params: Mapping[str, str]) -> None:
    """Log params in batches; MLflow caps one call at 100 params and a value at 6000 characters."""
    import mlflow

    items = [(key, value[:6000]) for key, value in params.items()]
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start : start + 100]))


def forget_active_run() -> None:
    """Drop this process's active run without a word to the store, which cannot be reached.

    The run's status then waits in the job's spool file (`repro.spool`); the next job of the process
    must not open its run nested in this one. MLflow has no public call for it: this pops the
    private per-thread stack `mlflow.tracking.fluent._active_run_stack` (mlflow 2.16 to 3.x, the
    range pyproject.toml pins); tests/test_tracking_adapter.py names the installed version when the
    member changes.
    """
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.tracking.fluent._active_run_stack.get().pop()


def describe_run(metrics: Mapping[str, float], tags: Mapping[str, str], reason: str) -> dict[str, str]:
    """The run's description as a tag: a short summary, so the run page shows the energy at a glance."""

    def number(key: str, unit: str, digits: int = 1) -> str:
        value = metrics.get(key)
        return (
            f"{value:.{digits}f} {unit}".strip() if value is not None and value == value else "not measured"
        )

    methods = ", ".join(
        f"{k.removeprefix('energy.method.')}: {v}"
        for k, v in sorted(tags.items())
        if k.startswith("energy.method.")
    )
    estimated = tags.get(names.TAG_ENERGY_ESTIMATED) == "true"
    lines = [
        f"**Energy** {number(names.ENERGY_TOTAL_J, 'J')} in total "
        f"({number(names.ENERGY_J_PER_IMAGE, 'J/image', 4)}; "
        f"GPU {number(names.GPU_ENERGY_J_PER_IMAGE, 'J/image', 4)})"
        + (" - **partly an estimate**" if estimated else ""),
        f"**F1** {number(names.F1, '', 4)} after {number(names.TRAINED_EPOCHS, 'epochs', 0)}, "
        f"{number(names.DURATION_S, 's')}",
        f"**How measured** {methods or 'no meter'}",
        f"**Outcome** {reason}",
    ]
    return {RUN_NOTE_TAG: "  \n".join(lines)}


def save_epoch_figure(history: list[Mapping[str, Any]], path: Path) -> Path | None:
    """Draw `epoch_energy_j` and `val_f1` per epoch into the PNG `path` for the run page; None if no epoch."""
    epochs = [row["epoch"] for row in history if "epoch" in row]
    if not epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, energy_axes = plt.subplots(figsize=(6, 3.5), layout="constrained")
    energy = [row.get(names.EPOCH_ENERGY_J, float("nan")) for row in history]
    energy_axes.plot(epochs, energy, marker="o", color="C0", label=names.EPOCH_ENERGY_J)
    energy_axes.set_xlabel("epoch")
    energy_axes.xaxis.get_major_locator().set_params(integer=True)
    energy_axes.set_ylabel("energy per epoch (J)", color="C0")
    f1_axes = energy_axes.twinx()
    f1 = [row.get(names.VAL_F1, float("nan")) for row in history]
    f1_axes.plot(epochs, f1, marker="s", color="C1", label=names.VAL_F1)
    f1_axes.set_ylabel("validation F1", color="C1")
    energy_axes.set_title("Energy and validation F1 per epoch", fontsize="medium")
    energy_axes.grid(alpha=0.3)
    figure.legend(loc="outside lower center", ncols=2, fontsize="small")
    figure.savefig(path)
    plt.close(figure)
    return path


def read_parent_run_id(job_output_dir: Path) -> str | None:
    """The sweep's parent run id, if this job belongs to a sweep that wrote one."""
    marker = job_output_dir.parent / PARENT_RUN_FILE
    return marker.read_text().strip() if marker.exists() else None


def claim_sweep_dir(sweep_dir: Path, resume: bool) -> None:
    """Make `sweep_dir` this sweep's own, or raise `UserError` if an earlier sweep is there.

    Without `resume`, a folder that holds another sweep (its claim, parent-run file, Hydra's
    `multirun.yaml` or job folders) is refused, since the new jobs would overwrite the earlier ones' files.
    The claim file is created exclusively, so two sweeps started in the same second with the default,
    timestamped `hydra.sweep.dir` cannot both have it. (Not the parent-run file itself: its existence
    tells jobs and tests that the store is set up.)
    """
    refusal = UserError(
        f"hydra.sweep.dir={sweep_dir} already holds a sweep; use resume=true to continue it, "
        "or another hydra.sweep.dir"
    )
    if resume:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        return
    if sweep_dir.is_dir() and (
        (sweep_dir / "multirun.yaml").exists()
        or (sweep_dir / PARENT_RUN_FILE).exists()
        or any((job_dir / ".hydra").is_dir() for job_dir in sweep_dir.iterdir())
    ):
        raise refusal
    sweep_dir.mkdir(parents=True, exist_ok=True)
    exclusive = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        claim = os.open(sweep_dir / SWEEP_CLAIM_FILE, exclusive, 0o644)
    except FileExistsError:
        raise refusal from None
    with os.fdopen(claim, "w") as handle:
        handle.write(f"{socket.gethostname()} {os.getpid()}\n")


class SweepCallback(Callback):
    """Hydra callback: a parent MLflow run around a multirun sweep, and a summary at its end."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self.tracking_uri: str | None = None
        self.failed_jobs: dict[str, str] = {}  # job number -> what failed, for jobs that may have no run
        self._heartbeat: RunSpool | None = None  # the parent run's heartbeat, while the sweep runs
        self._all_ok = True  # what `finish` found, for a second call (the entry point closes every sweep)

    def __getstate__(self) -> dict[str, Any]:
        """Launchers that pickle each job (submitit, SLURM) take the callbacks along; the heartbeat's
        thread and lock stay with the sweep's own process."""
        return {**self.__dict__, "_heartbeat": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        sweep_dir = Path(config.hydra.sweep.dir)
        with exit_on_user_error():  # one line and exit 2, before the launcher starts any job
            claim_sweep_dir(sweep_dir, resume=bool(config.get("resume", False)))
        self.tracking_uri = config.tracking.uri
        experiment_id = open_experiment(config.tracking.uri, config.tracking.experiment)
        reconcile.end_dead_runs(config.tracking.uri, config.tracking.experiment)
        _SKIPPED.clear()
        # The client API, not mlflow.start_run: jobs running in this process start their own runs.
        run = MlflowClient(config.tracking.uri).create_run(
            experiment_id,
            run_name=f"sweep-{sweep_dir.parent.name}-{sweep_dir.name}",
            tags={
                names.TAG_SWEEP_DIR: str(sweep_dir.resolve()),
                names.TAG_KIND: names.KIND_SWEEP,
                **provenance_tags(),
                **reconcile.process_tags(),
            },
        )
        self.parent_run_id = run.info.run_id
        self._heartbeat = RunSpool(
            config.tracking.uri, self.parent_run_id, sweep_dir / SPOOL_FILE, config.tracking.heartbeat_s
        )
        (sweep_dir / PARENT_RUN_FILE).write_text(self.parent_run_id + "\n")
        _ACTIVE_SWEEPS.append(self)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Remember a job that failed, so the summary shows it even if it failed before its run started."""
        error = job_exception(job_return)
        if error is not None:
            first_line = (str(error).splitlines() or [""])[0][:300]
            job_num = str(config.hydra.job.num)
            overrides = " ".join(job_return.overrides or [])
            self.failed_jobs[job_num] = f"job {job_num} ({overrides}): {type(error).__name__}: {first_line}"

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.finish()

    def finish(self, stopped_by: str | None = None) -> bool:
        """Close the parent run, print each job's state, and say whether every job finished.

        Args:
            stopped_by: why the sweep was cut short (Ctrl-C, SIGTERM), if it was; the parent ends KILLED.
        """
        if self.parent_run_id is None or self.tracking_uri is None:
            return self._all_ok
        from mlflow.tracking import MlflowClient

        if self._heartbeat is not None:
            self._heartbeat.close(timeout_s=5)  # heartbeats only; what is not sent stays in the sweep folder
            self._heartbeat = None
        client = MlflowClient(self.tracking_uri)
        parent = client.get_run(self.parent_run_id)
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
            order_by=["attributes.start_time ASC"],
        )
        if not children and not self.failed_jobs and not _SKIPPED and stopped_by is None:
            # No job started a run (the launcher refused the sweep, say): leave no empty parent behind.
            client.delete_run(self.parent_run_id)
            self.parent_run_id = None
            self._all_ok = False
            return False
        recorded = {child.data.tags.get("repro.job_num") for child in children}
        unrecorded_failures = {num: line for num, line in self.failed_jobs.items() if num not in recorded}
        rows = [JobRow.from_run(run, "SKIPPED", f"resume: FINISHED as {run.info.run_id}") for run in _SKIPPED]
        for child in children:
            reason = child.data.tags.get(names.TAG_END_REASON, "no reason recorded")
            rows.append(JobRow.from_run(child, note="" if child.info.status == "FINISHED" else reason[:300]))
        for num, line in unrecorded_failures.items():
            rows.append(JobRow(f"job {num}", "FAILED", note=f"{line} (no run: failed before training)"))
        print(f"\nSweep summary ({len(rows)} jobs, parent run {self.parent_run_id}):")
        print("\n".join(summary_lines(rows)))
        if stopped_by is not None:
            print(f"  sweep {stopped_by}: later jobs were not run")
        experiment = client.get_experiment(parent.info.experiment_id)
        print(ui_link(self.tracking_uri, experiment.experiment_id, experiment.tags))
        all_ok = stopped_by is None and not unrecorded_failures
        all_ok = all_ok and all(child.info.status == "FINISHED" for child in children)
        status = "KILLED" if stopped_by is not None else ("FINISHED" if all_ok else "FAILED")
        if not all_ok:
            not_finished = sum(child.info.status != "FINISHED" for child in children)
            reason = stopped_by or f"{not_finished + len(unrecorded_failures)} job(s) did not finish"
            client.set_tag(self.parent_run_id, "repro.end_reason", reason)
        client.set_terminated(self.parent_run_id, status=status)
        self.parent_run_id = None
        _SKIPPED.clear()
        self._all_ok = all_ok
        return all_ok


#: Jobs of this process's sweep that `resume=true` skipped, with the FINISHED run that stands for each.
_SKIPPED: list[Any] = []


def finished_before(cfg: Config, config_hash: str, store_opened: Future[None]) -> Any | None:
    """The resume decision, in one call: the FINISHED run that makes this job unnecessary, or None.

    `store_opened` says when the job's store process has opened the store and ended the runs of jobs
    that died (`repro.store_process.StoreProcess.open`). Without `resume=true` nothing waits for it, so
    the data and model build meanwhile; with it, the store decides whether the job trains at all
    (`reconcile.resume_decision`, in this process), and a run found is noted for the sweep's summary.
    """
    if not cfg.resume:
        return None
    store_opened.result()
    done = reconcile.resume_decision(cfg, cfg.tracking.uri, cfg.tracking.experiment, config_hash)
    if done is not None:
        note_skipped(done)
    return done


def note_skipped(earlier_run: Any) -> None:
    """Record that a job was skipped because `earlier_run` already FINISHED with its config."""
    _SKIPPED.append(earlier_run)


#: Sweeps started in this process, so the entry point can close them when a job's failure
#: makes Hydra skip `on_multirun_end`.
_ACTIVE_SWEEPS: list[SweepCallback] = []


def note_failed_job(job_num: int | None, line: str) -> None:
    """Record a job that failed in this process, so the sweep's summary lists it even without a run."""
    if _ACTIVE_SWEEPS:
        _ACTIVE_SWEEPS[-1].failed_jobs[str(job_num)] = line


def finish_open_sweeps(stopped_by: str | None = None) -> bool:
    """Close every sweep this process opened; False if any of their jobs did not finish."""
    all_ok = True
    while _ACTIVE_SWEEPS:
        all_ok = _ACTIVE_SWEEPS.pop().finish(stopped_by) and all_ok
    return all_ok
