"""Ingest throughput against the practical ceiling, on the default universe (issue: foundation).

The ceiling is draining `COPY (SELECT ...) TO STDOUT` for the same rows with psycopg and doing nothing
with them. Both are run alternately, best of N, in the same process, because the machine is noisy.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from bench.results_io import Result, print_results, write_results
from core.catalog import Lake
from core.settings import SourceTables
from ingest.extract import day_bounds_ms, ingest_partition, partition_query
from ingest.streams import PARTITIONED_STREAMS
from kfs.universe import drop_schema, simulate_into
from source.pg_server import source_dsn
from source.simulator import SimulationConfig

SCHEMA = "kfs_bench"
ROUNDS = 3


def simulate_default(dsn: str) -> tuple[SimulationConfig, SourceTables, int, float]:
    config = SimulationConfig()
    started = time.perf_counter()
    tables, summary = simulate_into(dsn, SCHEMA, config)
    return config, tables, summary.book_events + summary.trades, time.perf_counter() - started


def drain_all(dsn: str, tables: SourceTables, days) -> tuple[int, float]:
    rows = 0
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        for day in days:
            for stream in PARTITIONED_STREAMS.values():
                statement = sql.SQL("COPY ({}) TO STDOUT").format(partition_query(stream, tables, *day_bounds_ms(day)))
                buffer = bytearray()
                with conn.cursor() as cur, cur.copy(statement) as copy:
                    for block in copy:
                        buffer += block
                rows += buffer.count(b"\n")
    return rows, time.perf_counter() - started


def ingest_all(dsn: str, tables: SourceTables, days, lake: Lake) -> tuple[int, float]:
    rows = 0
    started = time.perf_counter()
    for day in days:
        for stream in PARTITIONED_STREAMS:
            report = ingest_partition(dsn, stream, day, lake, tables)
            assert report.reconciled, report
            rows += report.rows_read
    return rows, time.perf_counter() - started


def main() -> list[Result]:
    dsn = source_dsn()
    config, tables, simulated_rows, simulate_s = simulate_default(dsn)
    days = [config.start + timedelta(days=i) for i in range(config.days)]
    lake_dir = Path(tempfile.mkdtemp(prefix="kfs-bench-lake-"))
    drains, ingests = [], []
    try:
        for _ in range(ROUNDS):
            drains.append(drain_all(dsn, tables, days))
            ingests.append(ingest_all(dsn, tables, days, Lake(lake_dir)))
    finally:
        shutil.rmtree(lake_dir, ignore_errors=True)
        drop_schema(dsn, SCHEMA)
    drained_rows, drain_s = min(drains, key=lambda r: r[1])
    ingested_rows, ingest_s = min(ingests, key=lambda r: r[1])
    assert drained_rows == ingested_rows, (drained_rows, ingested_rows)
    drain_rate, ingest_rate = drained_rows / drain_s, ingested_rows / ingest_s
    results = [
        Result("ingest_rows_per_s", ingest_rate, "rows/s", "copy_to_stdout_drain_rows_per_s", drain_rate,
               ingest_rate / drain_rate, ">= 0.5"),
        Result("ingest_rows", ingested_rows, "rows"),
        Result("ingest_seconds_best_of_3", ingest_s, "s", "copy_to_stdout_drain_seconds", drain_s, drain_s / ingest_s),
        Result("simulator_rows_per_s", simulated_rows / simulate_s, "rows/s", target="demo universe < 120 s"),
        Result("simulator_seconds", simulate_s, "s", target="< 120"),
    ]
    write_results("ingest.json", results)
    print_results("ingest (default universe: 300 markets x 7 days)", results)
    return results


if __name__ == "__main__":
    main()
