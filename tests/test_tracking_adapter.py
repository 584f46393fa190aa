"""The MLflow internals the tracking adapter relies on, checked against the installed mlflow."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from repro import tracking


def test_mlflow_still_has_the_private_run_stack_the_adapter_pops() -> None:
    fluent = mlflow.tracking.fluent
    assert hasattr(fluent, "_active_run_stack"), (
        f"mlflow {mlflow.__version__} has no mlflow.tracking.fluent._active_run_stack: "
        "update repro.tracking.forget_active_run, and the mlflow range in pyproject.toml"
    )


def test_a_forgotten_run_leaves_the_process_without_touching_the_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("adapter")
        forgotten = mlflow.start_run(run_name="server-away").info.run_id
        tracking.forget_active_run()
        assert mlflow.active_run() is None, f"mlflow {mlflow.__version__}: the run is still active"
        assert MlflowClient(uri).get_run(forgotten).info.status == "RUNNING"  # its status waits in the spool
        with mlflow.start_run(run_name="next-job") as following:
            assert following.data.tags.get("mlflow.parentRunId") is None  # not nested in the forgotten run
        tracking.forget_active_run()  # with no active run: nothing to do
    finally:
        mlflow.set_tracking_uri(None)
