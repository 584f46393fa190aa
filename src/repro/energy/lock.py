"""One measured job per machine: every meter measures the whole machine, not one process."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from repro.errors import UserError

#: Folders that every process on the machine sees, whatever its `TMPDIR`: the lock must live in one
#: place per machine, or two jobs with different temp dirs would be measured at once.
LOCK_DIRS = (Path("/run/lock"), Path("/var/lock"), Path("/var/tmp"))
#: Environment variable that replaces `LOCK_DIRS` (tests; sites whose nodes lack all of them).
LOCK_DIR_ENV = "REPRO_LOCK_DIR"


def lock_path() -> Path:
    """The machine's lock file, named after the host (the folder may be shared between hosts).

    The first writable folder of `REPRO_LOCK_DIR` or `/run/lock`, `/var/lock`, `/var/tmp`; never
    `TMPDIR`, which differs between jobs.
    """
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())
    override = os.environ.get(LOCK_DIR_ENV)
    candidates = (Path(override),) if override else LOCK_DIRS
    for folder in candidates:
        if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
            return folder / f"repro-energy-{host}.lock"
    raise UserError(
        f"no writable folder for the machine-wide measurement lock ({', '.join(map(str, candidates))}); "
        f"set {LOCK_DIR_ENV}=DIR to a folder every job on this machine sees, or energy.lock=false"
    )


def _open_lock(path: Path) -> tuple[int, bool]:
    """Open the lock file without following a symlink planted at its predictable path."""
    flags = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o644), True
    except PermissionError:  # created by another user: flock works on a read-only descriptor too
        return os.open(path, os.O_RDONLY | flags), False
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UserError(
                f"the measurement lock {path} is a symbolic link, which is refused (someone may be trying "
                "to make this job overwrite another file); remove it or set REPRO_LOCK_DIR=DIR"
            ) from None
        raise


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
    fd, writable = _open_lock(path)
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
