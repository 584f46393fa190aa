"""A model whose loss becomes NaN stops with a clear reason instead of a scikit-learn traceback."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from repro import loop, names
from repro.config import ModelConfig, TrainingConfig
from repro.data import build_data, dataset_config
from repro.metrics import classification_metrics
from repro.models import create_model
from repro.train import JobContext, run


def _poison(model: torch.nn.Module) -> None:
    """Make every forward pass return NaN, as a model does after its weights blew up."""
    model.register_forward_hook(lambda _module, _inputs, output: output * math.nan)


def test_metrics_of_nan_scores_leave_auc_undefined_instead_of_raising() -> None:
    metrics = classification_metrics(np.array([0, 1, 0, 1]), np.full(4, np.nan))
    assert math.isnan(metrics[names.AUC])
    assert metrics[names.ACCURACY] == 0.5


def test_a_nan_loss_stops_training_naming_the_learning_rate() -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="resnet18"), num_classes=1)
    _poison(model)
    data = build_data(dataset_config(name="synthetic", image_size=32, num_images=40, augment=False), 8, 0)
    cfg = TrainingConfig(head_epochs=1, finetune_epochs=1, max_steps_per_epoch=1, head_lr=0.5)
    with pytest.raises(
        loop.TrainingDiverged, match=r"epoch 1 \(head\) is nan; lower training.head_lr \(now 0.5\)"
    ):
        loop.train(model, data, cfg, torch.device("cpu"))


def test_a_diverged_job_ends_failed_with_the_reason_and_its_energy(
    compose_config, tracking_uri, tmp_path, monkeypatch
):
    import repro.train as train_module

    real_create_model = train_module.create_model

    def create_poisoned_model(*args, **kwargs):
        model = real_create_model(*args, **kwargs)
        _poison(model)
        return model

    monkeypatch.setattr(train_module, "create_model", create_poisoned_model)
    cfg = compose_config("energy.lock=false")
    with pytest.raises(loop.TrainingDiverged):
        run(cfg, JobContext(output_dir=tmp_path / "job"))
    (recorded,) = MlflowClient(tracking_uri).search_runs(
        [MlflowClient(tracking_uri).get_experiment_by_name(cfg.tracking.experiment).experiment_id]
    )
    assert recorded.info.status == "FAILED"
    assert "training diverged" in recorded.data.tags[names.TAG_END_REASON]
    assert recorded.data.metrics[names.ENERGY_TOTAL_J] > 0
