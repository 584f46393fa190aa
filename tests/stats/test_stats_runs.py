"""The two sources of the tidy runs table, the outlier policy, and their one-line errors."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param

from repro import names
from repro.errors import UserError
from repro.stats.analyses import StudyResults, analyse
from repro.stats.runs import (
    MEASURED_METHODS,
    RUN_COLUMNS,
    RunsTable,
    apply_outlier_policy,
    energy_label,
    load_mlflow,
    load_published,
)
from repro.stats.tables import PER_IMAGE_NOTE, design_tables, medians_table

_DATA_DIR = Path(__file__).resolve().parents[2] / "paper" / "data"
DATA = _DATA_DIR / "dl-training-energy-consumption-dataset.parquet"
EXCLUSIONS = _DATA_DIR / "exclusions.csv"


def test_published_columns_and_derived_metrics(published: RunsTable) -> None:
    assert tuple(published.runs.columns) == RUN_COLUMNS
    every = pd.read_parquet(DATA)
    # The study's images: training and validation passes, (743 + 318) whole batches of 32 per epoch.
    assert (every["total seen images"] == every["trained epochs"] * (743 + 318) * 32).all()
    raw = every.iloc[0]
    first = published.runs.iloc[0]
    assert first["energy_j_per_image"] == pytest.approx(raw["energy (MJ)"] * 1e6 / raw["total seen images"])
    assert first["duration_ms_per_image"] == pytest.approx(
        raw["training duration (h)"] * 3.6e6 / raw["total seen images"]
    )
    assert set(published.excluded["reason"].str.len() > 0) == {True}


def test_published_missing_column(tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    pd.read_parquet(DATA).drop(columns=["gpu usage (%)"]).to_parquet(broken)
    with pytest.raises(UserError, match="lacks column 'gpu usage \\(%\\)'"):
        load_published(broken, EXCLUSIONS)


def test_outlier_policy_iqr3_lists_every_run(published: RunsTable) -> None:
    runs = published.runs.copy()
    runs.loc[0, "energy_j_per_image"] = 50.0  # far beyond its group's fences
    table = RunsTable(runs, published.excluded, published.energy_basis, published.source)
    screened = apply_outlier_policy(table, "iqr3")
    new = screened.excluded.iloc[len(published.excluded) :]
    assert (runs.loc[0, "run"], runs.loc[0, "architecture"]) in set(
        zip(new["run"], new["architecture"], strict=True)
    )
    assert new["reason"].str.contains("3xIQR").all()
    assert len(screened.runs) + len(new) == len(runs)
    assert apply_outlier_policy(table, "none") is table
    with pytest.raises(UserError, match="outlier_policy=zscore"):
        apply_outlier_policy(table, "zscore")


def test_unknown_environment_lists_known(published: RunsTable) -> None:
    with pytest.raises(
        UserError, match="environment=AWS is not in the runs; known: Local N, Local ML, Cloud"
    ):
        analyse(published.runs, environment="AWS")
    with pytest.raises(UserError, match="architecture=resnet18 .*known: mobilenet_v2, nasnet_mobile"):
        analyse(published.runs, architecture="resnet18")


def test_small_group_is_skipped_with_reason(published: RunsTable) -> None:
    runs = published.runs
    tiny = runs[~((runs["environment"] == "Cloud") & (runs["architecture"] == "vgg16"))]
    tiny = pd.concat(
        [tiny, runs[(runs["environment"] == "Cloud") & (runs["architecture"] == "vgg16")].head(2)]
    )
    result = analyse(tiny)
    energy = result.rq1[0]
    assert "vgg16" not in energy.groups
    assert energy.skipped == ("vgg16: 2 run(s), fewer than 3",)
    assert energy.kruskal is not None and energy.kruskal.k == 4


def test_nan_metric_is_reported_and_dropped(published: RunsTable, caplog: pytest.LogCaptureFixture) -> None:
    runs = published.runs.copy()
    cloud = runs.index[runs["environment"] == "Cloud"][:3]
    runs.loc[cloud, "gpu_usage_pct"] = np.nan
    result = analyse(runs)
    gpu = next(c for c in result.rq1 if c.metric == "gpu_usage_pct")
    assert gpu.nan_dropped == 3 and gpu.kruskal.n == 137
    assert "3 run(s) have no gpu_usage_pct" in result.notes[0]
    assert "3 run(s) with NaN gpu_usage_pct dropped" in caplog.text


# --- source=mlflow ---------------------------------------------------------------------------------------

_RUNS = [  # (model, gpu, energy J/image, f1), three runs each; b2 has a GPU-only energy everywhere
    ("mobilenet_v2", "rtx3070", 0.05, 0.95),
    ("mobilenet_v2", "rtx3090", 0.10, 0.96),
    ("resnet50", "rtx3070", 0.20, 0.97),
    ("resnet50", "rtx3090", 0.25, 0.975),
]


def _log_run(
    client: mlflow.MlflowClient,
    experiment: str,
    tags: dict[str, str],
    metrics: dict[str, float],
    params: dict[str, str],
    start_time: int,
) -> None:
    run = client.create_run(experiment, tags=tags, start_time=start_time).info.run_id
    client.log_batch(
        run,
        metrics=[Metric(key, value, 0, 0) for key, value in metrics.items()],
        params=[Param(key, value) for key, value in params.items()],
    )
    client.set_terminated(run)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A sqlite MLflow store with one sweep (a parent and 12 children), an empty experiment, one with only
    a sweep's parent run, one whose runs have no energy metric and one whose runs name their device."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("paper-test")
    client.create_experiment("empty")
    parent = client.create_run(experiment, tags={names.TAG_KIND: names.KIND_SWEEP}).info.run_id
    client.set_terminated(parent)
    for i, (model, gpu, energy, f1) in enumerate(_RUNS * 3):
        metrics = {
            names.ENERGY_J_PER_IMAGE: energy * 1.5 + i * 1e-3,
            names.GPU_ENERGY_J_PER_IMAGE: energy + i * 1e-3,
            names.F1: f1 - i * 1e-4,
            names.GPU_USAGE_PCT: 40 + i,
            names.DURATION_MS_PER_IMAGE: 1 + i * 0.01,
            names.GFLOPS: 0.3 if model == "mobilenet_v2" else 4.1,
            names.PARAMS_M: 3.5,
        }
        tags = {names.TAG_MODEL: model, names.TAG_GPU: gpu, names.TAG_SEED: str(i)}
        tags["mlflow.parentRunId"] = parent
        params = {names.PARAM_GPU_TDP_W: "220" if gpu == "rtx3070" else "350"}
        params[names.PARAM_GPU_LABEL] = gpu.upper()
        _log_run(client, experiment, tags, metrics, params, start_time=1_000 + i)

    parents_only = client.create_experiment("parents-only")
    lone_parent = client.create_run(parents_only, tags={names.TAG_KIND: names.KIND_SWEEP}).info.run_id
    client.set_terminated(lone_parent)
    no_energy = client.create_experiment("no-energy")
    for i in range(3):
        tags = {names.TAG_MODEL: "resnet18", names.TAG_GPU: "cpu"}
        _log_run(client, no_energy, tags, {names.F1: 0.6, names.DURATION_S: 3.0}, {}, start_time=1_000 + i)
    devices = client.create_experiment("devices")
    for i, (device, limit_w) in enumerate([("NVIDIA H200", "650"), ("NVIDIA H200", "650"), ("cpu", None)]):
        tags = {names.TAG_MODEL: "resnet18", names.TAG_GPU: "auto", names.TAG_DEVICE_NAME: device}
        if limit_w is not None:
            tags[names.TAG_DEVICE_POWER_LIMIT_W] = limit_w
        metrics = {names.ENERGY_J_PER_IMAGE: 0.1 + i, names.F1: 0.7}
        _log_run(client, devices, tags, metrics, {names.PARAM_GPU_TDP_W: "700"}, start_time=1_000 + i)
    mixed = client.create_experiment("mixed-definitions")
    for i, train_images in enumerate([None, None, 70.0]):  # None: recorded when J/image counted training only
        tags = {names.TAG_MODEL: "resnet18", names.TAG_GPU: "cpu"}
        metrics = {names.ENERGY_J_PER_IMAGE: 0.1, names.F1: 0.7, names.IMAGES_SEEN: 100.0}
        if train_images is not None:
            metrics[names.TRAIN_IMAGES_SEEN] = train_images
        _log_run(client, mixed, tags, metrics, {}, start_time=1_000 + i)
    return uri, parent


def test_mlflow_reads_the_sweep(store: tuple[str, str], study: StudyResults) -> None:
    uri, parent = store
    table = load_mlflow(uri, "paper-test")
    assert len(table.runs) == 12 and tuple(table.runs.columns) == RUN_COLUMNS
    assert table.energy_basis == "GPU only"  # every run has gpu_energy_j_per_image
    assert table.runs["energy_j_per_image"].min() == pytest.approx(0.05)
    assert table.parent_runs == 1 and table.excluded.empty  # a sweep's parent run is not an exclusion
    assert len(load_mlflow(uri, "paper-test", parent_run_id=parent).runs) == 12
    assert set(table.runs["power_limit_w"]) == {220.0, 350.0}  # no NVML limit recorded: the profile's TDP
    results = analyse(table.runs)
    assert results.environment == "rtx3090"  # no Cloud: the most powerful environment with most architectures
    assert results.architecture == "mobilenet_v2"
    assert results.rq1[0].kruskal.k == 2
    # T2 of own runs and T2 of the published data state one definition of per-image figures
    assert medians_table(results).notes == medians_table(study).notes == (PER_IMAGE_NOTE,)


def test_mlflow_environment_is_the_detected_device(store: tuple[str, str]) -> None:
    uri, _ = store
    runs = load_mlflow(uri, "devices").runs
    on_gpu = runs["gpu_name"] == "NVIDIA H200"
    assert sorted(runs["environment"]) == ["NVIDIA H200 (auto)", "NVIDIA H200 (auto)", "cpu (auto)"]
    assert list(runs.loc[on_gpu, "power_limit_w"]) == [650.0, 650.0]  # NVML's limit, not the profile's 700 W


def test_mlflow_leaves_out_runs_whose_images_are_training_images_only(store: tuple[str, str]) -> None:
    uri, _ = store
    table = load_mlflow(uri, "mixed-definitions")
    assert len(table.runs) == 1
    assert len(table.excluded) == 2
    assert table.excluded["reason"].str.contains("count training images only").all()


def test_mlflow_errors(store: tuple[str, str], tmp_path: Path) -> None:
    uri, parent = store
    with pytest.raises(UserError, match="has no runs"):
        load_mlflow(uri, "empty")
    with pytest.raises(UserError, match=r"has no finished training runs \(1 sweep parent run"):
        load_mlflow(uri, "parents-only")
    with pytest.raises(UserError, match="none of its 3 training run.* has the metric 'energy_j_per_image'"):
        load_mlflow(uri, "no-energy")
    known = "Default, devices, empty, mixed-definitions, no-energy"
    with pytest.raises(UserError, match=f"mlflow.experiment='nope' is not in .*known: {known}"):
        load_mlflow(uri, "nope")
    with pytest.raises(UserError, match="no MLflow database at"):
        load_mlflow(f"sqlite:///{tmp_path / 'missing.db'}", "paper-test")
    with pytest.raises(UserError, match="cannot be reached"):
        load_mlflow("http://127.0.0.1:9", "paper-test")
    with pytest.raises(UserError, match=f"mlflow.parent_run_id={'0' * 32} is not a run in this store"):
        load_mlflow(uri, "paper-test", parent_run_id="0" * 32)
    with pytest.raises(UserError, match="belongs to another experiment than 'devices'"):
        load_mlflow(uri, "devices", parent_run_id=parent)


def _t1b_note(runs: pd.DataFrame, energy_basis: str, provenance: pd.DataFrame | None) -> str:
    table = RunsTable(runs, _NO_EXCLUSIONS, energy_basis, "a test", provenance=provenance)
    (note,) = next(t for t in design_tables(table) if t.name == "t1b_environments").notes
    return note


_NO_EXCLUSIONS = pd.DataFrame(columns=["environment", "architecture", "run", "reason"])


def test_t1b_says_estimated_when_any_run_estimated_its_energy(published: RunsTable) -> None:
    runs = published.runs.head(3).assign(run=["a", "b", "c"])
    read = {"energy.method.cpu": "rapl", "energy.method.gpu": "nvml-counter", "energy.method.ram": "rapl"}
    cpu_only = {"energy.method.cpu": "tdp-load-estimate", "energy.method.gpu": "not-measured"}
    # the published data: the authors' nvidia-smi readings
    assert _t1b_note(published.runs, "GPU only", None) == "Energy measured: GPU only."
    measured = pd.DataFrame([{"run": run, **read} for run in "abc"])
    assert _t1b_note(runs, "whole machine", measured) == (
        "Energy measured: whole machine (cpu: rapl, gpu: nvml-counter, ram: rapl)."
    )
    one_estimated = pd.DataFrame([{"run": "a", **read}, {"run": "b", **read}, {"run": "c", **cpu_only}])
    note = _t1b_note(runs, "whole machine", one_estimated)
    assert note.startswith("Energy estimated, not measured: whole machine; 1 of 3 runs")
    assert "cpu: tdp-load-estimate" in note and "measured:" not in note.replace("not measured:", "")
    # GPU only counts the GPU, which every run read from NVML, whatever the CPU's estimate
    gpu_read = one_estimated.assign(**{"energy.method.gpu": "nvml-sampled"})
    gpu_read.loc[0, "energy.method.gpu"] = "nvml-counter"
    assert _t1b_note(runs, "GPU only", gpu_read) == (
        "Energy measured: GPU only (gpu: nvml-counter/nvml-sampled)."
    )
    untagged = pd.DataFrame({"run": list("abc")})  # runs recorded before the provenance tags
    assert "not known to be measured" in _t1b_note(runs, "whole machine", untagged)


def test_the_committed_cpu_stores_say_their_energy_is_estimated() -> None:
    for store, experiment in (("settings", "settings_cpu"), ("replication", "replication_cpu")):
        table = load_mlflow(f"sqlite:///{_DATA_DIR.parent / store / 'cpu' / 'mlflow.db'}", experiment)
        assert energy_label(table).startswith(
            f"Energy estimated, not measured: whole machine; {len(table.runs)} of {len(table.runs)} runs"
        )


def test_measured_methods_are_the_energy_packages_hardware_readings() -> None:
    from repro.energy import ranked_methods  # registers every meter's methods
    from repro.energy.measurement import is_estimate

    assert {method for method in ranked_methods() if not is_estimate(method)} == MEASURED_METHODS
