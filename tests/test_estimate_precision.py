"""`repro.estimate` at the job's precision (`training.amp`): the peak TFLOPS that bounds its arithmetic."""

from __future__ import annotations

import pytest

from repro.config import CONF_DIR
from repro.estimate.features import job_features
from repro.preflight import compose_jobs


def _features(*overrides: str):
    [(choices, cfg)] = compose_jobs(["model=resnet50", *overrides], False, CONF_DIR)
    return job_features(cfg, choices["model"])


def test_the_features_carry_the_profile_peak_at_the_job_precision():
    assert _features("gpu=rtx3070").values["fp32_tflops"] == 20.31
    assert _features("gpu=rtx3070", "training.amp=fp16").values["fp32_tflops"] == 40.6
    assert _features("gpu=h100", "training.amp=bf16").precision == "bf16"


@pytest.mark.slow
def test_fp16_on_a_gpu_profile_predicts_no_more_time_per_image_than_fp32(capsys):
    from repro.estimate.report import estimate_jobs

    rows = estimate_jobs(
        ["model=resnet50", "gpu=rtx3070", "training.amp=false,fp16"], True, ["published"], {}
    )
    fp32, fp16 = rows["duration_ms_per_image"]
    assert fp16 < fp32, (rows["source"].tolist(), fp32, fp16)  # the same job with twice the peak TFLOPS
    assert rows["duration_s"].iloc[1] < rows["duration_s"].iloc[0]
    capsys.readouterr()


def test_a_precision_the_profile_has_no_peak_for_is_refused_naming_the_key(monkeypatch, capsys):
    from repro.estimate.__main__ import main

    monkeypatch.setattr("sys.argv", ["repro-estimate", "model=resnet50", "gpu=gtx750ti", "training.amp=fp16"])
    with pytest.raises(SystemExit) as stopped:
        main()
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and "\n" not in err, err
    assert "gpu.fp16_tflops" in err and "gtx750ti" in err
