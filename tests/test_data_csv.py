"""`dataset=csv_manifest`: a CSV of image paths and labels trains; each bad manifest is one line, exit 2."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from tests.support import refused_in_process

from repro.data import build_data, dataset_config, validate_dataset
from repro.errors import UserError
from repro.train import JobContext, run


def _image(file: Path, seed: int, size: int = 10) -> str:
    file.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(file)
    return str(file)


def _manifest(root: Path, rows: list[tuple[str, str]], header: str = "path,label") -> Path:
    """Write `root/labels.csv` with `header` and `rows`, and a PNG for every relative path not yet there."""
    for index, (path, _) in enumerate(rows):
        if not Path(path).is_absolute() and not (root / path).exists() and ".." not in path:
            _image(root / path, index)
    file = root / "labels.csv"
    with file.open("w", newline="") as stream:
        stream.write(header + "\n")
        csv.writer(stream).writerows(rows)
    return file


def _pets(root: Path, n: int = 12) -> list[tuple[str, str]]:
    return [(f"img/{kind}{i}.png", kind) for kind in ("dog", "cat") for i in range(n)]


def test_a_manifest_lists_images_by_relative_or_absolute_path(tmp_path: Path) -> None:
    elsewhere = _image(tmp_path / "elsewhere" / "far.png", 99)
    rows = [*_pets(tmp_path / "set", 3), (elsewhere, "cat")]
    manifest = _manifest(tmp_path / "set", rows)
    with manifest.open("w", newline="") as stream:  # other columns, in any order, are ignored
        stream.write("id,label,path,notes\n")
        csv.writer(stream).writerows((i, label, path, "n/a") for i, (path, label) in enumerate(rows))
    cfg = dataset_config("csv_manifest", path=str(manifest), image_size=8, augment=False)
    validate_dataset(cfg)
    bundle = build_data(cfg, batch_size=4, seed=0)
    assert bundle.class_names == ["cat", "dog"] and bundle.binary  # sorted, as ImageFolder's folders
    assert (bundle.n_train, bundle.n_val) == (4, 3)
    loaders = (bundle.train_loader, bundle.val_loader)
    assert Counter(int(t) for loader in loaders for _, targets in loader for t in targets) == {0: 4, 1: 3}
    images, _ = next(iter(bundle.val_loader))
    assert images.shape[1:] == (3, 8, 8)


def test_a_smoke_job_trains_on_a_manifest(compose_config, tracking_uri: str, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "set", _pets(tmp_path / "set"))
    cfg = compose_config("dataset=csv_manifest", f"dataset.path={manifest}", "energy=none")
    run(cfg, JobContext(output_dir=tmp_path / "job"))
    client = MlflowClient(tracking_uri)
    (recorded,) = client.search_runs([client.get_experiment_by_name("repro").experiment_id])
    assert recorded.info.status == "FINISHED"
    assert recorded.data.params["dataset.name"] == "csv_manifest"
    assert recorded.data.params["dataset.path"] == str(manifest)
    assert recorded.data.metrics["train_images_seen"] == 2 * 16  # 16 training images: one batch per epoch
    assert recorded.data.metrics["images_seen"] == 2 * (16 + 8)  # and 8 validation images per epoch


def _missing(root: Path) -> Path:
    return root / "nowhere.csv"


def _empty(root: Path) -> Path:
    (root / "empty.csv").write_text("")
    return root / "empty.csv"


def _no_label_column(root: Path) -> Path:
    return _manifest(root, _pets(root, 3), header="path,class")


def _missing_image(root: Path) -> Path:
    file = _manifest(root, _pets(root, 3))
    with file.open("a") as stream:
        stream.write("img/ghost.png,cat\n")  # line 8: header + 6 rows before it
    return file


def _truncated_image(root: Path) -> Path:
    file = _manifest(root, _pets(root, 3))
    whole = (root / "img" / "cat1.png").read_bytes()
    (root / "img" / "cat1.png").write_bytes(whole[: len(whole) // 2])  # line 6
    return file


def _link_out(root: Path) -> Path:
    outside = _image(root.parent / "outside" / "x.png", 7)
    (root / "img").mkdir()
    (root / "img" / "linked.png").symlink_to(outside)
    return _manifest(root, [*_pets(root, 3), ("img/linked.png", "dog")])  # line 8


def _one_class(root: Path) -> Path:
    return _manifest(root, [(f"img/{i}.png", "cat") for i in range(4)])


def _same_image_two_labels(root: Path) -> Path:
    return _manifest(root, [*_pets(root, 3), ("img/dog0.png", "cat")])  # line 8 relabels line 2


def _labels_spelt_two_ways(root: Path) -> Path:
    return _manifest(root, [*_pets(root, 3), ("img/extra.png", "Cat")])  # line 8


def _no_rows(root: Path) -> Path:
    return _manifest(root, [])


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (_missing, "nowhere.csv does not exist"),
        (_empty, "empty.csv is empty"),
        (_no_rows, "lists no images"),
        (_no_label_column, "no column 'label' (its header: path,class)"),
        (_missing_image, "line 8: image img/ghost.png does not exist"),
        (_truncated_image, "line 6: unreadable image"),
        (_link_out, "line 8: img/linked.png is a symbolic link out of the CSV's folder"),
        (_one_class, "one class only ('cat')"),
        (_same_image_two_labels, "is the image labelled 'dog' as line 2"),
        (_labels_spelt_two_ways, "line 8: label 'Cat' differs from 'cat' (line 5) only in case"),
    ],
)
def test_a_bad_manifest_is_refused_in_one_line_before_training(
    monkeypatch, capsys, smoke_overrides, tmp_path: Path, make, named: str  # noqa: ANN001
) -> None:
    (tmp_path / "set").mkdir()
    manifest = make(tmp_path / "set")
    err = refused_in_process(
        monkeypatch, capsys, *smoke_overrides, "dataset=csv_manifest", f"dataset.path={manifest}"
    )
    assert named in err and f"dataset.path={manifest}" in err


def test_the_same_image_under_two_labels_names_both_lines(tmp_path: Path) -> None:
    manifest = _same_image_two_labels(tmp_path / "set")
    relabelled = r"line 8: .*dog0.png \(label 'cat'\) is the image labelled 'dog' as line 2"
    with pytest.raises(UserError, match=relabelled):
        validate_dataset(dataset_config("csv_manifest", path=str(manifest)))


def test_a_key_of_another_source_fails_at_composition(monkeypatch, capsys, smoke_overrides) -> None:
    err = refused_in_process(
        monkeypatch, capsys, *smoke_overrides, "dataset=csv_manifest", "dataset.task=binary"
    )
    assert "dataset.task" in err


def test_a_manifest_without_a_path_is_refused(monkeypatch, capsys, smoke_overrides) -> None:
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, "dataset=csv_manifest")
    assert "dataset.path is not set" in err
