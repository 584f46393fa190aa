"""What importing the entry point loads: no MLflow, no SQLAlchemy, no alembic (about two CPU-seconds).

A job's process imports `repro.train`, and Hydra instantiates `repro.tracking.SweepCallback`
(conf/config.yaml) even for a single run; MLflow and its SQL store are imported only by the functions
that talk to the store, which for a job run in its store process (repro.store_process). The check
runs in one fresh interpreter, step by step, since this one has long imported MLflow.
"""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO_ROOT

_HEAVY = ("mlflow", "sqlalchemy", "alembic")
#: What a job's process imports before its first step, in order; then, as a check of the check, MLflow.
_STEPS = [
    "import repro.train",
    "import repro.tracking, repro.outcome, repro.spool, repro.reconcile, repro.ui_views, repro.store_process",
    "from hydra.utils import instantiate; instantiate({'_target_': 'repro.tracking.SweepCallback'})",
    "import mlflow.tracking",
]
#: One fresh interpreter runs every step and prints, after each, the heavy packages loaded so far.
_PROGRAM = "\n".join(
    f"{step}\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {set(_HEAVY)!r}))"
    for step in ["import sys", *_STEPS]
)


def test_importing_the_entry_point_loads_no_mlflow_sqlalchemy_or_alembic(cli_env) -> None:
    command = [sys.executable, "-c", _PROGRAM]
    result = subprocess.run(command, cwd=REPO_ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    loaded = dict(zip(["import sys", *_STEPS], result.stdout.splitlines(), strict=True))
    for step in _STEPS[:-1]:
        assert loaded[step] == "[]", f"`{step}` imported {loaded[step]}"
    # The same check sees an explicit import: an empty list above is not a check that cannot fail.
    assert "'mlflow'" in loaded[_STEPS[-1]]
