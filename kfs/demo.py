"""`kfs demo` / `make demo`: the main job on the embedded default, end to end, with a summary.

Every stage is the real one (the embedded PostgreSQL, Dagster, dbt, training, validation, publication); what
a first look does not need is smaller: the universe spans `DEMO_DAYS` days of the default 300 markets (so the
250/25/25 split is the real one) and training uses the `demo` profile. The run ends with where its time went.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone

from psycopg import sql
from rich.console import Console

from core.catalog import Lake
from core.postgres import connection, describe_dsn, table_identifier
from core.settings import SourceTables, settings
from ingest.streams import PARTITIONED_STREAMS
from kfs.console import failed_checks
from kfs.runners import materialize_range, run_training_job
from kfs.simulation import run_simulation, source_market_count
from kfs.summaries import (
    feature_summary,
    lake_summary,
    print_policy_summary,
    raw_lake_table,
)
from source.ddl import create_source_tables
from source.pg_server import source_dsn
from source.simulator_defaults import DEFAULT_MARKETS, DEFAULT_SEED, DEFAULT_SIGNAL

DEMO_PROFILE = "demo"   # the nightly stages, smaller (training/pipeline.py)
DEMO_DAYS = 2           # of the default 300 markets: the whole split, a fraction of the events


class Stopwatch:
    """Seconds per stage, in order, for the closing line of the demo."""

    def __init__(self):
        self.started = self.mark = time.perf_counter()
        self.stages: list[tuple[str, float]] = []

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages.append((stage, now - self.mark))
        self.mark = now

    def summary(self) -> str:
        total = time.perf_counter() - self.started
        return f"{total:.0f} s: " + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in self.stages)


def source_day_range(dsn: str, tables: SourceTables) -> tuple[date, date] | None:
    """First and last UTC day with any book event or trade in the source."""
    bounds = []
    with connection(dsn) as conn:
        for stream in PARTITIONED_STREAMS.values():
            query = sql.SQL("SELECT min({t}), max({t}) FROM {table}").format(
                t=sql.Identifier(stream.time_column), table=table_identifier(getattr(tables, stream.table_attr)))
            low, high = conn.execute(query).fetchone()
            if low is not None:
                bounds.extend([low, high])
    if not bounds:
        return None
    to_day = lambda ms: datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date()  # noqa: E731
    return to_day(min(bounds)), to_day(max(bounds))


def run_demo(console: Console) -> int:
    watch = Stopwatch()
    dsn = source_dsn(explicit=True)
    tables = settings().tables
    console.print(f"[bold]1/4[/] PostgreSQL at {describe_dsn(dsn)}")
    with connection(dsn) as conn:
        create_source_tables(conn, tables)
        present = source_market_count(conn, tables)
    watch.lap("PostgreSQL")
    if present:
        console.print(f"[bold]2/4[/] simulation skipped: the source already holds {present} markets")
    else:
        start = datetime.now(timezone.utc).date() - timedelta(days=DEMO_DAYS)
        config, sim = run_simulation(DEFAULT_MARKETS, DEMO_DAYS, DEFAULT_SEED, DEFAULT_SIGNAL, start, replace=False,
                                     console=console)
        console.print(f"[bold]2/4[/] simulated {sim.markets} markets, {sim.book_events:,} book events, "
                      f"{sim.trades:,} trades from {config.start}")
        watch.lap("simulate")
    days = source_day_range(dsn, tables)
    if days is None:
        console.print("nothing to ingest: the source tables are empty")
        return 1
    console.print(f"[bold]3/4[/] ingesting {days[0]} .. {days[1]} and building the feature store through Dagster")
    results = materialize_range(days[0], days[1], console=console)
    errors, warnings = failed_checks(results)
    watch.lap("ingest and feature store")

    lake = Lake()
    summary = lake_summary(lake)
    console.print(raw_lake_table(summary))
    console.print(feature_summary(lake))
    console.print(f"[bold]4/4[/] training ({DEMO_PROFILE} profile), validating and publishing the policy")
    trained = run_training_job(console, profile=DEMO_PROFILE)
    watch.lap("train, validate, publish")
    print_policy_summary(console, lake)
    training_errors, training_warnings = failed_checks([trained])
    errors, warnings = errors + training_errors, warnings + training_warnings
    for check in warnings:
        console.print(f"warning: check {check.asset_key.to_user_string()} {check.check_name} failed (warning severity)")
    console.print(f"markets {summary['markets']['rows']}, trades {summary['trades']['rows']:,}, "
                  f"partitions {summary['deltas']['partitions']}, failed checks {len(errors)} "
                  f"(+{len(warnings)} warnings), lake {lake.root}")
    console.print(f"where the time went: {watch.summary()}", highlight=False)
    return 1 if errors else 0
