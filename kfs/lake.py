"""All reads and writes of the parquet lake go through here (a local path today, object storage later).

Layout (DESIGN.md section 2): `raw/<stream>/date=YYYY-MM-DD/part-00000.parquet`,
`raw/_quarantine/<stream>/date=YYYY-MM-DD/part-00000.parquet`, `raw/markets/markets.parquet`.
Writes are atomic (temporary name in the same folder, fsync, rename) and deterministic (same table,
same bytes), so re-running a partition replaces it with identical content.
"""

from __future__ import annotations

import os
import uuid
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow as pa

from kfs.config import lake_root

PART_FILE = "part-00000.parquet"
_TMP_MARK = ".tmp-"
# Polars' writer: about 3x faster than pyarrow's here and 30% smaller files at the same zstd level.
_PARQUET_OPTIONS = dict(compression="zstd", compression_level=1, row_group_size=256 * 1024, statistics=True)


class Lake:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).absolute() if root is not None else lake_root()

    def raw_partition(self, stream: str, day: date) -> Path:
        return self.root / "raw" / stream / f"date={day.isoformat()}" / PART_FILE

    def quarantine_partition(self, stream: str, day: date) -> Path:
        return self.root / "raw" / "_quarantine" / stream / f"date={day.isoformat()}" / PART_FILE

    def raw_markets(self) -> Path:
        return self.root / "raw" / "markets" / "markets.parquet"

    def quarantine_markets(self) -> Path:
        return self.root / "raw" / "_quarantine" / "markets" / "markets.parquet"

    def raw_stream_dir(self, stream: str) -> Path:
        return self.root / "raw" / stream

    def partitions(self, stream: str) -> list[date]:
        folder = self.raw_stream_dir(stream)
        if not folder.exists():
            return []
        days = [date.fromisoformat(p.name.split("=", 1)[1]) for p in folder.glob("date=*") if (p / PART_FILE).exists()]
        return sorted(days)


def write_parquet_atomic(table: pl.DataFrame | pa.Table, path: Path, metadata: dict[str, str] | None = None) -> int:
    """Write `table` to `path` so that readers see the old file or the new one, never a partial one.

    Returns the size of the new file in bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex}")
    try:
        frame = table if isinstance(table, pl.DataFrame) else pl.from_arrow(table)
        frame.write_parquet(tmp, metadata=metadata, **_PARQUET_OPTIONS)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path.stat().st_size


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of writers that no longer exist (killed mid-write). A live writer's file is
    left alone: two runs may write the same partition at once, and the last rename wins with the same bytes."""
    for stale in path.parent.glob(f".{path.name}{_TMP_MARK}*"):
        writer_pid = stale.name.rsplit(_TMP_MARK, 1)[1].split("-", 1)[0]
        if writer_pid.isdigit() and _process_alive(int(writer_pid)):
            continue
        stale.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
