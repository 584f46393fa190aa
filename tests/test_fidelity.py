"""What the study trained: its heads, frozen BatchNorm, preprocessing, step counts and ResNet50 v1."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

from repro import loop
from repro.config import CONF_DIR, DatasetConfig, ModelConfig, TrainingConfig
from repro.data import build_data, dataset_config, preprocess
from repro.errors import UserError
from repro.models import create_model, measure_complexity
from repro.train import JobContext, main, run

# Parameters of the study's Keras heads after GlobalAveragePooling2D with one output:
# Dense(h) has in*h + h parameters. Base widths: MobileNetV2 (alpha 0.5) 1280, NASNetMobile 1056,
# ResNet50 and Xception 2048, VGG16 512.
KERAS_HEAD_PARAMS = {
    "mobilenet_v2": 1280 * 512 + 512 + 513,
    "nasnet_mobile": 1056 * 512 + 512 + 513,
    "resnet50": 2048 * 1024 + 1024 + 1024 * 512 + 512 + 513,
    "vgg16": 513,
    "xception": 2048 * 1024 + 1024 + 1025,
}
STUDY_RESNET50_GFLOPS_128 = 2.5244  # Keras ResNet50 at 128 px with the study's head (del Rey et al.)


def _model_config(option: str, *overrides: str) -> ModelConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(overrides=[f"+model={option}", *overrides])
    model = OmegaConf.to_object(cfg.model)
    assert isinstance(model, ModelConfig)
    return model


def _paper_job(option: str) -> OmegaConf:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["experiment=paper", f"model={option}"])


@pytest.mark.parametrize("option", sorted(KERAS_HEAD_PARAMS))
def test_study_head_has_the_keras_head_parameter_count(option: str) -> None:
    model = create_model(_model_config(option, "model.head=study"), num_classes=1)
    head_params = sum(p.numel() for p in model.get_classifier().parameters())
    assert head_params == KERAS_HEAD_PARAMS[option]
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 1)


def test_linear_head_is_one_layer_and_the_logged_complexity_counts_the_head() -> None:
    linear = create_model(_model_config("mobilenet_v2"), num_classes=1)
    study = create_model(_model_config("mobilenet_v2", "model.head=study"), num_classes=1)
    assert sum(p.numel() for p in linear.get_classifier().parameters()) == 1280 + 1
    grown_m = (KERAS_HEAD_PARAMS["mobilenet_v2"] - 1281) / 1e6
    assert measure_complexity(study, 128).params_m == pytest.approx(
        measure_complexity(linear, 128).params_m + grown_m, abs=1e-9
    )
    assert measure_complexity(study, 128).gflops > measure_complexity(linear, 128).gflops


def test_resnet50_v1_costs_what_the_study_measured() -> None:
    model = create_model(_model_config("resnet50", "model.head=study"), num_classes=1)
    gflops = measure_complexity(model, 128).gflops
    assert gflops == pytest.approx(STUDY_RESNET50_GFLOPS_128, rel=0.01), gflops
    # the stride sits in the first 1x1 convolution of a downsampling block, not in the 3x3
    block = model.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)


@pytest.mark.parametrize("option", sorted(KERAS_HEAD_PARAMS))
def test_paper_experiment_uses_the_study_head_protocol_and_preprocessing(option: str) -> None:
    cfg = _paper_job(option)
    assert cfg.model.head == "study" and cfg.model.study_head_hidden is not None
    assert cfg.training.freeze_bn and cfg.training.drop_last
    expected = "caffe" if option in ("resnet50", "vgg16") else "tf"
    assert cfg.model.preprocessing == expected
    if option == "resnet50":
        assert cfg.model.name == "resnet50_v1"


def _bad_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["repro-train", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_study_head_for_a_model_without_one_lists_those_with_one(monkeypatch, capsys, smoke_overrides):
    err = _bad_cli(monkeypatch, capsys, *smoke_overrides, "model=resnet18", "model.head=study")
    assert "model.head=study" in err and "resnet18" in err
    for option in KERAS_HEAD_PARAMS:
        assert option in err


def test_unknown_head_and_preprocessing_are_one_line(monkeypatch, capsys, smoke_overrides):
    assert "model.head='dense'" in _bad_cli(monkeypatch, capsys, *smoke_overrides, "model.head=dense")
    err = _bad_cli(monkeypatch, capsys, *smoke_overrides, "model.preprocessing=keras")
    assert "model.preprocessing='keras'" in err


# --- preprocessing --------------------------------------------------------------------------------

PIXEL = (10, 100, 200)  # one RGB colour on 0..255
IMAGENET = zip(PIXEL, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), strict=True)


def _flat_folder(root: Path) -> Path:
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (4, 4), PIXEL).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("preprocessing", "expected"),
    [
        ("tf", [v / 127.5 - 1 for v in PIXEL]),  # Keras 'tf': [-1, 1]
        ("caffe", [200 - 103.939, 100 - 116.779, 10 - 123.68]),  # Keras 'caffe': BGR, means subtracted
        ("torch", [(v / 255 - mean) / std for v, mean, std in IMAGENET]),  # Keras 'torch': ImageNet mean/std
    ],
)
def test_preprocessing_follows_the_keras_formulas(tmp_path, preprocessing, expected) -> None:
    cfg = dataset_config(name="imagefolder", path=str(_flat_folder(tmp_path / "flat")), image_size=4)
    bundle = build_data(cfg, 8, 0, preprocessing=preprocessing)
    images = torch.cat([batch for batch, _ in bundle.val_loader])
    torch.testing.assert_close(
        images[:, :, 1, 2], torch.tensor(expected).expand(len(images), 3), rtol=0, atol=1e-4
    )
    ones = torch.ones(2, 3, 1, 1)
    torch.testing.assert_close(preprocess(ones, preprocessing)[0], preprocess(ones[0], preprocessing))


# --- drop_last and frozen BatchNorm ---------------------------------------------------------------


def _synthetic(**changes: object) -> DatasetConfig:
    return dataclasses.replace(dataset_config(name="synthetic", num_images=100, image_size=16), **changes)


@pytest.mark.parametrize(("drop_last", "train_steps", "val_steps"), [(True, 70 // 8, 30 // 8), (False, 9, 4)])
def test_drop_last_gives_the_study_step_counts(drop_last: bool, train_steps: int, val_steps: int) -> None:
    bundle = build_data(_synthetic(), 8, 0, drop_last=drop_last)  # 70 training, 30 validation images
    assert (len(bundle.train_loader), len(bundle.val_loader)) == (train_steps, val_steps)
    val_images = sum(len(targets) for _, targets in bundle.val_loader)
    assert val_images == (val_steps * 8 if drop_last else 30)


def test_drop_last_with_a_side_smaller_than_a_batch_is_refused() -> None:
    with pytest.raises(UserError, match="training.drop_last=true leaves no validation batch"):
        build_data(_synthetic(), 32, 0, drop_last=True)  # 30 validation images


def _base_bn_stats(model: torch.nn.Module) -> list[torch.Tensor]:
    head = {id(m) for m in model.get_classifier().modules()}
    return [
        tensor.clone()
        for module in model.modules()
        if isinstance(module, torch.nn.BatchNorm2d) and id(module) not in head
        for tensor in (module.running_mean, module.running_var)
    ]


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_freeze_bn_keeps_the_base_running_statistics(freeze_bn: bool) -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="resnet18"), num_classes=1)
    data = build_data(_synthetic(), 8, 0, drop_last=True)
    cfg = TrainingConfig(head_epochs=1, finetune_epochs=1, max_steps_per_epoch=2, freeze_bn=freeze_bn)
    before = _base_bn_stats(model)
    weights_before = model.conv1.weight.clone()
    result = loop.train(model, data, cfg, torch.device("cpu"))
    after = _base_bn_stats(model)
    unchanged = all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert unchanged == freeze_bn
    assert not torch.equal(weights_before, model.conv1.weight)  # the base still fine-tuned
    assert [record.train_images for record in result.history] == [16, 16]
    assert all(record.images == 16 + record.val_images > 16 for record in result.history)


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_the_head_phase_trains_the_head_alone(freeze_bn: bool) -> None:
    """On the CPU the loop lays the weights out channels last; the base's values still stay as they were."""
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="mobilenetv2_050", head="study", study_head_hidden=[16]), 1)
    data = build_data(_synthetic(), 8, 0, drop_last=True)
    cfg = TrainingConfig(head_epochs=1, finetune_epochs=0, max_steps_per_epoch=2, freeze_bn=freeze_bn)
    head = {id(p) for p in model.get_classifier().parameters()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loop.train(model, data, cfg, torch.device("cpu"))
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    head_names = {name for name, p in model.named_parameters() if id(p) in head}
    assert changed == head_names  # every head parameter moved (Adam), no base parameter did
    assert model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)


def test_the_memory_format_setting_chooses_the_layout_the_loop_trains_in() -> None:
    cpu = torch.device("cpu")
    assert loop.memory_format("auto", cpu) == "channels_last"
    assert loop.memory_format("auto", torch.device("cuda")) == "contiguous"  # PyTorch's default on a GPU
    assert loop.memory_format("contiguous", cpu) == "contiguous"
    model = create_model(ModelConfig(name="mobilenetv2_050"), 1)
    model.to(memory_format=torch.channels_last)
    data = build_data(_synthetic(), 8, 0, drop_last=True)
    loop.train(model, data, TrainingConfig(head_epochs=1, finetune_epochs=0, max_steps_per_epoch=1,
                                           memory_format="contiguous"), cpu)  # fmt: skip
    assert model.conv_stem.weight.is_contiguous()
    assert not model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_a_job_with_the_study_head_logs_its_cost_with_the_head(compose_config, tracking_uri, tmp_path):
    cfg = compose_config("model=mobilenet_v2", "model.head=study", "energy=none")
    run(cfg, JobContext(output_dir=tmp_path / "job"))
    client = MlflowClient(tracking_uri)
    (recorded,) = client.search_runs([client.get_experiment_by_name("repro").experiment_id])
    expected = measure_complexity(create_model(OmegaConf.to_object(cfg.model), num_classes=1), 32)
    assert recorded.data.metrics["params_m"] == pytest.approx(expected.params_m)
    assert recorded.data.metrics["gflops"] == pytest.approx(expected.gflops)
    assert recorded.data.params["model.head"] == "study"
    from repro.threads import resolve_threads

    threads = resolve_threads(None)  # the cores, or OMP_NUM_THREADS where set
    assert recorded.data.params["training.threads"] == str(threads)  # null resolved and logged
    assert torch.get_num_threads() == threads


# --- threads --------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", ["0", "-1", "100000"])
def test_threads_outside_the_available_cores_are_one_line(monkeypatch, capsys, smoke_overrides, threads):
    err = _bad_cli(monkeypatch, capsys, *smoke_overrides, f"training.threads={threads}")
    assert f"training.threads={threads}" in err


def test_threads_follow_the_affinity_mask_and_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    from repro.threads import available_cores, resolve_threads

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    assert available_cores() == 4 and resolve_threads(None) == 4 and resolve_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a thread count set for the whole environment
    assert resolve_threads(None) == 1 and resolve_threads(4) == 4
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert resolve_threads(None) == 2
    with pytest.raises(UserError, match="training.threads=3 must be between 1 and the 2 core"):
        resolve_threads(3)
