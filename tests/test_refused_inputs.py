"""Bad input that used to get through: each is one line on stderr and exit code 2 before anything trains.

`repro.paper`'s cases are at the end: a damaged parquet file, an experiment with one group, a run
that saw no images, and an experiment name that is not a safe folder name.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from PIL import Image
from tests.support import REPO_ROOT, refused_in_process

from repro import paper, tracking
from repro.errors import UserError


def _image_tree(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (8, 8), color=(index * 20 % 255, 40, 0)).save(root / name / f"{index}.jpg")
    return root


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("training.head_lr=nan", "training.head_lr=nan"),
        ("training.head_lr=inf", "training.head_lr=inf"),
        ("training.finetune_lr=-inf", "training.finetune_lr=-inf"),
        ("training.momentum=nan", "training.momentum=nan"),
        ("energy.cooldown_s=inf", "energy.cooldown_s=inf"),
        ("energy.carbon_intensity_g_per_kwh=nan", "energy.carbon_intensity_g_per_kwh=nan"),
    ],
)
def test_nan_and_infinity_are_refused(monkeypatch, capsys, smoke_overrides, override, named):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, override)
    assert named in err and "finite" in err


def test_a_plus_key_the_schema_lacks_is_refused_with_close_matches(monkeypatch, capsys, smoke_overrides):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, "+training.batchsize=32")
    assert "+training.batchsize=32" in err and "training.batch_size" in err


def test_an_unknown_key_is_not_told_to_add_it_with_plus(monkeypatch, capsys, smoke_overrides):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, "training.batch_sise=8")
    assert "training.batch_sise" in err and "training.batch_size" in err
    assert "+training" not in err


def test_an_unquoted_path_with_a_space_gets_a_quoting_hint(monkeypatch, capsys, smoke_overrides, tmp_path):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, f"dataset.path={tmp_path}/my", "images")
    assert "quote" in err and f"'dataset.path={tmp_path}/my images'" in err


def test_a_folder_as_the_tracking_database_is_refused(
    monkeypatch, capsys, smoke_overrides, tmp_path
):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, f"tracking.uri=sqlite:///{tmp_path}")
    assert "names a folder" in err and f"sqlite:///{tmp_path}/mlflow.db" in err


def test_a_file_that_is_not_sqlite_is_refused_as_the_database(monkeypatch, capsys, smoke_overrides, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a database\n")
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, f"tracking.uri=sqlite:///{notes}")
    assert "not an SQLite database" in err
    assert notes.read_text() == "my notes, not a database\n"


def test_a_truncated_jpeg_is_refused_before_training(monkeypatch, capsys, smoke_overrides, tmp_path):
    folder = _image_tree(tmp_path / "images", {"cats": 6, "dogs": 6})
    noise = torch.randint(0, 256, (64, 64, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    Image.fromarray(noise.numpy()).save(folder / "dogs" / "big.jpg", quality=95)
    whole = (folder / "dogs" / "big.jpg").read_bytes()
    (folder / "dogs" / "big.jpg").write_bytes(whole[: len(whole) * 9 // 10])  # header and checksums pass
    err = refused_in_process(
        monkeypatch, capsys, *smoke_overrides, "dataset=imagefolder", f"dataset.path={folder}"
    )
    assert "big.jpg" in err and "truncated" in err


@pytest.mark.parametrize("case", ["loop", "dot", "sibling", "outside", "file_twice"])
def test_symlinks_that_loop_duplicate_or_leave_the_folder_are_refused(
    monkeypatch, capsys, smoke_overrides, tmp_path, case
):
    folder = _image_tree(tmp_path / "images", {"a": 6, "c": 6})
    if case == "loop":
        (folder / "a" / "again").symlink_to(folder / "a")
    elif case == "dot":
        (folder / "b").symlink_to(".")  # class b would get every image of a and c
    elif case == "sibling":
        (folder / "b").symlink_to(folder / "a")
    elif case == "outside":
        elsewhere = _image_tree(tmp_path / "elsewhere", {"x": 1})
        (folder / "c" / "x").symlink_to(elsewhere / "x")
    else:
        (folder / "c" / "0-again.jpg").symlink_to(folder / "a" / "0.jpg")
    err = refused_in_process(
        monkeypatch, capsys, *smoke_overrides, "dataset=imagefolder", f"dataset.path={folder}"
    )
    expected = (
        "out of the folder" if case == "outside" else ("twice" if case == "file_twice" else "leads back")
    )
    assert expected in err


@pytest.mark.parametrize("name", ["history.csv", "energy/emissions.csv"])
def test_a_symlink_planted_where_the_job_writes_is_refused(
    monkeypatch, capsys, smoke_overrides, tmp_path, name
):
    run_dir = tmp_path / "run"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / name).symlink_to(victim)
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, f"hydra.run.dir={run_dir}")
    assert "symbolic link" in err and name.split("/")[-1] in err
    assert victim.read_text() == "precious\n"


def _checkpoint(path: Path, state: object) -> str:
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("case", ["no_matching_keys", "other_architecture", "empty", "corrupt", "truncated"])
def test_a_checkpoint_that_does_not_fill_the_model_is_refused(
    monkeypatch, capsys, smoke_overrides, tmp_path, case
):
    target = tmp_path / f"{case}.pth"
    if case == "no_matching_keys":
        _checkpoint(target, {"encoder.layer.weight": torch.zeros(3, 3)})
    elif case == "other_architecture":
        _checkpoint(target, timm.create_model("resnet18", num_classes=0).state_dict())
    elif case == "empty":
        _checkpoint(target, {})
    elif case == "corrupt":
        target.write_bytes(os.urandom(4096))
    else:
        whole = tmp_path / "whole.pth"
        _checkpoint(whole, timm.create_model("mobilenetv2_050", num_classes=0).state_dict())
        target.write_bytes(whole.read_bytes()[:20000])
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, f"model.weights_file={target}")
    assert str(target) in err
    assert "weights_only=False" not in err  # never our advice
    if case in ("no_matching_keys", "other_architecture"):
        assert "missing" in err and "unexpected" in err and "at least 90%" in err
    if case == "other_architecture":
        assert "layer1.0.conv1.weight" in err  # names the unexpected tensors
    if case == "empty":
        assert "holds no tensors" in err
    if case in ("corrupt", "truncated"):
        assert "not a readable PyTorch checkpoint" in err


def test_a_fitting_checkpoint_is_accepted(smoke_overrides, tmp_path):
    from repro.config import CONF_DIR
    from repro.preflight import preflight

    path = _checkpoint(tmp_path / "ok.pth", timm.create_model("mobilenetv2_050", num_classes=7).state_dict())
    preflight([*smoke_overrides, f"model.weights_file={path}"], CONF_DIR)  # the head may differ in size


# --- repro.paper ------------------------------------------------------------------------------------


def _paper_config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        return compose(
            "paper",
            [f"tables_dir={tmp_path / 'tables'}", f"figures_dir={tmp_path / 'figures'}", *overrides],
        )


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_paper_refuses_a_damaged_parquet_in_one_line(tmp_path, damage):
    source = REPO_ROOT / "paper" / "data" / "dl-training-energy-consumption-dataset.parquet"
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(os.urandom(2048) if damage == "garbage" else source.read_bytes()[:5000])
    with pytest.raises(UserError) as error:
        paper.run(_paper_config(tmp_path, f"published_path={broken}", "figures=false"))
    assert str(broken) in str(error.value) and "\n" not in str(error.value)


def _log_runs(uri: str, groups: dict[tuple[str, str], list[float | None]]) -> None:
    """Training runs as repro.train tags them, with the energy per image of each (None: no images seen)."""
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("mine")
    for (model, gpu), energies in groups.items():
        for seed, energy in enumerate(energies):
            run = client.create_run(
                experiment_id, tags={"repro.model": model, "repro.gpu": gpu, "repro.seed": str(seed)}
            )
            metrics = {"energy_j_per_image": energy, "f1": 0.9, "images_seen": 100.0}
            metrics["train_images_seen"] = 70.0
            if energy is None or energy == float("inf"):
                metrics["images_seen"] = metrics["train_images_seen"] = 0.0
            for key, value in metrics.items():
                if value is not None:  # repro.train logs no energy per image for a run with no images
                    client.log_metric(run.info.run_id, key, value)
            client.set_terminated(run.info.run_id, "FINISHED")


def test_paper_on_an_experiment_with_one_group_writes_its_tables(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _log_runs(uri, {("resnet18", "cpu"): [1.0, 1.1, 1.2]})
    written = paper.run(
        _paper_config(tmp_path, "source=mlflow", f"mlflow.tracking_uri={uri}", "mlflow.experiment=mine")
    )
    assert any(path.name == "t6_improvements.csv" for path in written)


def test_paper_leaves_out_a_run_that_saw_no_images(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _log_runs(
        uri, {("resnet18", "cpu"): [1.0, 1.1, 1.2, float("inf")], ("vgg16", "cpu"): [2.0, 2.1, 2.2, None]}
    )
    paper.run(_paper_config(tmp_path, "source=mlflow", f"mlflow.tracking_uri={uri}", "mlflow.experiment=mine",
                            "figures=false"))  # fmt: skip
    excluded = (tmp_path / "tables" / "excluded_runs.csv").read_text()
    assert excluded.count("no finite energy per image") == 2
    medians = (tmp_path / "tables" / "t2_medians.csv").read_text()
    assert "inf" not in medians.lower()


def test_paper_keeps_an_odd_experiment_name_inside_reports(tmp_path):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        cfg = compose("paper", ["source=mlflow", "mlflow.experiment=../../../etc/x y"])
    tables, figures = paper._output_dirs(cfg)
    reports = REPO_ROOT / "reports"
    assert reports in tables.resolve().parents and reports in figures.resolve().parents
    assert tables.parent.name == ".._.._.._etc_x_y".lstrip(".")


# --- issue 19: stores, drivers, output folders and names that used to crash or get past the checks ----


def _store(path: Path) -> Path:
    """A real MLflow store with one experiment (its tables made by MLflow, without its INFO lines)."""
    tracking.open_store(f"sqlite:///{path}")
    MlflowClient(f"sqlite:///{path}").create_experiment("repro")
    return path


@pytest.mark.parametrize("where", ["proc", "inside_a_file"])
def test_a_store_where_no_file_can_be_created_is_refused_at_once(
    monkeypatch, capsys, smoke_overrides, tmp_path, where
):
    # /proc passes every permission bit for root; before, MLflow retried for about 100 s
    folder = Path("/proc") if where == "proc" else tmp_path / "notes.txt"
    if where == "inside_a_file":
        folder.write_text("a file\n")
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, f"tracking.uri=sqlite:///{folder}/nope.db")
    assert f"{folder}" in err
    assert ("no file can be created" if where == "proc" else "is a file") in err


def test_a_truncated_store_is_refused_naming_the_file(monkeypatch, capsys, smoke_overrides, tmp_path):
    whole = _store(tmp_path / "whole.db").read_bytes()
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(whole[: len(whole) // 3])
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, f"tracking.uri=sqlite:///{truncated}")
    assert str(truncated) in err and "truncated" in err
    assert truncated.stat().st_size == len(whole) // 3  # left as it was


def test_a_database_url_without_its_driver_names_the_package(monkeypatch, capsys, smoke_overrides):
    for module in ("psycopg", "psycopg2"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    uri = "tracking.uri=postgresql://u:p@127.0.0.1:1/db"
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, uri)
    assert "pip install 'psycopg" in err and ":p@" not in err  # the password is not printed


@pytest.mark.store_absent
@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("dataset.image_size=100000", "dataset.image_size=100000"),
        ("tracking.experiment=", "tracking.experiment is empty"),
        ("tracking.experiment=" + "x" * 600, "600 characters"),
    ],
)
def test_bad_values_are_refused_before_the_store_is_created(
    monkeypatch, capsys, smoke_overrides, tracking_uri, override, named
):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, override)
    assert named in err and "could not be opened" not in err
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists()


def test_a_folder_as_the_weights_file_is_called_a_folder(monkeypatch, capsys, smoke_overrides, tmp_path):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, f"model.weights_file={tmp_path}")
    assert f"model.weights_file={tmp_path} is a folder" in err


@pytest.mark.parametrize(
    ("key", "where", "multirun"),
    [
        ("hydra.run.dir", "/proc/forbidden", False),
        ("hydra.run.dir", "file", False),
        ("hydra.run.dir", "under_a_file", False),
        ("hydra.sweep.dir", "/proc/forbidden", True),
    ],
)
def test_a_run_folder_that_cannot_be_created_is_refused(
    monkeypatch, capsys, smoke_overrides, tmp_path, key, where, multirun
):
    (tmp_path / "file").write_text("a file\n")
    folder = {"file": tmp_path / "file", "under_a_file": tmp_path / "file" / "run"}.get(where, where)
    args = [*smoke_overrides, f"{key}={folder}", *(["-m"] if multirun else [])]
    err = refused_in_process(monkeypatch, capsys, *args)
    assert f"{key}={folder}" in err


@pytest.mark.parametrize("case", ["new", "existing"])
def test_artifacts_that_cannot_be_written_are_refused_before_the_run(
    monkeypatch, capsys, smoke_overrides, tracking_uri, tmp_path, case
):
    """A read-only current directory: MLflow's default artifact folder is ./mlruns there."""
    if case == "existing":  # an experiment created elsewhere keeps its artifact folder
        tracking.open_store(tracking_uri)
        MlflowClient(tracking_uri).create_experiment("repro", artifact_location="/proc/artifacts")
    else:
        monkeypatch.chdir("/proc")  # no file can be created here, even by root
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert ("/proc/mlruns" if case == "new" else "/proc/artifacts") in err


def test_a_run_that_fails_before_training_records_why(compose_config, tracking_uri, tmp_path, monkeypatch):
    import repro.train as train

    def _read_only(*args: object, **kwargs: object) -> float:
        raise OSError(30, "Read-only file system", "/somewhere/mlruns")

    monkeypatch.setattr(train, "_measured_training", _read_only)  # after the run is created, before training
    with pytest.raises(OSError):
        train.run(compose_config("energy=none"), train.JobContext(output_dir=tmp_path / "job"))
    (run,) = MlflowClient(tracking_uri).search_runs(
        [MlflowClient(tracking_uri).get_experiment_by_name("repro").experiment_id]
    )
    assert run.info.status == "FAILED"
    assert "Read-only file system" in run.data.tags["repro.end_reason"]


# --- repro.paper's store and output folders ------------------------------------------------------------


@pytest.mark.parametrize("damage", ["not_sqlite", "truncated", "empty"])
def test_paper_refuses_a_damaged_store_in_one_line(tmp_path, damage, caplog):
    caplog.set_level(logging.INFO, logger="repro.paper")
    store = tmp_path / "mlflow.db"
    if damage == "not_sqlite":
        store.write_bytes(os.urandom(5000))
    elif damage == "truncated":
        whole = _store(tmp_path / "whole.db").read_bytes()
        store.write_bytes(whole[: len(whole) // 3])
    else:
        store.touch()
    uri = f"mlflow.tracking_uri=sqlite:///{store}"
    cfg = _paper_config(tmp_path, "source=mlflow", uri, "mlflow.experiment=x")
    with pytest.raises(UserError) as error:
        paper.run(cfg)
    assert str(store) in str(error.value) and "\n" not in str(error.value)
    assert "[1/4]" not in caplog.text  # the error is the only line the user sees


@pytest.mark.parametrize(
    ("key", "where"), [("tables_dir", "file"), ("figures_dir", "/proc/x"), ("tables_dir", "/proc/x")]
)
def test_paper_refuses_an_output_folder_before_writing_anything(tmp_path, key, where):
    (tmp_path / "file").write_text("a file\n")
    folder = tmp_path / "file" if where == "file" else where
    with pytest.raises(UserError) as error:
        paper.run(_paper_config(tmp_path, f"{key}={folder}"))
    assert f"{key}={folder}" in str(error.value)
    assert not (tmp_path / "tables").exists()  # no table written before the refusal


def test_paper_puts_figures_beside_the_tables_by_default(tmp_path):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        cfg = compose("paper", [f"tables_dir={tmp_path / 'out' / 'tables'}"])
    assert paper._output_dirs(cfg) == (tmp_path / "out" / "tables", tmp_path / "out" / "figures")


# --- repro.spool ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["random", "no_keys", "no_kind", "not_json"])
def test_spool_refuses_a_file_that_is_not_a_spool_in_one_line(capsys, tmp_path, content):
    from repro.spool import main

    path = tmp_path / "mlflow_spool.jsonl"
    if content == "random":
        path.write_bytes(b"\xff\xfe" + os.urandom(3000))
    else:
        lines = {"no_keys": '{"a": 1}', "no_kind": '{"uri": "x", "run_id": "y"}', "not_json": "{oops"}
        path.write_text(lines[content] + "\n")
    with pytest.raises(SystemExit) as stopped:
        main([str(path)])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and err.startswith(f"error: {path}") and "\n" not in err, err
    assert path.exists()  # not renamed as imported
