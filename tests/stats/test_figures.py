"""The study's figures on a first sweep's few runs: no overlapping tick labels, no box of one run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from repro import names
from repro.stats import figures
from repro.stats.analyses import StudyResults, analyse


def _runs(jobs: dict[str, tuple[float, float, int]]) -> pd.DataFrame:
    """A tidy runs table on the CPU: architecture -> (GFLOPs, J/image, runs)."""
    rows = [
        {"environment": "cpu", "architecture": arch, "run": f"{arch}-{seed}", names.GFLOPS: gflops,
         names.ENERGY_J_PER_IMAGE: energy + 0.001 * seed, names.GPU_USAGE_PCT: np.nan,
         names.DURATION_MS_PER_IMAGE: 100.0, names.F1: 0.6, names.ACCURACY: 0.6, names.PARAMS_M: 1.0,
         "gpu_name": "cpu", "power_limit_w": np.nan}
        for arch, (gflops, energy, n) in jobs.items()
        for seed in range(n)
    ]  # fmt: skip
    return pd.DataFrame(rows)


#: `make run` at 32 px: MobileNet V2 and ResNet-18 a factor of ten apart in GFLOPs, one run each.
FIRST_SWEEP = {"mobilenet_v2": (0.0039, 0.820, 1), "resnet18": (0.0371, 0.850, 1)}
#: Both figures' drawings for every figure of the report.
DRAWINGS: dict[str, Callable[[pd.DataFrame, StudyResults], plt.Figure]] = {
    "energy bars": lambda runs, results: figures.median_bars(runs, results, names.ENERGY_J_PER_IMAGE),
    "GPU usage bars": lambda runs, results: figures.median_bars(runs, results, names.GPU_USAGE_PCT),
    "duration bars": lambda runs, results: figures.median_bars(runs, results, names.DURATION_MS_PER_IMAGE),
    "F1 bars": lambda runs, results: figures.median_bars(runs, results, names.F1),
    "Pareto": lambda runs, results: figures.energy_f1_pareto(runs, results, 0.5),
    "GFLOPs": figures.energy_gflops,
    "boxes": figures.energy_boxes,
    "interaction": figures.interaction_lines,
}


@pytest.fixture(
    scope="module",
    params=[
        FIRST_SWEEP,
        {"mobilenet_v2": (0.0039, 0.82, 1), "resnet18": (0.06, 0.85, 2)},  # a log axis under two decades
        {f"a_rather_long_architecture_name_{i}": (0.01 * (i + 1), 0.8, 1) for i in range(8)},
    ],
    ids=["make-run", "log-axis", "long-names"],
)
def analysed(request: pytest.FixtureRequest) -> tuple[pd.DataFrame, StudyResults]:
    runs = _runs(request.param)
    return runs, analyse(runs)


@pytest.mark.parametrize("drawing", DRAWINGS)
def test_no_tick_labels_overlap_once_saved(
    analysed: tuple[pd.DataFrame, StudyResults], drawing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figure = DRAWINGS[drawing](*analysed)
    monkeypatch.setattr(figures.plt, "close", lambda _: None)  # keep the saved figure open to inspect it
    png, _ = figures.save(figure, tmp_path, "figure")
    assert figures.overlapping_tick_labels(figure) == []
    assert png.stat().st_size > 0
    monkeypatch.undo()
    plt.close(figure)


def test_overlapping_log_labels_are_found_then_thinned() -> None:
    figure, axes = plt.subplots(figsize=(5, 3.6), layout="constrained")
    axes.scatter([0.0039, 0.06], [0.82, 0.85])
    axes.set_xscale("log")  # matplotlib labels 4, 6 x 10^-3 and 2, 3, 4, 6 x 10^-2 side by side
    figure.draw_without_rendering()
    assert figures.overlapping_tick_labels(figure)
    assert figures.fit_tick_labels(figure)
    assert figures.overlapping_tick_labels(figure) == []
    shown = [t.get_text() for t in axes.xaxis.get_majorticklabels() if 0.0039 <= t.get_position()[0] <= 0.06]
    assert shown == ["0.005", "0.01", "0.02", "0.05"]
    plt.close(figure)


def test_single_runs_are_points_on_an_axis_from_zero() -> None:
    runs = _runs(FIRST_SWEEP)
    figure = figures.energy_boxes(runs, analyse(runs))
    axes = figure.axes[0]
    points = np.concatenate([c.get_offsets() for c in axes.collections])
    assert sorted(points[:, 1]) == pytest.approx([0.820, 0.850])
    assert axes.get_ylim()[0] == 0  # not zoomed to 0.815-0.855, where 4% looks like the whole panel
    plt.close(figure)


def test_boxes_of_many_runs_keep_their_zoom() -> None:
    runs = _runs({"mobilenet_v2": (0.0039, 0.820, 6), "resnet18": (0.0371, 0.850, 6)})
    figure = figures.energy_boxes(runs, analyse(runs))
    axes = figure.axes[0]
    assert len(axes.collections) == 0  # boxes, no points
    assert axes.get_ylim()[0] > 0.5
    plt.close(figure)
