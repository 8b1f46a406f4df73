"""The recording loader on real third-party recordings and on synthetic frames of both wire formats."""

from __future__ import annotations

import csv
import json

import psycopg
import pytest
from psycopg import sql

from core.postgres import table_identifier
from source.recordings import (
    RecordingFormatError,
    cents_from_dollars,
    epoch_ms,
    load_files,
)
from tests.conftest import SAGNIK, SHARED_DATA
from tests.reference.recordings import recorded_top_of_book
from tests.reference.replay import replay_events
from tests.reference.source_rows import book_events_by_stream

SSMD = SHARED_DATA / "aaronwald__ssmd"
# (file, deltas, trades, book rows) from the data set's README
SAGNIK_COUNTS = {
    "TOR": (32464, 4340, 4), "CHA": (29037, 2231, 4), "LAC": (7676, 1295, 4), "NYK": (6039, 818, 4),
    "DEN": (4087, 1908, 18), "BOS": (3602, 1229, 18), "BKN": (4255, 268, 4), "ORL": (4257, 250, 4),
    "LAL": (954, 546, 4), "SAS": (418, 105, 4), "NOP": (394, 79, 4), "ATL": (312, 56, 4),
    "POR": (111, 61, 4), "HOU": (85, 31, 4),
}
needs_real_data = pytest.mark.skipif(not SAGNIK.exists(), reason="../shared/data/real is not beside the checkout")


def _count(dsn, table, where="", params=()):
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.SQL("SELECT count(*) FROM {} " + where).format(table_identifier(table)), params).fetchone()[0]


def test_value_parsing_handles_the_recorded_quirks():
    assert cents_from_dollars("0.45999999999999996") == 46
    assert cents_from_dollars("0.6800") == 68
    assert epoch_ms("1767838400") == 1767838400000
    assert epoch_ms(1767838400123) == 1767838400123
    assert epoch_ms("2026-01-08T02:13:20.347975Z") == 1767838400348


@needs_real_data
def test_sagnik_delta_csvs_load_with_the_documented_counts(pg_dsn, fresh_tables):
    tables = fresh_tables()
    files = sorted(SAGNIK.glob("Kalshi_*_JAN07_WIN.csv"))
    with psycopg.connect(pg_dsn) as conn:
        reports = load_files(conn, tables, files)
    for report in reports:
        team = report.path.stem.split("_")[1]
        deltas, trades, book_rows = SAGNIK_COUNTS[team]
        assert (report.deltas, report.trades, report.snapshots) == (deltas, trades, book_rows // 2), team
        assert report.markets == {f"KXNBAGAME-26JAN07{_game(team)}-{team}"}
    assert _count(pg_dsn, tables.deltas) == 93_691
    assert _count(pg_dsn, tables.trades) == 13_217
    assert _count(pg_dsn, tables.markets) == 14


def _game(team: str) -> str:
    games = ["DENBOS", "TORCHA", "LACNYK", "NOPATL", "ORLBKN", "LALSAS", "HOUPOR"]
    return next(g for g in games if team in g)


@needs_real_data
@pytest.mark.parametrize("team", ["HOU", "POR", "SAS"])
def test_replaying_thin_markets_reproduces_the_recorded_top_of_book(pg_dsn, fresh_tables, team):
    tables = fresh_tables()
    path = SAGNIK / f"Kalshi_{team}_JAN07_WIN.csv"
    with psycopg.connect(pg_dsn) as conn:
        load_files(conn, tables, [path])
    (stream,) = book_events_by_stream(pg_dsn, tables).values()
    replayed = [(s.best_yes_bid, s.best_yes_ask) for s in replay_events(stream)]
    assert replayed == recorded_top_of_book(path)


@needs_real_data
def test_top_of_book_csv_becomes_one_level_snapshots(pg_dsn, fresh_tables):
    tables = fresh_tables()
    with psycopg.connect(pg_dsn) as conn:
        (report,) = load_files(conn, tables, [SAGNIK / "orderbook_snapshots_20260208.csv"])
    assert report.snapshots == 25_820
    assert report.markets == {"KXSB-26-NE", "KXSB-26-SEA"}
    with psycopg.connect(pg_dsn) as conn:
        empty_sides = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE yes_bids = '{{}}' OR no_bids = '{{}}'").format(
            table_identifier(tables.snapshots))).fetchone()[0]
        first = conn.execute(sql.SQL(
            "SELECT yes_bids::text, no_bids::text FROM {} ORDER BY timestamp_ms, market_ticker LIMIT 1").format(
            table_identifier(tables.snapshots))).fetchone()
    with (SAGNIK / "orderbook_snapshots_20260208.csv").open(newline="") as handle:
        expected_empty = sum(1 for r in csv.DictReader(handle) if not r["best_bid_price"] or not r["best_ask_price"])
    assert empty_sides == expected_empty > 1000
    assert json.loads(first[0]) == {"32": 1698816} and json.loads(first[1]) == {"67": 25563377}


@needs_real_data
def test_ssmd_frames_load_trades_and_skip_other_channels(pg_dsn, fresh_tables):
    tables = fresh_tables()
    files = [SSMD / name for name in ("kalshi_trade.jsonl", "kalshi_ticker.jsonl", "polymarket_book.jsonl")]
    with psycopg.connect(pg_dsn) as conn:
        trade_report, ticker_report, poly_report = load_files(conn, tables, files)
        first = conn.execute(sql.SQL(
            "SELECT trade_id, market_ticker, yes_price, no_price, count, taker_side, ts FROM {} ORDER BY ts, trade_id LIMIT 1"
        ).format(table_identifier(tables.trades))).fetchone()
    assert trade_report.trades == 10
    assert ticker_report.skipped == {"ticker": 10}
    assert sum(poly_report.skipped.values()) == 10 and poly_report.trades == 0
    assert first == ("f851595a-6d92-424e-09f8-0d2669de70ae", "KXSOLD-26FEB1217-T79.9999", 77, 23, 75, "yes", 1770897981000)


def _frames(fixed_point: bool) -> list[dict]:
    """One market's snapshot, deltas, a trade and lifecycle events, in either wire encoding."""
    if fixed_point:
        snapshot = {"market_ticker": "KXTEST-1", "yes_dollars_fp": [["0.4500", "100.00"], ["0.4400", "200.00"]],
                    "no_dollars_fp": [["0.5300", "150.00"]]}
        delta = {"market_ticker": "KXTEST-1", "side": "yes", "price_dollars": "0.4600", "delta_fp": "50.00", "ts": 1770000001}
        removal = {"market_ticker": "KXTEST-1", "side": "no", "price_dollars": "0.5300", "delta_fp": "-150.00", "ts": 1770000002}
        trade = {"market_ticker": "KXTEST-1", "yes_price_dollars": "0.4700", "no_price_dollars": "0.5300",
                 "count_fp": "12.00", "taker_side": "yes", "ts": 1770000002, "trade_id": "t1"}
    else:
        snapshot = {"market_ticker": "KXTEST-1", "yes": [[45, 100], [44, 200]], "no": [[53, 150]]}
        delta = {"market_ticker": "KXTEST-1", "side": "yes", "price": 46, "delta": 50, "ts": 1770000001}
        removal = {"market_ticker": "KXTEST-1", "side": "no", "price": 53, "delta": -150, "ts": 1770000002}
        trade = {"market_ticker": "KXTEST-1", "yes_price": 47, "no_price": 53, "count": 12, "taker_side": "yes",
                 "ts": 1770000002, "trade_id": "t1"}
    return [
        {"type": "market_lifecycle_v2", "sid": 9, "msg": {"event_type": "activated", "market_ticker": "KXTEST-1",
                                                           "open_ts": 1769990000, "close_ts": 1770090000,
                                                           "additional_metadata": {"title": "Test", "event_ticker": "KXTEST"}}},
        {"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": snapshot},
        {"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": delta},
        {"type": "orderbook_delta", "sid": 1, "seq": 3, "msg": removal},
        {"type": "trade", "sid": 2, "seq": 1, "msg": trade},
        {"type": "orderbook_delta", "sid": 1, "seq": 7, "msg": dict(delta, ts=1770000009)},  # frames 4-6 lost
        {"type": "market_lifecycle_v2", "sid": 9, "msg": {"event_type": "determined", "market_ticker": "KXTEST-1",
                                                           "result": "yes", "ts": 1770095000}},
    ]


def _rows(dsn, tables):
    with psycopg.connect(dsn) as conn:
        snapshots = conn.execute(sql.SQL(
            "SELECT session_id, sequence_number, timestamp_ms, yes_bids::text, no_bids::text FROM {} ORDER BY id").format(
            table_identifier(tables.snapshots))).fetchall()
        deltas = conn.execute(sql.SQL(
            "SELECT session_id, sequence_number, timestamp_ms, side, action, price, old_size, new_size "
            "FROM {} ORDER BY id").format(
            table_identifier(tables.deltas))).fetchall()
        trades = conn.execute(sql.SQL("SELECT trade_id, yes_price, no_price, count, taker_side, ts FROM {}").format(
            table_identifier(tables.trades))).fetchall()
        market = conn.execute(sql.SQL("SELECT ticker, event_ticker, title, result, status FROM {}").format(
            table_identifier(tables.markets))).fetchall()
    return snapshots, deltas, trades, market


@pytest.mark.parametrize("fixed_point", [False, True])
def test_websocket_frames_in_both_encodings(pg_dsn, fresh_tables, tmp_path, fixed_point):
    tables = fresh_tables()
    path = tmp_path / "frames.jsonl"
    path.write_text("\n".join(json.dumps(f) for f in _frames(fixed_point)) + "\n")
    with psycopg.connect(pg_dsn) as conn:
        (report,) = load_files(conn, tables, [path])
    snapshots, deltas, trades, market = _rows(pg_dsn, tables)
    (first_session, _, snapshot_ms, yes_bids, no_bids), = snapshots
    assert json.loads(yes_bids) == {"44": 200, "45": 100} and json.loads(no_bids) == {"53": 150}
    assert snapshot_ms == 1770000001000  # a snapshot without time takes the next frame's
    assert deltas[0][1:] == (2, 1770000001000, "yes", "add", 46, 0, 50)
    assert deltas[1][1:] == (3, 1770000002000, "no", "remove", 53, 150, 0)
    # The lost frames (seq 4-6) open a new session: replay treats the book as unknown until a snapshot.
    assert deltas[2][0] == first_session + 1 and deltas[2][1] == 1
    assert trades == [("t1", 47, 53, 12, "yes", 1770000002000)]
    assert market == [("KXTEST-1", "KXTEST", "Test", "yes", "determined")]
    assert report.sessions == 2


def test_unknown_file_format_is_a_clear_error(pg_dsn, fresh_tables, tmp_path):
    tables = fresh_tables()
    path = tmp_path / "prices.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with psycopg.connect(pg_dsn) as conn, pytest.raises(RecordingFormatError, match="unknown recording format"):
        load_files(conn, tables, [path])
