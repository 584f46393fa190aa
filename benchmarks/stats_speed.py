"""How fast the statistics are: `make paper-tables` end to end, and repro.stats on 100,000 runs.

Run with `python benchmarks/stats_speed.py`. Targets: paper tables under 15 s, the synthetic table under 60 s.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]


def paper_tables_seconds() -> tuple[float, float]:
    """Wall and CPU time of a fresh `python -m repro.paper` (tables and figures) on the published data."""
    with tempfile.TemporaryDirectory() as folder:
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "repro.paper",
                f"tables_dir={folder}/tables",
                f"figures_dir={folder}/figures",
            ],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        return wall, cpu


def synthetic_runs(n_runs: int = 100_000, n_groups: int = 20, seed: int = 0) -> pd.DataFrame:
    """A tidy runs table of `n_runs` runs in `n_groups` (architecture, environment) groups (4 x 5)."""
    rng = np.random.default_rng(seed)
    archs, envs = [f"arch{i}" for i in range(5)], [f"env{i}" for i in range(4)]
    group = rng.integers(0, n_groups, n_runs)
    arch, env = np.array(archs)[group % 5], np.array(envs)[group // 5]
    gflops = 0.1 * (1 + group % 5) ** 2
    energy = rng.lognormal(np.log(0.05 * (1 + group % 5)), 0.1)
    return pd.DataFrame(
        {
            "environment": env,
            "architecture": arch,
            "run": np.arange(n_runs).astype(str),
            "energy_j_per_image": energy,
            "gpu_usage_pct": rng.normal(40 + 5 * (group % 5), 3),
            "duration_ms_per_image": energy * 10 + rng.normal(0, 0.01, n_runs),
            "f1": np.clip(rng.normal(0.9 + 0.01 * (group % 5), 0.02), 0, 1),
            "accuracy": np.nan,
            "gflops": gflops,
            "params_m": gflops * 10,
            "gpu_name": env,
            "power_limit_w": 100.0 + 50 * (group // 5),
        }
    )


def synthetic_seconds() -> dict[str, float]:
    """Time repro.stats on the synthetic table: 20 groups in one comparison, then every analysis."""
    from repro.stats.analyses import analyse, compare

    runs = synthetic_runs()
    runs_one_env = runs.assign(environment="all")  # 20 groups in one Kruskal-Wallis/Dunn/Cliff comparison
    runs_one_env["architecture"] = runs["architecture"] + "@" + runs["environment"]
    timings = {}
    started = time.perf_counter()
    result = compare(
        runs_one_env,
        "energy_j_per_image",
        "architecture",
        "environment",
        "all",
        sorted(runs_one_env["architecture"].unique()),
    )
    timings["compare 20 groups (all tests, 190 pairs)"] = time.perf_counter() - started
    assert result.kruskal is not None and len(result.pairs) == 190
    started = time.perf_counter()
    analyse(runs)
    timings["analyse (RQ1, RQ2, correlations, Pareto, improvements)"] = time.perf_counter() - started
    return timings


def main() -> None:
    wall, cpu = paper_tables_seconds()
    print(
        f"make paper-tables (published data, tables + figures): {wall:.1f} s wall, {cpu:.1f} s CPU "
        "(target < 15 s)"
    )
    timings = synthetic_seconds()
    for name, value in timings.items():
        print(f"repro.stats on 100,000 runs, {name}: {value:.1f} s")
    print(f"repro.stats on 100,000 runs in 20 groups, total: {sum(timings.values()):.1f} s (target < 60 s)")


if __name__ == "__main__":
    main()
