"""The SQLite store check (`tracking.check_sqlite_file`) reads an unchanged store once per process."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing

import pytest

from repro import tracking
from repro.errors import UserError


def test_an_unchanged_sqlite_store_is_checked_once_per_process(tmp_path, monkeypatch) -> None:
    """quick_check reads every page of the store; repro.paper used to run it twice on the same file."""
    db = tmp_path / "store.db"
    with closing(sqlite3.connect(db)) as connection:
        connection.execute("CREATE TABLE runs (id TEXT)")
        connection.commit()
    reads = []
    real = tracking._check_sqlite_file
    monkeypatch.setattr(
        tracking, "_check_sqlite_file", lambda path, what: reads.append(path) or real(path, what)
    )
    tracking.check_sqlite_file(db, "tracking.uri=x")
    tracking.check_sqlite_file(db, "tracking.uri=x")
    assert len(reads) == 1
    with closing(sqlite3.connect(db)) as connection:  # a changed store is read again
        connection.execute("INSERT INTO runs VALUES ('a')")
        connection.commit()
    os.utime(db, ns=(db.stat().st_atime_ns, db.stat().st_mtime_ns + 1_000_000))  # coarse clocks: a new mtime
    tracking.check_sqlite_file(db, "tracking.uri=x")
    assert len(reads) == 2
    db.write_bytes(b"SQLite format 3\0" + b"\0" * 84)  # damaged: refused, never remembered as sound
    with pytest.raises(UserError):
        tracking.check_sqlite_file(db, "tracking.uri=x")
    with pytest.raises(UserError):
        tracking.check_sqlite_file(db, "tracking.uri=x")
