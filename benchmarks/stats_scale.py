"""How the analysis scales: repro.paper and repro.report on MLflow stores of 150 to 15,000 runs.

    python benchmarks/stats_scale.py [--sizes 150,1500,15000] [--repo PATH] [--no-report]

Each store is an MLflow SQLite database of finished training runs that look like `repro.train`'s:
5 architectures x 3 GPU profiles, the flattened resolved config as params, the provenance and energy
tags, the final metrics and a short per-epoch history, with the names from `repro.names`. Fifteen
template runs (one per combination) and a sweep parent are logged through MLflow's client; the
store of N runs is then written by copying the templates' rows in SQL, with per-run noise on every
metric. Stores are cached under /tmp/repro-stats-scale (delete the folder to rebuild them).

For each size it prints the wall time, CPU time and peak memory (max RSS) of `python -m repro.paper
source=mlflow` and `python -m repro.report source=mlflow`, each a fresh process, and the share of
repro.paper's time that the load (`repro.stats.runs.load_mlflow`, imports included) takes.
`--repo` measures another checkout's code (e.g. a `git worktree` of an earlier commit) on the same
stores. Targets (issue 21): at 15,000 runs repro.paper <= 15 s and <= 1 GB, repro.report <= 25 s.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "repro-stats-scale-v3"  # v3: runs record train_images_seen, paused_s 0
#: Metrics copied without noise: a model's size and the images a run processed do not vary by seed.
_EXACT_METRICS = ("gflops", "params_m", "images_seen", "train_images_seen")
EXPERIMENT = "scale"
#: The study's five architectures and three environments (conf/model, conf/gpu).
ARCHITECTURES = ("mobilenet_v2", "nasnet_mobile", "resnet50", "vgg16", "xception")
GPUS = {
    "gtx750ti": "NVIDIA GeForce GTX 750 Ti",
    "rtx3070": "NVIDIA GeForce RTX 3070",
    "rtx3090": "NVIDIA GeForce RTX 3090",
}
_STORE_VERSION = 1  # bump when the store's content changes, so cached stores are rebuilt
_EPOCHS = 5


def _template_fields(architecture: str, gpu: str, rng: np.random.Generator) -> tuple[dict, dict, dict]:
    """(params, tags, final metrics) of one training run of `architecture` on the `gpu` profile."""
    from repro import names
    from repro.composition import register_configs
    from repro.config import CONF_DIR
    from repro.preflight import compose_jobs
    from repro.tracking import flatten_config

    register_configs()
    ((_, cfg),) = compose_jobs([f"model={architecture}", f"gpu={gpu}"], False, CONF_DIR)
    params = flatten_config(cfg)
    arch_index, gpu_index = ARCHITECTURES.index(architecture), list(GPUS).index(gpu)
    energy = 0.02 * (1 + arch_index) * (1.5 - 0.4 * gpu_index)
    tags = {
        names.TAG_MODEL: architecture,
        names.TAG_GPU: gpu,
        names.TAG_SEED: "0",
        names.TAG_GIT_SHA: "0" * 40,
        names.TAG_HOST: "node01",
        names.TAG_CPU_MODEL: "AMD EPYC 7763",
        names.TAG_PYTHON: "3.11.9",
        names.TAG_TORCH_VERSION: "2.4.0",
        names.TAG_TIMM_VERSION: "1.0.9",
        names.TAG_OUTPUT_DIR: "/scratch/multirun/x/0",
        names.TAG_SWEEP_DIR: "/scratch/multirun/x",
        names.TAG_JOB_NUM: "0",
        names.TAG_CONFIG_HASH: "f" * 16,
        names.TAG_END_REASON: "completed",
        names.TAG_PID: "12345",
        names.TAG_PID_START: "987654",
        names.TAG_HEARTBEAT: "1700000000",
        names.TAG_HEARTBEAT_S: "30",
        names.TAG_GPU_PROFILE: gpu,
        names.TAG_GPU_LABEL: params.get("gpu.label", gpu),
        names.TAG_DEVICE: "cuda:0",
        names.TAG_DEVICE_NAME: GPUS[gpu],
        names.TAG_DEVICE_DRIVER_VERSION: "550.54.15",
        names.TAG_DEVICE_POWER_LIMIT_W: f"{float(params.get('gpu.tdp_w', 200)):g}",
        names.TAG_DEVICE_MEMORY_GB: "24",
        names.TAG_DEVICE_CUDA_VERSION: "12.4",
        names.TAG_ENERGY_ESTIMATED: "true" if gpu == "gtx750ti" else "false",
        names.energy_method_tag("gpu"): "nvml-counter" if gpu != "gtx750ti" else "nvml-sampled",
        names.energy_method_tag("cpu"): "rapl",
        names.energy_method_tag("ram"): "codecarbon-estimate",
        "mlflow.source.name": "repro.train",
        "mlflow.user": "bench",
    }
    metrics = {name: float(rng.uniform(0.5, 2.0)) for name in names.FINAL_METRICS}
    metrics.update(
        {
            names.ENERGY_J_PER_IMAGE: energy * 1.3,
            names.GPU_ENERGY_J_PER_IMAGE: energy,
            names.GPU_USAGE_PCT: 40.0 + 8 * arch_index + 5 * gpu_index,
            names.DURATION_MS_PER_IMAGE: 2.0 * (1 + arch_index) / (1 + gpu_index),
            names.F1: 0.80 + 0.02 * arch_index,
            names.ACCURACY: 0.82 + 0.02 * arch_index,
            names.GFLOPS: [0.6, 1.1, 8.2, 30.9, 16.8][arch_index],
            names.PARAMS_M: [1.3, 4.8, 26.1, 14.7, 22.9][arch_index],
            names.IMAGES_SEEN: 50_000.0,
            names.TRAIN_IMAGES_SEEN: 35_000.0,
            names.PAUSED_S: 0.0,  # not stopped while it trained
            names.TRAINED_EPOCHS: float(_EPOCHS),
        }
    )
    return params, tags, metrics


def _build_template(path: Path) -> None:
    """Log a sweep parent and the 15 template runs through MLflow's client."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    from repro import names

    rng = np.random.default_rng(0)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}")
    experiment_id = client.create_experiment(EXPERIMENT)
    parent = client.create_run(experiment_id, tags={names.TAG_KIND: names.KIND_SWEEP}, start_time=1)
    client.set_terminated(parent.info.run_id, "FINISHED")
    start = 2
    for architecture in ARCHITECTURES:
        for gpu in GPUS:
            params, tags, metrics = _template_fields(architecture, gpu, rng)
            tags["mlflow.parentRunId"] = parent.info.run_id
            run = client.create_run(experiment_id, tags=tags, start_time=start)
            start += 1
            history = [
                Metric(name, float(rng.uniform(0.1, 1.0)), 0, epoch)
                for epoch in range(_EPOCHS)
                for name in names.EPOCH_METRICS
            ]
            items = [Param(k, v[:6000]) for k, v in params.items()]
            for first in range(0, len(items), 100):
                client.log_batch(run.info.run_id, params=items[first : first + 100])
            final = [Metric(k, v, 0, 0) for k, v in metrics.items()]
            client.log_batch(
                run.info.run_id, metrics=history + final, tags=[RunTag("mlflow.note.content", "")]
            )
            client.set_terminated(run.info.run_id, "FINISHED")


def _run_tables(connection: sqlite3.Connection) -> list[str]:
    """The tables with one row per run or per run's value (those with a run_uuid column), runs first."""
    tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    with_runs = [
        t for t in tables if any(c[1] == "run_uuid" for c in connection.execute(f"PRAGMA table_info({t})"))
    ]
    return ["runs"] + sorted(t for t in with_runs if t != "runs")


def build_store(n_runs: int) -> Path:
    """A cached SQLite store of `n_runs` training runs (plus one sweep parent); returns its path."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"v{_STORE_VERSION}-{n_runs}.db"
    if path.is_file():
        return path
    template = CACHE / f"v{_STORE_VERSION}-template.db"
    if not template.is_file():
        partial = template.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        _build_template(partial)
        partial.rename(template)
    work = path.with_suffix(".partial")
    work.write_bytes(template.read_bytes())
    rng = np.random.default_rng(n_runs)
    with sqlite3.connect(work) as db:
        templates = [
            row[0]
            for row in db.execute(
                "SELECT runs.run_uuid FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid "
                "AND tags.key = 'repro.model' ORDER BY runs.start_time"
            )
        ]
        tables = _run_tables(db)
        rows = {
            table: (
                [c[1] for c in db.execute(f"PRAGMA table_info({table})")],
                db.execute(
                    f"SELECT * FROM {table} WHERE run_uuid IN ({','.join('?' * len(templates))})", templates
                ).fetchall(),
            )
            for table in tables
        }
        for table in tables:  # the templates are replaced by their copies
            db.execute(f"DELETE FROM {table} WHERE run_uuid IN ({','.join('?' * len(templates))})", templates)
        for table, (columns, template_rows) in rows.items():
            run_col = columns.index("run_uuid")
            value_col = columns.index("value") if table in ("metrics", "latest_metrics") else None
            key_col = columns.index("key") if "key" in columns else None
            start_col = columns.index("start_time") if table == "runs" else None
            by_template: dict[str, list[tuple]] = {}
            for row in template_rows:
                by_template.setdefault(row[run_col], []).append(row)
            out = []
            for i in range(n_runs):
                source = templates[i % len(templates)]
                run_id = f"{i:08d}{source[8:]}"
                noise = np.exp(rng.normal(0, 0.1, 64))
                for row in by_template.get(source, []):
                    new = list(row)
                    new[run_col] = run_id
                    if start_col is not None:
                        new[start_col] = 10 + i
                    if value_col is not None and new[key_col] not in _EXACT_METRICS:
                        factor = (
                            noise[zlib.crc32(new[key_col].encode()) % 64]
                            if new[key_col] != "f1"
                            else 1 + (noise[0] - 1) / 20
                        )
                        new[value_col] = float(new[value_col]) * float(factor)
                    if table == "tags" and new[key_col] == "mlflow.runName":
                        new[columns.index("value")] = f"job-{i}"
                    out.append(tuple(new))
            db.executemany(f"INSERT INTO {table} VALUES ({','.join('?' * len(columns))})", out)
    work.rename(path)
    return path


def _measure(command: list[str], repo: Path) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS in MB, output) of one fresh process running `command` in `repo`."""
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "PYTHONHASHSEED": "0"}
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    cpu_s, peak_mb = _usage(stdout)
    return wall, cpu_s, peak_mb, stdout + stderr


# Peak memory is the process's own high-water mark (VmHWM in /proc/self/status), not getrusage's ru_maxrss:
# Linux carries ru_maxrss across exec, so a child started by a parent that once held 1.4 GB (this script,
# after building a store) reported 1.4 GB however little it used itself.
_RSS_WRAPPER = (
    "import os, resource, runpy, sys; sys.argv = sys.argv[1:]; "
    'exec(\'try:\\n runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)\\n'
    "except SystemExit as e:\\n  code = e.code\\nelse:\\n  code = 0'); "
    "u = resource.getrusage(resource.RUSAGE_SELF); "
    "status = '/proc/self/status'; "
    "hwm = [l.split()[1] for l in open(status) if l.startswith('VmHWM:')] if os.path.exists(status) else []; "
    "print('PEAK_RSS_KB', hwm[0] if hwm else u.ru_maxrss, 'CPU_S', u.ru_utime + u.ru_stime); sys.exit(code)"
)


def _usage(stdout: str) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) as the process reported them at its end (NaN if it did not)."""
    for line in stdout.splitlines():
        if line.startswith("PEAK_RSS_KB"):
            words = line.split()
            return float(words[3]), int(words[1]) / 1024
    return float("nan"), float("nan")


def _module(module: str, *args: str) -> list[str]:
    """`python -m module args` that prints its own peak RSS at the end."""
    return [sys.executable, "-c", _RSS_WRAPPER, module, *args]


_LOAD_SNIPPET = (
    "import time; t = time.perf_counter(); from repro.stats.runs import load_mlflow; "
    "table = load_mlflow({uri!r}, {experiment!r}); print('LOAD_S', time.perf_counter() - t, len(table.runs))"
)


def measure(n_runs: int, repo: Path, report: bool) -> dict[str, float]:
    store = build_store(n_runs)
    uri = f"sqlite:///{store}"
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        common = ["source=mlflow", f"mlflow.tracking_uri={uri}", f"mlflow.experiment={EXPERIMENT}"]
        out["paper_s"], out["paper_cpu_s"], out["paper_mb"], _ = _measure(
            _module("repro.paper", *common, f"tables_dir={folder}/t", f"figures_dir={folder}/f"), repo
        )
        if report:
            out["report_s"], out["report_cpu_s"], out["report_mb"], _ = _measure(
                _module("repro.report", *common, f"output={folder}/report.html"), repo
            )
        _, _, _, text = _measure(
            [sys.executable, "-c", _LOAD_SNIPPET.format(uri=uri, experiment=EXPERIMENT)], repo
        )
        line = next(line for line in text.splitlines() if line.startswith("LOAD_S"))
        out["load_s"], out["runs"] = float(line.split()[1]), float(line.split()[2])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="150,1500,15000", help="store sizes, comma-separated")
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="the checkout whose code is measured")
    parser.add_argument("--no-report", action="store_true", help="measure repro.paper only")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for n in sizes:
        started = time.perf_counter()
        build_store(n)
        print(f"store of {n} runs ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    print(f"code: {args.repo.resolve()}; load average before: {os.getloadavg()[0]:.2f}")
    print("| runs | repro.paper: wall, CPU, peak RSS | repro.report: wall, CPU, peak RSS | load (share) |")
    print("|---|---|---|---|")
    for n in sizes:
        r = measure(n, args.repo.resolve(), not args.no_report)
        report = (
            f"{r['report_s']:.1f} s, {r['report_cpu_s']:.1f} s, {r['report_mb']:.0f} MB"
            if "report_s" in r
            else "-"
        )
        print(
            f"| {n:,} | {r['paper_s']:.1f} s, {r['paper_cpu_s']:.1f} s, {r['paper_mb']:.0f} MB | {report} | "
            f"{r['load_s']:.1f} s ({100 * r['load_s'] / r['paper_s']:.0f}%) |",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
