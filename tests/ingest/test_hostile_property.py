"""Property: random hostile rows on every stream, beside a clean universe, crash nothing, are all accounted for
(rows in the source = written + quarantined, over the partitions and the invalid-time files), and leave the
feature rows of every market they did not touch exactly as a clean build computes them."""

from __future__ import annotations

import random
from datetime import date, timedelta

import polars as pl
import psycopg
import pytest
from psycopg import sql

from core.catalog import Lake
from core.postgres import table_identifier
from features.events import build_event_features
from ingest.extract import day_bounds_ms, ingest_invalid_timestamps, ingest_markets, ingest_partition
from kfs.universe import drop_schema, simulate_into
from source.simulator import SimulationConfig
from tests.ingest.test_quarantine import DELTA_COLUMNS, SNAPSHOT_COLUMNS, TRADE_COLUMNS, _insert, _random_rows

DAY = date(2026, 4, 14)
DAYS = [DAY, DAY + timedelta(days=1)]
UNIVERSE = SimulationConfig(markets=4, days=1, seed=21, start=DAY)
STREAM_COLUMNS = {"snapshots": SNAPSHOT_COLUMNS, "deltas": DELTA_COLUMNS, "trades": TRADE_COLUMNS}
# Every market row is invalid in one of the ways a recorder can be: a valid settled row would (rightly) change
# the series' resolution history, which the other markets' features read.
HOSTILE_MARKETS = [
    ("KXH-INF", "2026-04-14", "2026-04-15", "infinity", "yes"),
    ("KXH-NEG", "2026-04-14", "-infinity", None, None),
    ("KXH-RES", "2026-04-14", "2026-04-15", None, "maybe"),
    ("KXH-ORD", "2026-04-15", "2026-04-14", None, "no"),
]


@pytest.fixture(scope="module")
def clean_universe(pg_dsn):
    schema = "hostile_clean"
    tables, _ = simulate_into(pg_dsn, schema, UNIVERSE)
    yield tables
    drop_schema(pg_dsn, schema)


def _copy_into_lenient(dsn, source, target) -> None:
    with psycopg.connect(dsn) as conn:
        for attr in ("snapshots", "deltas", "trades", "markets"):
            table = table_identifier(getattr(target, attr))
            conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(table, table_identifier(getattr(source, attr))))
            if attr != "markets":   # the hostile rows take ids after the copied ones
                conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), (SELECT max(id) FROM {}))").format(
                    sql.Literal(getattr(target, attr)), table))


def _build(dsn, tables, lake: Lake) -> None:
    for day in DAYS:
        for stream in STREAM_COLUMNS:
            ingest_partition(dsn, stream, day, lake, tables)
    ingest_markets(dsn, lake, tables)
    ingest_invalid_timestamps(dsn, lake, tables, day_bounds_ms(DAYS[0])[0], day_bounds_ms(DAYS[-1])[1])


def _accounted(dsn, tables, lake: Lake) -> None:
    with psycopg.connect(dsn) as conn:
        for stream in (*STREAM_COLUMNS, "markets"):
            source = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                table_identifier(getattr(tables, stream)))).fetchone()[0]
            if stream == "markets":
                kept = lake.parquet_rows(lake.raw_markets()) + lake.parquet_rows(lake.quarantine_markets())
            else:
                files = lake.partition_files(f"raw_{stream}") + lake.quarantine_files(stream)
                kept = sum(lake.parquet_rows(f) for f in files)
            assert kept == source, (stream, kept, source)


@pytest.mark.parametrize("seed", [1, 2])
def test_hostile_rows_change_nothing_of_the_markets_they_do_not_touch(pg_dsn, clean_universe, fresh_tables, tmp_path,
                                                                      seed):
    tickers = sorted(pl.DataFrame(psycopg.connect(pg_dsn).execute(sql.SQL("SELECT ticker FROM {}").format(
        table_identifier(clean_universe.markets))).fetchall(), schema=["ticker"], orient="row")["ticker"])
    touched = tickers[0]
    rng = random.Random(seed)
    rows = _random_rows(rng, day_bounds_ms(DAY)[0], 200)
    for stream, stream_rows in rows.items():   # half of them aimed at one real market, its sessions included
        ticker_at = STREAM_COLUMNS[stream].index("market_ticker")
        rows[stream] = [row[:ticker_at] + (touched,) + row[ticker_at + 1:] if rng.random() < 0.5 else row
                        for row in stream_rows]

    hostile = fresh_tables(strict=False)
    _copy_into_lenient(pg_dsn, clean_universe, hostile)
    with psycopg.connect(pg_dsn) as conn:
        for stream, stream_rows in rows.items():
            _insert(conn, getattr(hostile, stream), STREAM_COLUMNS[stream], stream_rows)
        _insert(conn, hostile.markets, ["ticker", "open_ts", "close_ts", "expected_expiration_ts", "result"],
                HOSTILE_MARKETS)

    lakes = {"clean": Lake(tmp_path / "clean"), "hostile": Lake(tmp_path / "hostile")}
    _build(pg_dsn, clean_universe, lakes["clean"])
    _build(pg_dsn, hostile, lakes["hostile"])
    _accounted(pg_dsn, hostile, lakes["hostile"])

    untouched = tickers[1:]
    features = {}
    for name, lake in lakes.items():
        rows_built, _ = build_event_features(lake, DAYS[0], DAYS[-1])
        features[name] = (rows_built.filter(pl.col("market_ticker").is_in(untouched))
                          .sort("market_ticker", "session_id", "sequence_number", "event_id"))
    assert features["clean"].height > 1000
    assert features["hostile"].drop("event_id").equals(features["clean"].drop("event_id"))
