"""Concurrent materializations share the lake and the warehouse safely."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from core.catalog import Lake
from tests.conftest import SMALL_CONFIG


@pytest.mark.slow
def test_two_overlapping_backfills_at_once_finish_without_lock_errors(small_universe, tmp_path):
    """Two `kfs materialize` processes over overlapping ranges, same lake and warehouse, started together."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = dict(os.environ, KFS_PG_DSN=small_universe["dsn"], KFS_LAKE=str(tmp_path / "lake"),
               KFS_HOME=str(tmp_path / "home"), KFS_WAREHOUSE=str(tmp_path / "warehouse.duckdb"),
               DAGSTER_HOME=str(tmp_path / "dagster"))
    for stream in ("snapshots", "deltas", "trades", "markets"):
        env[f"KFS_TABLE_{stream.upper()}"] = getattr(small_universe["tables"], stream)
    first, last = SMALL_CONFIG.start, SMALL_CONFIG.start + dt.timedelta(days=SMALL_CONFIG.days - 1)
    commands = [["--start", (first - dt.timedelta(days=1)).isoformat(), "--end", last.isoformat()],
                ["--start", first.isoformat(), "--end", (last + dt.timedelta(days=1)).isoformat()]]
    processes = [subprocess.Popen([sys.executable, "-m", "kfs.cli", "materialize", *args], env=env, cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for args in commands]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
        assert "0 failed checks" in output
    lake = Lake(tmp_path / "lake")
    for day in (first, last):
        written = pl.read_parquet(lake.raw_partition("deltas", day))
        assert written.height == pl.read_parquet(lake.raw_partition("deltas", day)).height > 0
        assert pl.read_parquet(lake.event_partition(day)).height > 0
    registry = pl.read_parquet(lake.location("split_registry"))
    assert registry["market_ticker"].is_unique().all()
    leftovers = [p for p in lake.root.rglob(".*tmp-*")]
    assert leftovers == []
