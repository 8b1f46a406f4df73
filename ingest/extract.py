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

from core.catalog import Lake
from core.postgres import SourceUnavailable, describe_dsn, redact, table_identifier
from core.settings import SourceTables, settings
from ingest import quarantine
from ingest.streams import MARKETS, PARTITIONED_STREAMS, Stream

MS_PER_DAY = 86_400_000
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


def selected_columns(stream: Stream) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(name)) if name in ("yes_bids", "no_bids") else sql.Identifier(name)
        for name in stream.column_names)


def _earlier_copy(stream: Stream, table: sql.Composable, start_ms: int, lookback_days: int) -> sql.Composable:
    """Whether a row with this row's identity was recorded on one of the `lookback_days` days before this
    partition: that later copy is a duplicate, even though its own day holds it once."""
    t = sql.Identifier(stream.time_column)
    same_identity = sql.SQL(" AND ").join(
        sql.SQL("e.{c} = d.{c}").format(c=sql.Identifier(column)) for column in stream.identity)
    return sql.SQL("EXISTS (SELECT 1 FROM {table} e WHERE {same} AND e.{t} >= {since} AND e.{t} < {start})").format(
        table=table, same=same_identity, t=t, since=sql.Literal(int(start_ms - lookback_days * MS_PER_DAY)),
        start=sql.Literal(int(start_ms)))


def partition_query(stream: Stream, tables: SourceTables, start_ms: int, end_ms: int,
                    lookback_days: int = 0) -> sql.Composed:
    """SELECT of one day of a stream, with `earlier_copy` (see `_earlier_copy`)."""
    table = table_identifier(getattr(tables, stream.table_attr))
    t = sql.Identifier(stream.time_column)
    earlier = _earlier_copy(stream, table, start_ms, lookback_days) if lookback_days else sql.SQL("false")
    # No ORDER BY: PostgreSQL sorts on one core at about a third of COPY speed; Polars sorts after the
    # read on every core, by keys that end in the unique id, so the file order is still deterministic.
    return sql.SQL("SELECT {columns}, {earlier} AS {flag} FROM {table} d WHERE d.{t} >= {start} AND d.{t} < {end}").format(
        columns=selected_columns(stream), earlier=earlier, flag=sql.Identifier(quarantine.EARLIER_COPY),
        table=table, t=t, start=sql.Literal(int(start_ms)), end=sql.Literal(int(end_ms)))


def valid_time_range_ms(partitions_start: date, today: date) -> tuple[int, int]:
    """Times that belong to a daily partition: from the first partition to the end of tomorrow (a recorder
    clock a little ahead is not an error; its rows are ingested when their day comes)."""
    return day_bounds_ms(partitions_start)[0], day_bounds_ms(today + timedelta(days=1))[1]


def invalid_time_condition(stream: Stream, valid_from_ms: int, valid_until_ms: int) -> sql.Composable:
    t = sql.Identifier(stream.time_column)
    return sql.SQL("({t} IS NULL OR {t} < {low} OR {t} >= {high})").format(
        t=t, low=sql.Literal(int(valid_from_ms)), high=sql.Literal(int(valid_until_ms)))


def count_query(stream: Stream, tables: SourceTables, start_ms: int, end_ms: int) -> sql.Composed:
    table = table_identifier(getattr(tables, stream.table_attr))
    return sql.SQL("SELECT count(*) FROM {table} WHERE {t} >= {start} AND {t} < {end}").format(
        table=table, t=sql.Identifier(stream.time_column), start=sql.Literal(int(start_ms)), end=sql.Literal(int(end_ms)),
    )


def invalid_time_queries(stream: Stream, tables: SourceTables, valid_from_ms: int, valid_until_ms: int
                         ) -> tuple[sql.Composed, sql.Composed]:
    """count(*) and SELECT of a stream's rows whose time belongs to no partition."""
    table = table_identifier(getattr(tables, stream.table_attr))
    where = invalid_time_condition(stream, valid_from_ms, valid_until_ms)
    return (sql.SQL("SELECT count(*) FROM {table} WHERE {where}").format(table=table, where=where),
            sql.SQL("SELECT {columns} FROM {table} WHERE {where}").format(
                columns=selected_columns(stream), table=table, where=where))


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


def check_rows(stream_name: str, table: pa.Table) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows of a stream as read from the source (in any order) -> (clean rows in the raw lake's schema, sorted
    as the lake stores them; quarantined rows with their reason). The ingest, and anything that reads source
    rows another way (a recording replayed live), apply exactly these rules."""
    stream = PARTITIONED_STREAMS[stream_name]
    clean, bad = _CHECKS[stream_name](pl.from_arrow(table).sort(stream.order_by))
    return clean.cast(stream.lake_schema), bad


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Exactly our schema (plus the extract's own flag): driver metadata dropped, integer widths unified
    (INTEGER arrives as int32)."""
    if quarantine.EARLIER_COPY in table.column_names:
        schema = schema.append(pa.field(quarantine.EARLIER_COPY, pa.bool_()))
    return table.select(schema.names).cast(schema).replace_schema_metadata(None)


def ingest_partition(dsn: str, stream_name: str, day: date, lake: Lake, tables: SourceTables,
                     duplicate_lookback_days: int | None = None) -> PartitionReport:
    """Extract one day of one stream, quarantine bad rows, write both files atomically. A row repeating the
    identity of a row from the `duplicate_lookback_days` days before (default KFS_REPLAY_LOOKBACK_DAYS) is
    quarantined as a duplicate."""
    stream = PARTITIONED_STREAMS[stream_name]
    started = time.perf_counter()
    start_ms, end_ms = day_bounds_ms(day)
    lookback = settings().replay_lookback_days if duplicate_lookback_days is None else duplicate_lookback_days
    source_rows, table = read_consistent(dsn, count_query(stream, tables, start_ms, end_ms),
                                         partition_query(stream, tables, start_ms, end_ms, lookback))
    table = _conform(table, stream.arrow_schema)
    clean, bad = check_rows(stream.name, table)
    report = PartitionReport(stream=stream.name, partition=day.isoformat(), rows_source=source_rows,
                             rows_read=table.num_rows, rows_written=clean.height, rows_quarantined=bad.height)
    report.bytes_written = lake.write_parquet(clean, lake.raw_partition(stream.name, day))
    lake.write_parquet(bad, lake.quarantine_partition(stream.name, day))
    if clean.height:
        report.min_timestamp_ms = int(clean[stream.time_column].min())
        report.max_timestamp_ms = int(clean[stream.time_column].max())
    if bad.height:
        report.quarantine_reasons = dict(bad.group_by("reason").len().sort("reason").iter_rows())
    report.seconds = time.perf_counter() - started
    return report


def markets_query(table_id: sql.Composable) -> sql.Composed:
    """SELECT of every market row. Times are cut to the millisecond the lake keeps; 'infinity' and
    '-infinity' (which no Arrow timestamp holds) are read as null and flagged, so the row is quarantined."""
    times = [c.name for c in MARKETS.columns if pa.types.is_timestamp(c.source_type)]
    columns = [sql.SQL("CASE WHEN isfinite({c}) THEN date_trunc('milliseconds', {c}) END AS {c}").format(
        c=sql.Identifier(n)) if n in times else sql.Identifier(n) for n in MARKETS.column_names]
    infinite = sql.SQL(" OR ").join(sql.SQL("NOT coalesce(isfinite({}), true)").format(sql.Identifier(n)) for n in times)
    return sql.SQL("SELECT {columns}, ({infinite}) AS {flag} FROM {table}").format(
        columns=sql.SQL(", ").join(columns), infinite=infinite, flag=sql.Identifier(quarantine.INFINITE_TIME),
        table=table_id)


def ingest_markets(dsn: str, lake: Lake, tables: SourceTables) -> PartitionReport:
    """Market metadata is small and changes in place (status, result): re-read whole each time."""
    started = time.perf_counter()
    table_id = table_identifier(tables.markets)
    source_rows, table = read_consistent(dsn, sql.SQL("SELECT count(*) FROM {}").format(table_id),
                                         markets_query(table_id))
    flags = table.column(quarantine.INFINITE_TIME)
    table = _conform(table, MARKETS.arrow_schema).append_column(quarantine.INFINITE_TIME, flags)
    clean, bad = quarantine.check_markets(pl.from_arrow(table).sort("ticker", nulls_last=False))
    report = PartitionReport(stream="markets", partition="all", rows_source=int(source_rows),
                             rows_read=table.num_rows, rows_written=clean.height, rows_quarantined=bad.height)
    report.bytes_written = lake.write_parquet(clean, lake.raw_markets())
    lake.write_parquet(bad, lake.quarantine_markets())
    if bad.height:
        report.quarantine_reasons = dict(bad.group_by("reason").len().sort("reason").iter_rows())
    report.seconds = time.perf_counter() - started
    return report


def ingest_invalid_timestamps(dsn: str, lake: Lake, tables: SourceTables, valid_from_ms: int,
                              valid_until_ms: int) -> list[PartitionReport]:
    """Every row of each stream whose time is NULL or outside [valid_from, valid_until) belongs to no daily
    partition: it is quarantined whole (reason `invalid_timestamp`) into one file per stream, rewritten on
    every run, so that `rows in source = written + quarantined` holds over the whole source."""
    reports = []
    for stream in PARTITIONED_STREAMS.values():
        started = time.perf_counter()
        count, select = invalid_time_queries(stream, tables, valid_from_ms, valid_until_ms)
        source_rows, table = read_consistent(dsn, count, select)
        rows = pl.from_arrow(_conform(table, stream.arrow_schema)).sort(stream.order_by, nulls_last=True)
        bad = rows.with_columns(pl.lit("invalid_timestamp").alias("reason"))
        lake.write_parquet(bad, lake.invalid_timestamp_quarantine(stream.name))
        report = PartitionReport(stream=stream.name, partition="invalid_timestamp", rows_source=source_rows,
                                 rows_read=table.num_rows, rows_written=0, rows_quarantined=bad.height,
                                 seconds=time.perf_counter() - started)
        if bad.height:
            report.quarantine_reasons = {"invalid_timestamp": bad.height}
        reports.append(report)
    return reports
