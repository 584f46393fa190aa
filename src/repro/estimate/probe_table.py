"""`python -m repro.estimate probe-table`: the probe against full runs on this machine (f_probe).

For each architecture with finished runs in an MLflow experiment (by default the 25 CPU runs of
`experiment=replication_cpu` in paper/replication/cpu/mlflow.db), the same job is probed here at the same
protocol (`experiment=replication_cpu`, one seed: seeds share one probe) and its projected J/image and run
energy are set against the full runs' mean measured ones, twice:

- raw: the probe as measured, before any bias correction; the ratio full / probe of each architecture is
  what `repro.estimate.probe.CPU_FULL_OVER_PROBE` is taken from;
- corrected, leaving each architecture out (`loo_corrections`): the probe x the correction that the other
  architectures' ratios give (their geometric mean), its interval x their band. These errors are how
  wrong a corrected probe is on an architecture its correction has not seen.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from repro import names
from repro.errors import UserError
from repro.estimate.probe import CPU_EARLIER_FULL_OVER_PROBE, BiasCorrection, bias_correction
from repro.stats.tables import Column, Table, fixed

#: The full runs the committed table compares with, and the protocol they ran.
DEFAULT_RUNS_URI = "sqlite:///paper/replication/cpu/mlflow.db"
DEFAULT_EXPERIMENT = "replication_cpu"
DEFAULT_OVERRIDES = ("experiment=replication_cpu",)
#: The error columns the MAPE row averages (absolute values).
_ERRORS = ("error_pct", "corrected_error_pct", "energy_error_pct", "corrected_energy_error_pct")


def full_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Per architecture: the FINISHED runs' count, mean J/image, run energy and ms/image, and layout.

    The layout is the runs' `device.memory_format` tag; runs recorded before `training.memory_format`
    existed have none and trained contiguous, PyTorch's default, which was the only layout then.
    """
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
    layout_tag = f"tags.{names.TAG_DEVICE_MEMORY_FORMAT}"
    layouts = (
        raw[layout_tag].fillna("contiguous") if layout_tag in raw else pd.Series("contiguous", raw.index)
    )
    raw = raw.assign(memory_format=layouts)
    grouped = raw.groupby(f"tags.{names.TAG_MODEL}")
    return pd.DataFrame(
        {
            "runs": grouped.size(),
            "full_j_per_image": grouped[needed[0]].mean(),
            "full_energy_j": grouped[needed[1]].mean(),
            "full_ms_per_image": grouped[f"metrics.{names.DURATION_MS_PER_IMAGE}"].mean(),
            "memory_format": grouped["memory_format"].agg(lambda layouts: "/".join(sorted(set(layouts)))),
        }
    ).rename_axis("architecture")


def loo_corrections(
    ratios: pd.Series, earlier: dict[str, tuple[float, ...]] | None = None
) -> dict[str, BiasCorrection | None]:
    """Per architecture: the bias correction of the other architectures' full / probe ratios alone
    (leave one architecture out), its band also holding the other architectures' `earlier` ratios (from
    earlier runs of the table); None where no other architecture has a ratio."""
    earlier = earlier or {}
    corrections: dict[str, BiasCorrection | None] = {}
    for architecture in ratios.index:
        others = ratios.drop(architecture).dropna()
        before = [r for other, rs in earlier.items() if other != architecture for r in rs]
        corrections[architecture] = bias_correction(list(others), before) if len(others) else None
    return corrections


def probe_table(
    overrides: list[str], tracking_uri: str, experiment: str, seconds: float
) -> tuple[Table, pd.DataFrame]:
    """Probe every architecture of the experiment's runs at `overrides`' protocol; the table and its rows."""
    from repro.estimate.report import estimate_jobs

    full = full_runs(tracking_uri, experiment)
    architectures = ",".join(full.index)
    layouts = set(full["memory_format"])
    if len(layouts) != 1 or "/" in next(iter(layouts)):
        raise UserError(
            f"the full runs of {experiment!r} trained in more than one layout "
            f"({', '.join(sorted(layouts))}): a probe compares with runs of one training.memory_format"
        )
    # The probes train in the full runs' layout, so that the table compares like with like.
    overrides = [*overrides, f"training.memory_format={layouts.pop()}"]
    load_before = os.getloadavg()[0]
    rows = estimate_jobs(
        [*overrides, f"model={architectures}", "seed=0"], True, ["published"],
        {"probe": "true", "probe_seconds": str(seconds)},
    )  # fmt: skip
    load_after = os.getloadavg()[0]
    rows = rows.set_index("model").join(full, how="inner")
    # The probes as measured: estimate_jobs applied the estimator's correction, which is undone here.
    raw = rows["energy_j_per_image"] / rows["bias_correction"]
    raw_energy = rows["energy_j"] / rows["bias_correction"]
    ratio = rows["full_j_per_image"] / raw
    # On the CPU the band also holds the earlier tables' ratios, as the estimator's CPU correction does.
    loo = loo_corrections(ratio, CPU_EARLIER_FULL_OVER_PROBE if set(rows["gpu"]) == {"cpu"} else None)
    factor = pd.Series({a: c.factor if c else np.nan for a, c in loo.items()})
    spread = rows["spread_pct"] / 100
    low = pd.Series({a: c.band[0] if c else np.nan for a, c in loo.items()}) * (1 - spread)
    high = pd.Series({a: c.band[1] if c else np.nan for a, c in loo.items()}) * (1 + spread)
    corrected = raw * factor
    frame = pd.DataFrame(
        {
            "architecture": rows.index,
            "probe_j_per_image": raw,
            "full_j_per_image": rows["full_j_per_image"],
            "error_pct": 100 * (raw / rows["full_j_per_image"] - 1),
            "ratio": ratio,
            "loo_factor": factor,
            "corrected_j_per_image": corrected,
            "corrected_low": corrected * low,
            "corrected_high": corrected * high,
            "corrected_error_pct": 100 * (corrected / rows["full_j_per_image"] - 1),
            "covered": [
                "" if math.isnan(lo) else "yes" if lo <= full <= hi else "no"
                for lo, full, hi in zip(
                    corrected * low, rows["full_j_per_image"], corrected * high, strict=True
                )
            ],
            "full_energy_j": rows["full_energy_j"],
            "energy_error_pct": 100 * (raw_energy / rows["full_energy_j"] - 1),
            "corrected_energy_error_pct": 100 * (raw_energy * factor / rows["full_energy_j"] - 1),
            "others_cpu_pct": rows["others_cpu_pct"],
            "runs": rows["runs"].astype(int),
        }
    ).reset_index(drop=True)
    mape = {
        "architecture": "MAPE",
        "covered": "",
        **{column: float(frame[column].abs().mean()) for column in _ERRORS},
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
            Column("probe_j_per_image", "Raw probe J/image", "Raw probe J/image", fixed(4)),
            Column("full_j_per_image", "Full runs' J/image", "Full runs' J/image", fixed(4)),
            Column("error_pct", "Raw error (%)", "Raw error (\\%)", fixed(1)),
            Column("ratio", "Full / raw probe", "Full / raw probe", fixed(3)),
            Column("loo_factor", "LOO correction", "LOO correction", fixed(3)),
            Column("corrected_j_per_image", "Corrected J/image (LOO)", "Corrected J/image (LOO)", fixed(4)),
            Column("corrected_low", "90% low", "90\\% low", fixed(4)),
            Column("corrected_high", "90% high", "90\\% high", fixed(4)),
            Column("corrected_error_pct", "Corrected error (%)", "Corrected error (\\%)", fixed(1)),
            Column("covered", "In corrected interval", "In corrected interval"),
            Column("full_energy_j", "Full runs' energy (J)", "Full runs' energy (J)", fixed(0)),
            Column("energy_error_pct", "Raw run energy error (%)", "Raw run energy error (\\%)", fixed(1)),
            Column(
                "corrected_energy_error_pct",
                "Corrected run energy error (%)",
                "Corrected run energy error (\\%)",
                fixed(1),
            ),
            Column("others_cpu_pct", "Others' CPU (%)", "Others' CPU (\\%)", fixed(0)),
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
            "full runs ran on an otherwise idle machine. Others' CPU: the share of the machine's CPU time "
            "that other processes used while each probe measured; the probe's time, and on a CPU its "
            "estimated energy, grow with it.",
            "Raw: the probe as measured, before any correction. Corrected (LOO): the raw probe x the "
            "geometric mean of the OTHER architectures' full / raw probe ratios, its 90% interval x the step "
            "spread x their lowest and highest ratio over that mean, on the CPU also over the other "
            "architectures' ratios in earlier runs of this table (repro.estimate.probe."
            "CPU_EARLIER_FULL_OVER_PROBE); each architecture's own full runs take no part in its correction: "
            "its corrected error and 'In corrected interval' are out-of-sample. "
            "`python -m repro.estimate ... estimate.probe=true` on the CPU applies the correction of all the "
            "architectures (repro.estimate.probe.CPU_FULL_OVER_PROBE, the column 'Full / raw probe').",
            "Targets (issue 17): J/image MAPE <= 10%, run energy MAPE <= 15% where the epochs are fixed.",
        ),
    )
    return table, frame


def write_probe_table(
    out_dir: Path, overrides: list[str], tracking_uri: str, experiment: str, seconds: float
) -> list[Path]:
    """Probe, compare and write f_probe.{csv,md,tex} into `out_dir`."""
    table, frame = probe_table(overrides, tracking_uri, experiment, seconds)
    measured = frame.dropna(subset=["ratio"])
    if len(measured):
        ratios = measured["ratio"]
        mape = frame.loc[frame["architecture"] == "MAPE"].iloc[0]
        print(
            f"full / raw probe J/image: {ratios.min():.3f}-{ratios.max():.3f} "
            f"(median {float(np.median(ratios)):.3f}) over {len(ratios)} architectures; J/image MAPE raw "
            f"{mape['error_pct']:.1f}%, corrected leaving each architecture out "
            f"{mape['corrected_error_pct']:.1f}%"
        )
        pairs = ", ".join(f"{a!r}: {r:.3f}" for a, r in zip(measured["architecture"], ratios, strict=True))
        print(f"for a CPU probe: repro.estimate.probe.CPU_FULL_OVER_PROBE = {{{pairs}}}")
    return table.write(out_dir)


def _shown(tracking_uri: str) -> str:
    """The URI as a note prints it: a store inside the checkout by its path from the checkout's root."""
    from repro.paths import repo_root

    return tracking_uri.replace(f"sqlite:///{repo_root()}/", "sqlite:///")
