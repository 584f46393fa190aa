#!/usr/bin/env bash
# The GPU replication (issue 8) in one shot, for a machine with an NVIDIA GPU: experiment=replication_gpu
# (5 architectures x 3 seeds, 128 px, NVML counter energy), then its tables, figures and the comparison
# with the study's Cloud, packed into a few files under ${OUT:-reports/replication_gpu}:
#   campaign.md  comparison.md  report.tar.gz (tables/ and figures/)  mlflow.db  replication.log
#
#   bash benchmarks/replication_gpu.sh
#   PYTHON=python3 TRAIN_TIMEOUT_S=420 bash benchmarks/replication_gpu.sh   # the sweep stops after 7 min
#
# Where hydra-core, mlflow or codecarbon are missing (a bare GPU machine), wheels in .whl/ are installed
# first (`pip download -d .whl -r <(...)` on a machine with network). Copy the result into
# paper/replication/<gpu>/ and write its README from campaign.md and comparison.md.
set -euo pipefail

project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHON="${PYTHON:-python3}"
out="${OUT:-$project_dir/reports/replication_gpu}"
mkdir -p "$out"
cd "$project_dir"

if ! "$PYTHON" -c "import hydra, mlflow, codecarbon, pynvml" 2> /dev/null; then
    [[ -d .whl ]] || { echo "error: hydra-core/mlflow/codecarbon missing and no .whl/ to install from" >&2; exit 2; }
    "$PYTHON" -m pip install --quiet --no-index --find-links .whl -e . > "$out/install.log" 2>&1
fi
nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv,noheader

work="$(mktemp -d)"
status=0
TRAIN_TIMEOUT_S="${TRAIN_TIMEOUT_S:-420}" scripts/replication.sh replication_gpu "$work" "$@" \
    > "$out/replication.log" 2>&1 || status=$?
tail -n 25 "$out/replication.log"
for name in campaign.md comparison.md mlflow.db; do
    [[ -f "$work/$name" ]] && cp "$work/$name" "$out/"
done
tar -czf "$out/report.tar.gz" -C "$work" $(cd "$work" && ls -d tables figures 2> /dev/null)
[[ -f "$out/comparison.md" ]] && cat "$out/comparison.md"
echo "sweep exit code: $status; files in $out"
exit "$status"
