"""The study's figures, drawn with matplotlib's Agg backend and saved as PNG and PDF.

The files carry no creation date or software version, so the same input gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from repro.stats.analyses import StudyResults  # noqa: E402
from repro.stats.tables import METRIC_LABELS, arch_label  # noqa: E402

_PNG_METADATA = {"Software": None}
_PDF_METADATA = {"CreationDate": None, "Producer": None, "Creator": None}
_DPI = 150


def save(figure: plt.Figure, folder: Path, name: str) -> list[Path]:
    """Save `figure` as NAME.png and NAME.pdf in `folder`, without timestamps, and close it."""
    folder.mkdir(parents=True, exist_ok=True)
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    figure.savefig(png, dpi=_DPI, metadata=_PNG_METADATA)
    figure.savefig(pdf, metadata=_PDF_METADATA)
    plt.close(figure)
    return [png, pdf]


def median_bars(results: StudyResults, metric: str) -> plt.Figure:
    """Grouped bars: the median of `metric` per architecture, one bar per environment."""
    table = (
        results.medians[metric]
        .unstack("environment")
        .reindex(index=list(results.architectures), columns=list(results.environments))
    )
    figure, axes = plt.subplots(figsize=(7, 3.6), layout="constrained")
    width = 0.8 / max(len(table.columns), 1)
    x = np.arange(len(table.index))
    for i, env in enumerate(table.columns):
        axes.bar(x + (i - (len(table.columns) - 1) / 2) * width, table[env].to_numpy(), width, label=env)
    axes.set_xticks(x, [arch_label(a) for a in table.index])
    axes.set_ylabel(f"median {METRIC_LABELS.get(metric, metric)}")
    axes.legend(title="environment", fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    return figure


def energy_f1_pareto(runs: pd.DataFrame, results: StudyResults, f1_floor: float) -> plt.Figure:
    """Energy against F1 (runs with F1 >= f1_floor) with the Pareto front: all runs, then per environment."""
    panels = ["all", *results.environments]
    figure, axes = plt.subplots(
        1, len(panels), figsize=(3.4 * len(panels), 3.4), layout="constrained", squeeze=False
    )
    usable = runs[runs["f1"] >= f1_floor]
    for ax, panel in zip(axes[0], panels, strict=True):
        subset = usable if panel == "all" else usable[usable["environment"] == panel]
        for colour, arch in enumerate(results.architectures):  # the same colour in every panel
            points = subset[subset["architecture"] == arch]
            if len(points):
                ax.scatter(
                    points["energy_j_per_image"],
                    points["f1"],
                    s=10,
                    alpha=0.6,
                    color=f"C{colour}",
                    label=arch_label(arch),
                )
        front = results.pareto[panel]
        ax.step(
            front["energy_j_per_image"],
            front["f1"],
            where="post",
            color="black",
            linewidth=1,
            label="Pareto front",
        )
        ax.set_title("all environments" if panel == "all" else panel, fontsize="medium")
        ax.set_xlabel(METRIC_LABELS["energy_j_per_image"])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("F1")
    axes[0][0].legend(fontsize="x-small")
    return figure


def energy_gflops(runs: pd.DataFrame, results: StudyResults) -> plt.Figure:
    """Energy per image against the architecture's GFLOPs, one marker colour per environment."""
    figure, axes = plt.subplots(figsize=(5, 3.6), layout="constrained")
    for env in results.environments:
        subset = runs[runs["environment"] == env]
        axes.scatter(subset["gflops"], subset["energy_j_per_image"], s=10, alpha=0.6, label=env)
    axes.set_xscale("log")
    axes.set_xlabel("GFLOPs (log scale)")
    axes.set_ylabel(METRIC_LABELS["energy_j_per_image"])
    axes.legend(title="environment", fontsize="small")
    axes.grid(alpha=0.3)
    return figure


def energy_boxes(runs: pd.DataFrame, results: StudyResults) -> plt.Figure:
    """Box plots of energy per image per architecture, one panel per environment."""
    envs = list(results.environments)
    figure, axes = plt.subplots(
        1, len(envs), figsize=(3.6 * len(envs), 3.6), layout="constrained", squeeze=False, sharey=True
    )
    for ax, env in zip(axes[0], envs, strict=True):
        subset = runs[runs["environment"] == env]
        archs = [a for a in results.architectures if (subset["architecture"] == a).any()]
        data = [
            subset.loc[subset["architecture"] == a, "energy_j_per_image"].dropna().to_numpy() for a in archs
        ]
        ax.boxplot(data, tick_labels=[arch_label(a) for a in archs])
        ax.tick_params(axis="x", labelrotation=45)
        ax.set_title(env, fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(METRIC_LABELS["energy_j_per_image"])
    return figure


def study_figures(runs: pd.DataFrame, results: StudyResults, folder: Path, f1_floor: float) -> list[Path]:
    """Draw and save every figure of the study; returns the paths written."""
    with plt.rc_context({"svg.hashsalt": "repro", "pdf.compression": 6}):
        paths = []
        for metric, name in (
            ("energy_j_per_image", "f1_energy_bars"),
            ("gpu_usage_pct", "f2_gpu_usage_bars"),
            ("duration_ms_per_image", "f3_duration_bars"),
            ("f1", "f4_f1_bars"),
        ):
            paths += save(median_bars(results, metric), folder, name)
        paths += save(energy_f1_pareto(runs, results, f1_floor), folder, "f5_energy_f1_pareto")
        paths += save(energy_gflops(runs, results), folder, "f6_energy_gflops")
        paths += save(energy_boxes(runs, results), folder, "f7_energy_boxes")
    return paths
