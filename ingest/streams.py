"""What each raw stream reads from PostgreSQL: columns, types, time column and order.

One declaration per stream drives the COPY query, the CSV parse and the parquet schema, so the
three can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Stream:
    name: str                 # lake folder and Dagster asset suffix
    table_attr: str           # attribute of SourceTables
    time_column: str          # epoch-ms column that assigns a row to a daily partition
    columns: tuple[tuple[str, pa.DataType], ...]
    order_by: tuple[str, ...]

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema(list(self.columns))


SNAPSHOTS = Stream(
    name="snapshots",
    table_attr="snapshots",
    time_column="timestamp_ms",
    columns=(
        ("id", pa.int64()), ("session_id", pa.int64()), ("market_ticker", pa.string()),
        ("timestamp_ms", pa.int64()), ("sequence_number", pa.int64()),
        ("yes_bids", pa.string()), ("no_bids", pa.string()),
    ),
    order_by=("session_id", "market_ticker", "sequence_number", "id"),
)

DELTAS = Stream(
    name="deltas",
    table_attr="deltas",
    time_column="timestamp_ms",
    columns=(
        ("id", pa.int64()), ("session_id", pa.int64()), ("market_ticker", pa.string()),
        ("timestamp_ms", pa.int64()), ("sequence_number", pa.int64()), ("side", pa.string()),
        ("action", pa.string()), ("price", pa.int64()), ("old_size", pa.int64()), ("new_size", pa.int64()),
    ),
    order_by=("session_id", "market_ticker", "sequence_number", "id"),
)

TRADES = Stream(
    name="trades",
    table_attr="trades",
    time_column="ts",
    columns=(
        ("id", pa.int64()), ("trade_id", pa.string()), ("market_ticker", pa.string()),
        ("yes_price", pa.int64()), ("no_price", pa.int64()), ("count", pa.int64()),
        ("taker_side", pa.string()), ("ts", pa.int64()), ("received_at", pa.int64()),
    ),
    order_by=("market_ticker", "ts", "id"),
)

MARKETS_COLUMNS = (
    ("ticker", pa.string()), ("event_ticker", pa.string()), ("series_ticker", pa.string()),
    ("title", pa.string()), ("category", pa.string()), ("open_ts", pa.timestamp("ms", "UTC")),
    ("close_ts", pa.timestamp("ms", "UTC")), ("expected_expiration_ts", pa.timestamp("ms", "UTC")),
    ("status", pa.string()), ("result", pa.string()), ("settled_ts", pa.timestamp("ms", "UTC")),
)

PARTITIONED_STREAMS = {s.name: s for s in (SNAPSHOTS, DELTAS, TRADES)}
