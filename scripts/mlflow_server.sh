#!/usr/bin/env bash
# A shared MLflow tracking server for sweeps that run on other machines (e.g. SLURM nodes).
#
#   scripts/mlflow_server.sh [extra `mlflow server` options]     (or: make mlflow-server)
#
# Runs and artifacts are kept under MLFLOW_SERVER_DIR (default: mlflow-server/ in the project):
# a SQLite database and an artifact folder that the server proxies, so jobs need no shared disk.
# Jobs reach it with tracking.uri=http://HOST:PORT. For a lab, use a PostgreSQL backend instead:
#   MLFLOW_BACKEND_STORE_URI=postgresql://USER:PASSWORD@DBHOST/mlflow scripts/mlflow_server.sh
set -euo pipefail

project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
host="${MLFLOW_HOST:-127.0.0.1}"   # 0.0.0.0 to accept jobs from other machines
port="${MLFLOW_PORT:-5000}"
server_dir="${MLFLOW_SERVER_DIR:-$project_dir/mlflow-server}"
backend="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$server_dir/mlflow.db}"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-$server_dir/artifacts}"
workers="${MLFLOW_WORKERS:-2}"
mlflow="${MLFLOW:-$project_dir/.venv/bin/mlflow}"
[[ -x "$mlflow" ]] || mlflow="$(command -v mlflow)" || { echo "error: mlflow not found; run make install" >&2; exit 2; }

mkdir -p "$server_dir"
case "$artifacts" in *://*) ;; *) mkdir -p "$artifacts" ;; esac
echo "MLflow server on http://$host:$port (runs: $backend, artifacts: $artifacts)" >&2
echo "jobs use: tracking.uri=http://$(if [[ $host == 0.0.0.0 ]]; then hostname -f; else echo "$host"; fi):$port" >&2
exec "$mlflow" server --host "$host" --port "$port" --workers "$workers" \
  --backend-store-uri "$backend" --artifacts-destination "$artifacts" "$@"
