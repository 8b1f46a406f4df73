"""Helpers for tests that read source rows back from PostgreSQL."""

from __future__ import annotations

import json

import psycopg
from psycopg import sql

from core.postgres import table_identifier
from core.settings import SourceTables


def book_events_by_stream(dsn: str, tables: SourceTables) -> dict[tuple[int, str], list[dict]]:
    """Snapshots and deltas grouped by (session, market), in sequence order, as reference-replay events."""
    events: dict[tuple[int, str], list[dict]] = {}
    with psycopg.connect(dsn) as conn:
        for row in conn.execute(sql.SQL(
            "SELECT session_id, market_ticker, sequence_number, timestamp_ms, yes_bids::text, no_bids::text FROM {}"
        ).format(table_identifier(tables.snapshots))):
            session, ticker, seq, ts, yes, no = row
            events.setdefault((session, ticker), []).append({
                "kind": "snapshot", "sequence_number": seq, "timestamp_ms": ts,
                "yes_bids": {int(p): s for p, s in json.loads(yes).items()},
                "no_bids": {int(p): s for p, s in json.loads(no).items()},
            })
        for row in conn.execute(sql.SQL(
            "SELECT session_id, market_ticker, sequence_number, timestamp_ms, side, price, old_size, new_size FROM {}"
        ).format(table_identifier(tables.deltas))):
            session, ticker, seq, ts, side, price, old, new = row
            events.setdefault((session, ticker), []).append({
                "kind": "delta", "sequence_number": seq, "timestamp_ms": ts, "side": side, "price": price,
                "old_size": old, "new_size": new,
            })
    for stream in events.values():
        stream.sort(key=lambda e: e["sequence_number"])
    return events
