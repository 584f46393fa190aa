"""The narrow SQL read of an MLflow store against MLflow's own client, and the client fallback."""

from __future__ import annotations

import math
import shutil
import sqlite3
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from omegaconf import OmegaConf

from repro import names
from repro.stats import mlflow_sql
from repro.stats.runs import MLFLOW_KEYS, RunsTable, _client_read, _wide, load_mlflow


def _log(client: mlflow.MlflowClient, experiment: str, start: int, tags: dict, metrics: dict, params: dict,
         status: str = "FINISHED") -> str:  # fmt: skip
    run = client.create_run(experiment, tags=tags, start_time=start).info.run_id
    client.log_batch(
        run,
        metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag("unread.tag", "x"), RunTag("energy.method_note", "not a method tag")],
    )
    client.log_batch(run, metrics=[Metric(names.F1, 0.0, 0, 1)] if start == 1_003 else [])  # a history
    if status != "RUNNING":
        client.set_terminated(run, status)
    return run


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A SQLite store whose runs have every case the loader tells apart: a sweep parent, a run that is not
    a training job, an unfinished and a failed run, a NaN and an infinite metric, runs with and without
    device tags and provenance tags, a deleted run, two runs with the same start time, and another
    experiment's runs."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('sql') / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("campaign")
    other = client.create_experiment("other")
    parent = _log(client, experiment, 1_000, {names.TAG_KIND: names.KIND_SWEEP}, {}, {})
    combos = [
        ("mobilenet_v2", "rtx3070"),
        ("resnet50", "rtx3070"),
        ("mobilenet_v2", "rtx3090"),
        ("resnet50", "rtx3090"),
    ]
    for i in range(16):
        model, gpu = combos[i % 4]
        tags = {names.TAG_MODEL: model, names.TAG_GPU: gpu, "mlflow.parentRunId": parent}
        if i % 3:
            tags |= {names.TAG_DEVICE_NAME: f"NVIDIA {gpu.upper()}", names.TAG_DEVICE_POWER_LIMIT_W: "300"}
        if i % 2:
            tags |= {names.energy_method_tag("gpu"): "nvml-counter", names.energy_method_tag("cpu"): "rapl"}
            tags[names.TAG_ENERGY_ESTIMATED] = "false"
        else:
            tags |= {names.energy_method_tag("cpu"): "tdp-load-estimate", names.TAG_ENERGY_ESTIMATED: "True"}
        metrics = {
            names.ENERGY_J_PER_IMAGE: 0.1 + i / 100,
            names.GPU_ENERGY_J_PER_IMAGE: 0.05 + i / 200,
            names.F1: 0.7 + i / 100,
            names.GPU_USAGE_PCT: math.nan if i == 5 else 40.0 + i,
            names.DURATION_MS_PER_IMAGE: 1 + i,
            names.GFLOPS: 0.3 if model == "mobilenet_v2" else 4.1,
            names.PARAMS_M: 3.5,
            names.IMAGES_SEEN: 1000.0,
            names.TRAIN_IMAGES_SEEN: 700.0,
            names.DURATION_S: 12.0,  # a metric the analysis does not read
        }
        if i == 7:
            metrics[names.ENERGY_J_PER_IMAGE] = math.inf  # stored by MLflow as the largest float
            metrics[names.GPU_ENERGY_J_PER_IMAGE] = math.inf
        params = {names.PARAM_GPU_TDP_W: "220" if gpu == "rtx3070" else "350", "training.lr": "0.001"}
        if i != 4:
            params[names.PARAM_GPU_LABEL] = gpu.upper()
        status = "RUNNING" if i == 9 else "FAILED" if i == 10 else "FINISHED"
        run = _log(client, experiment, 1_001 + min(i, 14), tags, metrics, params, status)  # 14 and 15 tie
        if i == 11:
            client.delete_run(run)
    _log(client, experiment, 1_100, {"note": "a notebook run"}, {names.F1: 0.5}, {})
    vgg16 = {names.TAG_MODEL: "vgg16", names.TAG_GPU: "t4"}
    _log(client, other, 1_000, vgg16, {names.ENERGY_J_PER_IMAGE: 1.0, names.F1: 0.9}, {})
    return uri, parent


def _through_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlflow_sql, "read_runs", lambda *args, **kwargs: None)


def _assert_same(a: RunsTable, b: RunsTable) -> None:
    for field in ("runs", "excluded", "provenance"):
        pd.testing.assert_frame_equal(getattr(a, field), getattr(b, field), check_exact=True, obj=field)
    assert (a.energy_basis, a.source, a.parent_runs) == (b.energy_basis, b.source, b.parent_runs)


@pytest.mark.parametrize("parent", [False, True])
def test_the_sql_read_gives_the_client_loaders_tables(
    store: tuple[str, str], parent: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, parent_id = store
    parent_run_id = parent_id if parent else None
    assert mlflow_sql.read_runs(uri, "campaign", MLFLOW_KEYS, parent_run_id) is not None  # the SQL path ran
    fast = load_mlflow(uri, "campaign", parent_run_id)
    _through_client(monkeypatch)
    _assert_same(fast, load_mlflow(uri, "campaign", parent_run_id))
    assert len(fast.runs) == 12 and fast.parent_runs == (
        0 if parent else 1
    )  # 16 - running, failed, deleted, inf
    assert set(fast.excluded["reason"]) == (
        {"run did not finish", "no finite energy per image (no images seen)"}
        | (set() if parent else {"not a training job (no repro.model tag)"})
    )


def test_the_sql_read_has_search_runs_columns_and_values(store: tuple[str, str]) -> None:
    """Column for column, what today's loader took from `mlflow.search_runs` (the keys it reads)."""
    uri, _ = store
    ours = _wide(mlflow_sql.read_runs(uri, "campaign", MLFLOW_KEYS))
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.MlflowClient(uri).get_experiment_by_name("campaign").experiment_id
    theirs = mlflow.search_runs([experiment_id]).sort_values(["start_time", "run_id"], kind="stable")
    theirs = theirs.reset_index(drop=True)
    read = [c for c in theirs if c.split(".", 1)[0] in ("tags", "params", "metrics")
            and (c.split(".", 1)[1] in MLFLOW_KEYS.tags + MLFLOW_KEYS.params + MLFLOW_KEYS.metrics
                 or c.startswith("tags." + MLFLOW_KEYS.tag_prefixes[0]))]  # fmt: skip
    assert sorted(c for c in ours if c not in ("run_id", "status", "start_time")) == sorted(read)
    assert "metrics.duration_s" not in ours and "tags.unread.tag" not in ours  # only what is read
    assert "tags.energy.method_note" not in ours  # only looks like a method tag
    for column in ["run_id", "status", *read]:
        pd.testing.assert_series_equal(ours[column], theirs[column], obj=column)


@pytest.mark.slow
def test_a_tracking_server_is_read_through_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over REST the client reads page by page; its table equals the SQL read of the server's own store."""
    from tests.faults.helpers import MlflowServer

    server = MlflowServer(tmp_path)
    server.start()
    try:
        client = mlflow.MlflowClient(tracking_uri=server.uri)
        experiment = client.create_experiment("served")
        for i in range(5):
            tags = {names.TAG_MODEL: "resnet18", names.TAG_GPU: "cpu", names.energy_method_tag("cpu"): "rapl"}
            metrics = {names.ENERGY_J_PER_IMAGE: 0.5 + i, names.F1: 0.6, names.GFLOPS: 1.8}
            _log(client, experiment, 1_000 + i, tags, metrics, {names.PARAM_GPU_TDP_W: "65"})
        assert not mlflow_sql.is_sql_uri(server.uri)
        assert mlflow_sql.read_runs(server.uri, "served", MLFLOW_KEYS) is None
        monkeypatch.setattr("repro.stats.runs._CLIENT_PAGE_RUNS", 2)  # three pages
        served = load_mlflow(server.uri, "served")
    finally:
        server.kill()
    assert list(served.runs["energy_j_per_image"]) == [0.5, 1.5, 2.5, 3.5, 4.5]  # in start-time order
    assert list(served.provenance["energy.method.cpu"]) == ["rapl"] * 5
    direct = load_mlflow(f"sqlite:///{tmp_path / 'mlflow.db'}", "served")  # the server's own store, in SQL
    for field in ("runs", "excluded", "provenance"):
        pd.testing.assert_frame_equal(getattr(served, field), getattr(direct, field), obj=field)


def test_a_store_whose_schema_changed_is_read_through_the_client(
    store: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "changed.db"
    shutil.copy(store[0].removeprefix("sqlite:///"), copy)
    with sqlite3.connect(copy) as db:
        db.execute("ALTER TABLE latest_metrics RENAME COLUMN is_nan TO nan_flag")
    with caplog.at_level("INFO", logger="repro.stats.mlflow_sql"):
        assert mlflow_sql.read_runs(f"sqlite:///{copy}", "campaign", MLFLOW_KEYS) is None
    assert "latest_metrics.is_nan" in caplog.text


def test_the_installed_mlflow_has_the_schema_the_adapter_reads(tmp_path: Path) -> None:
    """Fails, naming the MLflow version, when MLflow's tables no longer have a column the adapter reads."""
    import sqlalchemy

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    mlflow.MlflowClient(tracking_uri=uri).create_experiment("fresh")  # MLflow creates its newest schema
    engine = sqlalchemy.create_engine(uri)
    with engine.connect() as connection:
        missing = mlflow_sql._missing_columns(sqlalchemy.inspect(connection))
    engine.dispose()
    assert not missing, (
        f"MLflow {mlflow.__version__} changed the schema that repro.stats.mlflow_sql reads "
        f"({', '.join(missing)}); update the adapter and the mlflow pin in pyproject.toml"
    )


def test_unknown_experiment_and_foreign_parent_leave_the_errors_to_the_client(store: tuple[str, str]) -> None:
    uri, parent = store
    assert mlflow_sql.read_runs(uri, "nope", MLFLOW_KEYS) is None
    assert mlflow_sql.read_runs(uri, "other", MLFLOW_KEYS, parent_run_id=parent) is None
    assert mlflow_sql.read_runs(uri, "campaign", MLFLOW_KEYS, parent_run_id="0" * 32) is None


def test_the_report_counts_provenance_from_the_loaded_runs(store: tuple[str, str]) -> None:
    from repro.report import _measurement

    uri, _ = store
    table = load_mlflow(uri, "campaign")
    measured = _measurement(OmegaConf.create({"source": "mlflow"}), table)
    client = mlflow.MlflowClient(uri)  # what the report asked MLflow for, one run at a time, before
    tags = [client.get_run(run_id).data.tags for run_id in table.runs["run"]]
    estimated = sum(t.get("energy_estimated", "").lower() == "true" for t in tags)
    assert measured["summary"].startswith(
        f"{len(tags)} runs analysed on GPU only energy; {estimated} of them"
    )
    expected: dict[tuple[str, str], int] = {}
    for t in tags:
        for key, value in t.items():
            if key.startswith("energy.method."):
                expected[key.removeprefix("energy.method."), value] = (
                    expected.get((key.removeprefix("energy.method."), value), 0) + 1
                )
    assert measured["rows"] == [[c, m, str(n)] for (c, m), n in sorted(expected.items())]
    assert _client_read(uri, "campaign", None).info  # the fallback reads the same store too
