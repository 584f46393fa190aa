"""What importing the entry point loads: no MLflow, no SQLAlchemy, no alembic (about two CPU-seconds).

A job's process imports `repro.train`, and Hydra instantiates `repro.tracking.SweepCallback`
(conf/config.yaml) even for a single run; MLflow and its SQL store are imported only by the functions
that talk to the store, which for a job run in its store process (repro.store_process).
Each check runs in a fresh interpreter, since this one has long imported MLflow.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from tests.support import REPO_ROOT

_HEAVY = ("mlflow", "sqlalchemy", "alembic")
_LOADED = f"import sys; print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(_HEAVY)!r}))"


@pytest.mark.parametrize(
    "statement",
    [
        "import repro.train",
        "import repro.train, repro.tracking, repro.outcome, repro.spool, repro.reconcile, repro.ui_views",
        "from hydra.utils import instantiate; instantiate({'_target_': 'repro.tracking.SweepCallback'})",
    ],
)
def test_importing_the_entry_point_loads_no_mlflow_sqlalchemy_or_alembic(statement: str, cli_env) -> None:
    command = [sys.executable, "-c", f"{statement}\n{_LOADED}"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"`{statement}` imported {result.stdout.strip()}"


def test_the_check_sees_an_import_of_mlflow(cli_env) -> None:
    """The same check after `import mlflow` names it: an empty list above is not a check that cannot fail."""
    command = [sys.executable, "-c", f"import repro.train, mlflow.tracking\n{_LOADED}"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "'mlflow'" in result.stdout
