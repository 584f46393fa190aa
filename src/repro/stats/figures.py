"""The study's figures, drawn with matplotlib's Agg backend and saved as PNG and PDF.

The files carry no creation date or software version, so the same input gives the same bytes. A
scatter of more than `RASTER_POINTS` points is rasterised inside the PDF (its axes, labels and
lines stay vector), so that a figure of 15,000 runs is written in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from repro.factors import STUDY_FACTORS  # noqa: E402
from repro.stats.analyses import StudyResults  # noqa: E402
from repro.stats.tables import METRIC_LABELS  # noqa: E402

_PNG_METADATA = {"Software": None}
_PDF_METADATA = {"CreationDate": None, "Producer": None, "Creator": None}
_DPI = 150
FORMATS: tuple[str, ...] = ("png", "pdf")
#: A scatter with more points than this is rasterised in vector output (a PDF).
RASTER_POINTS = 2000


def save(figure: plt.Figure, folder: Path, name: str, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Save `figure` as NAME.<format> in `folder` for each of `formats`, without timestamps, and close it.

    Tick labels that overlap in the PNG are thinned or turned (`fit_tick_labels`), and the PNG saved again.
    """
    unknown = [suffix for suffix in formats if suffix not in FORMATS]
    if unknown:
        raise ValueError(f"unknown figure format {unknown[0]!r}; use png or pdf")
    folder.mkdir(parents=True, exist_ok=True)
    paths = {suffix: folder / f"{name}.{suffix}" for suffix in formats}
    if "png" in paths:
        figure.savefig(paths["png"], dpi=_DPI, metadata=_PNG_METADATA)
        if fit_tick_labels(figure):
            figure.savefig(paths["png"], dpi=_DPI, metadata=_PNG_METADATA)
    else:
        figure.draw_without_rendering()
        fit_tick_labels(figure)
    if "pdf" in paths:
        figure.savefig(paths["pdf"], metadata=_PDF_METADATA)
    plt.close(figure)
    return list(paths.values())


def overlapping_tick_labels(figure: plt.Figure) -> list[tuple[str, str]]:
    """Pairs of tick labels on the same axis that overlap, as the figure was last drawn (or saved)."""
    return [pair for axes in figure.axes for axis in (axes.xaxis, axes.yaxis) for pair in _overlaps(axis)]


def _overlaps(axis: Axis) -> list[tuple[str, str]]:
    """Overlapping labels among the shown ticks of `axis`; it reads the last layout and changes nothing."""
    renderer = axis.figure.canvas.get_renderer()
    low, high = sorted(axis.get_view_interval())
    labels = [
        (tick.get_loc(), tick.label1)
        for tick in (*axis.get_major_ticks(), *axis.get_minor_ticks())
        if tick.label1.get_visible() and tick.label1.get_text() and low <= tick.get_loc() <= high
    ]
    found = []
    for i, (loc_a, a) in enumerate(labels):
        for loc_b, b in labels[i + 1 :]:
            angle = np.radians(a.get_rotation())
            if axis.axis_name == "x" and np.sin(angle) != 0:
                # Turned labels are parallel strips a line high: apart when their gap across the strips is.
                x_a, x_b = (axis.axes.transData.transform((loc, 0))[0] for loc in (loc_a, loc_b))
                overlap = abs(x_a - x_b) * abs(np.sin(angle)) < renderer.points_to_pixels(a.get_fontsize())
            else:
                overlap = a.get_window_extent(renderer).overlaps(b.get_window_extent(renderer))
            if overlap:
                found.append((a.get_text(), b.get_text()))
    return found


def fit_tick_labels(figure: plt.Figure) -> bool:
    """Make overlapping tick labels of a drawn figure readable; return whether anything changed.

    A log axis is labelled at 1, 2 and 5 times each power of ten in plain numbers, or at the powers of
    ten alone if that is still too dense; category labels that still overlap turn by 45°.
    """
    if not overlapping_tick_labels(figure):
        return False
    for subs in ((1.0, 2.0, 5.0), (1.0,)):
        for axes in figure.axes:
            for axis in (axes.xaxis, axes.yaxis):
                if axis.get_scale() == "log" and _overlaps(axis):
                    axis.set_major_locator(LogLocator(subs=subs))
                    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
                    axis.set_minor_formatter(NullFormatter())
        figure.draw_without_rendering()
    for axes in figure.axes:
        if _overlaps(axes.xaxis):
            axes.tick_params(axis="x", labelrotation=45)
            for label in axes.get_xticklabels():
                label.set_horizontalalignment("right")
                label.set_rotation_mode("anchor")
    figure.draw_without_rendering()
    return True


#: A group of fewer runs than this is drawn as its points, not as a box.
_FEW_RUNS = 5
#: A bar whose median is this many times the smallest one dwarfs the rest: the axis turns logarithmic.
_LOG_RATIO = 10.0


def median_bars(runs: pd.DataFrame, results: StudyResults, metric: str) -> plt.Figure:
    """Grouped bars: the median of `metric` per architecture, one bar per environment.

    Each bar carries its interquartile range (whiskers) and its number of runs; a combination that was
    never run is marked "not run". The F1 axis starts near the data (said on the axis), and an axis
    where one bar dwarfs the rest is logarithmic.
    """
    first, second = results.factors
    archs, envs = list(results.architectures), list(results.environments)
    grouped = runs.dropna(subset=[metric]).groupby([first.column, second.column])[metric]
    medians, q1, q3, counts = grouped.median(), grouped.quantile(0.25), grouped.quantile(0.75), grouped.size()
    figure, axes = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    width = 0.8 / max(len(envs), 1)
    x = np.arange(len(archs))
    present = medians[medians > 0]
    log_axis = metric != "f1" and len(present) > 1 and present.max() / present.min() > _LOG_RATIO
    low = float(q1.min()) if len(q1) else 0.0
    baseline = max(0.0, np.floor(low * 20) / 20 - 0.05) if metric == "f1" else 0.0
    for i, env in enumerate(envs):
        offset = x + (i - (len(envs) - 1) / 2) * width
        keys = [(a, env) for a in archs]
        values = np.array([medians.get(k, np.nan) for k in keys])
        errors = np.array(
            [
                [values[j] - q1.get(k, np.nan) for j, k in enumerate(keys)],
                [q3.get(k, np.nan) - values[j] for j, k in enumerate(keys)],
            ]
        )
        bottom = baseline if metric == "f1" else 0.0
        axes.bar(
            offset,
            values - bottom,
            width,
            bottom=bottom,
            label=env,
            color=f"C{i}",
            yerr=errors,
            capsize=2,
            error_kw={"elinewidth": 0.8, "ecolor": "0.25"},
        )
        for j, key in enumerate(keys):
            if key not in counts:
                axes.text(
                    offset[j],
                    0.5,
                    "not run",
                    transform=axes.get_xaxis_transform(),
                    rotation=90,
                    ha="center",
                    va="center",
                    fontsize="x-small",
                    color="0.35",
                )
            else:
                axes.annotate(
                    f"n={counts[key]}",
                    (offset[j], q3[key]),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    rotation=90,
                    color="0.2",
                )
    axes.set_xticks(x, [first.level_label(a) for a in archs])
    if first.name not in STUDY_FACTORS:  # the study's levels name themselves; a setting's are bare numbers
        axes.set_xlabel(first.label)
    label = f"median {METRIC_LABELS.get(metric, metric)}"
    if log_axis:
        axes.set_yscale("log")
        label += " (log scale)"
    if metric == "f1":
        top = float(q3.max()) if len(q3) else 1.0
        axes.set_ylim(baseline, min(1.0, top) + 0.12 * (min(1.0, top) - baseline))
        label += f" (axis starts at {baseline:.2f})"
    else:
        ymin, ymax = axes.get_ylim()
        axes.set_ylim(ymin, ymax * (4 if log_axis else 1.15))  # room for the n labels
    axes.set_ylabel(label)
    axes.set_title("bars: median; whiskers: interquartile range; n: runs", fontsize="small", loc="left")
    figure.legend(title=second.noun_text, fontsize="small", loc="outside right upper")
    axes.grid(axis="y", alpha=0.3)
    return figure


def energy_f1_pareto(runs: pd.DataFrame, results: StudyResults, f1_floor: float) -> plt.Figure:
    """Energy against F1 (runs with F1 >= f1_floor) with the Pareto front: all runs, then per environment."""
    first, second = results.factors
    panels = ["all", *(() if results.one_factor else results.environments)]
    figure, axes = plt.subplots(
        1, len(panels), figsize=(3.4 * len(panels), 3.6), layout="constrained", squeeze=False, sharey=True
    )
    usable = runs[runs["f1"] >= f1_floor]
    for ax, panel in zip(axes[0], panels, strict=True):
        subset = usable if panel == "all" else usable[usable[second.column] == panel]
        for colour, arch in enumerate(results.architectures):  # the same colour in every panel
            points = subset[subset[first.column] == arch]
            if len(points):
                ax.scatter(
                    points["energy_j_per_image"],
                    points["f1"],
                    s=10,
                    alpha=0.6,
                    color=f"C{colour}",
                    label=first.level_label(arch),
                    rasterized=len(subset) > RASTER_POINTS,
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
        ax.set_title(f"all {second.noun_text}s" if panel == "all" else panel, fontsize="medium")
        ax.set_xlabel(METRIC_LABELS["energy_j_per_image"])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"F1 (runs with F1 ≥ {f1_floor:g}; shared axis)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize="small", loc="outside lower center", ncols=len(labels))
    return figure


def energy_gflops(runs: pd.DataFrame, results: StudyResults) -> plt.Figure:
    """Energy per image against the architecture's GFLOPs, one marker colour per environment.

    The GFLOPs axis is logarithmic when they span a factor of ten or more.
    """
    second = results.factors[1]
    figure, axes = plt.subplots(figsize=(5, 3.6), layout="constrained")
    for env in results.environments:
        subset = runs[runs[second.column] == env]
        axes.scatter(
            subset["gflops"],
            subset["energy_j_per_image"],
            s=10,
            alpha=0.6,
            label=env,
            rasterized=len(runs) > RASTER_POINTS,
        )
    gflops = runs["gflops"][runs["gflops"] > 0]
    if len(gflops) and gflops.max() / gflops.min() >= _LOG_RATIO:
        axes.set_xscale("log")
        axes.set_xlabel("GFLOPs (log scale)")
    else:
        axes.set_xlabel("GFLOPs")
    axes.set_ylabel(METRIC_LABELS["energy_j_per_image"])
    figure.legend(title=second.noun_text, fontsize="small", loc="outside right upper")
    axes.grid(alpha=0.3)
    return figure


def energy_boxes(runs: pd.DataFrame, results: StudyResults) -> plt.Figure:
    """Box plots of energy per image per architecture, one panel per environment.

    A group of fewer than `_FEW_RUNS` runs gets no box: its runs are drawn as points, and the axis then
    starts at zero, so that a gap between two single runs is not blown up to fill the panel.
    """
    first, second = results.factors
    envs = list(results.environments)
    width_in = max(3.6 * len(envs), 5.0)
    figure, axes = plt.subplots(
        1, len(envs), figsize=(width_in, 3.6), layout="constrained", squeeze=False, sharey=True
    )
    few = False
    for ax, env in zip(axes[0], envs, strict=True):
        subset = runs[runs[second.column] == env]
        archs = [a for a in results.architectures if (subset[first.column] == a).any()]
        data = [
            subset.loc[subset[first.column] == a, "energy_j_per_image"].dropna().to_numpy() for a in archs
        ]
        boxed = [i for i, values in enumerate(data) if len(values) >= _FEW_RUNS]
        if len(boxed) == len(data):
            ax.boxplot(data, tick_labels=[first.level_label(a) for a in archs])
        else:
            few = True
            if boxed:
                ax.boxplot([data[i] for i in boxed], positions=[i + 1 for i in boxed])
            for i, values in enumerate(data):
                if i not in boxed:
                    ax.scatter(np.full(len(values), i + 1), values, s=16, color="C0", zorder=3)
            ax.set_xticks(range(1, len(archs) + 1), [first.level_label(a) for a in archs])
            ax.set_xlim(0.5, len(archs) + 0.5)
        # Anchored at their right end, rotated labels stay under their box and inside the figure.
        ax.set_xticks(ax.get_xticks(), ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
        ax.set_title(env, fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(METRIC_LABELS["energy_j_per_image"])
    if few:
        axes[0][0].set_ylim(bottom=0, top=axes[0][0].get_ylim()[1] * 1.05)
        figure.suptitle(f"dots: single runs, for groups of fewer than {_FEW_RUNS} runs", fontsize="small")
    return figure


def interaction_lines(runs: pd.DataFrame, results: StudyResults) -> plt.Figure:
    """Median J/image per architecture, one line per environment: non-parallel lines are the interaction.

    An architecture that an environment never ran is left off that environment's line (and said so).
    """
    first, second = results.factors
    archs, envs = list(results.architectures), list(results.environments)
    medians = runs.groupby([first.column, second.column])["energy_j_per_image"].median()
    figure, axes = plt.subplots(figsize=(7, 4), layout="constrained")
    x = np.arange(len(archs))
    missing = []
    for i, env in enumerate(envs):
        values = np.array([medians.get((a, env), np.nan) for a in archs])
        axes.plot(x, values, marker="o", color=f"C{i}", label=env)
        missing += [
            f"{first.level_label(a)} on {env}" for a, v in zip(archs, values, strict=True) if np.isnan(v)
        ]
    axes.set_xticks(x, [first.level_label(a) for a in archs])
    if first.name not in STUDY_FACTORS:
        axes.set_xlabel(first.label)
    axes.set_ylim(bottom=0)
    axes.set_ylabel("median Energy (J/image)")
    title = f"{first.label} × {second.noun_text}: parallel lines would mean no interaction"
    if missing:
        title += f"\nnot run: {', '.join(missing)}"
    axes.set_title(title, fontsize="small", loc="left")
    axes.grid(alpha=0.3, which="both")
    figure.legend(title=second.noun_text, fontsize="small", loc="outside right upper")
    return figure


def study_figures(
    runs: pd.DataFrame,
    results: StudyResults,
    folder: Path,
    f1_floor: float,
    formats: tuple[str, ...] = FORMATS,
) -> list[Path]:
    """Draw and save every figure of the study in `formats`; returns the paths written.

    A one-factor study has no interaction figure (F8).
    """
    from repro.stats.analyses import with_levels

    runs, _ = with_levels(runs, results.factors)  # the levels as the analyses saw them
    with plt.rc_context({"svg.hashsalt": "repro", "pdf.compression": 6}):
        paths = []
        for metric, name in (
            ("energy_j_per_image", "f1_energy_bars"),
            ("gpu_usage_pct", "f2_gpu_usage_bars"),
            ("duration_ms_per_image", "f3_duration_bars"),
            ("f1", "f4_f1_bars"),
        ):
            paths += save(median_bars(runs, results, metric), folder, name, formats)
        paths += save(energy_f1_pareto(runs, results, f1_floor), folder, "f5_energy_f1_pareto", formats)
        paths += save(energy_gflops(runs, results), folder, "f6_energy_gflops", formats)
        paths += save(energy_boxes(runs, results), folder, "f7_energy_boxes", formats)
        if not results.one_factor:
            paths += save(interaction_lines(runs, results), folder, "f8_interaction", formats)
    return paths
