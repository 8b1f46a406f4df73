"""Cross-process locks for the few writers that must never overlap (the DuckDB warehouse has a
single writer; the split registry is read-modify-write). Dagster pools serialise steps under the
daemon; these locks also cover in-process runs (`kfs materialize`) started side by side."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Iterator

from core.settings import settings


@contextmanager
def exclusive(name: str) -> Iterator[None]:
    folder = settings().home / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
