"""`kfs demo` / `make demo`: the main job on the embedded default, end to end, with a summary."""

from __future__ import annotations

import os
import time
from datetime import date, datetime, timezone

import pyarrow.parquet as pq
from psycopg import sql
from rich.console import Console
from rich.table import Table

from ingest.db import connection, describe_dsn, resolve_dsn, table_identifier
from ingest.schema import create_source_tables
from ingest.streams import PARTITIONED_STREAMS
from kfs.config import SourceTables
from kfs.lake import Lake


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


def lake_summary(lake: Lake) -> dict:
    def rows_and_bytes(paths) -> tuple[int, int]:
        rows = size = 0
        for path in paths:
            rows += pq.ParquetFile(path).metadata.num_rows
            size += path.stat().st_size
        return rows, size

    summary = {}
    for stream in (*PARTITIONED_STREAMS, "markets"):
        rows, size = rows_and_bytes(sorted(lake.raw_stream_dir(stream).glob("**/*.parquet")))
        quarantined, _ = rows_and_bytes(sorted((lake.root / "raw" / "_quarantine" / stream).glob("**/*.parquet")))
        summary[stream] = {"rows": rows, "bytes": size, "quarantined": quarantined,
                           "partitions": len(lake.partitions(stream)) if stream != "markets" else 1}
    return summary


def feature_summary(lake: Lake) -> Table:
    """Feature rows per day, and markets per volatility class and split."""
    import polars as pl

    from features import store

    table = Table(title="feature store")
    table.add_column("what")
    table.add_column("value", justify="right")
    events = store.load_events(lake=lake).group_by(pl.from_epoch("timestamp_ms", time_unit="ms").dt.date().alias("day")) \
        .agg(pl.len()).sort("day").collect()
    for day, rows in events.iter_rows():
        table.add_row(f"event feature rows {day}", f"{rows:,}")
    table.add_row("event feature rows, all days", f"{events['len'].sum():,}")
    markets = store.load_markets(lake)
    for (klass,), group in sorted(markets.group_by(["volatility_class"])):
        table.add_row(f"markets {klass}", str(group.height))
    for (split,), group in sorted(markets.group_by(["split"])):
        table.add_row(f"markets in {split}", str(group.height))
    return table


def run_demo(console: Console) -> int:
    from ingest.simulator import DEFAULT_DAYS, DEFAULT_MARKETS, DEFAULT_SEED, DEFAULT_SIGNAL
    from kfs.cli import materialize_range, print_policy_summary, run_simulation, run_training_job, source_market_count

    started = time.perf_counter()
    dsn = resolve_dsn()
    tables = SourceTables.from_env()
    console.print(f"[bold]1/4[/] PostgreSQL at {describe_dsn(dsn)}")
    with connection(dsn) as conn:
        create_source_tables(conn, tables)
        present = source_market_count(conn, tables)
    if present:
        console.print(f"[bold]2/4[/] simulation skipped: the source already holds {present} markets")
    else:
        config, sim = run_simulation(DEFAULT_MARKETS, DEFAULT_DAYS, DEFAULT_SEED, DEFAULT_SIGNAL, None, replace=False)
        console.print(f"[bold]2/4[/] simulated {sim.markets} markets, {sim.book_events:,} book events, "
                      f"{sim.trades:,} trades from {config.start}")
    days = source_day_range(dsn, tables)
    if days is None:
        console.print("nothing to ingest: the source tables are empty")
        return 1
    console.print(f"[bold]3/4[/] ingesting {days[0]} .. {days[1]} and building the feature store through Dagster")
    results = materialize_range(days[0], days[1])
    failed = [c for r in results for c in r.get_asset_check_evaluations() if not c.passed]

    summary = lake_summary(Lake())
    table = Table(title="kalshi-feature-store demo: raw lake")
    for column in ("dataset", "rows", "partitions", "bytes", "quarantined"):
        table.add_column(column, justify="right" if column != "dataset" else "left")
    for name, info in summary.items():
        table.add_row(name, f"{info['rows']:,}", str(info["partitions"]), f"{info['bytes']:,}", f"{info['quarantined']:,}")
    book_events = summary["snapshots"]["rows"] + summary["deltas"]["rows"]
    table.add_row("[bold]book events[/]", f"{book_events:,}", "", "", "")
    console.print(table)
    console.print(feature_summary(Lake()))
    os.environ.setdefault("KFS_TRAIN_SECONDS", str(DEMO_TRAIN_SECONDS))
    console.print(f"[bold]4/4[/] training ({os.environ['KFS_TRAIN_SECONDS']} s budget), validating and publishing the policy")
    trained = run_training_job()
    print_policy_summary(console)
    failed += [c for c in trained.get_asset_check_evaluations() if not c.passed]
    console.print(f"markets {summary['markets']['rows']}, trades {summary['trades']['rows']:,}, "
                  f"partitions {summary['deltas']['partitions']}, failed checks {len(failed)}, "
                  f"lake {Lake().root}, {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0
