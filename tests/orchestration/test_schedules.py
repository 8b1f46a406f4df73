"""The nightly schedule: what it requests, and that it runs end to end on a small universe."""

from __future__ import annotations

import datetime as dt
from datetime import date

import dagster as dg
import polars as pl

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


def test_what_the_nightly_schedule_requests_runs_end_to_end(small_nightly, nightly_days, small_lake):
    """Ingest -> features -> dbt -> split -> train -> validate -> publish, for the range the schedule asks for
    on the day after the small universe (the shared build of conftest.py is that run)."""
    run = small_nightly["run"]
    assert run.success
    # yesterday (the universe's last day) and KFS_LATE_DAYS (2) days before it: the day before the data, its two days
    assert nightly_days == [SMALL_CONFIG.start + dt.timedelta(days=i) for i in (-1, 0, 1)]
    assert {"raw_deltas", "features_events", "markets", "split_registry", "published_policy"} <= set(run.materialized)
    assert small_lake.partitions("deltas") == nightly_days
    assert pl.read_parquet(small_lake.raw_partition("deltas", nightly_days[0])).height == 0  # before the data: empty
    registry = small_lake.read_json(small_lake.model_registry())
    assert len(registry["versions"]) == 1
