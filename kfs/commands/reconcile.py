"""`kfs reconcile`: every source row written, quarantined (by reason) or unaccounted."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from rich.table import Table

from core.catalog import Lake
from core.settings import settings
from ingest.extract import valid_time_range_ms
from ingest.reconcile import reconcile
from kfs.console import UsageError, console, err_console, parse_day
from source.pg_server import source_dsn


def run(args: argparse.Namespace) -> int:
    """Per stream: rows in the source, written, quarantined by reason, unaccounted; exit 1 if any unaccounted."""
    current = settings()
    today = datetime.now(timezone.utc).date()
    start = parse_day(args.start, "--start") if args.start else current.partitions_start
    end = parse_day(args.end, "--end") if args.end else today
    if end < start:
        raise UsageError(f"--end {end} is before --start {start}")
    lake = Lake()
    lake.check_reachable()   # a missing bucket or refused keys: one line now, not a client error mid-count
    results = reconcile(source_dsn(), lake, current.tables, start, end,
                        *valid_time_range_ms(current.partitions_start, today))
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        table = Table("stream", "scope", "source", "written", "quarantined", "unaccounted", title="reconciliation")
        for r in results:
            reasons = ", ".join(f"{k} {v:,}" for k, v in r.quarantined.items()) or "0"
            table.add_row(r.stream, r.scope, f"{r.source:,}", f"{r.written:,}", reasons, f"{r.unaccounted:,}")
        console.print(table)
    unaccounted = [r for r in results if r.unaccounted]
    for r in unaccounted:
        err_console.print(f"kfs: error: {r.stream} ({r.scope}): {r.unaccounted:,} source rows are neither written nor "
                          "quarantined; materialize those days again", highlight=False, markup=False)
    return 1 if unaccounted else 0
