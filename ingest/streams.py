"""The raw lake's schema, declared once: what each stream reads from PostgreSQL and what it writes.

One declaration per stream drives the COPY query, the parquet schema of the written partitions, the
readers of the raw lake (`features`) and the dbt sources (rendered by `orchestration.dbt_contract`),
so they can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Column:
    name: str
    source_type: pa.DataType          # as read from PostgreSQL
    doc: str


@dataclass(frozen=True)
class Stream:
    name: str                 # lake folder and Dagster asset suffix
    table_attr: str           # attribute of SourceTables
    time_column: str          # epoch-ms column that assigns a row to a daily partition
    columns: tuple[Column, ...]
    order_by: tuple[str, ...]
    # Columns that identify an event: a row repeating an earlier row's key is a duplicate.
    identity: tuple[str, ...] = ()
    # Columns the raw lake has instead of some source columns (snapshots: bid maps parsed into lists).
    lake_replacements: tuple[tuple[str, tuple[Column, ...]], ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def arrow_schema(self) -> pa.Schema:
        """What COPY delivers (after conforming integer widths)."""
        return pa.schema([(c.name, c.source_type) for c in self.columns])

    @property
    def lake_columns(self) -> tuple[Column, ...]:
        replaced = dict(self.lake_replacements)
        out: list[Column] = []
        for column in self.columns:
            out.extend(replaced.get(column.name, (column,)))
        return tuple(dict.fromkeys(out))

    @property
    def lake_schema(self) -> dict[str, pl.DataType]:
        """Polars schema of a written partition."""
        return {c.name: pl.from_arrow(pa.array([], type=c.source_type)).dtype for c in self.lake_columns}


_ID = Column("id", pa.int64(), "Source row id.")
_SESSION = Column("session_id", pa.int64(), "Recording session; sequences restart per session.")
_TICKER = Column("market_ticker", pa.string(), "Market ticker.")
_TIMESTAMP = Column("timestamp_ms", pa.int64(), "Receive time, epoch ms; assigns the row to its UTC day.")
_SEQUENCE = Column("sequence_number", pa.int64(), "Order of events within (session, market).")
_BID_LEVELS = (
    Column("yes_bid_prices", pa.list_(pa.int64()), "YES bid prices in cents, ascending."),
    Column("yes_bid_sizes", pa.list_(pa.int64()), "Contracts at each YES bid price."),
    Column("no_bid_prices", pa.list_(pa.int64()), "NO bid prices in cents, ascending (YES ask = 100 - NO bid)."),
    Column("no_bid_sizes", pa.list_(pa.int64()), "Contracts at each NO bid price."),
)

SNAPSHOTS = Stream(
    name="snapshots",
    table_attr="snapshots",
    time_column="timestamp_ms",
    columns=(_ID, _SESSION, _TICKER, _TIMESTAMP, _SEQUENCE,
             Column("yes_bids", pa.string(), "YES bid map {price_cents: size} as JSON text (authoritative)."),
             Column("no_bids", pa.string(), "NO bid map {price_cents: size} as JSON text (authoritative).")),
    order_by=("session_id", "market_ticker", "sequence_number", "id"),
    identity=("session_id", "market_ticker", "sequence_number"),
    lake_replacements=(("yes_bids", _BID_LEVELS), ("no_bids", ())),
)

DELTAS = Stream(
    name="deltas",
    table_attr="deltas",
    time_column="timestamp_ms",
    columns=(_ID, _SESSION, _TICKER, _TIMESTAMP, _SEQUENCE,
             Column("side", pa.string(), "'yes' or 'no': the bid ladder the delta changes."),
             Column("action", pa.string(), "'add', 'remove' or 'update'."),
             Column("price", pa.int64(), "Price level in cents (1..99)."),
             Column("old_size", pa.int64(), "Level size before the delta."),
             Column("new_size", pa.int64(), "Level size after the delta (0 = removed).")),
    order_by=("session_id", "market_ticker", "sequence_number", "id"),
    identity=("session_id", "market_ticker", "sequence_number"),
)

TRADES = Stream(
    name="trades",
    table_attr="trades",
    time_column="ts",
    columns=(_ID,
             Column("trade_id", pa.string(), "Kalshi's trade id when the feed carried one."),
             _TICKER,
             Column("yes_price", pa.int64(), "YES price in cents (1..99)."),
             Column("no_price", pa.int64(), "NO price in cents; yes_price + no_price = 100."),
             Column("count", pa.int64(), "Contracts traded."),
             Column("taker_side", pa.string(), "'yes' or 'no': the side that took liquidity."),
             Column("ts", pa.int64(), "Exchange time, epoch ms; assigns the row to its UTC day."),
             Column("received_at", pa.int64(), "Receive time, epoch ms: when the trade became known.")),
    order_by=("market_ticker", "ts", "id"),
    identity=("trade_id",),
)

MARKETS = Stream(
    name="markets",
    table_attr="markets",
    time_column="",
    columns=(
        Column("ticker", pa.string(), "Market ticker."),
        Column("event_ticker", pa.string(), "Kalshi event."),
        Column("series_ticker", pa.string(), "Kalshi series."),
        Column("title", pa.string(), "Title."),
        Column("category", pa.string(), "Category (sports, politics, economics, climate, crypto, other)."),
        Column("open_ts", pa.timestamp("ms", "UTC"), "Open time (UTC)."),
        Column("close_ts", pa.timestamp("ms", "UTC"), "Close time (UTC)."),
        Column("expected_expiration_ts", pa.timestamp("ms", "UTC"), "Expected expiration (UTC)."),
        Column("status", pa.string(), "Lifecycle status."),
        Column("result", pa.string(), "'yes', 'no' or null while unresolved."),
        Column("settled_ts", pa.timestamp("ms", "UTC"), "Settlement time (UTC)."),
    ),
    order_by=("ticker",),
)

PARTITIONED_STREAMS = {s.name: s for s in (SNAPSHOTS, DELTAS, TRADES)}
ALL_STREAMS = {**PARTITIONED_STREAMS, "markets": MARKETS}


# -- when a trade can be seen ----------------------------------------------------------------------
# A trade is visible from the moment it was received (`received_at`), never before its exchange time (`ts`);
# without a receive time, from its exchange time. Live, a trade cannot be used before it arrives, so the
# offline features, the live features and the live sources all place trades by this time. Two forms of one
# rule: a Polars expression for frames, and arrays for the live path.

def trade_visible_expr() -> pl.Expr:
    """The time a trade becomes visible, over a frame's `ts` and `received_at` columns."""
    return pl.max_horizontal(pl.coalesce("received_at", "ts"), "ts")


def trade_visible_ms(ts, received_at) -> np.ndarray:
    """int64 times trades become visible, from their `ts` and `received_at` (Arrow arrays or lists; a null
    receive time is unknown)."""
    ts = pa.array(ts, pa.int64())
    received = pc.fill_null(pa.array(received_at, pa.int64()), ts)
    return np.maximum(received.to_numpy(zero_copy_only=False), ts.to_numpy(zero_copy_only=False))
