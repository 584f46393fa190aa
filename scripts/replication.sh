#!/usr/bin/env bash
# A replication campaign of the study on this machine, then its tables and its comparison with the study.
#
#   scripts/replication.sh EXPERIMENT OUT_DIR [more repro.train overrides]     (make replication)
#
# Runs `python -m repro.train -m experiment=EXPERIMENT` into its own store OUT_DIR/mlflow.db, then
# `python -m repro.paper` (tables and figures into OUT_DIR/tables and OUT_DIR/figures) and
# `python -m repro.stats.replication` (OUT_DIR/comparison.md) on this sweep's runs only, and writes
# OUT_DIR/campaign.md: the commands, the machine, the energy methods and the wall time; README.md is
# campaign.md followed by comparison.md. If some jobs fail, the tables are
# still made from the runs that finished, and the script exits non-zero. TRAIN_TIMEOUT_S=N stops the
# sweep after N seconds (SIGTERM: the job in progress ends KILLED) and still makes the tables.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: scripts/replication.sh EXPERIMENT OUT_DIR [repro.train overrides]" >&2
    exit 2
fi
experiment=$1
out=$2
shift 2
project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
case "$(realpath -m "$out")/" in
    "$project_dir"/paper/*)
        echo "error: OUT_DIR=$out is inside paper/, the committed reference; write to reports/ and copy" >&2
        exit 2 ;;
esac
mkdir -p "$out"
out="$(cd "$out" && pwd)"
store="sqlite:///$out/mlflow.db"
sweep="$project_dir/multirun/$experiment/$(date -u +%Y-%m-%d_%H-%M-%S)"

# The runs go to the MLflow experiment named after the campaign (a tracking.experiment override breaks that).
train=("$python" -m repro.train -m "experiment=$experiment" "tracking.uri=$store" "tracking.experiment=$experiment"
    "hydra.sweep.dir=$sweep" "$@")
# The commit the jobs run, read before they start: the checkout may move while a long campaign runs.
commit=$(git -C "$project_dir" rev-parse HEAD 2>/dev/null || echo unknown)
started_s=$(date +%s)
started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
status=0
limit=()
[[ -n "${TRAIN_TIMEOUT_S:-}" ]] && limit=(timeout -k 30 "$TRAIN_TIMEOUT_S")
(cd "$project_dir" && "${limit[@]}" "${train[@]}") || status=$?
wall_s=$(( $(date +%s) - started_s ))
if [[ ! -f "$sweep/mlflow_parent_run_id" ]]; then
    echo "error: the sweep did not start (no $sweep/mlflow_parent_run_id); nothing to analyse" >&2
    exit "${status/#0/1}"
fi
parent=$(cat "$sweep/mlflow_parent_run_id")
source_args=(source=mlflow "mlflow.tracking_uri=$store" "mlflow.experiment=$experiment"
    "mlflow.parent_run_id=$parent" "tables_dir=$out/tables" "figures_dir=$out/figures")
(cd "$project_dir" && "$python" -m repro.paper "${source_args[@]}")
(cd "$project_dir" && "$python" -m repro.stats.replication "${source_args[@]}" > /dev/null)

{
    echo "# Campaign: experiment=$experiment"
    echo
    echo "- started: $started; wall time of the sweep: ${wall_s} s ($(( wall_s / 60 )) min $(( wall_s % 60 )) s)"
    echo "- sweep exit code: $status; parent run: $parent; store: $store"
    echo "- git: $commit"
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //') x $(getconf _NPROCESSORS_ONLN)"
    echo "- memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null)"
    if command -v nvidia-smi > /dev/null; then
        echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv,noheader | head -1)"
    fi
    echo "- torch: $("$python" -c 'import torch; print(torch.__version__)')"
    echo "- energy: $(cd "$project_dir" && "$python" - "$store" "$parent" <<'PY'
import sys
from collections import Counter

import mlflow

from repro import names

client = mlflow.MlflowClient(sys.argv[1])
run = client.get_run(sys.argv[2])
children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{sys.argv[2]}'")
methods = Counter(
    ", ".join(f"{c}={r.data.tags.get(names.energy_method_tag(c), '?')}" for c in names.COMPONENTS)
    + f" (estimated: {r.data.tags.get(names.TAG_ENERGY_ESTIMATED, '?')})"
    for r in children
)
print("; ".join(f"{text} in {count} run(s)" for text, count in methods.items()) or "no runs")
PY
)"
    echo
    echo "Commands:"
    echo
    echo '```bash'
    echo "${train[*]}"
    echo "$python -m repro.paper ${source_args[*]}"
    echo "$python -m repro.stats.replication ${source_args[*]}"
    echo '```'
} > "$out/campaign.md"
cat "$out/campaign.md" "$out/comparison.md" > "$out/README.md"
echo
echo "Report: $out/README.md (campaign.md + comparison.md; tables/, figures/)"
exit "$status"
