"""Mixed precision (`training.amp`): jobs train at the precision asked for, or is refused before training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from tests.support import refused_in_process

from repro import precision
from repro.errors import UserError
from repro.train import JobContext, run

_NO_GPU = "needs a CUDA GPU (none here)"


def _only_run(uri: str):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("repro").experiment_id])
    assert len(runs) == 1
    return runs[0]


@pytest.mark.slow
def test_a_bf16_job_on_the_cpu_finishes_and_records_its_precision(compose_config, tracking_uri, tmp_path):
    f1 = run(compose_config("training.amp=bf16"), JobContext(output_dir=tmp_path / "job"))

    recorded = _only_run(tracking_uri)
    assert recorded.info.status == "FINISHED"
    assert recorded.data.params["training.amp"] == "bf16"
    assert recorded.data.tags["device.memory_format"] == "channels_last"  # auto, on the CPU
    assert recorded.data.metrics["f1"] == pytest.approx(f1) and 0.0 <= f1 <= 1.0
    assert recorded.data.metrics["energy_total_j"] > 0


def test_fp32_is_the_default_and_recorded_as_false(compose_config):
    from repro.config import job_config
    from repro.tracking import flatten_config

    assert flatten_config(job_config(compose_config()))["training.amp"] == "False"


@pytest.mark.store_absent
def test_fp16_on_the_cpu_is_refused_before_the_store_is_created(
    monkeypatch, capsys, smoke_overrides, tracking_uri
):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, "gpu=cpu", "training.amp=fp16")
    assert "training.amp=fp16" in err and "bf16" in err
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists()


@pytest.mark.parametrize("value", ["fp32", "true", "8"])
def test_an_unknown_precision_is_refused_naming_the_options(monkeypatch, capsys, smoke_overrides, value):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, f"training.amp={value}")
    assert "training.amp=" in err and "fp16" in err and "bf16" in err


def test_fp16_on_the_cpu_is_refused_by_a_job_run_directly(compose_config, tracking_uri, tmp_path):
    with pytest.raises(UserError, match="training.amp=fp16"):
        run(compose_config("training.amp=fp16"), JobContext(output_dir=tmp_path / "job"))
    client = MlflowClient(tracking_uri)
    assert not [run for e in client.search_experiments() for run in client.search_runs([e.experiment_id])]


def test_autocast_computes_at_the_precision_asked_for():
    layer = torch.nn.Linear(4, 2)
    cpu = torch.device("cpu")
    with precision.autocast("bf16", cpu):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with precision.autocast(False, cpu):
        assert layer(torch.ones(1, 4)).dtype == torch.float32
    assert not precision.grad_scaler("bf16", cpu).is_enabled()  # BF16 has FP32's range: no scaling


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason=_NO_GPU)
def test_an_fp16_job_on_a_gpu_finishes_with_a_loss_scaler(compose_config, tracking_uri, tmp_path):
    assert precision.grad_scaler("fp16", torch.device("cuda")).is_enabled()
    run(compose_config("gpu=auto", "training.amp=fp16"), JobContext(output_dir=tmp_path / "job"))
    recorded = _only_run(tracking_uri)
    assert recorded.info.status == "FINISHED"
    assert recorded.data.params["training.amp"] == "fp16"
    assert recorded.data.tags["device"].startswith("cuda")


def test_an_unknown_memory_format_is_refused_naming_the_options(monkeypatch, capsys, smoke_overrides):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, "training.memory_format=nhwc")
    assert "training.memory_format=nhwc" in err and "channels_last" in err and "contiguous" in err
