"""Hostile identifiers and values are quoted, never executed."""

from __future__ import annotations

from datetime import date

import polars as pl
import psycopg
import pytest

from core.catalog import Lake
from core.settings import SourceTables
from ingest.extract import ingest_partition


def test_hostile_table_names_and_values_are_quoted_not_executed(pg_dsn, tmp_path):
    from source.ddl import create_source_tables

    hostile = SourceTables(snapshots='snap"; DROP TABLE victim; --', deltas="deltas'); DROP TABLE victim; --",
                           trades='tr"ades; DELETE FROM victim', markets="m a r k e t s")
    ticker = "KX'); DROP TABLE victim; --"
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE victim (x int)")
        conn.execute("INSERT INTO victim VALUES (1)")
        create_source_tables(conn, hostile)
        conn.execute(psycopg.sql.SQL("INSERT INTO {} (market_ticker, yes_price, no_price, count, taker_side, ts, received_at) "
                                     "VALUES (%s, 40, 60, 5, 'yes', %s, %s)").format(psycopg.sql.Identifier(hostile.trades)),
                     (ticker, 1775001600000, 1775001600001))
    report = ingest_partition(pg_dsn, "trades", date(2026, 4, 1), Lake(tmp_path), hostile)
    assert report.rows_written == 1 and report.reconciled
    assert pl.read_parquet(Lake(tmp_path).raw_partition("trades", date(2026, 4, 1)))["market_ticker"].to_list() == [ticker]
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM victim").fetchone()[0] == 1
    with pytest.raises(ValueError, match="bad table name"):
        ingest_partition(pg_dsn, "trades", date(2026, 4, 1), Lake(tmp_path), SourceTables(trades="a.b.c"))
