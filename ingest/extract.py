"""Bulk extraction of one daily partition from PostgreSQL into the lake.

Rows leave PostgreSQL through the ADBC PostgreSQL driver, which wraps the query in
`COPY (...) TO STDOUT (FORMAT binary)` and decodes it into Arrow in C++: no per-row Python, typed
columns (timestamptz stays a timestamp). The row count and the read run in one REPEATABLE READ
transaction, so `rows in source = rows written + rows quarantined` holds while the recorder keeps
inserting. COPY cannot take server-side parameters, so values are merged client-side with the
driver's quoting (psycopg `sql.Literal`), exactly as psycopg does for its own COPY; identifiers are
quoted by the driver too.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone

import adbc_driver_postgresql.dbapi as adbc
import polars as pl
import pyarrow as pa
from psycopg import sql

from ingest import quarantine
from ingest.db import SourceUnavailable, describe_dsn, redact, table_identifier
from ingest.streams import MARKETS_COLUMNS, PARTITIONED_STREAMS, Stream
from kfs.config import SourceTables
from kfs.lake import Lake, write_parquet_atomic

READ_ATTEMPTS = 3
READ_BACKOFF_S = 1.0

_CHECKS = {
    "snapshots": quarantine.check_snapshots,
    "deltas": quarantine.check_deltas,
    "trades": quarantine.check_trades,
}


@dataclass
class PartitionReport:
    stream: str
    partition: str
    rows_source: int = 0          # count(*) in PostgreSQL, same snapshot as the COPY
    rows_read: int = 0            # rows that came out of COPY
    rows_written: int = 0
    rows_quarantined: int = 0
    bytes_written: int = 0
    min_timestamp_ms: int | None = None
    max_timestamp_ms: int | None = None
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def reconciled(self) -> bool:
        return self.rows_source == self.rows_read == self.rows_written + self.rows_quarantined

    def as_dict(self) -> dict:
        return asdict(self)


def day_bounds_ms(day: date) -> tuple[int, int]:
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return int(start.timestamp() * 1000), int((start + timedelta(days=1)).timestamp() * 1000)


def partition_query(stream: Stream, tables: SourceTables, start_ms: int, end_ms: int) -> sql.Composed:
    """SELECT of one day of a stream."""
    table = table_identifier(getattr(tables, stream.table_attr))
    columns = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(name)) if name in ("yes_bids", "no_bids") else sql.Identifier(name)
        for name in stream.column_names
    )
    # No ORDER BY: PostgreSQL sorts on one core at about a third of COPY speed; Polars sorts after the
    # read on every core, by keys that end in the unique id, so the file order is still deterministic.
    return sql.SQL("SELECT {columns} FROM {table} WHERE {t} >= {start} AND {t} < {end}").format(
        columns=columns, table=table, t=sql.Identifier(stream.time_column),
        start=sql.Literal(int(start_ms)), end=sql.Literal(int(end_ms)),
    )


def count_query(stream: Stream, tables: SourceTables, start_ms: int, end_ms: int) -> sql.Composed:
    table = table_identifier(getattr(tables, stream.table_attr))
    return sql.SQL("SELECT count(*) FROM {table} WHERE {t} >= {start} AND {t} < {end}").format(
        table=table, t=sql.Identifier(stream.time_column), start=sql.Literal(int(start_ms)), end=sql.Literal(int(end_ms)),
    )


_connections = threading.local()


def _adbc_connection(dsn: str) -> "adbc.Connection":
    """One ADBC connection per thread and DSN: connecting costs about 25 ms (the driver reads pg_type)."""
    cache = _connections.__dict__.setdefault("by_dsn", {})
    if dsn not in cache:
        cache[dsn] = adbc.connect(dsn, autocommit=True)
    return cache[dsn]


def _drop_connection(dsn: str) -> None:
    conn = _connections.__dict__.get("by_dsn", {}).pop(dsn, None)
    if conn is not None:
        try:
            conn.close()
        except adbc.Error:
            pass


def read_consistent(dsn: str, count: sql.Composable, select: sql.Composable) -> tuple[int, pa.Table]:
    """count(*) and the rows of one query from the same snapshot, retried with backoff if the server drops."""
    last_error: Exception | None = None
    for attempt in range(READ_ATTEMPTS):
        try:
            with _adbc_connection(dsn).cursor() as cur:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                try:
                    cur.execute("SET LOCAL TIME ZONE 'UTC'")
                    cur.execute(count.as_string())
                    source_rows = int(cur.fetchone()[0])
                    cur.execute(select.as_string())
                    table = cur.fetch_arrow_table()
                finally:
                    cur.execute("COMMIT")
            return source_rows, table
        except adbc.OperationalError as error:  # unreachable, or dropped mid-read: retry the whole read
            last_error = error
            _drop_connection(dsn)
            if attempt + 1 < READ_ATTEMPTS:
                time.sleep(READ_BACKOFF_S * 2**attempt)
    reason = redact(str(last_error).strip().splitlines()[0], dsn)
    raise SourceUnavailable(f"reading from PostgreSQL at {describe_dsn(dsn)} failed after {READ_ATTEMPTS} attempts: {reason}")


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Exactly our schema: driver metadata dropped, integer widths unified (INTEGER arrives as int32)."""
    return table.select(schema.names).cast(schema).replace_schema_metadata(None)


def ingest_partition(dsn: str, stream_name: str, day: date, lake: Lake, tables: SourceTables) -> PartitionReport:
    """Extract one day of one stream, quarantine bad rows, write both files atomically."""
    stream = PARTITIONED_STREAMS[stream_name]
    started = time.perf_counter()
    start_ms, end_ms = day_bounds_ms(day)
    source_rows, table = read_consistent(dsn, count_query(stream, tables, start_ms, end_ms),
                                         partition_query(stream, tables, start_ms, end_ms))
    table = _conform(table, stream.arrow_schema)
    clean, bad = _CHECKS[stream.name](pl.from_arrow(table).sort(stream.order_by))
    report = PartitionReport(stream=stream.name, partition=day.isoformat(), rows_source=source_rows,
                             rows_read=table.num_rows, rows_written=clean.height, rows_quarantined=bad.height)
    report.bytes_written = write_parquet_atomic(clean, lake.raw_partition(stream.name, day))
    write_parquet_atomic(bad, lake.quarantine_partition(stream.name, day))
    if clean.height:
        report.min_timestamp_ms = int(clean[stream.time_column].min())
        report.max_timestamp_ms = int(clean[stream.time_column].max())
    if bad.height:
        report.quarantine_reasons = dict(bad.group_by("reason").len().sort("reason").iter_rows())
    report.seconds = time.perf_counter() - started
    return report


def ingest_markets(dsn: str, lake: Lake, tables: SourceTables) -> PartitionReport:
    """Market metadata is small and changes in place (status, result): re-read whole each time."""
    started = time.perf_counter()
    table_id = table_identifier(tables.markets)
    names = [name for name, _ in MARKETS_COLUMNS]
    select = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(sql.Identifier(n) for n in names), table_id)
    source_rows, table = read_consistent(dsn, sql.SQL("SELECT count(*) FROM {}").format(table_id), select)
    table = _conform(table, pa.schema(list(MARKETS_COLUMNS)))
    clean, bad = quarantine.check_markets(pl.from_arrow(table).sort("ticker", nulls_last=False))
    report = PartitionReport(stream="markets", partition="all", rows_source=int(source_rows),
                             rows_read=table.num_rows, rows_written=clean.height, rows_quarantined=bad.height)
    report.bytes_written = write_parquet_atomic(clean, lake.raw_markets())
    write_parquet_atomic(bad, lake.quarantine_markets())
    if bad.height:
        report.quarantine_reasons = dict(bad.group_by("reason").len().sort("reason").iter_rows())
    report.seconds = time.perf_counter() - started
    return report
