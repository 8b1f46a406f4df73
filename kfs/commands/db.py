"""`kfs db init`: the recorder's source tables (DESIGN.md section 1)."""

from __future__ import annotations

import argparse

from core.postgres import connection, describe_dsn
from core.settings import settings
from kfs.console import console
from source.ddl import create_source_tables
from source.pg_server import source_dsn


def run(args: argparse.Namespace) -> int:
    dsn = source_dsn()
    tables = settings().tables
    with connection(dsn) as conn:
        create_source_tables(conn, tables, strict=not args.without_constraints)
    names = f"{tables.snapshots}, {tables.deltas}, {tables.trades}, {tables.markets}"
    console.print(f"source tables ready in {describe_dsn(dsn)}: {names}")
    return 0
