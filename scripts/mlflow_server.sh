#!/usr/bin/env bash
# A shared MLflow tracking server for sweeps that run on other machines (e.g. SLURM nodes).
#
#   scripts/mlflow_server.sh [extra `mlflow server` options]     (or: make mlflow-server)
#
# Runs and artifacts are kept under MLFLOW_SERVER_DIR (default: mlflow-server/ in the project):
# a SQLite database and an artifact folder that the server proxies, so jobs need no shared disk.
# Jobs reach it with tracking.uri=http://HOST:PORT. For a lab, use a PostgreSQL backend instead:
#   MLFLOW_BACKEND_STORE_URI=postgresql://USER:PASSWORD@DBHOST/mlflow scripts/mlflow_server.sh
#
# SECURITY: `mlflow server` has no authentication by default. Bound beyond loopback (MLFLOW_HOST=0.0.0.0),
# anyone who can reach the port can read, change and delete every run and artifact. Turn on MLflow's
# basic-auth app (scripts/mlflow_server.sh --app-name basic-auth; jobs then set MLFLOW_TRACKING_USERNAME
# and MLFLOW_TRACKING_PASSWORD), and/or keep the port behind a firewall or an SSH tunnel.
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

case "$host" in
  127.*|localhost|::1) ;;
  *) if [[ " $* " != *" --app-name basic-auth "* && " $* " != *" --app-name=basic-auth "* ]]; then
       echo "warning: binding MLflow to $host without authentication: anyone who reaches port $port can read," \
            "change and delete every run; add --app-name basic-auth (MLFLOW_ARGS=\"--app-name basic-auth\")" \
            "or keep the port behind a firewall" >&2
     fi ;;
esac
mkdir -p "$server_dir"
case "$artifacts" in *://*) ;; *) mkdir -p "$artifacts" ;; esac
echo "MLflow server on http://$host:$port (runs: $backend, artifacts: $artifacts)" >&2
echo "jobs use: tracking.uri=http://$(if [[ $host == 0.0.0.0 ]]; then hostname -f; else echo "$host"; fi):$port" >&2
exec "$mlflow" server --host "$host" --port "$port" --workers "$workers" \
  --backend-store-uri "$backend" --artifacts-destination "$artifacts" "$@"
