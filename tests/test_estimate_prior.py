"""The physical prior of `repro.estimate`: GPU specs, plausibility, and intervals on unseen groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from repro.config import CONF_DIR
from repro.estimate import published_runs
from repro.estimate.features import PUBLISHED_DATA
from repro.estimate.prior import (
    GROUPINGS,
    PEAK_OF_PRECISION,
    STUDY_ACTIVATIONS_M,
    STUDY_LAYERS,
    _time_and_power,
    fit_parameters,
    fit_prior,
    gpu_specs_for_prior,
    grouped_predictions,
    missing_specs,
    study_frame,
    with_gpu_columns,
)

#: Pooled 90% coverage (%) of J/image under each grouped split (paper/estimation/e_unseen), pinned as
#: a regression guard: a change to the prior or its calibration shows up here. The GPU split's interval
#: is the largest calibration GPU's 90% quantile, widened beyond what two or three GPUs calibrate (it was
#: 78.3% with the runs pooled: two machines' residuals cannot show how different a third host is).
PINNED_COVERAGE_PCT = {"architecture": 92.6, "GPU": 92.6}
_GPUS = ("gtx750ti", "rtx3070", "rtx3090", "t4", "l4", "a100", "h100", "h200")


@pytest.fixture(scope="module")
def study() -> pd.DataFrame:
    return study_frame(published_runs())


def _job(gpu: str, architecture: str = "resnet50", gflops: float = 2.524383) -> pd.DataFrame:
    workload = {
        "gflops": gflops,
        "activations_m": STUDY_ACTIVATIONS_M[architecture],
        "layers": float(STUDY_LAYERS[architecture]),
        "batch_size": 32.0,
        "train_images": 23807.0,
        "val_images": 10203.0,
    }
    return with_gpu_columns(pd.DataFrame([{**workload, **gpu_specs_for_prior(gpu)}]))


@pytest.mark.parametrize("profile", _GPUS)
def test_every_gpu_profile_has_the_priors_specs_with_their_source(profile):
    cfg = OmegaConf.load(CONF_DIR / "gpu" / f"{profile}.yaml")
    assert cfg.memory_bandwidth_gbs > 0
    assert "bandwidth" in cfg.specs_source and "idle power not published" in cfg.specs_source
    assert cfg.idle_power_w is None  # no datasheet here publishes it: the prior fits a share instead
    for key in ("tf32_tflops", "fp16_tflops", "bf16_tflops"):  # tensor peaks are never below FP32's
        assert cfg[key] is None or cfg[key] >= 0.99 * cfg.fp32_tflops, key


def test_the_rtx3070_runs_at_the_studys_240_w_limit_beside_its_220_w_board_spec():
    cfg = OmegaConf.load(CONF_DIR / "gpu" / "rtx3070.yaml")
    assert (cfg.tdp_w, cfg.default_power_limit_w) == (220, 240)
    raw = pd.read_parquet(PUBLISHED_DATA)
    limits = raw.loc[raw["training environment"] == "Local ML Engineer/Gamer", "max power limit (W)"]
    assert set(limits) == {240.0}


def test_the_prior_says_which_specs_a_profile_lacks():
    t4 = gpu_specs_for_prior("t4")
    assert missing_specs(t4, "fp32") == []
    assert missing_specs(t4, "bf16") == ["bf16_tflops"]  # Turing has no BF16 tensor cores
    assert missing_specs(gpu_specs_for_prior("cpu")) == ["fp32_tflops", "memory_bandwidth_gbs", "tdp_w"]
    assert set(PEAK_OF_PRECISION) == {"fp32", "tf32", "fp16", "bf16"}


def test_time_per_image_never_rises_with_the_peak_throughput(study):
    params = fit_parameters(study)
    for architecture, gflops in (("mobilenet_v2", 0.064028), ("resnet50", 2.524383), ("vgg16", 10.02877)):
        time_ms = {gpu: _time_and_power(params, _job(gpu, architecture, gflops))[0][0] for gpu in _GPUS}
        assert time_ms["h100"] <= time_ms["a100"] <= time_ms["t4"], (architecture, time_ms)
        # and along a sweep of the peak alone, everything else the A100's
        sweep = pd.concat([_job("a100", architecture, gflops)] * 5, ignore_index=True)
        sweep["peak_tflops"] = [5.0, 10.0, 20.0, 40.0, 80.0]
        times = _time_and_power(params, sweep)[0]
        assert np.all(np.diff(times) <= 0), times


def test_the_fitted_parameters_are_physical(study):
    params = fit_parameters(study)
    assert 0.05 < params.efficiency <= 1.0  # a share of the peak
    assert 0 < params.idle_share < 1.0 and params.util_scale > 0  # power stays below the limit
    assert params.host_ms > 0 and params.layer_mflop > 0 and params.bytes_per_activation > 0


@pytest.fixture(scope="module")
def grouped(study) -> pd.DataFrame:
    return grouped_predictions(study)


def test_the_prior_beats_the_training_median_constant_on_every_held_out_group(study, grouped):
    truth = study["power_w"] * study["ms_per_image"] / 1000
    for grouping, column in GROUPINGS.items():
        mine = grouped[grouped["grouping"] == grouping]
        for held_out, part in mine.groupby("held_out"):
            observed = truth.loc[part.index]
            constant = truth[study[column] != held_out].median()  # fitted without the held-out group too
            prior_mape = (part["j_per_image"] / observed - 1).abs().mean()
            constant_mape = (constant / observed - 1).abs().mean()
            assert prior_mape < constant_mape, (grouping, held_out, prior_mape, constant_mape)


def test_intervals_hold_on_architectures_and_gpus_the_fit_never_saw(study, grouped):
    predicted = grouped
    truth = (study["power_w"] * study["ms_per_image"] / 1000).loc[predicted.index]
    inside = (truth >= predicted["j_per_image_low"]) & (truth <= predicted["j_per_image_high"])
    for grouping in GROUPINGS:
        mine = predicted["grouping"] == grouping
        assert mine.sum() == len(study)  # every run held out once per grouping
        coverage = 100 * inside[mine].mean()
        assert 85 <= coverage <= 95, (grouping, coverage)
        assert coverage == pytest.approx(PINNED_COVERAGE_PCT[grouping], abs=0.1), grouping


def test_an_unseen_gpus_interval_is_the_largest_calibration_gpus_and_says_it_is_widened(study, grouped):
    from repro.estimate.prior import grouped_log_errors

    errors = grouped_log_errors(study)
    gpu_out = errors[errors["grouping"] == "GPU"]
    predicted = grouped[grouped["grouping"] == "GPU"]
    for held_out, part in predicted.groupby("held_out"):
        others = gpu_out[gpu_out["held_out"] != held_out]
        # the 90% quantile (ceil((n + 1) x 0.9)-th smallest) of each other GPU's own |log error|
        per_gpu = [
            np.sort(np.abs(e["j_per_image"].to_numpy()))[int(np.ceil((len(e) + 1) * 0.9)) - 1]
            for _, e in others.groupby("held_out")
        ]
        width = part["j_per_image_high"] / part["j_per_image_low"]
        assert np.allclose(width, np.exp(2 * max(per_gpu))), held_out
        assert part["widened"].all()
    assert not grouped.loc[grouped["grouping"] == "architecture", "widened"].any()
    prior = fit_prior(study)
    assert prior.widened_note(frozenset({"architecture"})) == ""
    for unseen in (frozenset({"GPU"}), frozenset(GROUPINGS), frozenset()):
        assert "widened beyond calibration" in prior.widened_note(unseen), unseen


def test_an_unseen_gpu_and_architecture_get_a_wider_interval_than_either(study):
    prior = fit_prior(study)
    job = _job("a100")
    width = {}
    for unseen in (frozenset({"architecture"}), frozenset({"GPU"}), frozenset(GROUPINGS)):
        predicted = prior.predict(job, unseen).iloc[0]
        width[unseen] = predicted["j_per_image_high"] / predicted["j_per_image_low"]
    both = width[frozenset(GROUPINGS)]
    assert both > width[frozenset({"architecture"})] and both > width[frozenset({"GPU"})]
    assert width[frozenset({"architecture"})] > 1.5  # honest: an unseen architecture is not a +-13% guess


@pytest.mark.slow
def test_study_workloads_match_the_models_this_package_trains():
    from repro.config import ModelConfig
    from repro.estimate.prior import model_workload

    for architecture in STUDY_ACTIVATIONS_M:
        profile = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{architecture}.yaml"))
        profile.pop("defaults")
        activations_m, layers = model_workload(ModelConfig(**{**profile, "head": "study"}), 128)
        assert activations_m == pytest.approx(STUDY_ACTIVATIONS_M[architecture], rel=1e-6), architecture
        assert layers == STUDY_LAYERS[architecture], architecture


def test_predicted_epochs_never_read_the_held_out_runs(study):
    from repro.estimate.validate import _predicted_epochs

    changed = study.copy()
    held_out = (changed["gpu"] == "rtx3090").to_numpy()
    changed.loc[held_out, "epochs"] = 1000.0  # what the held-out runs trained must not matter
    for column in ("architecture", "gpu"):
        before, after = _predicted_epochs(study, column), _predicted_epochs(changed, column)
        if column == "gpu":
            assert np.array_equal(before["point"][held_out], after["point"][held_out])
        assert (after["high"] >= after["point"]).all() and (after["point"] >= after["low"]).all()
