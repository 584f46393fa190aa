"""`hydra/launcher=slurm` against a real SLURM cluster and a real MLflow server.

The sweeps here are the README's "Running on a cluster" commands, with the test-only profiles
fake_a and fake_b (node features fakegpu_a and fakegpu_b) standing in for GPU types.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tests.slurm.cluster import SlurmCluster
from tests.slurm.conftest import TEST_CONF_DIR
from tests.support import REPO_ROOT, cli

#: One line of the launcher's end-of-sweep summary: number, profile, SLURM id, state, outcome.
SUMMARY_LINE = re.compile(r"#(\d+)\s+(\S+)\s+slurm (\S+)\s+(\S+)\s+(ok|failed)\s")


@pytest.fixture
def sweep_overrides(data_cache: Path, tmp_path: Path) -> list[str]:
    """A seconds-long job, the test profiles on Hydra's search path, output under tmp_path."""
    return [
        "experiment=smoke",
        "energy=none",
        f"dataset.cache_dir={data_cache}",
        f"hydra.searchpath=[file://{TEST_CONF_DIR}]",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.launcher.poll_interval_s=1",
        "hydra.launcher.timeout_min=10",
    ]


def _sweep(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("-m", "hydra/launcher=slurm", *args),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _summary(stdout: str) -> dict[str, tuple[str, str, str]]:
    """profile -> (SLURM job id, SLURM state, outcome), from the launcher's summary."""
    return {match[2]: (match[3], match[4], match[5]) for match in SUMMARY_LINE.finditer(stdout)}


def _children(tracking_uri: str, experiment: str) -> tuple[str, list]:
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    parents = client.search_runs([experiment_id], filter_string="tags.`repro.kind` = 'sweep'")
    assert len(parents) == 1, [run.info.run_name for run in parents]
    parent_id = parents[0].info.run_id
    return parent_id, client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )


@pytest.mark.slurm
@pytest.mark.slow
def test_each_profile_reaches_slurm_with_its_constraint_and_lands_under_one_parent(
    slurm_cluster: SlurmCluster, mlflow_server: str, sweep_overrides: list[str], cli_env: dict[str, str]
) -> None:
    experiment = f"slurm-{uuid.uuid4().hex[:8]}"
    result = _sweep(
        [
            "gpu=fake_a,fake_b",
            f"tracking.uri={mlflow_server}",
            f"tracking.experiment={experiment}",
            *sweep_overrides,
        ],
        cli_env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    summary = _summary(result.stdout)
    assert set(summary) == {"fake_a", "fake_b"}, result.stdout
    for profile, (slurm_id, state, outcome) in summary.items():
        assert (state, outcome) == ("COMPLETED", "ok")
        job = slurm_cluster.scontrol("show", "job", slurm_id)
        print(f"--- scontrol show job {slurm_id} (gpu={profile})\n{job}")  # shown with pytest -rP
        feature = {"fake_a": "fakegpu_a", "fake_b": "fakegpu_b"}[profile]
        assert re.search(rf"\bFeatures={feature}\b", job), job
        assert "OverSubscribe=NO" in job, job  # --exclusive
        assert "JobState=COMPLETED" in job, job
    assert summary["fake_a"][0].split("_")[0] != summary["fake_b"][0].split("_")[0]  # one array per profile

    _parent_id, children = _children(mlflow_server, experiment)
    assert sorted(run.data.tags["repro.gpu"] for run in children) == ["fake_a", "fake_b"]
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["device.name"] == "cpu"  # validated on the node
        assert 0.0 <= run.data.metrics["accuracy"] <= 1.0


@pytest.mark.slurm
@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_others_and_fails_the_sweep(
    slurm_cluster: SlurmCluster, mlflow_server: str, sweep_overrides: list[str], cli_env: dict[str, str]
) -> None:
    experiment = f"slurm-{uuid.uuid4().hex[:8]}"
    result = _sweep(
        [
            "gpu=fake_broken,fake_a",  # fake_broken asks for an H200, which the node lacks
            f"tracking.uri={mlflow_server}",
            f"tracking.experiment={experiment}",
            *sweep_overrides,
        ],
        cli_env,
    )
    assert result.returncode != 0
    summary = _summary(result.stdout)
    assert summary["fake_broken"][2] == "failed", result.stdout
    assert summary["fake_a"][1:] == ("COMPLETED", "ok"), result.stdout
    assert "1 of 2 SLURM jobs failed (#0)" in result.stderr, result.stderr
    assert "gpu=fake_broken asks for an NVIDIA H200" in result.stderr, result.stderr

    _parent_id, children = _children(mlflow_server, experiment)
    assert [(run.data.tags["repro.gpu"], run.info.status) for run in children] == [("fake_a", "FINISHED")]


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["gpu=cpu"], "gpu=cpu has no SLURM resources"),
        (
            ["gpu=fake_a", "gpu.slurm.constraint=no_such_feature"],
            "gpu=fake_a asks SLURM for --constraint=no_such_feature",
        ),
        (
            ["gpu=fake_a", "tracking.uri=http://127.0.0.1:9"],
            "tracking.uri=http://127.0.0.1:9 cannot be reached",
        ),
    ],
    ids=["profile-without-slurm-resources", "constraint-the-cluster-refuses", "unreachable-tracking-server"],
)
def test_bad_requests_stop_before_anything_is_submitted(
    slurm_cluster: SlurmCluster,
    sweep_overrides: list[str],
    cli_env: dict[str, str],
    tmp_path: Path,
    overrides: list[str],
    expected: str,
) -> None:
    jobs_before = slurm_cluster.scontrol("show", "job", "--oneliner")
    if not any(override.startswith("tracking.uri=") for override in overrides):
        overrides = [*overrides, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    result = _sweep([*overrides, *sweep_overrides], cli_env)
    assert result.returncode == 2, result.stderr[-3000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and expected in error_lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert slurm_cluster.scontrol("show", "job", "--oneliner") == jobs_before  # nothing was submitted


def test_without_sbatch_on_path_the_launcher_says_where_to_run(
    sweep_overrides: list[str], cli_env: dict[str, str], tmp_path: Path
) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {**cli_env, "PATH": str(empty_bin)}
    result = _sweep(["gpu=t4", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *sweep_overrides], env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: hydra/launcher=slurm needs `sbatch`, which is not on PATH here; "
        "run the sweep on the cluster's login node, or use hydra/launcher=submitit_local on this machine"
    )


@pytest.mark.slow
def test_submitit_local_runs_the_sweep_on_this_machine(
    sweep_overrides: list[str], cli_env: dict[str, str], tmp_path: Path
) -> None:
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [override for override in sweep_overrides if not override.startswith("hydra.launcher.")]
    result = subprocess.run(
        cli("-m", "hydra/launcher=submitit_local", "gpu=cpu", f"tracking.uri={tracking_uri}", *overrides),
        cwd=REPO_ROOT,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _parent_id, children = _children(tracking_uri, "repro")
    assert [(run.data.tags["repro.gpu"], run.info.status) for run in children] == [("cpu", "FINISHED")]
