#!/usr/bin/env bash
# GPU check of the energy meters (issue 3), for a machine with an NVIDIA GPU.
#
# Trains mobilenet_v2 and resnet50 with the quick preset at 128x128 on the GPU, then prints, per run,
# CodeCarbon's GPU energy, the NVML sampler's (trapezoid of 1 s power samples) and the NVML energy
# counter's, their largest relative difference (target: within 5 %), and the GPU's mean utilization.
#
#   bash benchmarks/gpu_check.sh            # results under ${OUT:-/tmp/repro-gpu-check}
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
set -euo pipefail

PYTHON=${PYTHON:-python}
OUT_DIR=${OUT:-/tmp/repro-gpu-check}
mkdir -p "$OUT_DIR"
DB="sqlite:///$OUT_DIR/gpu_check.db"

nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv,noheader || true

# The meters alone first (about 15 s): fails fast if NVML or CodeCarbon's GPU tracking misbehaves.
"$PYTHON" -m pytest tests/energy/test_gpu.py -q -s -p no:cacheprovider

"$PYTHON" -m repro.train -m \
    model=mobilenet_v2,resnet50 training=quick gpu=auto dataset.image_size=128 energy=default \
    tracking.uri="$DB" tracking.experiment=gpu-check \
    hydra.sweep.dir="$OUT_DIR/multirun"

"$PYTHON" - "$DB" <<'PY'
import sys

import mlflow

mlflow.set_tracking_uri(sys.argv[1])
runs = mlflow.search_runs(experiment_names=["gpu-check"], output_format="list")
columns = ("energy_gpu_codecarbon_j", "energy_gpu_nvml_sampled_j", "energy_gpu_nvml_counter_j")
print(f"\n{'run':28s} {'codecarbon J':>15s} {'nvml-sampled J':>15s} {'nvml-counter J':>15s} "
      f"{'max diff':>9s} {'GPU use %':>9s}  methods (cpu/gpu/ram)")
worst = 0.0
for run in sorted(runs, key=lambda r: r.info.start_time):
    metrics, tags = run.data.metrics, run.data.tags
    if "energy_total_j" not in metrics:
        continue  # the sweep's parent run
    values = [metrics.get(c) for c in columns]
    present = [v for v in values if v is not None]
    diff = (max(present) - min(present)) / min(present) if len(present) > 1 and min(present) > 0 else float("nan")
    worst = max(worst, diff) if diff == diff else worst
    cells = " ".join(f"{v:15.1f}" if v is not None else f"{'-':>15s}" for v in values)
    methods = "/".join(tags.get(f"energy.method.{c}", "?") for c in ("cpu", "gpu", "ram"))
    print(f"{run.info.run_name or run.info.run_id:28s} {cells} {diff:9.2%} "
          f"{metrics.get('gpu_usage_pct', float('nan')):9.1f}  {methods}  [{run.info.status}]")
    print(f"{'':28s} GPU {tags.get('energy.gpu_name')}, driver {tags.get('energy.gpu_driver')}, "
          f"limit {tags.get('energy.gpu_power_limit_w')} W, total {metrics['energy_total_j']:.1f} J")
print(f"\nlargest difference between the three GPU figures: {worst:.2%} (target: within 5 %)")
PY
