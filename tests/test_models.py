"""The model factory: the study's architectures, their cost, their weights and their errors."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from repro.config import CONF_DIR, ModelConfig
from repro.errors import UserError
from repro.models import check_input_size, create_model, measure_complexity, set_base_trainable

# GFLOPs of one 128x128 image through the study's models with a 1-output head (del Rey et al., SEAA 2023).
STUDY_GFLOPS_128 = {
    "mobilenet_v2": 0.0640,
    "nasnet_mobile": 0.3716,
    "resnet50": 2.5244,
    "vgg16": 10.0288,
    "xception": 2.9584,
}
MODEL_CONFIGS = sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))


def model_config(option: str) -> ModelConfig:
    """`conf/model/<option>.yaml`, composed by Hydra on its schema."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(overrides=[f"+model={option}"])
    model = OmegaConf.to_object(cfg.model)
    assert isinstance(model, ModelConfig)
    return model


@pytest.mark.parametrize("option", sorted(STUDY_GFLOPS_128))
def test_study_models_cost_what_the_study_measured(option: str) -> None:
    model = create_model(model_config(option), num_classes=1)
    complexity = measure_complexity(model, image_size=128)
    study = STUDY_GFLOPS_128[option]
    assert complexity.gflops == pytest.approx(study, rel=0.08), (
        f"{option}: {complexity.gflops:.4f} vs {study}"
    )
    assert 0.5 < complexity.params_m < 30


@pytest.mark.parametrize("option", MODEL_CONFIGS)
def test_every_model_config_creates_a_model_that_runs(option: str) -> None:
    cfg = model_config(option)
    assert timm.is_model(cfg.name)
    model = create_model(cfg, num_classes=10).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_nasnet_mobile_is_in_timm_with_the_published_size() -> None:
    model = timm.create_model("nasnet_mobile")  # 1000 ImageNet classes, as NASNet-A Mobile was published
    complexity = measure_complexity(model, image_size=224)
    assert complexity.params_m == pytest.approx(5.3, abs=0.05)  # Zoph et al. 2018: 5.3M parameters
    assert complexity.gflops / 2 == pytest.approx(0.564, rel=0.01)  # and 564M multiply-adds
    assert "nasnet_mobile" in timm.list_models("nasnet*")


def test_vgg16_has_no_fully_connected_block() -> None:
    model = create_model(ModelConfig(name="vgg16_gap"), num_classes=1)
    assert model.get_classifier().in_features == 512  # the conv base's 512 channels, pooled
    assert all(parameter.device.type == "cpu" for parameter in model.parameters())


def test_complexity_is_measured_quietly_and_keeps_the_mode(capsys: pytest.CaptureFixture[str]) -> None:
    model = create_model(ModelConfig(name="resnet18"), num_classes=1).train()
    complexity = measure_complexity(model, image_size=64)
    assert model.training
    assert complexity.params_m == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    assert complexity.gflops == pytest.approx(1.1844 * (64 / 128) ** 2, rel=0.01)
    assert capsys.readouterr().out == ""


def test_set_base_trainable_freezes_all_but_the_classifier() -> None:
    model = create_model(ModelConfig(name="mobilenetv2_050"), num_classes=1)
    head = set(model.get_classifier().parameters())
    set_base_trainable(model, False)
    assert {p for p in model.parameters() if p.requires_grad} == head
    set_base_trainable(model, True)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet18", "nasnet_mobile"])
def test_weights_file_loads_the_base_and_gives_a_new_head(name: str, tmp_path: Path) -> None:
    source = timm.create_model(name, num_classes=10)
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save(source.state_dict(), checkpoint)

    model = create_model(ModelConfig(name=name, weights_file=str(checkpoint)), num_classes=1)

    head_prefix = model.pretrained_cfg["classifier"] + "."
    loaded = model.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith(head_prefix):
            assert torch.equal(loaded[key], value), key
    assert model.get_classifier().out_features == 1


@pytest.mark.slow
def test_vgg16_loads_a_full_vgg16_checkpoint(tmp_path: Path) -> None:
    source = timm.create_model("vgg16", num_classes=1000)  # with fc6/fc7, as ImageNet checkpoints have them
    checkpoint = tmp_path / "vgg16.pth"
    torch.save(source.state_dict(), checkpoint)

    model = create_model(ModelConfig(name="vgg16_gap", weights_file=str(checkpoint)), num_classes=1)

    assert torch.equal(model.features[0].weight, source.features[0].weight)
    assert torch.equal(model.features[28].weight, source.features[28].weight)


def test_missing_weights_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(UserError, match=r"model\.weights_file=.*nope\.pth.*does not exist"):
        create_model(ModelConfig(name="resnet18", weights_file=str(missing)), num_classes=1)


def test_weights_file_of_another_model_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), checkpoint)
    with pytest.raises(UserError, match=r"resnet18\.pth.* tensors of model 'resnet50'.*missing"):
        create_model(ModelConfig(name="resnet50", weights_file=str(checkpoint)), num_classes=1)


def test_corrupt_weights_file_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "corrupt.pth"
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"corrupt\.pth.*is not a readable PyTorch checkpoint"):
        create_model(ModelConfig(name="resnet18", weights_file=str(checkpoint)), num_classes=1)


def test_unknown_model_name_suggests_close_timm_names() -> None:
    with pytest.raises(UserError, match=r"unknown model\.name='resnett50'.*resnet50") as error:
        create_model(ModelConfig(name="resnett50"), num_classes=1)
    assert "\n" not in str(error.value)


def test_pretrained_offline_says_to_use_weights_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # huggingface_hub's own offline mode (HF_HUB_OFFLINE=1) and an empty cache: the download really fails.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match=r"'resnet18'.*model\.weights_file=PATH"):
        create_model(ModelConfig(name="resnet18", pretrained=True), num_classes=1)


def test_pretrained_without_published_weights_says_to_use_weights_file() -> None:
    with pytest.raises(UserError, match=r"no weights for 'nasnet_mobile'.*model\.weights_file=PATH"):
        create_model(ModelConfig(name="nasnet_mobile", pretrained=True), num_classes=1)


@pytest.mark.parametrize(
    ("name", "image_size", "smallest"), [("vgg16_gap", 16, 32), ("legacy_xception", 4, 7)]
)
def test_too_small_image_names_the_size_the_model_and_the_minimum(
    name: str, image_size: int, smallest: int
) -> None:
    model = create_model(ModelConfig(name=name), num_classes=1)
    refusal = rf"image_size={image_size} is too small for model '{name}'.* {smallest}$"
    with pytest.raises(UserError, match=refusal):
        check_input_size(model, image_size, name)
    with pytest.raises(UserError, match=refusal):
        measure_complexity(model, image_size, name)  # a job's one probe: its FLOPs, and the same refusal
    check_input_size(model, smallest, name)
    assert measure_complexity(model, smallest, name).gflops > 0
