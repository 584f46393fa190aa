"""Folders a command will write to, checked before it starts, so a bad one costs one line, not a run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from repro.errors import UserError

_REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_root() -> Path:
    """The checkout that holds `src/repro`: conf/, paper/ and README.md are read from it.

    The package is installed editable (`pip install -e .`), so this is the folder of `pyproject.toml`.
    """
    return _REPO_ROOT


def writable_folder(folder: Path) -> bool:
    """Whether a file can be created in `folder`: tried, not inferred from permission bits.

    Permission bits say nothing to root, and nothing about /proc or a read-only mount.
    """
    try:
        handle, probe = tempfile.mkstemp(prefix=".repro-probe-", dir=folder)
    except OSError:
        return False
    os.close(handle)
    os.unlink(probe)
    return True


def check_output_folder(folder: Path, key: str) -> None:
    """Raise `UserError` unless `folder` is, or can be created as, a folder that files can be written in.

    Nothing is created: the nearest existing folder above it is tried with a file that is removed at once.

    Args:
        key: the setting that named the folder, for the message (`hydra.run.dir`, `tables_dir`).
    """
    folder = folder.expanduser().absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"is inside {existing}, which is a file"
        raise UserError(f"{key}={folder} {where}, not a folder; name a folder")
    if not writable_folder(existing):
        if existing == folder:
            raise UserError(f"{key}={folder} cannot be written: no file can be created in it")
        raise UserError(
            f"{key}={folder} cannot be created: no file can be created in {existing}, the nearest existing "
            "folder above it; name another folder"
        )
