"""Shared fixtures: the real config, composed and shrunk to a seconds-long job under tmp_path."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from repro.config import CONF_DIR, register_configs

register_configs()


@pytest.fixture(scope="session", autouse=True)
def _private_measurement_lock(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests take the measurement lock in a folder of their own, not the machine's.

    Test jobs measure nothing worth protecting, and other test sessions on the machine must not make
    them fail with "another measured job is running". Subprocesses inherit the variable.
    """
    os.environ["REPRO_LOCK_DIR"] = str(tmp_path_factory.mktemp("lock"))


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


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


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
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("HYDRA_FULL_ERROR", None)
    return env
