"""Daily ingest from real PostgreSQL to real parquet: equality, idempotence, atomicity, quarantine, errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import date, timedelta

import polars as pl
import psycopg
import pytest
from psycopg import sql

from core.catalog import Lake
from core.postgres import table_identifier
from ingest.extract import day_bounds_ms, ingest_markets, ingest_partition
from ingest.streams import PARTITIONED_STREAMS
from tests.conftest import REPO, SMALL_START, lake_backend

DAYS = [SMALL_START, SMALL_START + timedelta(days=1)]


def _source_rows(dsn, tables, stream_name: str, day: date) -> list[tuple]:
    """The day's rows as PostgreSQL has them, in the lake's representation (bid maps as sorted lists)."""
    stream = PARTITIONED_STREAMS[stream_name]
    columns = [c for c in stream.column_names]
    query = sql.SQL("SELECT {} FROM {} WHERE {} >= %s AND {} < %s").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns), table_identifier(getattr(tables, stream.table_attr)),
        sql.Identifier(stream.time_column), sql.Identifier(stream.time_column))
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(query, day_bounds_ms(day)).fetchall()
    if stream_name != "snapshots":
        return sorted(rows)
    converted = []
    for row in rows:
        record = dict(zip(columns, row))
        yes, no = record.pop("yes_bids"), record.pop("no_bids")
        converted.append((*record.values(), *_sorted_levels(yes), *_sorted_levels(no)))
    return sorted(converted)


def _sorted_levels(book: dict) -> tuple[tuple, tuple]:
    levels = sorted((int(p), int(s)) for p, s in book.items())
    return tuple(p for p, _ in levels), tuple(s for _, s in levels)


def _lake_rows(lake: Lake, stream_name: str, day: date) -> list[tuple]:
    frame = lake.read_parquet(lake.raw_partition(stream_name, day))
    return sorted(tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in frame.iter_rows())


def _digest(rows: list[tuple]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


@pytest.fixture(scope="module", params=["local", "s3"])
def ingested_lake(request, small_universe, tmp_path_factory):
    """The small universe ingested into a local folder, and into a bucket of a real S3 server (SeaweedFS)."""
    with lake_backend(request.param, request, tmp_path_factory) as lake:
        reports = {(s, d): ingest_partition(small_universe["dsn"], s, d, lake, small_universe["tables"])
                   for d in DAYS for s in PARTITIONED_STREAMS}
        yield lake, reports


def test_lake_equals_the_database_per_partition_and_stream(small_universe, ingested_lake):
    lake, reports = ingested_lake
    total = 0
    for (stream, day), report in reports.items():
        source = _source_rows(small_universe["dsn"], small_universe["tables"], stream, day)
        lake_rows = _lake_rows(lake, stream, day)
        assert len(lake_rows) == len(source) == report.rows_written == report.rows_source, (stream, day)
        assert _digest(lake_rows) == _digest(source), (stream, day)
        assert report.reconciled and report.rows_quarantined == 0
        total += len(source)
    assert total == small_universe["summary"].snapshots + small_universe["summary"].deltas + small_universe["summary"].trades


def test_partition_files_are_sorted_for_replay(ingested_lake):
    lake, _ = ingested_lake
    deltas = lake.read_parquet(lake.raw_partition("deltas", DAYS[0]))
    assert deltas.equals(deltas.sort(["session_id", "market_ticker", "sequence_number", "id"]))


def test_rerunning_a_partition_gives_byte_identical_files(small_universe, ingested_lake):
    lake, _ = ingested_lake
    for stream in PARTITIONED_STREAMS:
        path = lake.raw_partition(stream, DAYS[1])
        before = path.read_bytes()
        ingest_partition(small_universe["dsn"], stream, DAYS[1], lake, small_universe["tables"])
        assert path.read_bytes() == before, stream
    markets_first = ingest_markets(small_universe["dsn"], lake, small_universe["tables"])
    markets_bytes = lake.raw_markets().read_bytes()
    ingest_markets(small_universe["dsn"], lake, small_universe["tables"])
    assert lake.raw_markets().read_bytes() == markets_bytes and markets_first.rows_written == 12


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from datetime import date
    import polars as pl
    from ingest.extract import ingest_partition
    from core.settings import SourceTables
    from core.catalog import Lake

    def write_half_then_hang(self, file, **options):
        if hasattr(file, "write"):      # object storage: the bytes are built in memory, then PUT
            file.write(b"PAR1" + b"\\0" * 4096)
        else:
            with open(file, "wb") as handle:
                handle.write(b"PAR1" + b"\\0" * 4096)
                handle.flush()
        print("WRITING", flush=True)
        time.sleep(120)

    pl.DataFrame.write_parquet = write_half_then_hang
    dsn, lake_root, day = sys.argv[1], sys.argv[2], date.fromisoformat(sys.argv[3])
    tables = SourceTables(**{k: "small." + v for k, v in SourceTables().__dict__.items()})
    ingest_partition(dsn, "deltas", day, Lake(lake_root), tables)
""")


def test_a_process_killed_mid_write_leaves_the_partition_intact(small_universe, ingested_lake):
    lake, _ = ingested_lake
    path = lake.raw_partition("deltas", DAYS[0])
    before = path.read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, small_universe["dsn"], str(lake.root),
                               DAYS[0].isoformat()], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert writer.stdout.readline().strip() == "WRITING"
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=30)
    assert path.read_bytes() == before
    manifest = f"{path.name}.manifest.json"   # the partition's checksum manifest, from the ingest before
    leftovers = [p.name for p in path.parent.iterdir() if p.name not in (path.name, manifest)]
    if lake.remote:  # one PUT or none: nothing partial, nothing to clean
        assert leftovers == []
    else:
        assert leftovers and all(name.startswith(".") and not name.endswith(".parquet") for name in leftovers)
    assert lake.scan_parquet(lake.partition_files("raw_deltas")).select(pl.len()).collect().item() > 0
    ingest_partition(small_universe["dsn"], "deltas", DAYS[0], lake, small_universe["tables"])
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, manifest]
    lake.verify(path)


# -- bad input (DESIGN.md section 8, raw stage) ---------------------------------------------------------

BAD_DAY = date(2026, 4, 1)


def _insert(conn, table, columns, rows):
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        table_identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(sql.Placeholder() for _ in columns))
    conn.cursor().executemany(statement, rows)


def test_bad_rows_are_quarantined_with_their_reason_and_reconcile(pg_dsn, fresh_tables, tmp_path):
    tables = fresh_tables(strict=False)
    t0 = day_bounds_ms(BAD_DAY)[0] + 3_600_000
    good_book = json.dumps({"40": 10, "41": 5})
    with psycopg.connect(pg_dsn) as conn:
        snapshot_columns = ["session_id", "market_ticker", "timestamp_ms", "sequence_number", "yes_bids", "no_bids"]
        _insert(conn, tables.snapshots, snapshot_columns, [
            (1, "KXGOOD", t0, 1, good_book, json.dumps({"55": 7})),
            (1, "KXBAD1", t0, 1, json.dumps({"120": 3}), good_book),        # price_out_of_range
            (1, "KXBAD2", t0, 1, json.dumps({"40": -4}), good_book),        # negative_size
            (1, "KXBAD3", t0, 1, json.dumps({"forty": 4}), good_book),      # malformed_book
            (1, "KXBAD4", t0, 1, json.dumps([1, 2]), good_book),            # malformed_book
            (1, None, t0, 1, good_book, good_book),                         # null_ticker
        ])
        delta_columns = ["session_id", "market_ticker", "timestamp_ms", "sequence_number", "side", "action", "price",
                         "old_size", "new_size"]
        _insert(conn, tables.deltas, delta_columns, [
            (1, "KXGOOD", t0 + 1, 2, "yes", "update", 40, 10, 12),
            (1, "KXGOOD", t0 + 2, 3, "yes", "update", 0, 0, 12),            # price_out_of_range
            (1, "KXGOOD", t0 + 2, 4, "no", "add", 100, 0, 12),              # price_out_of_range
            (1, "KXGOOD", t0 + 3, 5, "yes", "update", 41, 5, -3),           # negative_size
            (1, "KXGOOD", t0 + 4, 6, "maybe", "add", 42, 0, 3),             # unknown_side
            (1, "KXGOOD", t0 + 5, 7, "yes", "replace", 42, 0, 3),           # unknown_action
            (1, None, t0 + 6, 8, "yes", "add", 42, 0, 3),                   # null_ticker
            (1, "KXGOOD", t0 + 7, 9, "yes", "add", 43, 0, 3),
            (1, "KXGOOD", t0 + 8, 9, "yes", "add", 44, 0, 3),               # duplicate_sequence (later copy)
        ])
        trade_columns = ["trade_id", "market_ticker", "yes_price", "no_price", "count", "taker_side", "ts", "received_at"]
        _insert(conn, tables.trades, trade_columns, [
            ("a", "KXGOOD", 41, 59, 5, "yes", t0, t0),
            ("b", "KXGOOD", 41, 58, 5, "yes", t0, t0),                      # price_sum_not_100
            ("c", "KXGOOD", 0, 100, 5, "no", t0, t0),                       # price_out_of_range
            ("d", "KXGOOD", 41, 59, 0, "yes", t0, t0),                      # non_positive_count
            ("e", "KXGOOD", 41, 59, 5, "buy", t0, t0),                      # unknown_taker_side
        ])
        _insert(conn, tables.markets, ["ticker", "result", "open_ts", "close_ts"], [
            ("KXGOOD", "yes", "2026-03-01T00:00Z", "2026-04-02T00:00Z"),
            ("KXBADRESULT", "maybe", None, None),                            # unknown_result
            ("KXBACKWARDS", None, "2026-04-02T00:00Z", "2026-03-01T00:00Z"),  # close_before_open
        ])
    lake = Lake(tmp_path)
    expected = {
        "snapshots": {"price_out_of_range": 1, "negative_size": 1, "malformed_book": 2, "null_ticker": 1},
        "deltas": {"price_out_of_range": 2, "negative_size": 1, "unknown_side": 1, "unknown_action": 1,
                   "null_ticker": 1, "duplicate_sequence": 1},
        "trades": {"price_sum_not_100": 1, "price_out_of_range": 1, "non_positive_count": 1, "unknown_taker_side": 1},
    }
    for stream, reasons in expected.items():
        report = ingest_partition(pg_dsn, stream, BAD_DAY, lake, tables)
        assert report.quarantine_reasons == reasons, stream
        assert report.reconciled, stream
        quarantined = pl.read_parquet(lake.quarantine_partition(stream, BAD_DAY))
        assert quarantined.height == sum(reasons.values())
        assert dict(quarantined.group_by("reason").len().iter_rows()) == reasons
    kept = pl.read_parquet(lake.raw_partition("deltas", BAD_DAY))
    assert kept["sequence_number"].to_list() == [2, 9] and kept["price"].to_list() == [40, 43]
    markets = ingest_markets(pg_dsn, lake, tables)
    assert markets.quarantine_reasons == {"unknown_result": 1, "close_before_open": 1} and markets.reconciled


def test_an_unreachable_server_is_one_clear_line_without_the_password(tmp_path):
    env = dict(os.environ, KFS_PG_DSN="postgresql://trader:hunter2secret@127.0.0.1:1/kalshi", KFS_HOME=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "kfs.cli", "db", "init"], env=env, capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "trader@127.0.0.1:1/kalshi" in lines[0] and "cannot connect" in lines[0]
    assert "hunter2secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
