"""Operations: the nightly schedule (evaluated, and what it requests run on a small universe), freshness,
and security (no secrets in logs or metadata, hostile identifiers and values)."""

from __future__ import annotations

import datetime as dt
import json
from datetime import date

import dagster as dg
import polars as pl
import psycopg
import pytest

from ingest.extract import ingest_partition
from ingest.freshness import freshness
from kfs.config import SourceTables
from kfs.lake import Lake, write_parquet_atomic
from tests.conftest import SMALL_CONFIG


def _tick(day: date) -> dg.ScheduleEvaluationContext:
    return dg.build_schedule_context(scheduled_execution_time=dt.datetime(day.year, day.month, day.day, 2, 0,
                                                                          tzinfo=dt.timezone.utc))


def test_nightly_schedule_requests_yesterday_and_the_late_window(monkeypatch):
    from orchestration.definitions import defs

    schedule = defs.resolve_schedule_def("nightly_schedule")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"
    (request,) = schedule.evaluate_tick(_tick(date(2026, 11, 22))).run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2026-11-19"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-11-21"
    monkeypatch.setenv("KFS_LATE_DAYS", "0")
    (request,) = schedule.evaluate_tick(_tick(date(2026, 11, 22))).run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2026-11-21"


def test_what_the_nightly_schedule_requests_runs_end_to_end(small_universe, tmp_path, monkeypatch):
    """Ingest -> features -> dbt -> split -> train -> validate -> publish, for the schedule's range."""
    monkeypatch.setenv("KFS_PG_DSN", small_universe["dsn"])
    monkeypatch.setenv("KFS_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("KFS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KFS_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("KFS_TRAIN_STEPS", "2048")
    for stream in ("snapshots", "deltas", "trades", "markets"):
        monkeypatch.setenv(f"KFS_TABLE_{stream.upper()}", getattr(small_universe["tables"], stream))
    from orchestration.definitions import defs

    tick_day = SMALL_CONFIG.start + dt.timedelta(days=SMALL_CONFIG.days)
    (request,) = defs.resolve_schedule_def("nightly_schedule").evaluate_tick(_tick(tick_day)).run_requests
    result = defs.resolve_job_def("nightly_job").execute_in_process(instance=dg.DagsterInstance.ephemeral(),
                                                                   tags=request.tags)
    assert result.success
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert {"raw_deltas", "features_events", "markets", "split_registry", "published_policy"} <= materialized
    lake = Lake(tmp_path / "lake")
    first = date.fromisoformat(request.tags["dagster/asset_partition_range_start"])
    assert lake.partitions("deltas") == [first + dt.timedelta(days=i) for i in range(3)]
    assert pl.read_parquet(lake.raw_partition("deltas", first)).height == 0  # a day before the data: empty, not missing
    registry = json.loads((lake.root / "models" / "registry.json").read_text())
    assert len(registry["versions"]) == 1


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


SECRET = "s3cr3t-hunter2"


def test_the_dsn_password_never_reaches_logs_or_metadata(small_universe, tmp_path, monkeypatch):
    params = psycopg.conninfo.conninfo_to_dict(small_universe["dsn"])
    params["password"] = SECRET  # trust authentication ignores it; it still travels through everything
    monkeypatch.setenv("KFS_PG_DSN", psycopg.conninfo.make_conninfo(**params))
    monkeypatch.setenv("KFS_LAKE", str(tmp_path / "lake"))
    for stream in ("snapshots", "deltas", "trades", "markets"):
        monkeypatch.setenv(f"KFS_TABLE_{stream.upper()}", getattr(small_universe["tables"], stream))
    from orchestration.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("ingest_job").execute_in_process(partition_key=SMALL_CONFIG.start.isoformat(),
                                                                  instance=instance)
    assert result.success
    records = instance.all_logs(result.run_id)
    assert records
    text = "\n".join(str(r.dagster_event) + (r.user_message or "") for r in records)
    assert SECRET not in text
    assert SECRET not in str(instance.get_run_by_id(result.run_id).run_config)
    # and an unreachable server with that password: the error names the server only
    monkeypatch.setenv("KFS_PG_DSN", f"postgresql://kfs:{SECRET}@127.0.0.1:1/kfs")
    failing = defs.resolve_job_def("ingest_job").execute_in_process(
        partition_key=SMALL_CONFIG.start.isoformat(), instance=instance, raise_on_error=False)
    assert not failing.success
    failure_text = "\n".join(str(r.dagster_event) for r in instance.all_logs(failing.run_id))
    assert "127.0.0.1:1" in failure_text and SECRET not in failure_text


def test_hostile_table_names_and_values_are_quoted_not_executed(pg_dsn, tmp_path):
    from ingest.schema import create_source_tables

    hostile = SourceTables(snapshots='snap"; DROP TABLE victim; --', deltas="deltas'); DROP TABLE victim; --",
                           trades='tr"ades; DELETE FROM victim', markets="m a r k e t s")
    ticker = "KX'); DROP TABLE victim; --"
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE victim (x int)")
        conn.execute("INSERT INTO victim VALUES (1)")
        create_source_tables(conn, hostile)
        conn.execute(psycopg.sql.SQL("INSERT INTO {} (market_ticker, yes_price, no_price, count, taker_side, ts, received_at) "
                                     "VALUES (%s, 40, 60, 5, 'yes', %s, %s)").format(psycopg.sql.Identifier(hostile.trades)),
                     (ticker, 1775001600000, 1775001600001))
    report = ingest_partition(pg_dsn, "trades", date(2026, 4, 1), Lake(tmp_path), hostile)
    assert report.rows_written == 1 and report.reconciled
    assert pl.read_parquet(Lake(tmp_path).raw_partition("trades", date(2026, 4, 1)))["market_ticker"].to_list() == [ticker]
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM victim").fetchone()[0] == 1
    with pytest.raises(ValueError, match="bad table name"):
        ingest_partition(pg_dsn, "trades", date(2026, 4, 1), Lake(tmp_path), SourceTables(trades="a.b.c"))


def test_a_manifest_reparse_never_shows_readers_half_a_manifest(tmp_path, monkeypatch):
    """`dagster dev` re-parses the dbt project while other processes (a `kfs materialize`) load the
    definitions; in-place `dbt parse` writes let about one read in ten see a truncated manifest."""
    import threading

    import orjson

    from orchestration.dbt_project import parse_manifest

    monkeypatch.setenv("KFS_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("KFS_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    target = tmp_path / "target"
    manifest = parse_manifest(target)
    reparsed = threading.Event()

    def reparse_twice():
        try:
            parse_manifest(target)
            parse_manifest(target)
        finally:
            reparsed.set()

    reparser = threading.Thread(target=reparse_twice)
    reparser.start()
    reads = 0
    while not reparsed.is_set():
        assert orjson.loads(manifest.read_bytes())["metadata"]["project_name"] == "kfs"
        reads += 1
    reparser.join()
    assert reads > 100
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "partial_parse.msgpack"]


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
        assert pl.read_parquet(lake.root / "features" / "events" / f"date={day}" / "part-00000.parquet").height > 0
    registry = pl.read_parquet(lake.root / "splits" / "registry.parquet")
    assert registry["market_ticker"].is_unique().all()
    leftovers = [p for p in lake.root.rglob(".*tmp-*")]
    assert leftovers == []
