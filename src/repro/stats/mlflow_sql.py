"""A narrow read of an MLflow SQL store: only the runs of one experiment and only the keys asked for.

MLflow's client (`search_runs`) returns every param, tag and metric of every run through its ORM;
at 15,000 runs that is over two million objects for the twenty or so values the analysis reads.
This module reads the same values with a few SQL queries over MLflow's tables, streamed in pages.

It is the only place in the package that knows MLflow's database schema, and it reads only what
has been stable across MLflow releases (`SCHEMA`: the `experiments`, `runs`, `tags`, `params` and
`latest_metrics` tables). `read_runs` returns None, so that the caller falls back to MLflow's
client, whenever it cannot vouch for the answer: a store that is not a database (a file store, a
tracking server), a schema that lacks a column it reads, MLflow workspaces switched on, or an
experiment it cannot identify by name alone. The MLflow versions it is tested with are pinned in
pyproject.toml; tests/stats/test_mlflow_sql.py checks the installed MLflow's schema and compares
the two readers on the same store.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlparse

log = logging.getLogger(__name__)

#: The tables and columns read; a store whose schema lacks one of them is read through the client.
SCHEMA: dict[str, tuple[str, ...]] = {
    "experiments": ("experiment_id", "name", "lifecycle_stage"),
    "runs": ("run_uuid", "experiment_id", "status", "start_time", "lifecycle_stage"),
    "tags": ("run_uuid", "key", "value"),
    "params": ("run_uuid", "key", "value"),
    "latest_metrics": ("run_uuid", "key", "value", "is_nan"),
}
#: The database schemes MLflow's SQL store accepts (mlflow.store.db.db_types.DATABASE_ENGINES).
_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_PAGE_ROWS = 10_000


@dataclass(frozen=True)
class Keys:
    """What to read: tag, param and metric keys, and tag key prefixes (`energy.method.`)."""

    tags: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    tag_prefixes: tuple[str, ...] = ()


@dataclass
class Runs:
    """The runs read, in no particular order: (run id, status, start time in ms) and their values.

    `values` maps a column name as `mlflow.search_runs` names it (`tags.repro.model`,
    `params.gpu.tdp_w`, `metrics.f1`) to {run id: value}; a column is present only if a run has it.
    """

    info: list[tuple[str, str, int | None]] = field(default_factory=list)
    values: dict[str, dict[str, object]] = field(default_factory=dict)


def is_sql_uri(tracking_uri: str) -> bool:
    """Whether MLflow would open `tracking_uri` as a SQL store (`sqlite:///...`, `postgresql://...`)."""
    scheme = urlparse(tracking_uri).scheme.lower().split("+")[0]
    return scheme in _SQL_SCHEMES


def read_runs(
    tracking_uri: str, experiment: str, keys: Keys, parent_run_id: str | None = None
) -> Runs | None:
    """The active runs of `experiment` (only `parent_run_id`'s children when given), or None.

    None means "ask MLflow's client instead": the store is not SQL, or this adapter cannot vouch for
    reading it (see the module's docstring); the client then also gives the user-facing errors
    (unknown experiment, a parent run of another experiment).
    """
    if not is_sql_uri(tracking_uri):
        return None
    if os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").strip().lower() in ("1", "true", "yes"):
        log.info("MLflow workspaces are on: reading the runs through MLflow's client")
        return None
    import sqlalchemy

    engine = sqlalchemy.create_engine(tracking_uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            missing = _missing_columns(sqlalchemy.inspect(connection))
            if missing:
                log.info("the store lacks %s: reading the runs through MLflow's client", ", ".join(missing))
                return None
            return _read(connection, experiment, keys, parent_run_id)
    except sqlalchemy.exc.SQLAlchemyError as error:
        log.info("the SQL read failed (%s): reading the runs through MLflow's client", type(error).__name__)
        return None
    finally:
        engine.dispose()


def _missing_columns(inspector: object) -> list[str]:
    tables = set(inspector.get_table_names())
    missing = []
    for table, columns in SCHEMA.items():
        if table not in tables:
            missing.append(f"table {table}")
            continue
        present = {column["name"] for column in inspector.get_columns(table)}
        missing += [f"{table}.{column}" for column in columns if column not in present]
    return missing


def _read(connection: object, experiment: str, keys: Keys, parent_run_id: str | None) -> Runs | None:
    from sqlalchemy import bindparam, text

    found = connection.execute(
        text("SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = :name"),
        {"name": experiment},
    ).fetchall()
    if len(found) != 1 or found[0][1] != "active":
        return None  # unknown, deleted, or in several workspaces: the client says which
    experiment_id = found[0][0]
    selected = "r.experiment_id = :experiment AND r.lifecycle_stage = 'active'"
    parameters: dict[str, object] = {"experiment": experiment_id}
    if parent_run_id:
        parent = connection.execute(
            text("SELECT experiment_id FROM runs WHERE run_uuid = :run"), {"run": parent_run_id}
        ).fetchall()
        if len(parent) != 1 or str(parent[0][0]) != str(experiment_id):
            return None  # not a run here, or another experiment's: the client's error says so
        selected += (
            " AND EXISTS (SELECT 1 FROM tags p WHERE p.run_uuid = r.run_uuid"
            " AND p.key = 'mlflow.parentRunId' AND p.value = :parent)"
        )
        parameters["parent"] = parent_run_id
    runs = Runs()
    query = text(f"SELECT r.run_uuid, r.status, r.start_time FROM runs r WHERE {selected}")
    for row in _pages(connection, query, parameters):
        runs.info.append((row[0], row[1], None if row[2] is None else int(row[2])))
    for kind, table, wanted, prefixes in (
        ("tags", "tags", keys.tags, keys.tag_prefixes),
        ("params", "params", keys.params, ()),
        ("metrics", "latest_metrics", keys.metrics, ()),
    ):
        if not wanted and not prefixes:
            continue
        value = "v.value, v.is_nan" if kind == "metrics" else "v.value"
        where = ["v.key IN :keys"] if wanted else []
        where += [f"v.key LIKE :prefix{i}" for i in range(len(prefixes))]
        query = text(
            f"SELECT v.run_uuid, v.key, {value} FROM {table} v JOIN runs r ON r.run_uuid = v.run_uuid "
            f"WHERE {selected} AND ({' OR '.join(where)})"
        )
        bound = dict(parameters)
        if wanted:
            query = query.bindparams(bindparam("keys", expanding=True))
            bound["keys"] = list(wanted)
        bound.update({f"prefix{i}": _like(prefix) for i, prefix in enumerate(prefixes)})
        for row in _pages(connection, query, bound):
            key = row[1]
            if prefixes and key not in wanted and not any(key.startswith(p) for p in prefixes):
                continue  # LIKE's `_` matched some other character
            if kind == "metrics":
                number = math.nan if row[3] else float(row[2])
                runs.values.setdefault(f"metrics.{key}", {})[row[0]] = number
            else:
                runs.values.setdefault(f"{kind}.{key}", {})[row[0]] = row[2]
    return runs


def _like(prefix: str) -> str:
    return prefix.replace("%", "_") + "%"  # `_` and `%` in a key are filtered again in Python


def _pages(connection: object, query: object, parameters: dict[str, object]) -> Iterable[tuple]:
    """The query's rows, fetched a page at a time so that memory holds one page of raw rows."""
    result = connection.execution_options(stream_results=True).execute(query, parameters)
    while rows := result.fetchmany(_PAGE_ROWS):
        yield from rows
