"""Freshness of the raw lake: stale partitions and collapsing row counts."""

from __future__ import annotations

import datetime as dt
from datetime import date

import polars as pl

from core.catalog import Lake, write_parquet_atomic
from ingest.freshness import freshness


def _partition(lake: Lake, day: date, rows: int):
    write_parquet_atomic(pl.DataFrame({"id": list(range(rows))}), lake.raw_partition("deltas", day))


def test_freshness_flags_stale_partitions_and_collapsing_row_counts(tmp_path):
    lake = Lake(tmp_path)
    for i in range(8):
        _partition(lake, date(2026, 11, 1) + dt.timedelta(days=i), 1000)
    fresh = freshness(lake, "deltas", date(2026, 11, 9))
    assert not fresh.stale and not fresh.row_drop
    stale = freshness(lake, "deltas", date(2026, 11, 20))
    assert stale.stale and "12 day(s) old" in stale.message
    _partition(lake, date(2026, 11, 9), 100)
    dropped = freshness(lake, "deltas", date(2026, 11, 10))
    assert dropped.row_drop and not dropped.stale
    assert freshness(Lake(tmp_path / "empty"), "deltas", date(2026, 11, 10)).stale
