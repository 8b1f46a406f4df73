"""Production features against the plain-Python oracle, point-in-time correctness, real recordings."""

from __future__ import annotations

import random
from datetime import date, timedelta

import polars as pl
import psycopg
import pytest

from core.catalog import Lake
from features.events import build_event_features, load_markets
from features.resolution import build_resolution_history
from features.schema import EVENT_COLUMNS, MODEL_FEATURES
from ingest.extract import day_bounds_ms
from kfs.universe import ingest_days
from source.recordings import load_files
from tests.conftest import SAGNIK, SHARED_DATA, SMALL_CONFIG, schema_tables
from tests.reference.features import reference_features
from tests.reference.recordings import recorded_top_of_book
from tests.reference.replay import replay_events

FIRST, LAST = SMALL_CONFIG.start, SMALL_CONFIG.start + timedelta(days=SMALL_CONFIG.days - 1)


@pytest.fixture(scope="module")
def small_features(small_lake):
    features, counts = build_event_features(small_lake, FIRST, LAST)
    return features, counts


def _reference_inputs(lake: Lake, ticker: str, features: pl.DataFrame):
    """The market's raw events as the oracle wants them, replayed by the reference replay."""
    snapshots = pl.read_parquet(lake.partition_files("raw_snapshots")).filter(pl.col("market_ticker") == ticker)
    deltas = pl.read_parquet(lake.partition_files("raw_deltas")).filter(pl.col("market_ticker") == ticker)
    streams: dict[int, list[dict]] = {}
    for row in snapshots.iter_rows(named=True):
        streams.setdefault(row["session_id"], []).append({
            "kind": "snapshot", "sequence_number": row["sequence_number"], "timestamp_ms": row["timestamp_ms"], "id": row["id"],
            "yes_bids": dict(zip(row["yes_bid_prices"], row["yes_bid_sizes"])),
            "no_bids": dict(zip(row["no_bid_prices"], row["no_bid_sizes"]))})
    for row in deltas.iter_rows(named=True):
        streams.setdefault(row["session_id"], []).append({
            "kind": "delta", "sequence_number": row["sequence_number"], "timestamp_ms": row["timestamp_ms"], "id": row["id"],
            "side": row["side"], "price": row["price"], "new_size": row["new_size"]})
    book_events = []
    for session in sorted(streams):
        stream = sorted(streams[session], key=lambda e: (e["sequence_number"], e["kind"] != "snapshot", e["id"]))
        for event, state in zip(stream, replay_events(stream)):
            no_best = 100 - state.best_yes_ask if state.best_yes_ask is not None else 0
            book_events.append({"timestamp_ms": event["timestamp_ms"], "id": event["id"], "valid": state.valid,
                                "best_yes_bid": state.best_yes_bid or 0, "best_no_bid": no_best,
                                "best_yes_size": state.best_yes_size, "best_no_size": state.best_no_size,
                                "yes_depth5": state.yes_depth5, "no_depth5": state.no_depth5})
    trades = pl.read_parquet(lake.partition_files("raw_trades")).filter(pl.col("market_ticker") == ticker)
    markets = load_markets(lake)
    info = markets.filter(pl.col("ticker") == ticker).row(0, named=True)
    market = {"category": info["category"], "series_ticker": info["series_ticker"],
              "open_ms": int(info["open_ts"].timestamp() * 1000) if info["open_ts"] else None,
              "close_ms": int(info["close_ts"].timestamp() * 1000) if info["close_ts"] else None}
    settled = build_resolution_history(lake).to_dicts()
    return book_events, trades.sort("ts", "id").to_dicts(), market, settled


def test_book_columns_match_the_reference_replay_on_every_event(small_lake, small_features):
    features, counts = small_features
    assert counts.sequence_gaps == 0 and counts.crossed_events == 0
    for ticker in features["market_ticker"].unique().sort().to_list()[:6]:
        book_events, _, _, _ = _reference_inputs(small_lake, ticker, features)
        produced = features.filter(pl.col("market_ticker") == ticker)
        ids = set(produced["event_id"].to_list())
        expected = [(e["id"], e["best_yes_bid"], e["best_no_bid"], e["best_yes_size"], e["best_no_size"],
                     e["yes_depth5"], e["no_depth5"], e["valid"]) for e in book_events if e["id"] in ids]
        got = list(produced.select("event_id", "best_yes_bid_cents", "best_no_bid_cents", "best_yes_bid_size",
                                   "best_no_bid_size", "yes_depth5", "no_depth5", "book_valid").iter_rows())
        assert got == expected, ticker


def test_every_feature_matches_the_oracle_on_sampled_events(small_lake, small_features):
    features, _ = small_features
    rng = random.Random(1)
    compared = 0
    for ticker in features["market_ticker"].unique().sort().to_list():
        book_events, trades, market, settled = _reference_inputs(small_lake, ticker, features)
        position = {e["id"]: i for i, e in enumerate(book_events)}
        produced = features.filter(pl.col("market_ticker") == ticker)
        sample = rng.sample(range(produced.height), min(25, produced.height))
        rows = produced[sample]
        expected = reference_features(book_events, trades, market, settled,
                                      at=[position[i] for i in rows["event_id"].to_list()])
        for row in rows.iter_rows(named=True):
            want = expected[position[row["event_id"]]]
            for name in MODEL_FEATURES:
                assert row[name] == pytest.approx(want[name], abs=1e-6), (ticker, row["event_id"], name)
            compared += 1
    assert compared >= 200


def test_features_are_finite_and_complete(small_features):
    features, _ = small_features
    assert features.columns == [c.name for c in EVENT_COLUMNS]
    assert features.null_count().sum_horizontal().item() == 0
    floats = features.select(MODEL_FEATURES)
    assert floats.select(pl.all().is_finite().all()).row(0) == tuple([True] * len(MODEL_FEATURES))


def test_same_millisecond_events_never_see_later_ones(small_features):
    features, _ = small_features
    ties = features.filter(pl.col("event_time_ms") == pl.col("event_time_ms").shift(1).over("market_ticker"))
    assert ties.height > 100
    # Within a run of equal times, the 10 s count grows by one per row: each row counts only itself and earlier rows.
    runs = features.with_columns(
        (pl.col("tm_events_10s_rate") * 10).round().cast(pl.Int64).alias("n"),
    ).with_columns(pl.col("n").diff().over("market_ticker", "event_time_ms").alias("step"))
    assert runs.filter(pl.col("step").is_not_null())["step"].unique().to_list() == [1]


def test_point_in_time_rows_before_t_do_not_change_when_later_data_arrives(small_universe, small_lake, tmp_path):
    """Rebuild after appending and changing source rows after t: every row at or before t is identical."""
    dsn = small_universe["dsn"]
    before, _ = build_event_features(small_lake, FIRST, LAST)
    t = int(before["timestamp_ms"].quantile(0.5))
    changed_schema = "pit"
    with psycopg.connect(dsn) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {changed_schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {changed_schema}")
        for name in ("rl_orderbook_snapshots", "rl_orderbook_deltas", "rl_trades", "markets"):
            conn.execute(f"CREATE TABLE {changed_schema}.{name} AS SELECT * FROM small.{name}")
        # After t: delete some rows, change others, add new ones (a big trade, a settlement).
        conn.execute(f"DELETE FROM {changed_schema}.rl_orderbook_deltas WHERE timestamp_ms > %s AND id %% 7 = 0", (t,))
        conn.execute(f"UPDATE {changed_schema}.rl_orderbook_deltas SET new_size = new_size + 5 "
                     "WHERE timestamp_ms > %s AND id %% 5 = 0", (t,))
        conn.execute(f"INSERT INTO {changed_schema}.rl_trades "
                     "(trade_id, market_ticker, yes_price, no_price, count, taker_side, ts, received_at) "
                     "SELECT 'late-' || id, market_ticker, 50, 50, 5000, 'yes', ts + 1, received_at + 1 "
                     f"FROM {changed_schema}.rl_trades WHERE ts > %s AND id %% 3 = 0", (t,))
        conn.execute(f"UPDATE {changed_schema}.markets SET result = 'yes', status = 'settled', "
                     "settled_ts = to_timestamp((%s + 1000) / 1000.0) WHERE result IS NULL", (t,))
    lake = Lake(tmp_path / "changed")
    ingest_days(dsn, schema_tables(changed_schema), lake, [FIRST, LAST])
    after, _ = build_event_features(lake, FIRST, LAST)
    key = ["market_ticker", "session_id", "sequence_number"]
    early_before = before.filter(pl.col("timestamp_ms") <= t).sort(key)
    early_after = after.filter(pl.col("timestamp_ms") <= t).sort(key)
    assert early_before.height > 1000
    assert early_after.equals(early_before)
    assert not after.filter(pl.col("timestamp_ms") > t).sort(key).equals(before.filter(pl.col("timestamp_ms") > t).sort(key))


def test_quarantined_rows_never_reach_features(pg_dsn, fresh_tables, tmp_path):
    tables = fresh_tables(strict=False)
    day = FIRST
    t0 = day_bounds_ms(day)[0] + 1000
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f"INSERT INTO {tables.snapshots} "
                     "(session_id, market_ticker, timestamp_ms, sequence_number, yes_bids, no_bids) "
                     "VALUES (1, 'KXQ', %s, 1, '{\"40\": 10}', '{\"55\": 10}')", (t0,))
        rows = [(1, "KXQ", t0 + 1, 2, "yes", "add", 41, 0, 5),      # good
                (1, "KXQ", t0 + 2, 3, "yes", "add", 140, 0, 5),     # bad price
                (1, "KXQ", t0 + 3, 4, "yes", "update", 41, 5, -9),  # negative size
                (1, "KXQ", t0 + 4, 5, "yes", "add", 42, 0, 5)]      # good
        conn.cursor().executemany(
            f"INSERT INTO {tables.deltas} "
            "(session_id, market_ticker, timestamp_ms, sequence_number, side, action, price, old_size, new_size) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
    lake = Lake(tmp_path)
    ingest_days(pg_dsn, tables, lake, [day])
    features, counts = build_event_features(lake, day, day)
    assert features.height == 3  # the snapshot and the two good deltas
    assert features["best_yes_bid_cents"].to_list() == [40, 41, 42]
    # The quarantined rows leave a hole in the sequence: replay marks it rather than trusting the book.
    assert counts.sequence_gaps == 1 and features["book_valid"].to_list() == [True, True, False]


needs_real_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data/real is not beside the checkout")


@needs_real_data
@pytest.mark.parametrize("team", ["HOU", "POR", "SAS"])
def test_features_on_real_recordings_agree_with_recorded_top_of_book_and_oracle(pg_dsn, fresh_tables, tmp_path, team):
    tables = fresh_tables()
    path = SAGNIK / f"Kalshi_{team}_JAN07_WIN.csv"
    with psycopg.connect(pg_dsn) as conn:
        load_files(conn, tables, [path])
    lake = Lake(tmp_path)
    day = date(2026, 1, 8)
    ingest_days(pg_dsn, tables, lake, [day])
    features, _ = build_event_features(lake, day, day)
    produced = list(zip(features["best_yes_bid_cents"].to_list(), features["best_yes_ask_cents"].to_list()))
    assert produced == recorded_top_of_book(path)
    ticker = features["market_ticker"][0]
    book_events, trades, market, settled = _reference_inputs(lake, ticker, features)
    expected = reference_features(book_events, trades, market, settled)
    for i, row in enumerate(features.iter_rows(named=True)):
        for name in MODEL_FEATURES:
            assert row[name] == pytest.approx(expected[i][name], abs=1e-6), (team, i, name)
