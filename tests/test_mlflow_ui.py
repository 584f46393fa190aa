"""What the MLflow UI shows without configuration: a model-training experiment, a run description
with the energy, a per-epoch energy/F1 chart, and the URL of its energy view that `make ui` prints."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from repro.tracking import EPOCH_FIGURE, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, RUN_NOTE_TAG
from repro.train import JobContext, run
from repro.ui_url import main as ui_url_main


def test_a_run_is_described_and_charted_in_a_model_training_experiment(
    compose_config, tracking_uri: str, tmp_path: Path, capsys
) -> None:
    run(compose_config("energy.lock=false"), JobContext(output_dir=tmp_path / "job"))  # others may measure
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("repro")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    (recorded,) = client.search_runs([experiment.experiment_id])
    note = recorded.data.tags[RUN_NOTE_TAG]
    assert f"{recorded.data.metrics['energy_total_j']:.1f} J in total" in note
    assert "How measured" in note and "Outcome** completed" in note
    assert EPOCH_FIGURE in [a.path for a in client.list_artifacts(recorded.info.run_id)]

    ui_url_main(["--uri", tracking_uri, "--host", "127.0.0.1", "--port", "5001"])
    expected = (
        f"http://127.0.0.1:5001/#/experiments/{experiment.experiment_id}/runs"
        "?viewStateShareKey=repro-energy-per-image&workflowType=machine_learning"
    )
    assert expected in capsys.readouterr().out


def test_ui_url_without_a_store_says_so_and_creates_nothing(tmp_path: Path, capsys) -> None:
    ui_url_main(["--uri", f"sqlite:///{tmp_path / 'none.db'}"])
    assert "run `make run` first" in capsys.readouterr().out
    assert not (tmp_path / "none.db").exists()
