"""Cross-process locks for the few writers that must never overlap (the DuckDB warehouse has a
single writer; the split registry is read-modify-write). Dagster pools serialise steps under the
daemon; these locks also cover in-process runs (`kfs materialize`) started side by side."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.settings import settings


@contextmanager
def exclusive(name: str) -> Iterator[None]:
    folder = settings().home / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive_file(folder / f"{name}.lock"):
        yield


@contextmanager
def exclusive_file(lock_path: Path) -> Iterator[None]:
    """An exclusive lock on `lock_path` (created if missing), for writers that share a folder rather than
    a `$KFS_HOME` (a local lake used by processes of several checkouts)."""
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class LockHeld(ValueError):
    """Another process holds a lock that is taken without waiting; the message names what runs and its pid."""


@contextmanager
def exclusive_or_refuse(lock_path: Path, what: str) -> Iterator[None]:
    """`exclusive_file`, but refused at once (LockHeld) when another process holds it: for work that must not
    run twice at all (a second run would overwrite the first's output), rather than wait its turn."""
    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LockHeld(f"{what} is already running (pid {holder}; lock {lock_path}): wait for it to end") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
