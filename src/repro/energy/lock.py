"""One measured job per machine: every meter measures the whole machine, not one process."""

from __future__ import annotations

import fcntl
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from repro.errors import UserError


def lock_path() -> Path:
    """The machine's lock file: in the system temp dir, named after the host (temp dirs may be shared)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())
    return Path(tempfile.gettempdir()) / f"repro-energy-{host}.lock"


@contextmanager
def measurement_lock(enabled: bool = True) -> Iterator[None]:
    """Hold the machine-wide measurement lock; raise `UserError` if another measured job holds it.

    The lock is an advisory `flock`, which the kernel releases when its process dies, so a lock left by
    a crashed or killed job is taken over at once. The file records the holder's PID for the message.
    """
    if not enabled:
        yield
        return
    path = lock_path()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        writable = True
    except PermissionError:  # created by another user: flock works on a read-only descriptor too
        fd = os.open(path, os.O_RDONLY)
        writable = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(
                f"another measured job (pid {holder}) is running on {socket.gethostname()} (lock {path}): "
                "both would count each other's energy, because every meter measures the whole machine; "
                "run jobs one after another (a plain `-m` sweep does) or on separate nodes, "
                "or set energy.lock=false to measure anyway"
            ) from None
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock
