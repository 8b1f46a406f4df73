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
