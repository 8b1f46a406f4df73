"""Source DDL (DESIGN.md section 1), compatible with the upstream Kalshi recorder.

`strict=True` adds the recorder's CHECK and NOT NULL constraints. `strict=False` creates the same
columns without them: some real databases were created before the constraints existed, and the
quarantine tests need to insert exactly the rows those constraints would have stopped.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from core.postgres import table_identifier
from core.settings import SourceTables

_SNAPSHOTS = """
CREATE TABLE IF NOT EXISTS {table} (
    id BIGSERIAL PRIMARY KEY,
    session_id BIGINT {not_null},
    market_ticker VARCHAR(100) {not_null},
    timestamp_ms BIGINT {not_null},
    sequence_number BIGINT {not_null},
    yes_bids JSONB {not_null},      -- {{price_cents: size}}, prices 1-99; authoritative
    yes_asks JSONB,                  -- recorded for compatibility, ignored (derived from no_bids)
    no_bids JSONB {not_null},       -- {{price_cents: size}}, prices 1-99; authoritative
    no_asks JSONB,                   -- recorded for compatibility, ignored (derived from yes_bids)
    yes_spread INTEGER,
    no_spread INTEGER,
    yes_mid_price DECIMAL(10,4),
    no_mid_price DECIMAL(10,4),
    total_volume BIGINT,
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
    {checks}
)"""
_SNAPSHOT_CHECKS = """,
    CONSTRAINT {c1} CHECK (timestamp_ms > 1577836800000),
    CONSTRAINT {c2} CHECK (sequence_number >= 0),
    CONSTRAINT {c3} UNIQUE (session_id, market_ticker, sequence_number)"""

_DELTAS = """
CREATE TABLE IF NOT EXISTS {table} (
    id BIGSERIAL PRIMARY KEY,
    session_id BIGINT {not_null},
    market_ticker VARCHAR(100) {not_null},
    timestamp_ms BIGINT {not_null},
    sequence_number BIGINT {not_null},
    side VARCHAR(10) {not_null},     -- 'yes' or 'no'
    action VARCHAR(10) {not_null},   -- 'add', 'remove', 'update'
    price INTEGER {not_null},        -- price in cents (1-99)
    old_size BIGINT,                 -- level size before the delta
    new_size BIGINT,                 -- level size after the delta (0 = level removed)
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
    {checks}
)"""
_DELTA_CHECKS = """,
    CONSTRAINT {c1} CHECK (side IN ('yes', 'no')),
    CONSTRAINT {c2} CHECK (action IN ('add', 'remove', 'update')),
    CONSTRAINT {c3} CHECK (price > 0),
    CONSTRAINT {c4} UNIQUE (session_id, market_ticker, sequence_number)"""

_TRADES = """
CREATE TABLE IF NOT EXISTS {table} (
    id BIGSERIAL PRIMARY KEY,
    trade_id TEXT,                   -- Kalshi's trade id when the feed carries it
    market_ticker VARCHAR(100) {not_null},
    yes_price INTEGER {not_null},    -- cents
    no_price INTEGER {not_null},     -- cents
    count INTEGER {not_null},        -- contracts
    taker_side VARCHAR(10) {not_null},
    ts BIGINT {not_null},            -- exchange time, epoch ms
    received_at BIGINT {not_null}    -- receive time, epoch ms
    {checks}
)"""
_TRADE_CHECKS = """,
    CONSTRAINT {c1} CHECK (taker_side IN ('yes', 'no')),
    CONSTRAINT {c2} CHECK (count > 0),
    CONSTRAINT {c3} CHECK (ts > 1577836800000)"""

_MARKETS = """
CREATE TABLE IF NOT EXISTS {table} (
    ticker VARCHAR(100) PRIMARY KEY,
    event_ticker VARCHAR(100),
    series_ticker VARCHAR(100),
    title TEXT,
    category VARCHAR(100),
    open_ts TIMESTAMPTZ,
    close_ts TIMESTAMPTZ,
    expected_expiration_ts TIMESTAMPTZ,
    status VARCHAR(20),
    result VARCHAR(10),              -- 'yes', 'no' or NULL while unresolved
    settled_ts TIMESTAMPTZ
    {checks}
)"""
_MARKET_CHECKS = """,
    CONSTRAINT {c1} CHECK (result IS NULL OR result IN ('yes', 'no'))"""

# Day-range reads are the ingest's access path; the recorder's own indexes lead with market or session.
# The identity indexes serve the ingest's duplicate lookups (strict tables have them as UNIQUE constraints).
_INDEXES = [
    ("snapshots", ("timestamp_ms",)),
    ("deltas", ("timestamp_ms",)),
    ("trades", ("ts",)),
    ("trades", ("trade_id",)),
]
_IDENTITY_INDEXES = [
    ("snapshots", ("session_id", "market_ticker", "sequence_number")),
    ("deltas", ("session_id", "market_ticker", "sequence_number")),
]


def _constraint_names(table: str, count: int) -> dict[str, sql.Identifier]:
    base = table.split(".")[-1][:40]
    return {f"c{i}": sql.Identifier(f"chk_{base}_{i}") for i in range(1, count + 1)}


def _create(template: str, checks: str, table: str, strict: bool) -> sql.Composed:
    n_checks = checks.count("CONSTRAINT")
    check_sql = sql.SQL(checks).format(**_constraint_names(table, n_checks)) if strict else sql.SQL("")
    return sql.SQL(template).format(
        table=table_identifier(table),
        not_null=sql.SQL("NOT NULL" if strict else ""),
        checks=check_sql,
    )


def create_source_tables(conn: psycopg.Connection, tables: SourceTables, *, strict: bool = True) -> None:
    """Create the four source tables (if absent) and the day-range indexes the ingest reads by."""
    with conn.cursor() as cur:
        cur.execute(_create(_SNAPSHOTS, _SNAPSHOT_CHECKS, tables.snapshots, strict))
        cur.execute(_create(_DELTAS, _DELTA_CHECKS, tables.deltas, strict))
        cur.execute(_create(_TRADES, _TRADE_CHECKS, tables.trades, strict))
        cur.execute(_create(_MARKETS, _MARKET_CHECKS, tables.markets, strict))
        for stream, columns in _INDEXES + ([] if strict else _IDENTITY_INDEXES):
            table = getattr(tables, stream)
            index = sql.Identifier(f"idx_{table.split('.')[-1][:40]}_{'_'.join(columns)}"[:63])
            cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                index, table_identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)))
    conn.commit()


def drop_source_tables(conn: psycopg.Connection, tables: SourceTables) -> None:
    with conn.cursor() as cur:
        for table in (tables.snapshots, tables.deltas, tables.trades, tables.markets):
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table_identifier(table)))
    conn.commit()


def next_session_id(conn: psycopg.Connection, tables: SourceTables) -> int:
    """Loaders and the simulator number new recording sessions after everything already stored."""
    row = conn.execute(
        sql.SQL("SELECT greatest((SELECT max(session_id) FROM {}), (SELECT max(session_id) FROM {}))").format(
            table_identifier(tables.snapshots), table_identifier(tables.deltas)
        )
    ).fetchone()
    return int(row[0] or 0) + 1
