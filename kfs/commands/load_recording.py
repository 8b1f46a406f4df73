"""`kfs load-recording`: Kalshi websocket JSONL or the recorded CSVs into the source tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from core.postgres import connection
from core.settings import settings
from kfs.console import UsageError, console
from source.ddl import create_source_tables
from source.pg_server import source_dsn
from source.recordings import load_files


def run(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:
        raise UsageError(f"{', '.join(folders)}: is a directory; name the recording files (JSONL or CSV)")
    tables = settings().tables
    with connection(source_dsn()) as conn:
        create_source_tables(conn, tables)
        reports = load_files(conn, tables, paths, timezone_name=args.naive_timezone)
    table = Table("file", "format", "markets", "snapshots", "deltas", "trades", "lifecycle", "skipped")
    for r in reports:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(r.skipped.items())) or "-"
        table.add_row(r.path.name, r.format, str(len(r.markets)), f"{r.snapshots:,}", f"{r.deltas:,}", f"{r.trades:,}",
                      str(r.lifecycle), skipped)
    console.print(table)
    return 0
