#!/usr/bin/env bash
# On a machine with an NVIDIA H200: gpu=auto and gpu=h200 must pass validation, gpu=t4 must fail with
# the mismatch error (exit code 2, one line). Prints what was detected; exits non-zero on any surprise.
#
#   benchmarks/gpu_profiles_check.sh            (from the project root, after make install)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-.venv/bin/python}"
out="$(mktemp -d)"
failures=0

resolve() {  # profile -> prints the device and its tags, exit code of resolve_device
  "$python" - "$1" <<'PY'
import sys
from hydra import compose, initialize_config_dir
from repro.composition import register_configs
from repro.config import CONF_DIR
from repro.environments import resolve_device
from repro.errors import exit_on_user_error

register_configs()
with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    cfg = compose(config_name="config", overrides=[f"gpu={sys.argv[1]}"])
with exit_on_user_error():
    device = resolve_device(cfg.gpu)
print(f"gpu={sys.argv[1]} -> {device.torch_device}")
for key, value in sorted(device.tags().items()):
    print(f"    {key} = {value}")
PY
}

expect() {  # description, expected exit code, command...
  local what="$1" want="$2"; shift 2
  "$@" >"$out/stdout" 2>"$out/stderr"; local got=$?
  cat "$out/stdout"; sed 's/^/    stderr: /' "$out/stderr" | tail -3
  if [[ $got == "$want" ]]; then echo "PASS $what (exit $got)"; else echo "FAIL $what (exit $got, expected $want)"; failures=$((failures + 1)); fi
}

nvidia-smi --query-gpu=name,driver_version,power.limit,memory.total --format=csv 2>/dev/null || echo "(no nvidia-smi)"
check() {  # description, grep pattern, file
  grep -q "$2" "$3" && echo "PASS $1" || { echo "FAIL $1"; failures=$((failures + 1)); }
}

expect "gpu=auto resolves" 0 resolve auto
check "gpu=auto chose the GPU" "^gpu=auto -> cuda:0" "$out/stdout"
expect "gpu=h200 resolves" 0 resolve h200
check "gpu=h200 is pinned to a CUDA device" "^gpu=h200 -> cuda:" "$out/stdout"
check "NVML gave the driver version" "device.driver_version = " "$out/stdout"
check "NVML gave the power limit" "device.power_limit_w = " "$out/stdout"
expect "gpu=t4 is refused" 2 resolve t4
check "gpu=t4 error names the H200 found" "^error: gpu=t4 asks for an NVIDIA T4 but this machine has .*H200" "$out/stderr"

# The same through the command line: a tiny run on the H200 that lands in a throwaway store.
smoke=(experiment=smoke energy=none "tracking.uri=sqlite:///$out/mlflow.db" "hydra.run.dir=$out/run")
expect "CLI gpu=h200 trains" 0 "$python" -m repro.train "${smoke[@]}" gpu=h200
expect "CLI gpu=t4 is refused" 2 "$python" -m repro.train "${smoke[@]}" gpu=t4
"$python" - "$out/mlflow.db" <<'PY'
import sys
from mlflow.tracking import MlflowClient
client = MlflowClient(f"sqlite:///{sys.argv[1]}")
for experiment in client.search_experiments():
    for run in client.search_runs([experiment.experiment_id]):
        tags = {k: v for k, v in run.data.tags.items() if k.startswith(("device", "gpu."))}
        print(run.info.run_name, run.info.status, tags)
PY
echo "failures: $failures"
exit $((failures > 0))
