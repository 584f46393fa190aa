"""Every option of every config group composes against its schema, and typos fail at composition."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from repro.config import CONF_DIR

GROUPS = ["model", "dataset", "training", "energy", "gpu", "tracking", "experiment"]
#: Launchers live in Hydra's ConfigStore (ours is registered by the repro_launcher plugin), not in YAML.
LAUNCHERS = ["basic", "submitit_local", "slurm"]


def _options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


ALL_OPTIONS = [(group, option) for group in GROUPS for option in _options(group)]
ALL_OPTIONS += [("hydra/launcher", launcher) for launcher in LAUNCHERS]


def test_every_group_has_options():
    for group in GROUPS:
        assert _options(group), f"conf/{group}/ holds no option"


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_option_composes(group, option):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"{group}={option}"], return_hydra_config=True)
    if group == "hydra/launcher":
        assert cfg.hydra.launcher._target_
    elif group == "experiment":
        assert cfg.model.name and cfg.training.batch_size > 0
    else:
        node = cfg[group]
        # Required fields are set by every option (the path of a data set on disk is the user's to give).
        for key in node:
            if group == "dataset" and key == "path":
                continue
            assert node._get_node(key)._is_missing() is False, f"{group}={option} leaves {key} unset"


def test_paper_experiment_sweeps_the_study_campaign():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=paper"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params.model.split(",") == ["mobilenet_v2", "nasnet_mobile", "xception", "resnet50", "vgg16"]
    assert params.seed == "range(0,30)"
    assert cfg.dataset.image_size == 128 and cfg.training.batch_size == 32
    assert cfg.training.head_epochs == 10 and cfg.training.finetune_epochs == 140
    assert cfg.energy.warmup_s == 600 and cfg.energy.cooldown_s == 300
    assert cfg.energy.carbon_intensity_g_per_kwh == 232


def test_unknown_key_fails_at_composition():
    with (
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"),
        pytest.raises(ConfigCompositionException),
    ):
        compose(config_name="config", overrides=["training.batch_sise=8"])


def test_wrong_type_fails_at_composition():
    with (
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"),
        pytest.raises((ValidationError, ConfigCompositionException)),
    ):
        compose(config_name="config", overrides=["training.batch_size=many"])
