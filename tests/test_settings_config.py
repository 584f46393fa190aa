"""`experiment=settings_cpu`: the grid of two training settings it promises, and the preflight here."""

from __future__ import annotations

import itertools

from repro.config import CONF_DIR
from repro.preflight import compose_jobs


def test_the_settings_campaign_is_two_architectures_by_batch_size_by_precision_by_three_seeds():
    jobs = compose_jobs(["experiment=settings_cpu"], True, CONF_DIR)  # the preflight's composition
    grid = [(choices["model"], cfg.training.batch_size, cfg.training.amp, cfg.seed) for choices, cfg in jobs]
    expected = itertools.product(("mobilenet_v2", "resnet50"), (16, 64), (False, "bf16"), range(3))
    assert sorted(grid, key=str) == sorted(expected, key=str)
    assert {cfg.tracking.experiment for _, cfg in jobs} == {"settings_cpu"}
    assert {cfg.gpu.name for _, cfg in jobs} == {"cpu"}  # bf16 runs on this CPU; fp16 would be refused
    assert all(cfg.model.pretrained is False for _, cfg in jobs)  # nothing to download
