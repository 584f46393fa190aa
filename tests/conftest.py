"""Shared fixtures: the real config, composed and shrunk to a seconds-long job under tmp_path."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from repro.composition import register_configs
from repro.config import CONF_DIR

register_configs()


@pytest.fixture(scope="session", autouse=True)
def _private_measurement_lock(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests take the measurement lock in a folder of their own, not the machine's.

    Test jobs measure nothing worth protecting, and other test sessions on the machine must not make
    them fail with "another measured job is running". Subprocesses inherit the variable.
    """
    os.environ["REPRO_LOCK_DIR"] = str(tmp_path_factory.mktemp("lock"))


@pytest.fixture(scope="session", autouse=True)
def _cores_shared_among_workers() -> None:
    """Under `pytest -n N`, each worker's jobs train on its share of the cores, not on all of them.

    N jobs each spinning on every core make each several times slower (see repro.threads). Only the
    default is set (OMP_NUM_THREADS, which `training.threads=null` follows, and subprocesses inherit);
    tests of that default set their own.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))


@pytest.fixture(autouse=True)
def _no_sweep_left_open() -> Iterator[None]:
    """Forget the sweeps a test ran in-process left open or skipped (repro.tracking keeps them per process).

    A command owns its process, so `main()` closes every sweep it opened; a test that stops one midway
    (or only builds a callback) would otherwise hand it to the next in-process sweep on the same worker,
    whose `finish_open_sweeps` then reports that earlier sweep's unfinished jobs as its own.
    """
    from repro import tracking

    yield
    tracking._ACTIVE_SWEEPS.clear()
    tracking._SKIPPED.clear()


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Undo the logging set-up of a job run in-process (Hydra's job logging adds stream handlers).

    Such a handler keeps the stream pytest captured for that test; once pytest closes it, a later
    test's log line fails with "I/O operation on closed file" on stderr.
    """
    loggers = [logging.getLogger(), *(item for item in logging.Logger.manager.loggerDict.values()
                                     if isinstance(item, logging.Logger))]
    saved = {logger: (list(logger.handlers), logger.level, logger.propagate) for logger in loggers}
    yield
    for logger, (handlers, level, propagate) in saved.items():
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One digits tree for the whole session: writing it is the slow part of a first job."""
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its schema and nothing else, made once and copied for each test.

    Making the schema takes dozens of migrations, each synced to disk: seconds per test on a busy disk.
    """
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, request: pytest.FixtureRequest, _empty_store: Path) -> str:
    """The test's own SQLite store, schema made; `@pytest.mark.store_absent` leaves the file unmade."""
    db = tmp_path / "mlflow.db"
    if request.node.get_closest_marker("store_absent") is None:
        shutil.copyfile(_empty_store, db)
    return f"sqlite:///{db}"


@pytest.fixture
def smoke_overrides(tracking_uri: str, data_cache: Path) -> list[str]:
    """Overrides that make any job tiny and keep every file it writes inside the test's folders."""
    return [
        "experiment=smoke",
        f"tracking.uri={tracking_uri}",
        f"dataset.cache_dir={data_cache}",
        "energy=codecarbon",
    ]


@pytest.fixture
def compose_config(smoke_overrides: list[str]) -> Callable[..., DictConfig]:
    """Compose the real config with the smoke overrides plus the test's own."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=[*smoke_overrides, *overrides])

    return _compose


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for running the CLI in a subprocess: unbuffered, no colour, no terminal."""
    return _cli_env()


def _cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("HYDRA_FULL_ERROR", None)
    return env


@dataclass(frozen=True)
class FinishedSweep:
    """A sweep of two smoke jobs (mobilenet_v2, resnet18) that the real command line ran to its end."""

    tracking_uri: str
    sweep_dir: Path
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def finished_sweep_once(tmp_path_factory: pytest.TempPathFactory, data_cache: Path) -> FinishedSweep:
    """One such sweep for the session (one per worker under `pytest -n`), for tests that only read it."""
    from tests.support import REPO_ROOT, cli

    root = tmp_path_factory.mktemp("finished-sweep")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    overrides = ["experiment=smoke", f"tracking.uri={tracking_uri}", f"dataset.cache_dir={data_cache}",
                 "energy=codecarbon", "energy.lock=false"]  # fmt: skip
    result = subprocess.run(
        cli("-m", "model=mobilenet_v2,resnet18", *overrides, f"hydra.sweep.dir={root / 'sweep'}"),
        cwd=REPO_ROOT, env=_cli_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return FinishedSweep(tracking_uri, root / "sweep", result)
