"""STEP during training: per-epoch projections, the final projection errors, and the energy budget."""

from __future__ import annotations

import subprocess

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from tests.support import REPO_ROOT, cli

from repro.config import EnergyConfig
from repro.energy.projection import EnergyProjection, is_stable, project
from repro.estimate.validate import step_runs_from_mlflow, step_table
from repro.train import JobContext, run

#: The machine-wide measurement lock is not under test here (other jobs on a shared machine hold it),
#: and a small validation set keeps six epochs fast (every epoch validates on the whole set).
_NO_LOCK = ("energy.lock=false", "dataset.val_fraction=0.05")


def _energy_cfg(**overrides: object) -> EnergyConfig:
    cfg = OmegaConf.structured(EnergyConfig)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def test_projection_adds_the_mean_of_the_window_times_the_epochs_left():
    high, low = project([10.0, 20.0, 30.0], window=2, max_epochs=10, earliest_epochs=5)
    assert high == pytest.approx(60 + 25 * 7)
    assert low == pytest.approx(60 + 25 * 2)
    # past the earliest stop the lower figure is what was measured
    assert project([10.0] * 6, window=3, max_epochs=10, earliest_epochs=5)[1] == pytest.approx(60)


def test_auto_start_waits_for_stable_epochs():
    assert not is_stable([100.0, 50.0, 52.0], window=3, tolerance=0.1)
    assert is_stable([100.0, 50.0, 52.0, 51.0], window=3, tolerance=0.1)
    projection = EnergyProjection(_energy_cfg(**{"projection.window": 2}), max_epochs=10, earliest_epochs=4)
    logged = [projection.on_epoch(joules) for joules in (100.0, 50.0, 51.0)]
    assert logged[0] == {} and logged[1] == {}  # 100 -> 50 is not stable yet
    assert logged[2]["energy_projected_j"] == pytest.approx(201 + 50.5 * 7)
    assert projection.start_epoch == 3


def test_budget_names_itself_and_the_overshoot():
    cfg = _energy_cfg(**{"projection.start_epoch": 1, "budget_gco2": 1.0, "carbon_intensity_g_per_kwh": 360})
    projection = EnergyProjection(cfg, max_epochs=100, earliest_epochs=20, intensity_g_per_kwh=lambda: 360.0)
    projection.on_epoch(1000.0)  # 100 epochs x 1 kJ = 0.1 MJ = 10 g at 360 g/kWh
    assert projection.budget_exceeded()
    assert projection.budget_message.startswith("stopped by energy.budget_gco2=1: after epoch 1")
    assert "exceed it by 9 gCO2e (900.0%)" in projection.budget_message


@pytest.mark.slow
def test_step_on_a_real_cpu_run_logs_projections_and_final_errors(compose_config, tracking_uri, tmp_path):
    cfg = compose_config(
        "training.finetune_epochs=5",
        "energy.projection.start_epoch=2",
        "energy.projection.window=2",
        *_NO_LOCK,
    )
    run(cfg, JobContext(output_dir=tmp_path / "job"))

    client = MlflowClient(tracking_uri)
    recorded = client.search_runs([client.get_experiment_by_name("repro").experiment_id])[0]
    metrics = recorded.data.metrics
    assert metrics["trained_epochs"] == 6
    epoch_energy = [p.value for p in client.get_metric_history(recorded.info.run_id, "epoch_energy_j")]
    projected = client.get_metric_history(recorded.info.run_id, "energy_projected_j")
    assert [p.step for p in projected] == [1, 2, 3, 4, 5]  # from the 2nd epoch (step 1) on
    after_two = sum(epoch_energy[:2]) + (epoch_energy[0] + epoch_energy[1]) / 2 * 4
    assert projected[0].value == pytest.approx(after_two, rel=1e-6)
    low = client.get_metric_history(recorded.info.run_id, "energy_projected_low_j")
    assert all(lo.value <= hi.value for lo, hi in zip(low, projected, strict=True))

    total = sum(epoch_energy)
    for k in range(1, 6):
        high, _ = project(epoch_energy[:k], 2, 6, 6)
        assert metrics[f"energy_projection_error_pct_k{k}"] == pytest.approx(100 * (high - total) / total)
    carbontracker = 100 * (epoch_energy[0] * 6 - total) / total
    assert metrics["energy_projection_carbontracker_error_pct"] == pytest.approx(carbontracker)
    assert recorded.data.tags["repro.end_reason"] == "completed"

    # (d) of `python -m repro.estimate validate` reads these errors back
    step_runs, source = step_runs_from_mlflow(tracking_uri, "repro")
    table = step_table(step_runs, source).frame.set_index("method")
    assert table.loc["STEP after epoch 3", "runs"] == 1
    assert table.loc["STEP after epoch 3", "median_error_pct"] == pytest.approx(
        metrics["energy_projection_error_pct_k3"]
    )


@pytest.mark.slow
def test_a_tiny_budget_stops_the_run_after_its_first_epoch(compose_config, tracking_uri, tmp_path):
    cfg = compose_config("training.finetune_epochs=5", "energy.budget_j=0.001", *_NO_LOCK)
    run(cfg, JobContext(output_dir=tmp_path / "job"))

    client = MlflowClient(tracking_uri)
    recorded = client.search_runs([client.get_experiment_by_name("repro").experiment_id])[0]
    assert recorded.info.status == "FINISHED"
    reason = recorded.data.tags["repro.end_reason"]
    assert reason.startswith("stopped by energy.budget_j=0.001: after epoch 1 the measured energy"), reason
    metrics = recorded.data.metrics
    assert metrics["trained_epochs"] == 1
    assert metrics["energy_total_j"] > 0 and 0 <= metrics["f1"] <= 1  # energy and metrics kept
    assert "energy_projection_error_pct_k1" not in metrics  # a stopped run's total is not its destination


@pytest.mark.slow
def test_in_a_sweep_the_other_jobs_go_on_after_a_budget_stop(
    smoke_overrides, tracking_uri, tmp_path, cli_env
):
    result = subprocess.run(
        cli("-m", "model=mobilenet_v2,resnet18", *smoke_overrides, "training.finetune_epochs=3",
            "energy.projection.start_epoch=1", "energy.budget_j=0.001", f"hydra.sweep.dir={tmp_path / 's'}",
            *_NO_LOCK),
        cwd=REPO_ROOT, env=cli_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("repro").experiment_id])
    children = [r for r in runs if r.data.tags.get("repro.kind") != "sweep"]
    assert sorted(r.info.run_name for r in children) == ["mobilenet_v2-cpu-s0", "resnet18-cpu-s0"]
    for child in children:
        assert child.info.status == "FINISHED"
        reason = child.data.tags["repro.end_reason"]
        assert reason.startswith("stopped by energy.budget_j=0.001: after epoch 1 the projected"), reason
        assert child.data.metrics["trained_epochs"] == 1
