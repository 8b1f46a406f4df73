"""Rows whose time fits no partition are quarantined, and reconciliation accounts for every source row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, timezone

import psycopg
import pytest

from core.catalog import Lake
from ingest.extract import (
    day_bounds_ms,
    ingest_invalid_timestamps,
    ingest_markets,
    ingest_partition,
    valid_time_range_ms,
)
from ingest.reconcile import reconcile
from tests.conftest import REPO, lake_backend
from tests.ingest.test_quarantine import DELTA_COLUMNS, TRADE_COLUMNS, _insert

DAY = date(2026, 4, 9)
FIRST_PARTITION = date(2026, 1, 1)


def _invalid_times(day: date) -> list[int | None]:
    valid_ms = day_bounds_ms(day)[0] + 5_000
    return [None,                                   # no time at all
            day_bounds_ms(FIRST_PARTITION)[0] - 1,  # before the first partition
            -86_400_000,                            # before 1970
            4_102_444_800_000,                      # 2100: far future
            valid_ms // 1000]                       # a recorder that wrote seconds instead of milliseconds


def _load(pg_dsn, tables) -> None:
    valid_ms = day_bounds_ms(DAY)[0] + 5_000
    with psycopg.connect(pg_dsn) as conn:
        _insert(conn, tables.deltas, DELTA_COLUMNS,
                [(1, "KXA", valid_ms + k, k + 1, "yes", "add", 40, 0, 5) for k in range(3)]
                + [(2, "KXA", ts, k + 1, "yes", "add", 40, 0, 5) for k, ts in enumerate(_invalid_times(DAY))])
        _insert(conn, tables.trades, TRADE_COLUMNS,
                [(f"v{k}", "KXA", 40, 60, 1, "yes", valid_ms + k, valid_ms + k) for k in range(2)]
                + [(f"i{k}", "KXA", 40, 60, 1, "yes", ts, ts) for k, ts in enumerate(_invalid_times(DAY))])


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_rows_without_a_valid_time_are_quarantined_not_lost(backend, pg_dsn, fresh_tables, request, tmp_path_factory):
    with lake_backend(backend, request, tmp_path_factory) as lake:
        _reconcile_every_row(pg_dsn, fresh_tables(strict=False), lake)


def _reconcile_every_row(pg_dsn, tables, lake: Lake) -> None:
    _load(pg_dsn, tables)
    today = datetime.now(timezone.utc).date()
    valid = valid_time_range_ms(FIRST_PARTITION, today)
    for stream in ("snapshots", "deltas", "trades"):
        ingest_partition(pg_dsn, stream, DAY, lake, tables)
    ingest_markets(pg_dsn, lake, tables)

    before = {(r.stream, r.scope): r for r in reconcile(pg_dsn, lake, tables, DAY, DAY, *valid)}
    assert before[("deltas", f"{DAY}..{DAY}")].unaccounted == 0
    assert before[("deltas", "invalid_timestamp")].unaccounted == 5  # counted, not silently gone

    reports = {r.stream: r for r in ingest_invalid_timestamps(pg_dsn, lake, tables, *valid)}
    assert reports["deltas"].rows_quarantined == 5 and reports["trades"].rows_quarantined == 5
    assert all(r.reconciled for r in reports.values())
    quarantined = lake.read_parquet(lake.invalid_timestamp_quarantine("deltas"))
    assert set(quarantined["reason"]) == {"invalid_timestamp"} and quarantined["timestamp_ms"].null_count() == 1

    after = reconcile(pg_dsn, lake, tables, DAY, DAY, *valid)
    assert all(r.unaccounted == 0 for r in after), [r.as_dict() for r in after if r.unaccounted]
    assert {(r.stream, r.scope): r.written for r in after}[("deltas", f"{DAY}..{DAY}")] == 3


def test_kfs_reconcile_exits_non_zero_while_rows_are_unaccounted(pg_dsn, fresh_tables, tmp_path):
    tables = fresh_tables(strict=False)
    _load(pg_dsn, tables)
    env = dict(os.environ, KFS_PG_DSN=pg_dsn, KFS_LAKE=str(tmp_path / "lake"), KFS_HOME=str(tmp_path / "home"),
               **{f"KFS_TABLE_{s.upper()}": getattr(tables, s) for s in ("snapshots", "deltas", "trades", "markets")})
    command = [sys.executable, "-m", "kfs.cli", "reconcile", "--start", DAY.isoformat(), "--end", DAY.isoformat()]
    missing = subprocess.run([*command, "--json"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "neither written nor quarantined" in missing.stderr
    rows = json.loads(missing.stdout)
    assert {row["stream"] for row in rows} == {"snapshots", "deltas", "trades", "markets"}

    lake = Lake(tmp_path / "lake")
    for stream in ("snapshots", "deltas", "trades"):
        ingest_partition(pg_dsn, stream, DAY, lake, tables)
    ingest_markets(pg_dsn, lake, tables)
    ingest_invalid_timestamps(pg_dsn, lake, tables,
                              *valid_time_range_ms(FIRST_PARTITION, datetime.now(timezone.utc).date()))
    complete = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert complete.returncode == 0, complete.stdout + complete.stderr
    assert "reconciliation" in complete.stdout
