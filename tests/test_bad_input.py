"""Bad input: one line on stderr naming the bad value, exit code 2, and nothing trained or recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from tests.support import REPO_ROOT, refused_in_process, run_cli


def _image_tree(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (8, 8), color=(index * 20 % 255, 0, 0)).save(root / name / f"{index}.png")
    return root


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("training.batch_size=0", "training.batch_size=0"),
        ("training.batch_size=-4", "training.batch_size=-4"),
        ("training.head_lr=0", "training.head_lr=0"),
        ("training.finetune_lr=-0.1", "training.finetune_lr=-0.1"),
        ("training.head_epochs=-1", "training.head_epochs=-1"),
        ("model=no_such_net", "model=no_such_net"),
        ("gpu=quantum", "gpu=quantum"),
        ("model.name=resnet_18", "resnet_18"),
        ("dataset.image_size=0", "image_size"),
        ("tracking.uri=sqlite:////no/such/folder/mlflow.db", "/no/such/folder"),
        ("tracking.uri=http://127.0.0.1:9", "http://127.0.0.1:9"),
        ("training.batch_sise=8", "batch_sise"),
    ],
)
def test_bad_value_is_one_line_exit_2(monkeypatch, capsys, smoke_overrides, override, named):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, override)
    assert named in err


def test_unknown_model_suggests_close_timm_names(monkeypatch, capsys, smoke_overrides):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, "model.name=resnet_18")
    assert "resnet18" in err


def test_unknown_option_lists_the_known_ones(monkeypatch, capsys, smoke_overrides):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, "model=no_such_net")
    assert "mobilenet_v2" in err and "vgg16" in err


def test_image_size_too_small_for_the_model(monkeypatch, capsys, smoke_overrides):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, "model=vgg16", "dataset.image_size=16")
    assert "dataset.image_size=16" in err and "vgg16_gap" in err and "32" in err


@pytest.mark.parametrize("case", ["missing", "empty", "one_class", "unreadable"])
def test_bad_dataset_folder(monkeypatch, capsys, smoke_overrides, tmp_path, case):
    folder = tmp_path / "images"
    if case == "empty":
        folder.mkdir()
    elif case == "one_class":
        _image_tree(folder, {"cats": 6})
    elif case == "unreadable":
        _image_tree(folder, {"cats": 6, "dogs": 6})
        (folder / "dogs" / "broken.png").write_bytes(b"not an image at all")
    err = refused_in_process(
        monkeypatch, capsys, *smoke_overrides, "dataset=imagefolder", f"dataset.path={folder}"
    )
    assert str(folder) in err or "broken.png" in err
    if case == "unreadable":
        assert "broken.png" in err


@pytest.mark.store_absent
def test_a_bad_job_late_in_a_sweep_stops_everything_before_training(
    monkeypatch, capsys, smoke_overrides, tmp_path
):
    err = refused_in_process(monkeypatch, capsys, "-m", *smoke_overrides, "training.batch_size=16,0")
    assert "training.batch_size=0" in err
    assert not (REPO_ROOT / "multirun").joinpath("should-not-exist").exists()
    db = Path(smoke_overrides[1].removeprefix("tracking.uri=sqlite:///"))
    assert not db.exists(), "nothing may be recorded when the request is bad"


def test_sweep_value_without_multirun_flag(monkeypatch, capsys, smoke_overrides):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, "model=mobilenet_v2,resnet18")
    assert "-m" in err


def test_real_command_line_exit_code(smoke_overrides, cli_env):
    result = run_cli(*smoke_overrides, "training.batch_size=0", env=cli_env)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "error: training.batch_size=0 must be greater than 0"
