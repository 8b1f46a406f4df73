"""Simulated universes for the benchmarks, in their own PostgreSQL schema and a temporary lake.

A benchmark that needs a feature store builds it here (from a fresh clone: `make bench` needs nothing
else), the same way the tests do: simulate into PostgreSQL, ingest every day, run `feature_store_job`.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import psycopg
from psycopg import sql

from core.catalog import Lake
from core.settings import SourceTables, environment_overrides
from ingest.extract import ingest_markets, ingest_partition
from ingest.streams import PARTITIONED_STREAMS
from source.ddl import create_source_tables, drop_source_tables
from source.pg_server import source_dsn
from source.simulator import SimulationConfig, simulate


def bench_tables(schema: str) -> SourceTables:
    return SourceTables(**{k: f"{schema}.{v}" for k, v in SourceTables().__dict__.items()})


def simulate_into(dsn: str, schema: str, config: SimulationConfig):
    """Simulate `config` into `schema`; returns (tables, simulation summary)."""
    tables = bench_tables(schema)
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        drop_source_tables(conn, tables)
        create_source_tables(conn, tables)
        summary = simulate(conn, tables, config, first_session_id=1)
        conn.execute("ANALYZE")
    return tables, summary


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def ingest_days(dsn: str, tables: SourceTables, lake: Lake, config: SimulationConfig, extra_days: int = 1) -> list:
    days = [config.start + timedelta(days=i) for i in range(config.days + extra_days)]
    for day in days:
        for stream in PARTITIONED_STREAMS:
            ingest_partition(dsn, stream, day, lake, tables)
    ingest_markets(dsn, lake, tables)
    return days


@contextmanager
def feature_store(config: SimulationConfig, schema: str) -> Iterator[Lake]:
    """A complete feature store (raw lake, features, dbt marts, split) of `config`, removed afterwards."""
    import shutil

    import dagster as dg

    dsn = source_dsn()
    root = Path(tempfile.mkdtemp(prefix=f"kfs-{schema}-"))
    try:
        tables, _ = simulate_into(dsn, schema, config)
        lake = Lake(root / "lake")
        days = ingest_days(dsn, tables, lake, config)
        with environment_overrides(KFS_LAKE=str(lake.root), KFS_WAREHOUSE=str(root / "warehouse.duckdb"),
                         KFS_HOME=str(root / "home")):
            from orchestration.definitions import defs

            result = defs.resolve_job_def("feature_store_job").execute_in_process(
                instance=dg.DagsterInstance.ephemeral(),
                tags={"dagster/asset_partition_range_start": days[0].isoformat(),
                      "dagster/asset_partition_range_end": days[-1].isoformat()})
            assert result.success
        yield lake
    finally:
        shutil.rmtree(root, ignore_errors=True)
        drop_schema(dsn, schema)
