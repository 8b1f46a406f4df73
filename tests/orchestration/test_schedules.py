"""The nightly schedule: what it requests, and that it runs end to end on a small universe."""

from __future__ import annotations

import datetime as dt
from datetime import date

import dagster as dg
import polars as pl

from core.catalog import Lake
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
    registry = lake.read_json(lake.model_registry())
    assert len(registry["versions"]) == 1
