"""The tidy runs table that every analysis reads, from the published data or from MLflow.

One row per training run, with fixed columns (see `RUN_COLUMNS`). Both sources also return the runs
they left out, each with its reason, so that nothing disappears silently.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repro import names
from repro.errors import UserError
from repro.factors import FACTORS, SETTING_FACTORS, Factor
from repro.stats.mlflow_sql import Keys, Runs

log = logging.getLogger(__name__)

#: The tidy table's columns. Metrics that a source lacks are NaN. The metric columns carry the names
#: that training runs record them under (`repro.names`).
RUN_COLUMNS: tuple[str, ...] = (
    "environment",  # training environment (published label, or the detected device and `gpu` profile)
    "architecture",  # model architecture (published name, or the `model` config choice)
    "run",  # the run's id within its source
    names.ENERGY_J_PER_IMAGE,
    names.GPU_USAGE_PCT,
    names.DURATION_MS_PER_IMAGE,
    names.F1,
    names.ACCURACY,
    names.GFLOPS,
    names.PARAMS_M,
    "gpu_name",
    "power_limit_w",  # NVML's limit, else the `gpu` profile's nominal TDP (T1b's description)
    *(f.column for f in SETTING_FACTORS),  # every declared setting factor's level (None/NaN: lacks it)
)
EXCLUDED_COLUMNS: tuple[str, ...] = ("environment", "architecture", "run", "reason")

#: The study's environments, with our short labels (as the paper writes them).
PUBLISHED_ENVIRONMENTS: dict[str, str] = {
    "Local Normal User": "Local N",
    "Local ML Engineer/Gamer": "Local ML",
    "Cloud": "Cloud",
}
#: Parameter counts (millions) of the Keras ImageNet models the study fine-tuned, from the Keras
#: Applications documentation; the published data has no such column.
PUBLISHED_PARAMS_M: dict[str, float] = {
    "mobilenet_v2": 3.5,
    "nasnet_mobile": 5.3,
    "resnet50": 25.6,
    "xception": 22.9,
    "vgg16": 138.4,
}
_PUBLISHED_REQUIRED = (
    "training environment",
    "architecture",
    "run",
    "energy (MJ)",
    "total seen images",
    "training duration (h)",
    "gpu usage (%)",
    "f1-score",
    "accuracy",
    "GFLOPs",
    "gpu model",
    "max power limit (W)",
)
_EXCLUSIONS_REQUIRED = ("training environment", "architecture", "run", "reason")
OUTLIER_POLICIES = ("none", "iqr3")
#: Metrics that the `iqr3` policy screens, as the authors did by hand (energy and GPU usage).
OUTLIER_METRICS: tuple[str, ...] = (names.ENERGY_J_PER_IMAGE, names.GPU_USAGE_PCT)
#: Tags that say how a run's energy was obtained; the report counts them (`RunsTable.provenance`).
PROVENANCE_TAG_PREFIX = names.energy_method_tag("")
#: The `energy.method.*` values that read the hardware: `repro.energy.measurement`'s RAPL and NVML methods
#: (that package imports torch, which the analysis may not). Any other method models the power: an estimate.
MEASURED_METHODS: frozenset[str] = frozenset({"rapl", "nvml-counter", "nvml-sampled"})
_NOT_MEASURED = "not-measured"  # a component no meter measured
#: What `RunsTable.energy_basis` says the energy counts.
GPU_ONLY, WHOLE_MACHINE = "GPU only", "whole machine"
#: What `load_mlflow` reads of a run, and nothing else: what the tables, the study's factors and the
#: report's measurement section use.
MLFLOW_KEYS = Keys(
    tags=tuple(
        dict.fromkeys(  # the settings' tags, once each
            (
                names.TAG_MODEL,
                names.TAG_GPU,
                names.TAG_KIND,
                "mlflow.parentRunId",
                names.TAG_DEVICE_NAME,
                names.TAG_DEVICE_POWER_LIMIT_W,
                names.TAG_ENERGY_ESTIMATED,
                *(f.tag for f in SETTING_FACTORS if f.tag),
            )
        )
    ),
    params=(names.PARAM_GPU_LABEL, names.PARAM_GPU_TDP_W, *(f.param for f in SETTING_FACTORS if f.param)),
    metrics=(
        names.ENERGY_J_PER_IMAGE,
        names.GPU_ENERGY_J_PER_IMAGE,
        names.GPU_USAGE_PCT,
        names.DURATION_MS_PER_IMAGE,
        names.F1,
        names.ACCURACY,
        names.GFLOPS,
        names.PARAMS_M,
        names.IMAGES_SEEN,
        names.TRAIN_IMAGES_SEEN,  # its absence marks a run recorded under the old per-image definition
        names.PAUSED_S,  # a paused run is left out, its pause billed as training
    ),
    tag_prefixes=(PROVENANCE_TAG_PREFIX,),
)


@dataclass(frozen=True)
class RunsTable:
    """Runs ready for analysis, the runs left out with their reasons, and what the energy counts.

    Attributes:
        runs: one row per run, columns `RUN_COLUMNS`.
        excluded: one row per run left out, columns `EXCLUDED_COLUMNS`.
        energy_basis: `GPU_ONLY` or `WHOLE_MACHINE`: what the energy counts (`energy_label` says how it
            was obtained).
        source: a short description of where the runs came from.
        parent_runs: how many sweep parent runs were skipped (they are not training runs, so they are
            not in `excluded`).
        provenance: MLflow runs only: how each run's energy was obtained, column `run` and the run's
            `energy_estimated` and `energy.method.*` tags (None where the run lacks one).
    """

    runs: pd.DataFrame
    excluded: pd.DataFrame
    energy_basis: str
    source: str
    parent_runs: int = 0
    provenance: pd.DataFrame | None = None


def _require(frame: pd.DataFrame, columns: tuple[str, ...] | list[str], where: str, hint: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(
            f"{where} lacks column {missing[0]!r}{' (and more)' if len(missing) > 1 else ''}; {hint}"
        )


def load_published(data_path: Path, exclusions_path: Path) -> RunsTable:
    """Read the authors' measurements and leave out the runs in their exclusions list.

    Args:
        data_path: the published parquet file.
        exclusions_path: CSV with the columns of `_EXCLUSIONS_REQUIRED`, one row per excluded run.
    """
    for path in (data_path, exclusions_path):
        if not path.is_file():
            raise UserError(
                f"{path} does not exist; point published_path/exclusions_path at the files in paper/data"
            )
    try:
        raw = pd.read_parquet(data_path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(
            f"{data_path} is not a readable parquet file ({_first_line(error)}); restore it from paper/data"
        ) from None
    _require(raw, _PUBLISHED_REQUIRED, str(data_path), "expected the authors' published data set")
    exclusions = pd.read_csv(exclusions_path)
    _require(
        exclusions,
        _EXCLUSIONS_REQUIRED,
        str(exclusions_path),
        "expected environment, architecture, run, reason",
    )
    unknown_envs = sorted(set(raw["training environment"]) - set(PUBLISHED_ENVIRONMENTS))
    if unknown_envs:
        raise UserError(
            f"{data_path} has unknown training environment {unknown_envs[0]!r}; expected one of "
            f"{', '.join(PUBLISHED_ENVIRONMENTS)}"
        )

    images = raw["total seen images"].astype(float)
    runs = pd.DataFrame(
        {
            "environment": raw["training environment"].map(PUBLISHED_ENVIRONMENTS),
            "architecture": raw["architecture"].astype(str),
            "run": raw["run"].astype(int).astype(str),
            names.ENERGY_J_PER_IMAGE: raw["energy (MJ)"] * 1e6 / images,
            names.GPU_USAGE_PCT: raw["gpu usage (%)"].astype(float),
            names.DURATION_MS_PER_IMAGE: raw["training duration (h)"] * 3.6e6 / images,
            names.F1: raw["f1-score"].astype(float),
            names.ACCURACY: raw["accuracy"].astype(float),
            names.GFLOPS: raw["GFLOPs"].astype(float),
            names.PARAMS_M: raw["architecture"].map(PUBLISHED_PARAMS_M).astype(float),
            "gpu_name": raw["gpu model"].astype(str),
            "power_limit_w": raw["max power limit (W)"].astype(float),
            **{f.column: _published_levels(raw, f) for f in SETTING_FACTORS},
        }
    )
    keys = pd.DataFrame(
        {
            "environment": exclusions["training environment"].map(PUBLISHED_ENVIRONMENTS),
            "architecture": exclusions["architecture"].astype(str),
            "run": exclusions["run"].astype(int).astype(str),
            "reason": exclusions["reason"].astype(str),
        }
    )
    merged = runs.merge(keys, on=["environment", "architecture", "run"], how="left", indicator=True)
    unmatched = len(keys) - int((merged["_merge"] == "both").sum())
    if unmatched:
        raise UserError(
            f"{exclusions_path} lists {unmatched} run(s) that are not in {data_path}; fix the list"
        )
    dropped = merged["_merge"] == "both"
    excluded = merged.loc[dropped, list(EXCLUDED_COLUMNS)].reset_index(drop=True)
    kept = runs.loc[~dropped.to_numpy()].reset_index(drop=True)
    log.debug(  # the entry points report what was read once the request is checked (repro.stats.study)
        "published data: %d runs, %d excluded as the authors listed, %d left",
        len(runs),
        len(excluded),
        len(kept),
    )
    return RunsTable(kept[list(RUN_COLUMNS)], excluded, GPU_ONLY, f"published data ({data_path.name})")


def load_mlflow(tracking_uri: str, experiment: str, parent_run_id: str | None = None) -> RunsTable:
    """Read the finished training runs of an MLflow experiment (optionally one sweep's children).

    The environment is the detected device (the run's `device.name` tag) with the `gpu` profile
    (`repro.gpu`) beside it, the architecture the run's `repro.model` tag. Energy is
    `gpu_energy_j_per_image` when every run has it, else `energy_j_per_image`. The power limit is
    NVML's (`device.power_limit_w`) where the run recorded one, else the profile's nominal TDP.
    Sweep parent runs are counted in `parent_runs`, not listed as excluded.

    Only the keys in `MLFLOW_KEYS` are read: from a SQL store with a narrow query
    (`repro.stats.mlflow_sql`), from any other store (or when that adapter declines) page by page
    through MLflow's client.
    """
    from repro.stats import mlflow_sql

    check_readable(tracking_uri)
    read = mlflow_sql.read_runs(tracking_uri, experiment, MLFLOW_KEYS, parent_run_id)
    if read is None:
        read = _client_read(tracking_uri, experiment, parent_run_id)
    return _tidy_mlflow(_wide(read), tracking_uri, experiment, parent_run_id)


def _client_read(tracking_uri: str, experiment: str, parent_run_id: str | None) -> Runs:
    """The runs through MLflow's client (any store), a page at a time, keeping only `MLFLOW_KEYS`."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        known = [e.name for e in client.search_experiments()] if found is None else []
    except mlflow.exceptions.MlflowException as error:
        raise UserError(
            f"mlflow.tracking_uri={tracking_uri} could not be opened: {_first_line(error)}"
        ) from None
    if found is None:
        raise UserError(
            f"mlflow.experiment={experiment!r} is not in {tracking_uri}; "
            f"known: {', '.join(sorted(known)) or 'none'}"
        )
    if parent_run_id:
        _check_parent_run(client, parent_run_id, found.experiment_id, experiment)
    filter_string = f"tags.mlflow.parentRunId = '{parent_run_id}'" if parent_run_id else ""
    keys = MLFLOW_KEYS
    read, token = Runs(), None
    while True:
        page = client.search_runs(
            [found.experiment_id], filter_string, max_results=_CLIENT_PAGE_RUNS, page_token=token
        )
        for run in page:
            run_id = run.info.run_id
            read.info.append((run_id, run.info.status, run.info.start_time))
            for key, value in run.data.tags.items():
                if key in keys.tags or key.startswith(keys.tag_prefixes):
                    read.values.setdefault(f"tags.{key}", {})[run_id] = value
            for kind, wanted, data in (
                ("params", keys.params, run.data.params),
                ("metrics", keys.metrics, run.data.metrics),
            ):
                for key in wanted:
                    if key in data:
                        read.values.setdefault(f"{kind}.{key}", {})[run_id] = data[key]
        token = page.token
        if not token:
            return read


_CLIENT_PAGE_RUNS = 1000


def _wide(read: Runs) -> pd.DataFrame:
    """One row per run, as `mlflow.search_runs` lays them out, sorted by start time then run id.

    Text columns (tags, params) are built as `mlflow.search_runs` builds them (a list with None where a
    run lacks the key, its dtype inferred by pandas), metrics are floats with NaN.
    """
    ids = [run_id for run_id, _, _ in read.info]
    raw = pd.DataFrame(
        {
            "run_id": ids,
            "status": [status for _, status, _ in read.info],
            "start_time": pd.Series([start for _, _, start in read.info], dtype=float),
        }
    )
    for column in sorted(read.values):
        found = read.values[column]
        if column.startswith("metrics."):
            raw[column] = np.array([found.get(run_id, np.nan) for run_id in ids], dtype=float)
        else:
            raw[column] = [found.get(run_id) for run_id in ids]  # the dtype pandas infers, as search_runs
    return raw.sort_values(["start_time", "run_id"], kind="stable").reset_index(drop=True)


def _tidy_mlflow(
    raw: pd.DataFrame, tracking_uri: str, experiment: str, parent_run_id: str | None
) -> RunsTable:
    """The runs table from the wide frame of `_wide`."""
    where = f"MLflow experiment {experiment!r}" + (f" (parent run {parent_run_id})" if parent_run_id else "")
    if raw.empty:
        raise UserError(
            f"{where} has no runs; train some with `python -m repro.train` or fix the experiment name"
        )

    model_tag, gpu_tag = f"tags.{names.TAG_MODEL}", f"tags.{names.TAG_GPU}"
    is_job = raw[model_tag].notna() if model_tag in raw else pd.Series(False, index=raw.index)
    parent_ids = set(raw["tags.mlflow.parentRunId"].dropna()) if "tags.mlflow.parentRunId" in raw else set()
    is_parent = ~is_job & (
        (_text_column(raw, f"tags.{names.TAG_KIND}") == names.KIND_SWEEP) | raw["run_id"].isin(parent_ids)
    )
    parent_runs = int(is_parent.sum())
    excluded_parts = []
    other = ~is_job & ~is_parent
    if other.any():
        excluded_parts.append(_excluded(raw[other], f"not a training job (no {names.TAG_MODEL} tag)"))
    unfinished = is_job & (raw["status"] != "FINISHED")
    if unfinished.any():
        excluded_parts.append(_excluded(raw[unfinished], "run did not finish"))
    paused = is_job & ~unfinished & (_metric_column(raw, names.PAUSED_S) > 0)
    for index in raw.index[paused]:  # its energy includes the pause (repro.train records it, not subtracts)
        pause_s = raw.at[index, f"metrics.{names.PAUSED_S}"]
        excluded_parts.append(_excluded(raw.loc[[index]], f"stopped for {pause_s:.0f} s, billed as training"))
    raw = raw[is_job & ~unfinished & ~paused].reset_index(drop=True)
    if raw.empty:
        raise UserError(
            f"{where} has no finished training runs ({parent_runs} sweep parent run(s), "
            f"{int(other.sum())} other run(s) without the {names.TAG_MODEL} tag, {int(unfinished.sum())} "
            "unfinished); train some with `python -m repro.train`"
        )
    energy_metric = f"metrics.{names.ENERGY_J_PER_IMAGE}"
    if energy_metric not in raw or raw[energy_metric].isna().all():
        raise UserError(
            f"{where}: none of its {len(raw)} training run(s) has the metric {names.ENERGY_J_PER_IMAGE!r}; "
            "train them with an energy meter (not energy=none)"
        )
    _require(raw, [gpu_tag, f"metrics.{names.F1}"], where, "log the runs with `python -m repro.train`")

    gpu_energy_metric = f"metrics.{names.GPU_ENERGY_J_PER_IMAGE}"
    use_gpu_energy = gpu_energy_metric in raw and raw[gpu_energy_metric].notna().all()
    energy_column = gpu_energy_metric if use_gpu_energy else energy_metric

    def metric(name: str) -> pd.Series:
        column = f"metrics.{name}"
        return raw[column].astype(float) if column in raw else pd.Series(np.nan, index=raw.index)

    profile = raw[gpu_tag].astype(str)
    device = _text_column(raw, f"tags.{names.TAG_DEVICE_NAME}")
    nvml_limit_w = pd.to_numeric(_text_column(raw, f"tags.{names.TAG_DEVICE_POWER_LIMIT_W}"), errors="coerce")
    nominal_tdp_w = pd.to_numeric(_text_column(raw, f"params.{names.PARAM_GPU_TDP_W}"), errors="coerce")
    runs = pd.DataFrame(
        {
            "environment": [
                profile_name if device_name in ("", profile_name) else f"{device_name} ({profile_name})"
                for device_name, profile_name in zip(device, profile, strict=True)
            ],
            "architecture": raw[model_tag].astype(str),
            "run": raw["run_id"].astype(str),
            names.ENERGY_J_PER_IMAGE: raw[energy_column].astype(float),
            names.GPU_USAGE_PCT: metric(names.GPU_USAGE_PCT),
            names.DURATION_MS_PER_IMAGE: metric(names.DURATION_MS_PER_IMAGE),
            names.F1: metric(names.F1),
            names.ACCURACY: metric(names.ACCURACY),
            names.GFLOPS: metric(names.GFLOPS),
            names.PARAMS_M: metric(names.PARAMS_M),
            "gpu_name": device.where(device != "", _text_column(raw, f"params.{names.PARAM_GPU_LABEL}")),
            "power_limit_w": nvml_limit_w.fillna(nominal_tdp_w),
            **{f.column: _run_levels(raw, f) for f in SETTING_FACTORS},
        }
    )
    # Before repro counted validation images (as the study did), a run's `images_seen` and every per-image
    # figure counted training images only; such a run logged no `train_images_seen`. Its figures cannot be
    # converted (its validation images are not on record), so it is left out rather than mixed in.
    old_definition = metric(names.IMAGES_SEEN).notna() & metric(names.TRAIN_IMAGES_SEEN).isna()
    if old_definition.any():
        reason = (
            f"per-image figures count training images only (no {names.TRAIN_IMAGES_SEEN}: recorded before "
            "repro counted validation images as the study did); train it again"
        )
        excluded_parts.append(_excluded(raw[old_definition.to_numpy()], reason))
        keep = ~old_definition.to_numpy()
        raw, runs = raw[keep].reset_index(drop=True), runs[keep].reset_index(drop=True)
        if runs.empty:
            raise UserError(
                f"{where}: every finished training run was recorded before repro counted validation images "
                f"in its per-image figures, as the study did (no {names.TRAIN_IMAGES_SEEN}); train them again"
            )
    tag_columns = [c for c in raw if c.startswith("tags.")]
    provenance_columns = [
        c
        for c in tag_columns
        if c.removeprefix("tags.") == names.TAG_ENERGY_ESTIMATED
        or c.removeprefix("tags.").startswith(PROVENANCE_TAG_PREFIX)
    ]
    provenance = pd.concat(
        [runs[["run"]], raw[provenance_columns].rename(columns=lambda c: c.removeprefix("tags."))], axis=1
    )
    # A run that saw no images has no energy per image (MLflow stores an infinite value as the largest float).
    energy = runs["energy_j_per_image"]
    no_energy_per_image = ~np.isfinite(energy) | (energy.abs() > 1e300)
    no_energy_per_image |= metric(names.IMAGES_SEEN).eq(0).to_numpy()
    if no_energy_per_image.any():
        reason = "no finite energy per image (no images seen)"
        excluded_parts.append(_excluded(raw[no_energy_per_image], reason))
        runs = runs[~no_energy_per_image].reset_index(drop=True)
        provenance = provenance[~no_energy_per_image].reset_index(drop=True)
        if runs.empty:
            raise UserError(f"{where} has no run with a finite energy per image (did any run see images?)")
    excluded = pd.concat(excluded_parts, ignore_index=True) if excluded_parts else _no_exclusions()
    log.debug(  # the entry points report what was read once the request is checked (repro.stats.study)
        "%s: %d training runs read (energy: %s), %d sweep parent run(s) skipped, %d left out",
        where,
        len(runs),
        energy_column,
        parent_runs,
        len(excluded),
    )
    return RunsTable(
        runs[list(RUN_COLUMNS)],
        excluded,
        GPU_ONLY if use_gpu_energy else WHOLE_MACHINE,
        f"MLflow {tracking_uri}, experiment {experiment!r}",
        parent_runs,
        provenance,
    )


def energy_label(table: RunsTable) -> str:
    """How the table's energy was obtained, as one sentence for the tables' notes.

    The published data is the authors' measurement (nvidia-smi). An MLflow run's energy is measured when
    every component it counts (the GPU alone under `GPU_ONLY`, else every component a meter took) was read
    from the hardware (`MEASURED_METHODS`, by its `energy.method.*` tags). One estimated run makes the
    sentence say "estimated", and a run without those tags is not called measured.
    """
    if table.provenance is None:
        return f"Energy measured: {table.energy_basis}."
    tags = table.provenance.set_index("run").reindex(table.runs["run"])
    components = ("gpu",) if table.energy_basis == GPU_ONLY else names.COMPONENTS
    taken_any = modelled = pd.Series(False, index=tags.index)
    readings: list[str] = []
    estimates: list[str] = []
    for component in components:
        column = names.energy_method_tag(component)
        if column not in tags:
            continue
        method = tags[column].fillna(_NOT_MEASURED).astype(str)
        taken = method != _NOT_MEASURED
        estimate = taken & ~method.isin(MEASURED_METHODS)
        taken_any, modelled = taken_any | taken, modelled | estimate
        for found, chosen in ((readings, taken & ~estimate), (estimates, estimate)):
            if chosen.any():
                found.append(f"{component}: {'/'.join(sorted(set(method[chosen])))}")
    runs, basis = len(tags), table.energy_basis
    if modelled.any():
        return (
            f"Energy estimated, not measured: {basis}; {int(modelled.sum())} of {runs} runs model a "
            f"component's power instead of reading it ({', '.join(estimates)})."
        )
    if not taken_any.all():
        return (
            f"Energy: {basis}; {int((~taken_any).sum())} of {runs} runs do not record how it was obtained "
            f"(no {PROVENANCE_TAG_PREFIX}* tag), so it is not known to be measured."
        )
    return f"Energy measured: {basis} ({', '.join(readings)})."


def _published_levels(raw: pd.DataFrame, factor: Factor) -> pd.Series:
    """A setting factor's level in every published run: its column, or the value the protocol fixed."""
    values = (
        raw[factor.published_column]
        if factor.published_column
        else pd.Series(factor.published_value, raw.index)
    )
    return pd.Series(
        [factor.level(v) for v in values], index=raw.index, dtype=float if factor.numeric else object
    )


def _run_levels(raw: pd.DataFrame, factor: Factor) -> pd.Series:
    """A setting factor's level in every MLflow run, from its param (else its tag); None/NaN: it lacks it."""
    column = f"params.{factor.param}" if factor.param else f"tags.{factor.tag}"
    values = raw[column] if column in raw else pd.Series(None, index=raw.index, dtype=object)
    return pd.Series(
        [factor.level(v) for v in values], index=raw.index, dtype=float if factor.numeric else object
    )


def _check_parent_run(client: Any, parent_run_id: str, experiment_id: str, experiment: str) -> None:
    """Fail in one line when `parent_run_id` is not a run of the experiment."""
    import mlflow

    try:
        parent = client.get_run(parent_run_id)
    except mlflow.exceptions.MlflowException:
        raise UserError(
            f"mlflow.parent_run_id={parent_run_id} is not a run in this store; take the id from the "
            "sweep folder's mlflow_parent_run_id file or the MLflow UI"
        ) from None
    if parent.info.experiment_id != experiment_id:
        raise UserError(
            f"mlflow.parent_run_id={parent_run_id} belongs to another experiment than {experiment!r}; "
            "set mlflow.experiment to the sweep's experiment"
        )


def _text_column(raw: pd.DataFrame, name: str) -> pd.Series:
    """A tag or param column as text, '' where a run lacks it (or the whole column when none has it)."""
    return raw[name].fillna("").astype(str) if name in raw else pd.Series("", index=raw.index)


def apply_outlier_policy(table: RunsTable, policy: str) -> RunsTable:
    """Leave out extreme outliers per (environment, architecture) group, listing each with its reason.

    Args:
        table: the runs so far.
        policy: "none", or "iqr3": a run is left out when one of `OUTLIER_METRICS` lies beyond
            3 x IQR below the first or above the third quartile of its group (groups of 4+ runs).
    """
    if policy not in OUTLIER_POLICIES:
        raise UserError(f"outlier_policy={policy} is not known; use one of {', '.join(OUTLIER_POLICIES)}")
    if policy == "none":
        return table
    runs = table.runs
    reasons = pd.Series("", index=runs.index)
    for _, group in runs.groupby(["environment", "architecture"], sort=False):
        if len(group) < 4:
            continue
        for metric in OUTLIER_METRICS:
            values = group[metric]
            q1, q3 = values.quantile(0.25), values.quantile(0.75)
            low, high = q1 - 3 * (q3 - q1), q3 + 3 * (q3 - q1)
            beyond = values[(values < low) | (values > high)]
            for index, value in beyond.items():
                note = f"{metric} {value:.6g} beyond 3xIQR fences [{low:.6g}, {high:.6g}] of its group"
                reasons[index] = f"{reasons[index]}; {note}" if reasons[index] else note
    out = reasons != ""
    new = runs.loc[out, ["environment", "architecture", "run"]].assign(reason=reasons[out])
    log.debug("outlier policy iqr3: %d run(s) left out", int(out.sum()))  # counted in what was read
    return RunsTable(
        runs.loc[~out].reset_index(drop=True),
        pd.concat([table.excluded, new], ignore_index=True) if len(new) else table.excluded,
        table.energy_basis,
        table.source,
        table.parent_runs,
        table.provenance,
    )


def environment_order(runs: pd.DataFrame) -> list[str]:
    """Environments from the least to the most powerful (by power limit, then name)."""
    return level_order(runs, FACTORS["environment"])


def architecture_order(runs: pd.DataFrame) -> list[str]:
    """Architectures from the cheapest to the costliest forward pass (by GFLOPs, then name)."""
    return level_order(runs, FACTORS["architecture"])


def level_order(runs: pd.DataFrame, factor: Factor) -> list[str]:
    """A factor's levels in the runs, in its declared order (`repro.factors.Factor.levels`).

    Declared levels come first; then by value for a numeric factor (its column holds text by then,
    `repro.stats.analyses.with_levels`), else by the median of its `order_by` column, else by name.
    """
    present = [str(level) for level in runs[factor.column].dropna().unique()]
    if factor.order_by:
        return _order(runs, factor.column, factor.order_by)
    declared = [level for level in factor.levels if level in present]
    rest = sorted(
        set(present) - set(declared),
        key=lambda level: (float(level), level) if factor.numeric else (0.0, level),
    )
    return declared + rest


def _order(runs: pd.DataFrame, column: str, by: str) -> list[str]:
    keys = runs.groupby(column)[by].median()
    return sorted(keys.index, key=lambda name: (math.inf if pd.isna(keys[name]) else float(keys[name]), name))


def _excluded(raw: pd.DataFrame, reason: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "environment": _text_column(raw, f"tags.{names.TAG_GPU}"),
            "architecture": _text_column(raw, f"tags.{names.TAG_MODEL}"),
            "run": raw["run_id"].astype(str),
            "reason": reason,
        }
    )


def _no_exclusions() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=str) for name in EXCLUDED_COLUMNS})


def check_readable(uri: str) -> None:
    """Fail in one line when the store cannot be read; unlike writing, reading must not create it."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file() or path.stat().st_size == 0:
            raise UserError(
                f"mlflow.tracking_uri={uri}: no MLflow database at {path}; fix the path or train first"
            )
        from repro.tracking import check_sqlite_file

        check_sqlite_file(path, f"mlflow.tracking_uri={uri}")
        return
    from repro.tracking import check_tracking_uri

    check_tracking_uri(uri)


def _metric_column(raw: pd.DataFrame, name: str) -> pd.Series:
    """A metric of every run, NaN where a run (or every run) lacks it."""
    column = f"metrics.{name}"
    return raw[column].astype(float) if column in raw else pd.Series(np.nan, index=raw.index)


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
