"""Where live events come from: a recording replayed in arrival order, or the recorder's PostgreSQL tables
followed by id. Either yields `Arrival`s: the source rows that arrived together, in the source tables'
columns, the unit the runner computes features and decisions for."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
from psycopg import sql

from core.postgres import connection, table_identifier
from core.settings import SourceTables
from ingest.extract import selected_columns
from ingest.streams import MARKETS, PARTITIONED_STREAMS, trade_visible_ms

BOOK_STREAMS = ("snapshots", "deltas")
# Trades first: at equal arrival times a trade goes before the book events, as the offline record order puts
# a trade before the first book event whose time reaches it (features/events.py:book_and_trade_records).
STREAMS = ("trades", "snapshots", "deltas")


@dataclass
class Arrival:
    """Source rows that arrived together (one table per stream) and the markets table as known by then."""

    rows: dict[str, pa.Table]
    markets: pa.Table | None = None   # set when the markets table changed (first arrival, a settlement)

    @property
    def events(self) -> int:
        return sum(self.rows[name].num_rows for name in STREAMS)


# -- recordings -----------------------------------------------------------------------------------

def arrival_times(tables: dict[str, pa.Table]) -> dict[str, np.ndarray]:
    """When each row became known: book events at their receive time, trades at theirs (the exchange time
    when the feed recorded none)."""
    return {name: arrival_times_of(name, tables[name]) for name in STREAMS}


def replay(tables: dict[str, pa.Table], batch_events: int = 1024, realtime: bool = False,
           stop: threading.Event | None = None) -> Iterator[Arrival]:
    """A recording's rows (`source.recordings.recording_tables`) in arrival order. As fast as possible the
    consumer drains up to `batch_events` at a time (a consumer that is behind sees a backlog); with
    `realtime` rows arrive at their recorded pace and a batch is whatever arrived while the last one was
    processed (at most `batch_events`)."""
    if batch_events < 1:
        raise ValueError("--batch-events must be at least 1")
    # Each stream once in arrival order: an arrival is then the next rows of each stream, a zero-copy slice.
    times = arrival_times(tables)
    ordered = {}
    for name in STREAMS:
        order = np.argsort(times[name], kind="stable")
        ordered[name] = tables[name].take(order).combine_chunks() if len(order) else tables[name]
        times[name] = times[name][order]
    stream_of = np.concatenate([np.full(len(times[name]), k, np.int8) for k, name in enumerate(STREAMS)])
    merge = np.argsort(np.concatenate([times[name] for name in STREAMS]), kind="stable")
    arrival, stream_of = np.concatenate([times[name] for name in STREAMS])[merge], stream_of[merge]
    taken = dict.fromkeys(STREAMS, 0)
    first_markets = tables["markets"]
    started, start_ms = time.monotonic(), int(arrival[0]) if len(arrival) else 0
    i = 0
    while i < len(arrival):
        if stop is not None and stop.is_set():
            return
        end = min(i + batch_events, len(arrival))
        if realtime:
            due = start_ms + int((time.monotonic() - started) * 1000)
            if arrival[i] > due:
                time.sleep(min((arrival[i] - due) / 1000.0, 1.0))
                continue
            end = min(end, int(np.searchsorted(arrival, due, side="right")))
        counts = np.bincount(stream_of[i:end], minlength=len(STREAMS))
        rows = {}
        for k, name in enumerate(STREAMS):
            rows[name] = ordered[name].slice(taken[name], int(counts[k]))
            taken[name] += int(counts[k])
        yield Arrival(rows, first_markets)
        first_markets = None
        i = end


def read_recording_tables(paths: list[Path], timezone_name: str = "UTC") -> dict[str, pa.Table]:
    from source.recordings import read_recordings, recording_tables

    return recording_tables(read_recordings(paths, timezone_name))


# -- following the recorder's tables ---------------------------------------------------------------

def _select_new(stream_name: str, tables: SourceTables, after_id: int, limit: int) -> sql.Composed:
    stream = PARTITIONED_STREAMS[stream_name]
    return sql.SQL("SELECT {} FROM {} WHERE id > {} ORDER BY id LIMIT {}").format(
        selected_columns(stream), table_identifier(getattr(tables, stream.table_attr)), sql.Literal(after_id), sql.Literal(limit))


def _as_table(cursor, schema: pa.Schema) -> pa.Table:
    rows = cursor.fetchall()
    return pa.table({field.name: pa.array([row[k] for row in rows], type=field.type)
                     for k, field in enumerate(schema)}, schema=schema)


def read_markets(conn, tables: SourceTables) -> pa.Table:
    names = MARKETS.column_names
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT {} FROM {} ORDER BY ticker").format(
            sql.SQL(", ").join(sql.Identifier(n) for n in names), table_identifier(tables.markets)))
        return _as_table(cur, MARKETS.arrow_schema)


def _markets_version(conn, tables: SourceTables) -> tuple:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*), count(settled_ts), max(settled_ts) FROM {}").format(
            table_identifier(tables.markets)))
        return tuple(cur.fetchone())


def _concat(a: pa.Table | None, b: pa.Table) -> pa.Table:
    return b if a is None or not a.num_rows else pa.concat_tables([a, b])


def follow(dsn: str, tables: SourceTables, batch_events: int = 4096, poll_s: float = 0.2,
           stop: threading.Event | None = None, exit_when_idle: bool = False) -> Iterator[Arrival]:
    """New rows of the recorder's tables by id (an index scan from the last id seen, never a rescan): each
    poll's rows are one arrival, at most `batch_events` per table. When a table returned a full batch the
    others may be ahead of it in time, so rows at or after the earliest such batch's last time wait for the
    next poll (the engine must see each market's trades and book events in time order, as offline). The
    markets table is re-read when its row count or settlements change. Ends when `stop` is set, or with
    `exit_when_idle` at the first poll that finds nothing new."""
    last_id = dict.fromkeys(STREAMS, 0)
    pending: dict[str, pa.Table | None] = dict.fromkeys(STREAMS)
    markets_seen = None
    with connection(dsn) as conn:
        conn.autocommit = True
        while stop is None or not stop.is_set():
            version = _markets_version(conn, tables)
            markets = None
            if version != markets_seen:
                markets, markets_seen = read_markets(conn, tables), version
            cutoff, fetched = None, 0
            with conn.cursor() as cur:
                for name in STREAMS:
                    cur.execute(_select_new(name, tables, last_id[name], batch_events))
                    new = _as_table(cur, PARTITIONED_STREAMS[name].arrow_schema)
                    fetched += new.num_rows
                    if new.num_rows:
                        last_id[name] = int(new["id"][-1].as_py())
                    pending[name] = _concat(pending[name], new)
                    if new.num_rows == batch_events:
                        last_time = int(arrival_times_of(name, new)[-1])
                        cutoff = last_time if cutoff is None else min(cutoff, last_time)
            rows = {}
            for name in STREAMS:
                table = pending[name]
                keep = np.ones(table.num_rows, bool) if cutoff is None else arrival_times_of(name, table) < cutoff
                rows[name], pending[name] = table.filter(pa.array(keep)), table.filter(pa.array(~keep))
            arrival = Arrival(rows, markets)
            if arrival.events or markets is not None:
                yield arrival
            if not fetched:
                if exit_when_idle:
                    return
                if stop is not None:
                    stop.wait(poll_s)
                else:
                    time.sleep(poll_s)


def arrival_times_of(stream_name: str, table: pa.Table) -> np.ndarray:
    if stream_name != "trades":
        return table["timestamp_ms"].to_numpy(zero_copy_only=False).astype(np.int64)
    return trade_visible_ms(table["ts"], table["received_at"])
