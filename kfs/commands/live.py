"""`kfs live`: features and decisions of the production model on live events."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.catalog import Lake
from core.postgres import describe_dsn
from core.settings import settings
from kfs.console import UsageError, console
from live.runner import LiveReport, run_live
from live.sources import follow, read_recording_tables, replay
from source.pg_server import source_dsn
from training.release.serving import PolicyLoadError, PolicyServer


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the source ended or the run was stopped (Ctrl-C, SIGTERM): either way the outputs are
    complete up to the last arrival."""
    if bool(args.recording) == bool(args.follow):
        raise UsageError("name recordings with --recording FILE... or follow the source tables with --follow")
    folders = [p for p in args.recording or [] if Path(p).is_dir()]
    if folders:
        raise UsageError(f"--recording {', '.join(folders)} is a directory: name the recording files")
    missing = [p for p in args.recording or [] if not Path(p).is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a file: name a directory for features.parquet and decisions.parquet")
    server = PolicyServer(Lake(), **({"latency_budget_p99_us": float("inf")} if args.no_latency_check else {}))
    try:
        server.refresh()
    except PolicyLoadError as error:
        raise UsageError(f"no model to serve: {error}; `kfs train` (or `make demo`) publishes one") from None
    if args.recording:
        paths = [Path(p) for p in args.recording]
        arrivals = replay(read_recording_tables(paths, args.naive_timezone), args.batch_events, args.realtime)
        source = f"{len(paths)} recording(s){' at recorded speed' if args.realtime else ''}"
    else:
        dsn = source_dsn()
        arrivals = follow(dsn, settings().tables, args.batch_events, args.poll, exit_when_idle=args.until_idle)
        source = f"{describe_dsn(dsn)} (following {settings().tables.deltas} and the other source tables)"
    out = Path(args.out) if args.out else None
    console.print(f"live: {source} -> {out or 'no output files'}", highlight=False)

    def progress(report: LiveReport) -> None:
        console.print(f"  {report.events:,} events ({report.events_per_s:,.0f}/s), {report.decisions:,} decisions, "
                      f"{report.refused_books:,} refused books, model {report.versions[-1] if report.versions else '-'}",
                      highlight=False)

    report = run_live(arrivals, server, out, reload_every_s=args.reload_every, progress=progress)
    console.print(f"{'stopped' if report.interrupted else 'done'}: {report.events:,} events in {report.seconds:.1f} s "
                  f"({report.events_per_s:,.0f} events/s), {report.book_events:,} feature rows, "
                  f"{report.decisions:,} decisions, {report.refused_books:,} refused on invalid books, "
                  f"{report.quarantined:,} rows quarantined; models: {', '.join(report.versions) or 'none'}",
                  highlight=False)
    for reason in report.refused_versions:
        console.print(f"  refused a model version: {reason}", highlight=False, markup=False)
    return 0
