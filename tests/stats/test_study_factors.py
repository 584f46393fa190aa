"""Any declared factor analysed like the study's (issue 18): loaders, analyses, tables and refusals."""

from __future__ import annotations

import numpy as np
from tests.stores import first_sweep_store

from repro.stats.runs import RunsTable, load_mlflow


def test_published_runs_carry_every_setting_at_the_studys_protocol(published: RunsTable):
    runs = published.runs
    assert set(runs["batch_size"]) == {32.0} and set(runs["image_size"]) == {128.0}
    assert set(runs["precision"]) == {"fp32"}
    assert np.array_equal(runs["power_limit_in_force_w"], runs["power_limit_w"])  # 'max power limit (W)'


def test_mlflow_runs_without_a_setting_lack_its_level(tmp_path):
    runs = load_mlflow(first_sweep_store(tmp_path), "repro").runs  # no training.* params, no NVML limit
    assert runs["batch_size"].isna().all() and runs["power_limit_in_force_w"].isna().all()
    assert runs["precision"].isna().all()
