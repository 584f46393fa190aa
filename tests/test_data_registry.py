"""A data set is one module plus one YAML: a source registered from this file alone trains a job."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from mlflow.tracking import MlflowClient

from repro import data
from repro.composition import register_configs
from repro.config import CONF_DIR, DatasetConfig
from repro.data import DatasetSource, Labels, build_data, dataset_config, register_dataset, validate_dataset
from repro.data.registry import _SOURCES
from repro.errors import UserError
from repro.train import JobContext, run


@dataclass
class StripesConfig(DatasetConfig):
    name: str = "stripes"
    num_images: int = 40  # a key of this source only

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_images < 4:
            raise UserError(f"dataset.num_images={self.num_images} must be at least 4 for stripes")


class Stripes(DatasetSource):
    """Horizontal (class 0) or vertical (class 1) stripes."""

    config = StripesConfig

    def labels(self, cfg: StripesConfig) -> Labels:
        return Labels([i % 2 for i in range(cfg.num_images)], ["horizontal", "vertical"])

    def load(self, cfg: StripesConfig, seed: int) -> tuple[Labels, data.registry.Reader]:
        labels = self.labels(cfg)

        def read(index: int) -> torch.Tensor:
            stripes = (torch.arange(cfg.image_size) // 2 % 2 * 255).to(torch.uint8).expand(cfg.image_size, -1)
            image = stripes if labels.targets[index] else stripes.T
            return image.expand(3, -1, -1).clone()

        return labels, read


@pytest.fixture
def stripes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Register `stripes` for one test and write its YAML; returns the extra config folder."""
    monkeypatch.setattr(data.registry, "_SOURCES", dict(_SOURCES))  # both forgotten after the test
    store = ConfigStore.instance()
    monkeypatch.setattr(store, "repo", copy.deepcopy(store.repo))
    register_dataset("stripes")(Stripes)
    register_configs()  # stores stripes_schema
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "stripes.yaml").write_text("defaults:\n  - /stripes_schema\n")
    return tmp_path / "conf"


def test_a_registered_source_builds_data_and_trains_a_job(
    stripes: Path, smoke_overrides: list[str], tracking_uri: str, tmp_path: Path
) -> None:
    overrides = [*smoke_overrides, f"hydra.searchpath=[file://{stripes}]", "dataset=stripes", "energy=none"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, "dataset.num_images=48"])
    assert cfg.dataset.name == "stripes" and cfg.dataset.num_images == 48
    validate_dataset(cfg.dataset)
    bundle = build_data(cfg.dataset, batch_size=8, seed=0)
    assert (bundle.class_names, bundle.n_train, bundle.n_val) == (["horizontal", "vertical"], 33, 15)
    run(cfg, JobContext(output_dir=tmp_path / "job"))
    client = MlflowClient(tracking_uri)
    (recorded,) = client.search_runs([client.get_experiment_by_name("repro").experiment_id])
    assert recorded.info.status == "FINISHED"
    assert recorded.data.params["dataset.name"] == "stripes"
    # smoke: 2 epochs of 2 training batches of 16, each followed by the 15 validation images (no drop_last)
    assert recorded.data.metrics["train_images_seen"] == 2 * 2 * 16
    assert recorded.data.metrics["images_seen"] == 2 * (2 * 16 + 15)


def test_a_registered_source_has_its_own_keys_and_checks(stripes: Path) -> None:
    with pytest.raises(UserError, match="dataset.num_images=2 must be at least 4"):
        dataset_config("stripes", num_images=2)
    with pytest.raises(UserError, match="dataset.path is not a key of dataset=stripes"):
        dataset_config("stripes", path="somewhere")
    with pytest.raises(UserError, match="dataset.num_images is not a key of dataset=digits"):
        dataset_config("digits", num_images=40)


def test_a_source_registers_under_the_name_its_config_gives(stripes: Path) -> None:
    with pytest.raises(ValueError, match="StripesConfig.name must default to 'zebra'"):
        register_dataset("zebra")(Stripes)


def test_an_unknown_source_suggests_the_closest_registered_one(stripes: Path) -> None:
    with pytest.raises(UserError, match="did you mean dataset=stripes"):
        dataset_config("stripe")
