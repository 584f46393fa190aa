"""`python -m repro.estimate probe-table`: the probe against full runs on this machine (f_probe).

For each architecture with finished runs in an MLflow experiment (by default the 25 CPU runs of
`experiment=replication_cpu` in paper/replication/cpu/mlflow.db), the same job is probed here at the same
protocol (`experiment=replication_cpu`, one seed: seeds share one probe) and its projected J/image and run
energy are set against the full runs' mean measured ones. The ratio full / probe of each architecture is
what `repro.estimate.probe.BIAS_BAND` is taken from.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from repro import names
from repro.errors import UserError
from repro.stats.tables import Column, Table, fixed

#: The full runs the committed table compares with, and the protocol they ran.
DEFAULT_RUNS_URI = "sqlite:///paper/replication/cpu/mlflow.db"
DEFAULT_EXPERIMENT = "replication_cpu"
DEFAULT_OVERRIDES = ("experiment=replication_cpu",)


def full_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Per architecture: the FINISHED runs' count and mean J/image, run energy and ms/image."""
    from repro.estimate.features import experiment_runs

    raw = experiment_runs(tracking_uri, experiment, filter_string="attributes.status = 'FINISHED'")
    if raw is None:
        raise UserError(f"estimate.experiment={experiment!r} is not in {tracking_uri}")
    needed = [
        f"metrics.{names.ENERGY_J_PER_IMAGE}",
        f"metrics.{names.ENERGY_TOTAL_J}",
        f"tags.{names.TAG_MODEL}",
    ]
    if raw.empty or any(column not in raw for column in needed):
        raise UserError(f"experiment {experiment!r} in {tracking_uri} has no finished run with J/image")
    raw = raw.dropna(subset=needed)
    grouped = raw.groupby(f"tags.{names.TAG_MODEL}")
    return pd.DataFrame(
        {
            "runs": grouped.size(),
            "full_j_per_image": grouped[needed[0]].mean(),
            "full_energy_j": grouped[needed[1]].mean(),
            "full_ms_per_image": grouped[f"metrics.{names.DURATION_MS_PER_IMAGE}"].mean(),
        }
    ).rename_axis("architecture")


def probe_table(
    overrides: list[str], tracking_uri: str, experiment: str, seconds: float
) -> tuple[Table, pd.DataFrame]:
    """Probe every architecture of the experiment's runs at `overrides`' protocol; the table and its rows."""
    from repro.estimate.report import estimate_jobs

    full = full_runs(tracking_uri, experiment)
    architectures = ",".join(full.index)
    load_before = os.getloadavg()[0]
    rows = estimate_jobs(
        [*overrides, f"model={architectures}", "seed=0"], True, ["published"],
        {"probe": "true", "probe_seconds": str(seconds)},
    )  # fmt: skip
    load_after = os.getloadavg()[0]
    rows = rows.set_index("model").join(full, how="inner")
    frame = pd.DataFrame(
        {
            "architecture": rows.index,
            "probe_j_per_image": rows["energy_j_per_image"],
            "probe_low": rows["energy_j_per_image_low"],
            "probe_high": rows["energy_j_per_image_high"],
            "full_j_per_image": rows["full_j_per_image"],
            "error_pct": 100 * (rows["energy_j_per_image"] / rows["full_j_per_image"] - 1),
            "ratio": rows["full_j_per_image"] / rows["energy_j_per_image"],
            "covered": [
                "yes" if lo <= full <= hi else "no"
                for lo, full, hi in zip(
                    rows["energy_j_per_image_low"],
                    rows["full_j_per_image"],
                    rows["energy_j_per_image_high"],
                    strict=True,
                )
            ],
            "probe_energy_j": rows["energy_j"],
            "full_energy_j": rows["full_energy_j"],
            "energy_error_pct": 100 * (rows["energy_j"] / rows["full_energy_j"] - 1),
            "runs": rows["runs"].astype(int),
        }
    ).reset_index(drop=True)
    mape = {
        "architecture": "MAPE",
        "covered": "",
        "error_pct": float(frame["error_pct"].abs().mean()),
        "energy_error_pct": float(frame["energy_error_pct"].abs().mean()),
        "runs": int(frame["runs"].sum()),
    }
    frame = pd.concat([frame, pd.DataFrame([mape])], ignore_index=True)
    provenance = "; ".join(sorted(set(rows["energy_provenance"])))
    table = Table(
        "f_probe",
        "The probe on this machine against full runs of the same jobs "
        "(J/image of training and validation images)",
        frame,
        (
            Column("architecture", "Architecture", "Architecture"),
            Column("probe_j_per_image", "Probe J/image", "Probe J/image", fixed(4)),
            Column("probe_low", "90% low", "90\\% low", fixed(4)),
            Column("probe_high", "90% high", "90\\% high", fixed(4)),
            Column("full_j_per_image", "Full runs' J/image", "Full runs' J/image", fixed(4)),
            Column("error_pct", "Error (%)", "Error (\\%)", fixed(1)),
            Column("ratio", "Full / probe", "Full / probe", fixed(3)),
            Column("covered", "In interval", "In interval"),
            Column("probe_energy_j", "Probe run energy (J)", "Probe run energy (J)", fixed(0)),
            Column("full_energy_j", "Full runs' energy (J)", "Full runs' energy (J)", fixed(0)),
            Column("energy_error_pct", "Run energy error (%)", "Run energy error (\\%)", fixed(1)),
            Column("runs", "Full runs", "Full runs"),
        ),
        notes=(
            f"Probe: python -m repro.estimate probe-table estimate.probe_seconds={seconds:g} "
            f"({' '.join(overrides)}, one probe per architecture); full runs: the FINISHED runs of "
            f"experiment {experiment!r} in {_shown(tracking_uri)}, their means.",
            f"Energy: everything the jobs' meters measure ({provenance}). Run energy: the probe's J/image "
            "per phase x images per epoch x the epochs, which early stopping cannot shorten here; the full "
            "runs' energy_total_j (neither counts the warm-up, baselines or cooldowns).",
            f"Load average (1 min) before and after the probes: {load_before:.2f}, {load_after:.2f}; the "
            "full runs ran on an otherwise idle machine.",
            "Full / probe is what the probe's constant bias band (repro.estimate.probe.BIAS_BAND) is taken "
            "from, so 'In interval' on these same runs is not an independent check.",
            "Targets (issue 17): J/image MAPE <= 10%, run energy MAPE <= 15% where the epochs are fixed.",
        ),
    )
    return table, frame


def write_probe_table(
    out_dir: Path, overrides: list[str], tracking_uri: str, experiment: str, seconds: float
) -> list[Path]:
    """Probe, compare and write f_probe.{csv,md,tex} into `out_dir`."""
    table, frame = probe_table(overrides, tracking_uri, experiment, seconds)
    ratios = frame["ratio"].dropna()
    if len(ratios):
        print(
            f"full / probe J/image: {ratios.min():.3f}-{ratios.max():.3f} "
            f"(median {float(np.median(ratios)):.3f}) over {len(ratios)} architectures"
        )
    return table.write(out_dir)


def _shown(tracking_uri: str) -> str:
    """The URI as a note prints it: a store inside the checkout by its path from the checkout's root."""
    from repro.paths import repo_root

    return tracking_uri.replace(f"sqlite:///{repo_root()}/", "sqlite:///")
