"""GPU profiles: every profile composes, and the device check accepts what is here and refuses the rest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from tests.support import refused_in_process

from repro import environments
from repro.config import CONF_DIR
from repro.environments import resolve_device
from repro.errors import UserError

PROFILES = sorted(path.stem for path in (CONF_DIR / "gpu").glob("*.yaml"))
NAMED_PROFILES = [name for name in PROFILES if name not in ("cpu", "auto")]
FAKE_H200 = environments._Gpu(
    index=0, name="NVIDIA H200", memory_gb=150.0, driver_version="570.1", power_limit_w=700.0
)


def test_the_issue_s_profiles_are_all_there() -> None:
    expected = {"cpu", "auto", "t4", "l4", "a100", "h100", "h200", "rtx3090", "rtx3070", "gtx750ti"}
    assert expected <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_composes_with_the_fields_it_needs(
    name: str, compose_config: Callable[..., DictConfig]
) -> None:
    gpu = compose_config(f"gpu={name}").gpu
    assert gpu.name == name  # run names and tags use it
    assert gpu.label
    if name in NAMED_PROFILES:
        assert gpu.device_match
        assert gpu.tdp_w > 0 and gpu.memory_gb > 0
        assert gpu.slurm.gres or gpu.slurm.constraint, "a GPU profile must say how SLURM finds its GPU"


@pytest.mark.parametrize(
    ("name", "label"), [("rtx3090", "Cloud"), ("rtx3070", "Local ML"), ("gtx750ti", "Local N")]
)
def test_the_study_s_environments_carry_its_labels(
    name: str, label: str, compose_config: Callable[..., DictConfig]
) -> None:
    assert compose_config(f"gpu={name}").gpu.label == label


def test_gpu_cpu_trains_on_the_cpu(compose_config: Callable[..., DictConfig]) -> None:
    device = resolve_device(compose_config("gpu=cpu").gpu)
    assert device.torch_device == torch.device("cpu")
    assert device.tags() == {"gpu.profile": "cpu", "gpu.label": "CPU", "device": "cpu", "device.name": "cpu"}


def test_gpu_auto_takes_what_this_machine_has_and_says_so(compose_config: Callable[..., DictConfig]) -> None:
    device = resolve_device(compose_config("gpu=auto").gpu)
    tags = device.tags()
    assert tags["gpu.profile"] == "auto"
    if torch.cuda.is_available():
        assert device.torch_device == torch.device("cuda", 0)
        assert tags["device.name"] == torch.cuda.get_device_name(0)
        assert tags["device.cuda_version"] == torch.version.cuda
    else:
        assert device.torch_device == torch.device("cpu")
        assert tags["device.note"].startswith("gpu=auto found no usable GPU")


def test_a_named_profile_on_a_machine_without_gpu_says_what_to_do(
    compose_config: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(environments, "_detect_gpus", lambda: ([], environments._NO_NVIDIA_GPU))
    with pytest.raises(UserError) as error:
        resolve_device(compose_config("gpu=a100").gpu)
    assert str(error.value) == (
        "gpu=a100 asks for an NVIDIA A100 but this machine has no NVIDIA GPU; use gpu=cpu or gpu=auto here, "
        "or submit to a cluster with hydra/launcher=slurm"
    )


def test_a_named_profile_on_another_gpu_names_the_gpu_found(
    compose_config: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(environments, "_detect_gpus", lambda: ([FAKE_H200], None))
    with pytest.raises(
        UserError, match=r"gpu=t4 asks for an NVIDIA T4 but this machine has NVIDIA H200 \(cuda:0\)"
    ):
        resolve_device(compose_config("gpu=t4").gpu)


def test_a_matching_gpu_is_pinned_and_described_in_tags(
    compose_config: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    second = environments._Gpu(index=1, name="NVIDIA H200", memory_gb=150.0)
    monkeypatch.setattr(environments, "_detect_gpus", lambda: ([FAKE_H200, second], None))
    pinned: list[int] = []
    monkeypatch.setattr(torch.cuda, "set_device", pinned.append)
    device = resolve_device(compose_config("gpu=h200").gpu)
    assert device.torch_device == torch.device("cuda", 0) and pinned == [0]
    tags = device.tags()
    assert tags["device.name"] == "NVIDIA H200"
    assert tags["device.driver_version"] == "570.1"
    assert tags["device.power_limit_w"] == "700"
    assert tags["gpu.label"] == "NVIDIA H200"


@pytest.mark.parametrize(
    ("device_match", "device_name", "matches"),
    [
        ("T4", "Tesla T4", True),
        ("RTX 3090", "NVIDIA GeForce RTX 3090", True),
        ("gtx 750 ti", "NVIDIA GeForce GTX 750 Ti", True),
        ("A100", "NVIDIA A100-SXM4-80GB", True),
        ("A10", "NVIDIA A100-SXM4-80GB", False),
        ("H100", "NVIDIA H200", False),
    ],
)
def test_device_match_is_whole_words_ignoring_case(
    device_match: str, device_name: str, matches: bool
) -> None:
    assert environments._matches(device_match, device_name) is matches


def test_the_command_line_refuses_a_gpu_this_machine_lacks(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    smoke_overrides: list[str],
    tmp_path: Path,
) -> None:
    # `repro-train`'s main in this process (one line on stderr, exit 2, no traceback: checked by the
    # helper); tests/test_bad_input.py checks once that the real process exits with that code.
    err = refused_in_process(
        monkeypatch, capsys, *smoke_overrides, "gpu=t4", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert err.startswith("error: gpu=t4 asks for an NVIDIA T4 but this machine has ")
    if not torch.cuda.is_available():
        assert "this machine has no NVIDIA GPU; use gpu=cpu or gpu=auto here" in err


def test_an_unknown_profile_lists_the_known_ones(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    smoke_overrides: list[str],
    tmp_path: Path,
) -> None:
    err = refused_in_process(
        monkeypatch, capsys, *smoke_overrides, "gpu=a200", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert err == f"error: unknown option gpu=a200; known gpu options: {', '.join(PROFILES)}"
