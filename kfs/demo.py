"""`kfs demo` / `make demo`: the main job on the embedded default, end to end, with a summary."""

from __future__ import annotations

import time
from datetime import date, datetime, timezone

from psycopg import sql
from rich.console import Console

from core.catalog import Lake
from core.postgres import connection, describe_dsn, table_identifier
from core.settings import SourceTables, settings
from ingest.streams import PARTITIONED_STREAMS
from kfs.runners import (
    failed_checks,
    materialize_range,
    run_simulation,
    run_training_job,
    source_market_count,
)
from kfs.summaries import (
    feature_summary,
    lake_summary,
    print_policy_summary,
    raw_lake_table,
)

DEMO_TRAIN_SECONDS = 120  # keeps `make demo` within about five minutes on two cores


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
    from source.ddl import create_source_tables
    from source.pg_server import source_dsn
    from source.simulator import (
        DEFAULT_DAYS,
        DEFAULT_MARKETS,
        DEFAULT_SEED,
        DEFAULT_SIGNAL,
    )

    started = time.perf_counter()
    dsn = source_dsn(explicit=True)
    tables = settings().tables
    console.print(f"[bold]1/4[/] PostgreSQL at {describe_dsn(dsn)}")
    with connection(dsn) as conn:
        create_source_tables(conn, tables)
        present = source_market_count(conn, tables)
    if present:
        console.print(f"[bold]2/4[/] simulation skipped: the source already holds {present} markets")
    else:
        config, sim = run_simulation(DEFAULT_MARKETS, DEFAULT_DAYS, DEFAULT_SEED, DEFAULT_SIGNAL, None, replace=False,
                                     console=console)
        console.print(f"[bold]2/4[/] simulated {sim.markets} markets, {sim.book_events:,} book events, "
                      f"{sim.trades:,} trades from {config.start}")
    days = source_day_range(dsn, tables)
    if days is None:
        console.print("nothing to ingest: the source tables are empty")
        return 1
    console.print(f"[bold]3/4[/] ingesting {days[0]} .. {days[1]} and building the feature store through Dagster")
    results = materialize_range(days[0], days[1], console=console)
    errors, warnings = failed_checks(results)

    lake = Lake()
    summary = lake_summary(lake)
    console.print(raw_lake_table(summary))
    console.print(feature_summary(lake))
    budget = settings().train_seconds or DEMO_TRAIN_SECONDS
    console.print(f"[bold]4/4[/] training ({budget:.0f} s budget), validating and publishing the policy")
    trained = run_training_job(console, seconds=budget)
    print_policy_summary(console, lake)
    training_errors, training_warnings = failed_checks([trained])
    errors, warnings = errors + training_errors, warnings + training_warnings
    for check in warnings:
        console.print(f"warning: check {check.asset_key.to_user_string()} {check.check_name} failed (warning severity)")
    console.print(f"markets {summary['markets']['rows']}, trades {summary['trades']['rows']:,}, "
                  f"partitions {summary['deltas']['partitions']}, failed checks {len(errors)} "
                  f"(+{len(warnings)} warnings), lake {lake.root}, {time.perf_counter() - started:.0f} s")
    return 1 if errors else 0
