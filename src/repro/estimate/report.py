"""Estimates for every job of a request, before anything trains: the table, the sweep total, the CSV.

Energy is the GPU's, as in the study's data the estimator learns from. Per job:

- J/image: PRE's estimate with its split-conformal 90% interval, per image processed in training and
  validation passes, as the study counted them and as the run's `gpu_energy_j_per_image` does;
- epochs: a range for early stopping. Under the study's protocol (10 + 140 epochs, patience 20)
  it is the 5th-95th percentile of the published runs' trained epochs for that architecture
  (all architectures when it is not one of the study's), with the median as the point estimate;
  under any other protocol it runs from the first epoch at which early stopping can fire to the
  most epochs, with the most as the point;
- energy (kWh), duration (h) and gCO2e: point x median epochs; low: interval low x fewest
  epochs; high: interval high x most epochs.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from repro.config import CONF_DIR, Config
from repro.errors import UserError
from repro.estimate.features import JobFeatures, add_log_features, estimate_key, job_features, published_runs
from repro.estimate.model import Estimator, fit

if TYPE_CHECKING:
    from repro.estimate.probe import ProbeResult

#: CodeCarbon's world-average carbon intensity (gCO2e/kWh), used when the job sets none.
WORLD_AVERAGE_G_PER_KWH = 475.0
#: From this share of the machine's CPU used by other processes during a probe, its row's note warns.
BUSY_PCT = 10.0
_J_PER_KWH = 3.6e6
#: The CSV's columns after `model`, `gpu` and `source`: run metrics, each with `_low` and `_high`.
#: `energy_j_per_image` and `energy_j` are everything the job's meter measures: only a probe on this machine
#: measures them; PRE and the prior know the GPU alone (the study measured only the GPU), so theirs are empty.
CSV_METRICS = (
    "energy_j_per_image", "gpu_energy_j_per_image", "duration_ms_per_image", "energy_j", "energy_gpu_j",
    "duration_s", "emissions_g", "trained_epochs",
)  # fmt: skip
#: Where a row's per-image figures come from (the CSV's and the table's `source`).
SOURCES = {
    "published": "kernel ridge on the study's runs of this exact configuration",
    "mlflow": "kernel ridge on your own MLflow runs of this exact configuration",
    "prior": "the physical prior from the GPU's specs (repro.estimate.prior), its interval as wide as "
    "its error on the architectures and GPUs it had not seen",
    "probe": "the job's training step measured on this machine (repro.estimate.probe) with the job's own "
    "meters: everything they measure, not the GPU alone, corrected on the CPU for the probes' bias against "
    "full runs; interval: step spread x the probes' bias band x the epoch range",
}


def estimate_jobs(
    overrides: list[str], multirun: bool, sources: list[str], keys: dict[str, str]
) -> pd.DataFrame:
    """Check and describe every job, probe or fit PRE, print the table and the total; returns the rows.

    With `estimate.probe=true`, each distinct job whose device is on this machine is probed
    (`repro.estimate.probe`) under the machine-wide measurement lock; the others get PRE.
    """
    from repro.composition import register_configs
    from repro.estimate.probe import DEFAULT_PROBE_SECONDS
    from repro.preflight import compose_jobs, validate_job

    register_configs()
    probing = keys.get("probe") == "true"
    seconds = float(keys.get("probe_seconds", DEFAULT_PROBE_SECONDS))
    jobs = compose_jobs(overrides, multirun, CONF_DIR)
    checked: set[str] = set()
    cache: dict = {}
    # Jobs that differ only in the seed share one estimate: the first such job's config and features.
    distinct: dict[tuple, tuple[Config, JobFeatures]] = {}
    devices: dict[tuple, object] = {}  # key -> the torch device a probe runs on, or why it cannot
    job_keys = []
    for choices, cfg in jobs:
        validate_job(cfg, check_hardware=False, already_checked=checked)  # the GPU may be elsewhere
        architecture = choices.get("model") or str(cfg.model.name)
        key = estimate_key(cfg, architecture)
        if key not in distinct:
            if probing:
                devices[key] = _probe_device(cfg)
            probed = probing and not isinstance(devices[key], str)  # a probed job needs no GPU specs
            distinct[key] = (cfg, job_features(cfg, architecture, cache, not probed))
        job_keys.append(key)
    probes = _run_probes(distinct, devices, seconds) if probing else {}
    estimates = {
        key: _probe_estimate(job, cfg, probes[key]) for key, (cfg, job) in distinct.items() if key in probes
    }
    others = {key: value for key, value in distinct.items() if key not in probes}
    n_runs, estimator = 0, None
    if others:
        runs = training_runs(sources, keys)
        n_runs, estimator = len(runs), fit(runs, selection=keys.get("selection", "random"))
        published_epochs = runs.loc[runs["source"] == "published", ["architecture", "epochs"]]
        predicted = _per_image(list(others.values()), runs, estimator)
        for (key, (_, job)), (source, per_image) in zip(others.items(), predicted, strict=True):
            estimates[key] = _estimate(job, per_image, source, estimator, published_epochs)
            if isinstance(devices.get(key), str):
                estimates[key]["note"] = "; ".join(filter(None, (devices[key], estimates[key]["note"])))
    rows = pd.DataFrame([estimates[key] for key in job_keys])  # one row per job, the sweep's order
    _print(rows, n_runs)
    if keys.get("csv"):
        _write_csv(rows, Path(keys["csv"]))
    return rows


def _probe_device(cfg: Config) -> object:
    from repro.estimate.probe import probe_device

    device, reason = probe_device(cfg)
    return device if device is not None else reason


def _describe(cfg: Config, job: JobFeatures) -> str:
    return f"model={job.architecture} gpu={job.gpu} training.batch_size={cfg.training.batch_size}"


def _run_probes(distinct: dict, devices: dict, seconds: float) -> dict:
    """Probe every job that runs on this machine, one after another, under the measurement lock."""
    from repro.energy import measurement_lock
    from repro.estimate.probe import probe_job

    todo = [key for key in distinct if not isinstance(devices[key], str)]
    if not todo:
        return {}
    results: dict = {}
    idle_power_w = None
    with measurement_lock(any(distinct[key][0].energy.lock for key in todo)):
        for key in todo:
            cfg, job = distinct[key]
            print(
                f"probing {_describe(cfg, job)} on {devices[key]} for {seconds:g} s per phase",
                file=sys.stderr,
            )
            results[key] = probe_job(cfg, devices[key], seconds, _describe(cfg, job), idle_power_w)
            idle_power_w = results[key].idle_power_w
    return results


def _probe_estimate(job: JobFeatures, cfg: Config, result: ProbeResult) -> dict:
    """One probed job's row: what the probe measured here, projected to the run's epochs."""
    from repro.estimate.probe import project

    epochs, epochs_low, epochs_high, how = epoch_range(job, _published_epochs())
    projected = project(
        result, job.train_images_per_epoch, job.val_images_per_epoch, cfg.training.head_epochs,
        (epochs, epochs_low, epochs_high),
    )  # fmt: skip
    intensity = job.intensity_g_per_kwh if job.intensity_g_per_kwh is not None else WORLD_AVERAGE_G_PER_KWH
    row: dict = {"model": job.architecture, "gpu": job.gpu, "source": "probe"}
    for metric in ("energy_j_per_image", "gpu_energy_j_per_image", "duration_ms_per_image", "energy_j"):
        for suffix in ("", "_low", "_high"):
            row[f"{metric}{suffix}"] = projected[f"{metric}{suffix}"]
    for suffix in ("", "_low", "_high"):
        row[f"energy_gpu_j{suffix}"] = projected[f"gpu_energy_j{suffix}"]
    for suffix in ("", "_low", "_high"):
        row[f"duration_s{suffix}"] = projected[f"duration_s{suffix}"]
    for suffix in ("", "_low", "_high"):
        row[f"emissions_g{suffix}"] = projected[f"energy_j{suffix}"] / _J_PER_KWH * intensity
    row.update(trained_epochs=epochs, trained_epochs_low=epochs_low, trained_epochs_high=epochs_high)
    row.update(overhead_j=projected["overhead_j"], warmup_j=projected["warmup_j"])
    row["epochs_from"] = how
    row["carbon_intensity_g_per_kwh"] = intensity
    row["out_of_distribution"] = ""
    row["energy_provenance"] = result.provenance
    row.update(bias_correction=projected["bias_correction"], spread_pct=projected["spread_pct"])
    row["note"] = f"probed on {result.device}, step spread ±{projected['spread_pct']:.1f}%"
    if projected["bias_correction"] != 1.0:
        row["note"] += f", x{projected['bias_correction']:.3f} for the probes' bias against full runs there"
    row["others_cpu_pct"] = 100 * result.others_cpu_share
    if row["others_cpu_pct"] >= BUSY_PCT:
        row["note"] += (
            f", other processes used {row['others_cpu_pct']:.0f}% of the CPU meanwhile: probe an idle machine"
        )
    return row


def _published_epochs() -> pd.DataFrame:
    return published_runs()[["architecture", "epochs"]]


def training_runs(sources: list[str], keys: dict[str, str]) -> pd.DataFrame:
    """The runs the estimator learns from: the published ones and/or your own MLflow runs."""
    parts = []
    if "published" in sources:
        parts.append(published_runs().assign(source="published"))
    if "mlflow" in sources:
        from repro.estimate.features import mlflow_runs

        own = mlflow_runs(keys.get("tracking_uri", "sqlite:///mlflow.db"), keys["experiment"])
        if own.empty:
            print(
                "note: no MLflow run has the GPU power, duration and GPU specs the fit needs", file=sys.stderr
            )
        else:
            parts.append(own.assign(source="mlflow"))
    if not parts:
        raise UserError("no runs to fit the estimator on; use estimate.sources=[published] or train on a GPU")
    return pd.concat(parts, ignore_index=True)


def epoch_range(job: JobFeatures, published_epochs: pd.DataFrame) -> tuple[int, int, int, str]:
    """(point, low, high, how it was chosen) for the number of epochs the job will train."""
    if job.paper_protocol and len(published_epochs):
        same = published_epochs[published_epochs["architecture"] == job.architecture]["epochs"]
        pool, which = (
            (same, job.architecture) if len(same) else (published_epochs["epochs"], "all architectures")
        )
        low, point, high = (int(round(v)) for v in np.percentile(pool.to_numpy(float), [5, 50, 95]))
        clip = lambda e: min(max(e, job.earliest_epochs), job.max_epochs)  # noqa: E731
        return clip(point), clip(low), clip(high), f"published runs' epochs ({which}), 5th-95th percentile"
    return job.max_epochs, job.earliest_epochs, job.max_epochs, "earliest early stop to the most epochs"


def _per_image(
    described: list[tuple[Config, JobFeatures]], runs: pd.DataFrame, estimator: Estimator
) -> list[tuple[str, pd.Series]]:
    """(source, per-image prediction) of each job: the kernel ridge where its exact configuration was
    measured, else the physical prior, with the interval of what the prior has not seen."""
    from repro.estimate.prior import fit_prior, job_frame, model_workload, study_frame

    measured = runs.groupby(["architecture", "gpu"])["source"].first().to_dict()
    study = runs[runs["source"] == "published"]
    out: list[tuple[str, pd.Series]] = []
    prior, workloads = None, {}
    for cfg, job in described:
        source = measured.get((job.architecture, job.gpu))
        if source is not None and not estimator.out_of_distribution(job.architecture, job.gpu, job.values):
            features = add_log_features(pd.DataFrame([job.values]))
            out.append((source, estimator.predict(features).iloc[0]))
            continue
        if prior is None:
            prior = fit_prior(study_frame(published_runs()))
        activations_m, layers = model_workload(cfg.model, int(cfg.dataset.image_size), workloads)
        workload = {**job.values, "activations_m": activations_m, "layers": layers}
        frame = job_frame(cfg.gpu, workload, job.precision)
        unseen = {"architecture"} if job.architecture not in set(study["architecture"]) else set()
        unseen |= {"GPU"} if job.gpu not in set(study["gpu"]) else set()
        predicted = prior.predict(frame, frozenset(unseen)).iloc[0]
        predicted["note"] = prior.widened_note(frozenset(unseen))  # an interval wider than calibrated says so
        out.append(("prior", predicted))
    return out


def _estimate(
    job: JobFeatures, predicted: pd.Series, source: str, estimator: Estimator, published_epochs: pd.DataFrame
) -> dict:
    """One job's row, from its features and the per-image prediction for them (from `source`)."""
    epochs, epochs_low, epochs_high, how = epoch_range(job, published_epochs)
    processed = job.train_images_per_epoch + job.val_images_per_epoch  # the study counted both

    def energy_j(per_image: float, n_epochs: int) -> float:
        return per_image * n_epochs * processed

    def duration_s(ms: float, n_epochs: int) -> float:
        return ms / 1000 * n_epochs * processed

    intensity = job.intensity_g_per_kwh if job.intensity_g_per_kwh is not None else WORLD_AVERAGE_G_PER_KWH
    row = {"model": job.architecture, "gpu": job.gpu, "source": source}
    energy = {
        "": energy_j(predicted["j_per_image"], epochs),
        "_low": energy_j(predicted["j_per_image_low"], epochs_low),
        "_high": energy_j(predicted["j_per_image_high"], epochs_high),
    }
    duration = {
        "": duration_s(predicted["ms_per_image"], epochs),
        "_low": duration_s(predicted["ms_per_image_low"], epochs_low),
        "_high": duration_s(predicted["ms_per_image_high"], epochs_high),
    }
    for suffix in ("", "_low", "_high"):
        row[f"energy_j_per_image{suffix}"] = math.nan  # only a probe on this machine measures it
        row[f"energy_j{suffix}"] = math.nan
        # The prior's and the kernel ridge's per-image figures have the run metric's definition.
        row[f"gpu_energy_j_per_image{suffix}"] = predicted[f"j_per_image{suffix}"]
        row[f"duration_ms_per_image{suffix}"] = predicted[f"ms_per_image{suffix}"]
    for suffix in ("", "_low", "_high"):
        row[f"energy_gpu_j{suffix}"] = energy[suffix]
    for suffix in ("", "_low", "_high"):
        row[f"duration_s{suffix}"] = duration[suffix]
    for suffix in ("", "_low", "_high"):
        row[f"emissions_g{suffix}"] = energy[suffix] / _J_PER_KWH * intensity
    row.update(trained_epochs=epochs, trained_epochs_low=epochs_low, trained_epochs_high=epochs_high)
    row["epochs_from"] = how
    row["carbon_intensity_g_per_kwh"] = intensity
    row["out_of_distribution"] = "; ".join(
        estimator.out_of_distribution(job.architecture, job.gpu, job.values)
    )
    row.update(overhead_j=math.nan, warmup_j=math.nan, energy_provenance="", note=predicted.get("note", ""))
    return row


def _interval(value: float, low: float, high: float, digits: int) -> str:
    def show(v: float) -> str:
        return "inf" if math.isinf(v) else f"{v:.{digits}f}"

    return f"{show(value)} [{show(low)}-{show(high)}]"


def _shown(rows: pd.DataFrame) -> pd.DataFrame:
    """Each row's energy as its source knows it: a probe's is everything its meter measures, the others'
    the GPU's (`J/image*` and `J*` with `_low`, `_high`)."""
    probe = rows["source"] == "probe"
    shown = pd.DataFrame(index=rows.index)
    for suffix in ("", "_low", "_high"):
        shown[f"j_per_image{suffix}"] = rows[f"energy_j_per_image{suffix}"].where(
            probe, rows[f"gpu_energy_j_per_image{suffix}"]
        )
        shown[f"energy_j{suffix}"] = rows[f"energy_j{suffix}"].where(probe, rows[f"energy_gpu_j{suffix}"])
    return shown


def _print(rows: pd.DataFrame, n_runs: int) -> None:
    from repro.estimate.prior import WIDENED_NOTE

    shown = _shown(rows)
    widened = rows["note"].str.contains(WIDENED_NOTE, regex=False).to_numpy()
    table = pd.DataFrame(
        {
            "model": rows["model"],
            "gpu": rows["gpu"],
            "source": rows["source"],
            "J/image [90%]": [
                _interval(r.j_per_image, r.j_per_image_low, r.j_per_image_high, 3) + ("*" if widen else "")
                for r, widen in zip(shown.itertuples(), widened, strict=True)
            ],
            "epochs": [
                f"{r.trained_epochs} [{r.trained_epochs_low}-{r.trained_epochs_high}]"
                for r in rows.itertuples()
            ],
            "kWh": [
                _interval(
                    r.energy_j / _J_PER_KWH, r.energy_j_low / _J_PER_KWH, r.energy_j_high / _J_PER_KWH, 4
                )
                for r in shown.itertuples()
            ],
            "hours": [
                _interval(r.duration_s / 3600, r.duration_s_low / 3600, r.duration_s_high / 3600, 2)
                for r in rows.itertuples()
            ],
            "gCO2e": [
                _interval(r.emissions_g, r.emissions_g_low, r.emissions_g_high, 1) for r in rows.itertuples()
            ],
            "OOD": [
                "yes: " + r.out_of_distribution if r.out_of_distribution else "no" for r in rows.itertuples()
            ],
        }
    )
    probed = (rows["source"] == "probe").any()
    what = "energy" if probed else "GPU energy"
    fitted = f"; kernel ridge fitted on {n_runs} runs where the configuration was measured" if n_runs else ""
    print(f"Estimated {what} before training ([low-high]: 90% interval x the epoch range{fitted})")
    print(table.to_string(index=False))
    energy = {suffix: shown[f"energy_j{suffix}"].sum() / _J_PER_KWH for suffix in ("", "_low", "_high")}
    total = {
        k: rows[k].sum()
        for k in ("duration_s", "duration_s_low", "duration_s_high", "emissions_g", "emissions_g_low",
                  "emissions_g_high")
    }  # fmt: skip
    print(
        f"Sweep total ({len(rows)} jobs): "
        f"{_interval(energy[''], energy['_low'], energy['_high'], 4)} kWh, "
        f"{_interval(total['duration_s'] / 3600, total['duration_s_low'] / 3600, total['duration_s_high'] / 3600, 2)} h, "  # noqa: E501
        f"{_interval(total['emissions_g'], total['emissions_g_low'], total['emissions_g_high'], 1)} gCO2e "
        "(bounds are the sums of the jobs' bounds)"
    )
    if probed:
        overhead_kj = (rows["overhead_j"].fillna(0).sum() + rows["warmup_j"].fillna(0).max()) / 1e3
        print(
            "Overheads outside the runs' energy (the idle baselines and cooldowns at the measured idle "
            f"power, one warm-up at the training power): {overhead_kj:.2f} kJ"
        )
        for provenance in sorted(set(rows.loc[rows["source"] == "probe", "energy_provenance"])):
            print(f"probe energy: {provenance}")
    for source in sorted(set(rows["source"])):
        print(f"source {source}: {SOURCES[source]}")
    for note in dict.fromkeys(rows.loc[rows["note"].str.startswith("not probed"), "note"]):
        print(note.removesuffix(f"; {WIDENED_NOTE}"))
    if widened.any():
        print(f"*: {WIDENED_NOTE}")
    for how in sorted(set(rows["epochs_from"])):
        print(f"epochs: {how}")
    intensities = sorted(set(rows["carbon_intensity_g_per_kwh"]))
    measured = (
        "the probes' energy is everything their meters measure; the others' the GPU only, as the study"
        if probed
        else "GPU energy only, as the study"
    )
    print(
        f"gCO2e at {', '.join(f'{i:g}' for i in intensities)} gCO2e/kWh (energy.carbon_intensity_g_per_kwh, "
        f"else CodeCarbon's world average {WORLD_AVERAGE_G_PER_KWH:g}); {measured} measured"
    )
    if (rows["out_of_distribution"] != "").any():
        print(
            "OOD: outside what the study measured; the prior's interval is widened for an unseen "
            "architecture and/or GPU; an unseen data set, batch or image size is in no validation split"
        )


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _write_csv(rows: pd.DataFrame, path: Path) -> None:
    columns = ["model", "gpu", "source"] + [f"{m}{s}" for m in CSV_METRICS for s in ("", "_low", "_high")]
    columns += ["overhead_j", "energy_provenance", "out_of_distribution", "note"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows[columns].itertuples(index=False):
            writer.writerow([_cell(v) for v in row])
    print(f"wrote {path}")
