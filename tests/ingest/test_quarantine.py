"""Quarantine rules on hostile values: every bad row gets a reason, no value crashes a partition.

Unit tests of the checks, then the same rows through PostgreSQL (a database without the recorder's
constraints, as real databases created before them are): oversized sizes, strict price keys, repeated
trade ids, a sequence repeated on the next day, and a seeded generator of malformed rows on every stream.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

import polars as pl
import psycopg
import pytest
from psycopg import sql

from core.catalog import Lake
from core.postgres import table_identifier
from ingest.extract import day_bounds_ms, ingest_markets, ingest_partition
from ingest.quarantine import check_trades, parse_book

DAY = date(2026, 4, 7)


@pytest.mark.parametrize("book, reason", [
    ('{"50": 9223372036854775808}', "size_out_of_range"),
    ('{"50": 1.5e308}', "size_out_of_range"),
    ('{"50": 1e400}', "size_out_of_range"),
    ('{"50": 3, "050": 4}', "malformed_book"),
    ('{"50": 3, "50": 4}', "malformed_book"),
    ('{"5_0": 3}', "malformed_book"),
    ('{" 50 ": 3}', "malformed_book"),
    ('{"\u0665\u0660": 3}', "malformed_book"),       # Arabic-Indic digits 5 and 0
    ('{"+50": 3}', "malformed_book"),
    ('{"50": NaN}', "malformed_book"),
    ('{"50": 2.5}', "malformed_book"),
    ('{"50": true}', "malformed_book"),
    ('{"100": 3}', "price_out_of_range"),
    ('{"0": 3}', "price_out_of_range"),
    ('{"-5": 3}', "price_out_of_range"),
    ('{"50": -1}', "negative_size"),
    ('{"50": 9223372036854775807}', "size_out_of_range"),   # fits int64, but a depth sum of two would not
    ('{"50": 1000000000001}', "size_out_of_range"),
    ("[[50, 3]]", "malformed_book"),
    ('{"50": 3', "malformed_book"),
    ("[" * 100_000, "malformed_book"),
])
def test_hostile_book_maps_get_a_reason_instead_of_a_crash(book, reason):
    assert parse_book(book)[2] == reason


def test_plain_book_maps_parse_sorted_and_whole_floats_are_sizes():
    assert parse_book('{"51": 2, "9": 3.0, "50": 0}') == ([9, 50, 51], [3, 0, 2], None)


def test_a_repeated_trade_id_is_quarantined_once_however_far_apart():
    frame = pl.DataFrame({"id": [1, 2, 3, 4], "trade_id": ["t1", "t2", "t1", None], "market_ticker": ["A", "A", "A", "A"],
                          "yes_price": [40] * 4, "no_price": [60] * 4, "count": [5] * 4,
                          "taker_side": ["yes"] * 4, "ts": [1, 2, 3, 4], "received_at": [1, 2, 3, 4]})
    clean, bad = check_trades(frame)
    assert clean["id"].to_list() == [1, 2, 4] and bad["reason"].to_list() == ["duplicate_trade"]


def _insert(conn, table: str, columns: list[str], rows: list[tuple]) -> None:
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        table_identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(sql.Placeholder() for _ in columns))
    conn.cursor().executemany(statement, rows)


SNAPSHOT_COLUMNS = ["session_id", "market_ticker", "timestamp_ms", "sequence_number", "yes_bids", "no_bids"]
DELTA_COLUMNS = ["session_id", "market_ticker", "timestamp_ms", "sequence_number", "side", "action", "price",
                 "old_size", "new_size"]
TRADE_COLUMNS = ["trade_id", "market_ticker", "yes_price", "no_price", "count", "taker_side", "ts", "received_at"]


def test_oversized_sizes_and_ambiguous_keys_through_postgres(pg_dsn, fresh_tables, tmp_path):
    tables = fresh_tables(strict=False)
    t0 = day_bounds_ms(DAY)[0] + 1000
    with psycopg.connect(pg_dsn) as conn:
        _insert(conn, tables.snapshots, SNAPSHOT_COLUMNS, [
            (1, "KXA", t0, 1, '{"50": 9223372036854775808}', '{"40": 1}'),
            (1, "KXB", t0, 1, '{"50": 1e400}', '{"40": 1}'),
            (1, "KXC", t0, 1, '{"50": 3, "050": 4}', '{"40": 1}'),
            (1, "KXD", t0, 1, '{"50": 3}', '{"40": 1}'),
        ])
    report = ingest_partition(pg_dsn, "snapshots", DAY, Lake(tmp_path), tables)
    assert report.reconciled and report.rows_written == 1
    assert report.quarantine_reasons == {"malformed_book": 1, "size_out_of_range": 2}


def test_a_negative_sequence_is_quarantined_and_changes_no_other_row(pg_dsn, fresh_tables, tmp_path):
    """A delta numbered -1 would sort before its session's snapshot and invalidate every later event of the
    session: it is quarantined, and what is written equals the source without it."""
    t0 = day_bounds_ms(DAY)[0] + 1000
    snapshot = [(1, "KXA", t0, 0, '{"40": 5}', '{"55": 5}')]
    deltas = [(1, "KXA", t0 + k, k, "yes", "update", 40, 5, 5 + k) for k in range(1, 20)]
    hostile = (1, "KXA", t0 + 500, -1, "no", "update", 55, 5, 7)
    lakes = {}
    for name, rows in (("clean", deltas), ("hostile", deltas[:10] + [hostile] + deltas[10:])):
        tables = fresh_tables(strict=False)
        with psycopg.connect(pg_dsn) as conn:
            _insert(conn, tables.snapshots, SNAPSHOT_COLUMNS, snapshot)
            _insert(conn, tables.deltas, DELTA_COLUMNS, rows)
        lakes[name] = Lake(tmp_path / name)
        reports = [ingest_partition(pg_dsn, s, DAY, lakes[name], tables) for s in ("snapshots", "deltas")]
        assert all(r.reconciled for r in reports)
    assert reports[1].quarantine_reasons == {"negative_sequence": 1}
    written = {name: pl.read_parquet(lake.raw_partition("deltas", DAY)).drop("id") for name, lake in lakes.items()}
    assert written["hostile"].equals(written["clean"])


def test_sizes_whose_sums_would_overflow_are_quarantined(pg_dsn, fresh_tables, tmp_path):
    tables = fresh_tables(strict=False)
    t0 = day_bounds_ms(DAY)[0] + 1000
    with psycopg.connect(pg_dsn) as conn:
        _insert(conn, tables.deltas, DELTA_COLUMNS, [
            (1, "KXA", t0, 1, "yes", "update", 40, 0, 2**63 - 1),
            (1, "KXA", t0 + 1, 2, "yes", "update", 40, 2**63 - 1, 0),
            (1, "KXA", t0 + 2, 3, "yes", "update", 40, 0, 10**12),      # the largest size kept
        ])
        _insert(conn, tables.snapshots, SNAPSHOT_COLUMNS, [(1, "KXA", t0, 0, '{"40": 9223372036854775807}', "{}")])
    lake = Lake(tmp_path)
    deltas = ingest_partition(pg_dsn, "deltas", DAY, lake, tables)
    snapshots = ingest_partition(pg_dsn, "snapshots", DAY, lake, tables)
    assert deltas.reconciled and deltas.rows_written == 1 and deltas.quarantine_reasons == {"size_out_of_range": 2}
    assert snapshots.reconciled and snapshots.quarantine_reasons == {"size_out_of_range": 1}


def test_infinite_market_times_are_quarantined_and_sub_millisecond_times_kept(pg_dsn, fresh_tables, tmp_path):
    tables = fresh_tables(strict=False)
    with psycopg.connect(pg_dsn) as conn:
        _insert(conn, tables.markets, ["ticker", "open_ts", "close_ts", "expected_expiration_ts"], [
            ("KXINF", "2026-04-01", "2026-04-09", "infinity"),
            ("KXNEGINF", "2026-04-01", "-infinity", None),
            ("KXFINE", "2026-04-01 00:00:00.0005+00", "2026-04-09", "2026-04-10"),
        ])
    lake = Lake(tmp_path)
    report = ingest_markets(pg_dsn, lake, tables)
    assert report.reconciled and report.quarantine_reasons == {"invalid_timestamp": 2}
    written = pl.read_parquet(lake.raw_markets())
    assert written["ticker"].to_list() == ["KXFINE"] and "infinite_time" not in written.columns
    assert written["open_ts"].dt.epoch("ms").to_list() == [day_bounds_ms(date(2026, 4, 1))[0]]


def test_copies_across_the_day_boundary_are_duplicates_on_the_later_day(pg_dsn, fresh_tables, tmp_path):
    tables = fresh_tables(strict=False)
    late = day_bounds_ms(DAY)[1] - 10
    next_day = DAY + timedelta(days=1)
    early_next = day_bounds_ms(next_day)[0] + 10
    with psycopg.connect(pg_dsn) as conn:
        _insert(conn, tables.deltas, DELTA_COLUMNS, [
            (1, "KXA", late, 7, "yes", "add", 40, 0, 5),
            (1, "KXA", early_next, 7, "yes", "add", 41, 0, 6),   # the same (session, market, sequence) again
            (1, "KXA", early_next + 1, 8, "yes", "add", 42, 0, 6),
        ])
        _insert(conn, tables.trades, TRADE_COLUMNS, [
            ("T1", "KXA", 40, 60, 3, "yes", late, late),
            ("T1", "KXA", 40, 60, 3, "yes", early_next, early_next),  # the same trade, recorded twice
            (None, "KXA", 41, 59, 2, "no", early_next, early_next),
        ])
    lake = Lake(tmp_path)
    for stream in ("deltas", "trades"):
        first = ingest_partition(pg_dsn, stream, DAY, lake, tables)
        second = ingest_partition(pg_dsn, stream, next_day, lake, tables)
        assert first.rows_quarantined == 0 and first.rows_written == 1, stream
        assert second.reconciled and second.rows_written == 1, stream
        assert second.quarantine_reasons == {"duplicate_sequence" if stream == "deltas" else "duplicate_trade": 1}


def _random_rows(rng: random.Random, t0: int, n: int) -> dict[str, list[tuple]]:
    """Rows where any field may be missing, out of range, of the wrong shape or enormous."""
    def maybe(value, *bad):
        return rng.choice(bad) if rng.random() < 0.3 else value

    big = [None, -1, 0, 2**40, 2**62, -(2**62)]     # BIGINT columns
    large = [None, -1, 0, 100, 2**31 - 1, -(2**31)]  # INTEGER columns
    texts = [None, "", " ", "yes ", "YES", "buy", "\u00e9", "x" * 10]
    books = [None, "{}", '{"50": -1}', '{"050": 1}', '{"1e2": 1}', '{"50": 1e400}', '{"50": "3"}', "[]", '{"99": 1}',
             '{"50": 9223372036854775807}', '{"50": 18446744073709551616}']
    times = [None, -5, 0, t0 - 10**12, t0 + 10**12]
    rows = {"snapshots": [], "deltas": [], "trades": []}
    for k in range(n):
        ts = t0 + rng.randrange(86_000_000)
        rows["snapshots"].append((maybe(1, None, 2**62), maybe("KXR", *texts), maybe(ts, *times), maybe(k, None, -k),
                                  maybe('{"40": 5}', *books), maybe('{"55": 5}', *books)))
        rows["deltas"].append((maybe(1, None), maybe("KXR", *texts), maybe(ts, *times), maybe(k, None, -1),
                               maybe("yes", *texts), maybe("add", *texts), maybe(40, *large), maybe(0, *big),
                               maybe(5, *big)))
        rows["trades"].append((maybe(f"t{k % (n // 2)}", None), maybe("KXR", *texts), maybe(40, *large),
                               maybe(60, *large), maybe(5, *large), maybe("yes", *texts), maybe(ts, *times),
                               maybe(ts, *times)))
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_malformed_rows_are_all_accounted_for(pg_dsn, fresh_tables, tmp_path, seed):
    """Property: for any rows a lenient recorder database accepts, source = written + quarantined, no crash."""
    tables = fresh_tables(strict=False)
    t0 = day_bounds_ms(DAY)[0]
    rows = _random_rows(random.Random(seed), t0, 300)
    with psycopg.connect(pg_dsn) as conn:
        _insert(conn, tables.snapshots, SNAPSHOT_COLUMNS, rows["snapshots"])
        _insert(conn, tables.deltas, DELTA_COLUMNS, rows["deltas"])
        _insert(conn, tables.trades, TRADE_COLUMNS, rows["trades"])
    lake = Lake(tmp_path)
    for stream in ("snapshots", "deltas", "trades"):
        report = ingest_partition(pg_dsn, stream, DAY, lake, tables)
        assert report.reconciled, (stream, report)
        assert report.rows_source > 0
        written = pl.read_parquet(lake.raw_partition(stream, DAY))
        quarantined = pl.read_parquet(lake.quarantine_partition(stream, DAY))
        assert written.height + quarantined.height == report.rows_source
        assert quarantined["reason"].null_count() == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_one_row_delta_check_agrees_with_the_frame_check(seed):
    """The live path checks single deltas with `delta_reason`: on random malformed rows (keys unique, as the
    live path sends only such arrivals that way) it gives check_deltas's reason for every row."""
    from ingest.quarantine import check_deltas, delta_reason

    rows = _random_rows(random.Random(seed), day_bounds_ms(DAY)[0], 300)["deltas"]
    frame = pl.DataFrame([(k, *row) for k, row in enumerate(rows)], schema=["id", *DELTA_COLUMNS], orient="row")
    frame = frame.with_columns(pl.col("sequence_number").fill_null(0) * 0 + pl.col("id"))  # unique keys
    clean, bad = check_deltas(frame)
    expected = dict(zip(bad["id"].to_list(), bad["reason"].to_list())) | dict.fromkeys(clean["id"].to_list())
    fields = ["market_ticker", "session_id", "timestamp_ms", "sequence_number", "side", "action", "price", "old_size",
              "new_size"]
    got = {row["id"]: delta_reason(*(row[f] for f in fields)) for row in frame.iter_rows(named=True)}
    assert got == expected and len(bad) > 50


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_one_row_trade_check_agrees_with_the_frame_check(seed):
    from ingest.quarantine import trade_reason

    rows = _random_rows(random.Random(seed), day_bounds_ms(DAY)[0], 300)["trades"]
    frame = pl.DataFrame([(k, *row) for k, row in enumerate(rows)], schema=["id", *TRADE_COLUMNS], orient="row")
    frame = frame.with_columns(pl.lit(None, pl.String).alias("trade_id"))  # repeated ids are the caller's to judge
    clean, bad = check_trades(frame)
    expected = dict(zip(bad["id"].to_list(), bad["reason"].to_list())) | dict.fromkeys(clean["id"].to_list())
    fields = ["market_ticker", "ts", "yes_price", "no_price", "count", "taker_side"]
    got = {row["id"]: trade_reason(*(row[f] for f in fields)) for row in frame.iter_rows(named=True)}
    assert got == expected and len(bad) > 50
