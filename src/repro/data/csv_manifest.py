"""`dataset=csv_manifest`: a CSV file that lists images and their labels, one row per image.

The file has a header row naming (at least) the columns `path` and `label`; other columns are ignored.
A relative path is relative to the CSV's folder, an absolute one is taken as written. The labels become
the classes in sorted order, as torchvision's ImageFolder sorts its folders. As for an image folder, a
symbolic link may not lead a path written inside the CSV's folder out of it, and no image may be listed
twice (the same file on both sides of the split would leak).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from repro.config import DatasetConfig
from repro.data.files import ReadFile, first_unreadable
from repro.data.loaders import Reader
from repro.data.registry import DatasetSource, Labels, register_dataset
from repro.errors import UserError

#: The columns a manifest must have.
COLUMNS = ("path", "label")


@dataclass
class CsvManifestConfig(DatasetConfig):
    name: str = "csv_manifest"
    path: str = MISSING  # the CSV file, with a header row path,label


@dataclass(frozen=True)
class _Row:
    line: int  # in the CSV file, 1-based, the header being line 1
    file: str  # the image, as it will be opened
    label: str


@register_dataset("csv_manifest")
class CsvManifest(DatasetSource):
    config = CsvManifestConfig

    def labels(self, cfg: CsvManifestConfig) -> Labels:
        rows = _read_manifest(cfg)
        class_names = sorted({row.label for row in rows})
        class_to_idx = {name: i for i, name in enumerate(class_names)}
        return Labels([class_to_idx[row.label] for row in rows], class_names, [row.file for row in rows])

    def load(self, cfg: CsvManifestConfig, seed: int) -> tuple[Labels, Reader]:
        labels = self.labels(cfg)
        return labels, ReadFile(labels.files, cfg.image_size)

    def verify(self, cfg: CsvManifestConfig, labels: Labels) -> None:
        unreadable = first_unreadable(labels.files)
        if unreadable is not None:
            index, file, error = unreadable
            line = _read_manifest(cfg)[index].line
            raise UserError(
                f"dataset.path={cfg.path} line {line}: unreadable image {file} ({error}); "
                "replace the file or remove the row"
            )


def _manifest_file(cfg: CsvManifestConfig) -> Path:
    if cfg.path in (None, MISSING):
        raise UserError(
            "dataset.path is not set: give dataset.path=FILE.csv, a CSV file with the columns path,label"
        )
    path = Path(cfg.path).expanduser().absolute()
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise UserError(f"dataset.path={cfg.path} {problem}: give a CSV file with the columns path,label")
    return path


def _read_manifest(cfg: CsvManifestConfig) -> list[_Row]:
    """Every row of the manifest, checked: columns, images that exist, no image twice, two classes."""
    manifest = _manifest_file(cfg)
    where = f"dataset.path={cfg.path}"
    with manifest.open(newline="", encoding="utf-8-sig") as stream:  # -sig: a spreadsheet's BOM
        reader = csv.DictReader(stream, skipinitialspace=True)
        if reader.fieldnames is None:
            raise UserError(f"{where} is empty: write a header row path,label and one row per image")
        header = [name.strip() for name in reader.fieldnames]
        absent = [column for column in COLUMNS if column not in header]
        if absent:
            raise UserError(
                f"{where} has no column {absent[0]!r} (its header: {','.join(header)}): "
                "name the columns path,label"
            )
        reader.fieldnames = header
        rows = [_row(manifest, where, reader.line_num, values) for values in reader]
    if not rows:
        raise UserError(f"{where} lists no images: add one row path,label per image")
    _check_rows(where, rows)
    return rows


def _row(manifest: Path, where: str, line: int, values: dict[str, str | None]) -> _Row:
    path, label = ((values.get(column) or "").strip() for column in COLUMNS)
    if not path or not label:
        empty = "path" if not path else "label"
        raise UserError(f"{where} line {line}: the {empty} is empty; fill it in or remove the row")
    folder = manifest.parent
    file = Path(path).expanduser()
    file = file if file.is_absolute() else folder / file
    if not file.is_file():
        raise UserError(
            f"{where} line {line}: image {path} does not exist ({file}); fix the row or remove it"
        )
    # imagefolder's link policy: a path written inside the CSV's folder stays inside it
    written_inside = not Path(path).is_absolute() and Path(os.path.normpath(file)).is_relative_to(folder)
    if written_inside and not file.resolve().is_relative_to(folder.resolve()):
        raise UserError(
            f"{where} line {line}: {path} is a symbolic link out of the CSV's folder (to {file.resolve()}); "
            "copy the image in, or write the path it leads to"
        )
    return _Row(line, str(file), label)


def _check_rows(where: str, rows: list[_Row]) -> None:
    """No image listed twice, labels spelt one way, and at least two classes."""
    first_row: dict[Path, _Row] = {}
    for row in rows:
        real = Path(row.file).resolve()
        if real in first_row:
            other = first_row[real]
            what = "the same image" if other.label == row.label else f"the image labelled {other.label!r}"
            raise UserError(
                f"{where} line {row.line}: {row.file} (label {row.label!r}) is {what} as line {other.line}; "
                "list each image once"
            )
        first_row[real] = row
    spelling: dict[str, _Row] = {}
    for row in rows:
        other = spelling.setdefault(row.label.casefold(), row)
        if other.label != row.label:
            raise UserError(
                f"{where} line {row.line}: label {row.label!r} differs from {other.label!r} "
                f"(line {other.line}) only in case; spell each class one way"
            )
    labels = sorted({row.label for row in rows})
    if len(labels) == 1:
        raise UserError(
            f"{where} names one class only ({labels[0]!r}): a classifier needs at least two labels"
        )
