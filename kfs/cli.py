"""`kfs`: the command line of kalshi-feature-store. Long work shows progress; errors are one line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from core.postgres import SourceUnavailable, connection, describe_dsn
from core.settings import SettingsError, settings
from kfs.runners import (
    CONSOLE_WIDTH,
    INTERRUPTED,
    UsageError,
    failed_checks,
    one_line,
    parse_day,
)

console = Console(stderr=False, soft_wrap=True, width=CONSOLE_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)


# -- pg ------------------------------------------------------------------------------------------

def cmd_pg(args: argparse.Namespace) -> int:
    from source.pg_server import embedded_server, source_dsn

    server = embedded_server()
    if settings().pg_dsn and args.action != "url":
        console.print("KFS_PG_DSN is set: kfs uses that server, the embedded one is not needed.")
    if args.action == "start":
        dsn = server.start()
        console.print(f"embedded PostgreSQL running: {describe_dsn(dsn)}")
    elif args.action == "stop":
        console.print("stopped" if server.stop() else "not running")
    elif args.action == "status":
        running = server.is_running()
        console.print(f"embedded PostgreSQL in {server.pgdata}: "
                      f"{'running at ' + describe_dsn(server.dsn()) if running else 'not running'}")
        return 0 if running else 3
    elif args.action == "url":
        print(source_dsn(start_embedded=False))
    return 0


# -- objectstore ---------------------------------------------------------------------------------

def cmd_objectstore(args: argparse.Namespace) -> int:
    """A local S3 server (SeaweedFS) for an s3:// lake; `env` prints the variables that point kfs at it."""
    from core.object_store import ObjectStoreError, default_server

    server = default_server()
    try:
        if args.action == "start":
            url = server.start()
            server.create_bucket(args.bucket)
            console.print(f"SeaweedFS S3 running at {url} with bucket {args.bucket!r}; "
                          f"`eval \"$(kfs objectstore env)\"` points kfs at s3://{args.bucket}/lake")
        elif args.action == "stop":
            console.print("stopped" if server.stop() else "not running")
        elif args.action == "url":
            print(server.url())
        elif args.action == "env":
            for key, value in {**server.environment(), "KFS_LAKE": f"s3://{args.bucket}/lake"}.items():
                print(f"export {key}={value}")
    except ObjectStoreError as error:
        raise UsageError(str(error)) from None
    return 0


# -- db ------------------------------------------------------------------------------------------

def cmd_db_init(args: argparse.Namespace) -> int:
    from source.ddl import create_source_tables
    from source.pg_server import source_dsn

    dsn = source_dsn()
    tables = settings().tables
    with connection(dsn) as conn:
        create_source_tables(conn, tables, strict=not args.without_constraints)
    console.print(f"source tables ready in {describe_dsn(dsn)}: {tables.snapshots}, {tables.deltas}, {tables.trades}, {tables.markets}")
    return 0


# -- simulate ------------------------------------------------------------------------------------

def cmd_simulate(args: argparse.Namespace) -> int:
    from kfs.runners import run_simulation

    started = time.perf_counter()
    start = parse_day(args.start, "--start") if args.start else None
    effects = tuple(name.strip() for name in args.effects.split(",") if name.strip())
    config, summary = run_simulation(args.markets, args.days, args.seed, args.signal, start, args.replace, console,
                                     effects=effects)
    seconds = time.perf_counter() - started
    console.print(
        f"simulated {summary.markets} markets from {config.start} for {config.days} days (seed {config.seed}, "
        f"signal {config.signal}, effects {','.join(config.effects) or 'none'}): {summary.sessions} sessions, {summary.snapshots:,} snapshots, "
        f"{summary.deltas:,} deltas, {summary.trades:,} trades, {summary.settled} settled, in {seconds:.1f} s"
    )
    return 0


# -- load-recording ------------------------------------------------------------------------------

def cmd_load_recording(args: argparse.Namespace) -> int:
    from source.ddl import create_source_tables
    from source.pg_server import source_dsn
    from source.recordings import load_files

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


# -- materialize and train -----------------------------------------------------------------------

def cmd_materialize(args: argparse.Namespace) -> int:
    """Exit 0 when every check passed or only warning-severity checks failed (each printed as a warning
    line); exit 1 when an error-severity check failed."""
    from kfs.runners import materialize_range

    start = parse_day(args.start, "--start")
    end = parse_day(args.end, "--end") if args.end else start
    stages = ("ingest", "features") if args.only is None else (args.only,)
    results = materialize_range(start, end, stages=stages, console=console)
    errors, warnings = failed_checks(results)
    console.print(f"materialized {(end - start).days + 1} partitions ({', '.join(stages)}); {len(errors)} failed checks"
                  + (f", {len(warnings)} warnings" if warnings else ""))
    for check in warnings:
        err_console.print(f"kfs: warning: check {check.asset_key.to_user_string()} {check.check_name}: "
                          f"{_check_summary(check)}", highlight=False, markup=False)
    for check in errors:
        console.print(f"  check failed: {check.asset_key.to_user_string()} {check.check_name} {_check_summary(check)}")
    return 1 if errors else 0


def _check_summary(check) -> str:
    return ", ".join(f"{key}={getattr(value, 'value', value)}" for key, value in sorted(check.metadata.items()))


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Per stream: rows in the source, written, quarantined by reason, unaccounted; exit 1 if any unaccounted."""
    import json
    from datetime import datetime, timezone

    from core.catalog import Lake
    from ingest.extract import valid_time_range_ms
    from ingest.reconcile import reconcile
    from source.pg_server import source_dsn

    current = settings()
    today = datetime.now(timezone.utc).date()
    start = parse_day(args.start, "--start") if args.start else current.partitions_start
    end = parse_day(args.end, "--end") if args.end else today
    if end < start:
        raise UsageError(f"--end {end} is before --start {start}")
    results = reconcile(source_dsn(), Lake(), current.tables, start, end,
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


def cmd_train(args: argparse.Namespace) -> int:
    from kfs.runners import run_training_job
    from kfs.summaries import print_policy_summary

    result = run_training_job(console, seconds=args.seconds)
    print_policy_summary(console)
    return 0 if result.success else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from core.catalog import Lake
    from kfs.summaries import print_results
    from training.release.runs import run_evaluate

    result = run_evaluate(Lake(), args.split, args.version, Path(args.json) if args.json else None)
    print_results(console, result, f"{args.split} markets, version {result['version']}: per-market P&L ($)")
    if args.json:
        console.print(f"wrote {args.json}")
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    """Exit 0 when the source ended or the run was stopped (Ctrl-C, SIGTERM): either way the outputs are
    complete up to the last arrival."""
    from core.catalog import Lake
    from live.runner import LiveReport, run_live
    from live.sources import follow, read_recording_tables, replay
    from training.release.serving import PolicyLoadError, PolicyServer

    if bool(args.recording) == bool(args.follow):
        raise UsageError("name recordings with --recording FILE... or follow the source tables with --follow")
    if args.batch_events < 1:
        raise UsageError("--batch-events must be at least 1")
    missing = [p for p in args.recording or [] if not Path(p).is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
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
        from source.pg_server import source_dsn

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


def cmd_demo(args: argparse.Namespace) -> int:
    from kfs.demo import run_demo

    return run_demo(console)


def cmd_bench(args: argparse.Namespace) -> int:
    """The benchmarks run from the repository root as `python -m bench.run_all` (they import the test
    oracles as the package `tests.reference`, which is not installed)."""
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, "-m", "bench.run_all", *args.names], cwd=repo).returncode


# -- wiring --------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from source.simulator import (
        DEFAULT_DAYS,
        DEFAULT_MARKETS,
        DEFAULT_SEED,
        DEFAULT_SIGNAL,
    )
    from source.simulator_kernel import EFFECTS

    parser = argparse.ArgumentParser(prog="kfs", description="kalshi-feature-store command line")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.set_defaults(stops_cleanly=False)
    sub = parser.add_subparsers(dest="command", required=True)

    pg = sub.add_parser("pg", help="the embedded PostgreSQL server (used when KFS_PG_DSN is unset)")
    pg.add_argument("action", choices=["start", "stop", "status", "url"])
    pg.set_defaults(func=cmd_pg)

    store = sub.add_parser("objectstore", help="a local S3 server (SeaweedFS) for KFS_LAKE=s3://...")
    store.add_argument("action", choices=["start", "stop", "url", "env"],
                       help="env prints export lines (with the generated keys) for `eval`")
    store.add_argument("--bucket", default="kfs", help="bucket to create at start and to name in env (default kfs)")
    store.set_defaults(func=cmd_objectstore)

    db = sub.add_parser("db", help="source database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    init = db_sub.add_parser("init", help="create the source tables (DESIGN.md section 1)")
    init.add_argument("--without-constraints", action="store_true",
                      help="omit CHECK/NOT NULL constraints, as in databases created before the recorder had them")
    init.set_defaults(func=cmd_db_init)

    sim = sub.add_parser("simulate", help="write a simulated Kalshi universe into PostgreSQL")
    sim.add_argument("--markets", type=int, default=DEFAULT_MARKETS)
    sim.add_argument("--days", type=int, default=DEFAULT_DAYS)
    sim.add_argument("--seed", type=int, default=DEFAULT_SEED)
    sim.add_argument("--signal", type=float, default=DEFAULT_SIGNAL,
                     help="strength of the planted effects (0..4; 0 = martingale prices, 1 = footprints always right)")
    sim.add_argument("--effects", default=",".join(EFFECTS),
                     help=f"planted effects, comma-separated, mixed across markets (default all: {','.join(EFFECTS)})")
    sim.add_argument("--start", help="first day (YYYY-MM-DD); default: --days days before today (UTC)")
    sim.add_argument("--replace", action="store_true", help="drop and recreate the source tables first")
    sim.set_defaults(func=cmd_simulate)

    load = sub.add_parser("load-recording", help="load Kalshi websocket JSONL or recorded CSV files")
    load.add_argument("files", nargs="+")
    load.add_argument("--naive-timezone", default="UTC",
                      help="time zone of timestamps written without one (default UTC)")
    load.set_defaults(func=cmd_load_recording)

    mat = sub.add_parser("materialize", help="ingest daily partitions and build the feature store through Dagster")
    mat.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    mat.add_argument("--end", help="last day (inclusive), default --start")
    mat.add_argument("--only", choices=["ingest", "features"], help="one stage only (default: both)")
    mat.set_defaults(func=cmd_materialize)

    rec = sub.add_parser("reconcile", help="account for every source row: written, quarantined or unaccounted")
    rec.add_argument("--start", help="first day (default KFS_PARTITIONS_START)")
    rec.add_argument("--end", help="last day, inclusive (default today, UTC)")
    rec.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rec.set_defaults(func=cmd_reconcile)

    train_cmd = sub.add_parser("train", help="train, validate and publish the policy on the feature store")
    train_cmd.add_argument("--seconds", type=float, help="training budget in seconds (default KFS_TRAIN_SECONDS or 240)")
    train_cmd.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="score a published version against every baseline on validation or test markets")
    evaluate.add_argument("--split", required=True, choices=["validation", "test"])
    evaluate.add_argument("--version", help="published version (default: the production alias, else the latest)")
    evaluate.add_argument("--json", help="also write the results as JSON to this path")
    evaluate.set_defaults(func=cmd_evaluate)

    live = sub.add_parser("live", help="features and decisions of the production model on live events")
    live.add_argument("--recording", nargs="+", metavar="FILE", help="replay recordings (the formats load-recording reads)")
    live.add_argument("--follow", action="store_true", help="follow the source PostgreSQL tables as the recorder writes them")
    live.add_argument("--realtime", action="store_true", help="replay at the recorded pace (default: as fast as possible)")
    live.add_argument("--out", metavar="DIR", help="write DIR/features.parquet and DIR/decisions.parquet")
    live.add_argument("--batch-events", type=int, default=4096,
                      help="most events taken in one arrival (replay as fast as possible: the backlog drained at once)")
    live.add_argument("--poll", type=float, default=0.2, help="seconds between polls of the source tables (--follow)")
    live.add_argument("--until-idle", action="store_true", help="with --follow: stop at the first poll with nothing new")
    live.add_argument("--reload-every", type=float, default=1.0, help="seconds between checks of the production alias")
    live.add_argument("--naive-timezone", default="UTC", help="time zone of recorded times without one")
    live.add_argument("--no-latency-check", action="store_true",
                      help="load models without the p99 latency check (tests, shared machines)")
    live.set_defaults(func=cmd_live, stops_cleanly=True)  # a stop is how a live run ends (exit 0)

    demo = sub.add_parser("demo", help="the main job on the embedded default: simulate, ingest, features, train, publish")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="run the benchmarks, write bench/results/*.json")
    bench.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure is one line on stderr (`kfs: error: ...`): 2 for bad input or an
    unreachable source, 1 for a failed run or a failed check, 130 when interrupted; `--debug` shows the
    traceback instead. As the program (`kfs ...`, argv from the command line) it also owns the process's
    signals: SIGTERM stops the run like Ctrl-C, and an interrupt always ends the process (see
    `_watch_interrupts`). Called with an explicit argv (tests, other programs) it leaves signals alone."""
    import signal

    args = build_parser().parse_args(argv)
    if argv is None:
        _remember_interrupts_in_every_handler()
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        _watch_interrupts()
        sys.unraisablehook = _quiet_lost_interrupts
        _drop_logged_interrupts()
        _start_resource_tracker_quietly()
        status = _run(args)
        if status == 130:
            # After an interrupt escaped code that a library ran through PyRun_String, CPython remembers an
            # "unhandled KeyboardInterrupt" and ends the process by SIGINT at shutdown although we handled it
            # (seen under load: status -2, not 130). Run the exit handlers ourselves, then leave with 130.
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return status
    return _run(args)


def _run(args) -> int:
    try:
        status = args.func(args)
        if INTERRUPTED.is_set() and not args.stops_cleanly:
            # a signal that Dagster swallowed while a step finished: still an interrupt
            err_console.print("kfs: interrupted")
            return 130
        return status
    except KeyboardInterrupt:
        err_console.print("kfs: interrupted")
        return 130
    except BaseException as error:  # noqa: BLE001 - every error becomes one line; --debug shows the traceback
        # (Dagster's DagsterExecutionInterruptedError derives from BaseException, like KeyboardInterrupt.)
        if args.debug or isinstance(error, (SystemExit, GeneratorExit)):
            raise
        status, message = describe_error(error)
        if INTERRUPTED.is_set() and not args.stops_cleanly:
            # the error is the interrupt's consequence (a dbt child killed by the same signal, a step cut short)
            status = 130
        if status == 130:
            err_console.print("kfs: interrupted")
        else:
            err_console.print(f"kfs: error: {message}", highlight=False, markup=False)
        return status


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _remember_interrupts_in_every_handler() -> None:
    """Whatever handler SIGINT/SIGTERM has when the signal comes (ours, or Dagster's, which only records it in
    some sections and forgets it when they end), it first sets INTERRUPTED, so a run whose interrupt was
    swallowed (by a handler, or as an exception by a library's bare `except:`) still ends with 130. Once a
    signal was lost with exit 0 although the wakeup fd of `_watch_interrupts` should have heard it: this is
    a second path that does not depend on it. `signal.getsignal` keeps answering the handler that was set."""
    import signal

    if getattr(signal.signal, "kfs_remembers", False):
        return
    install, lookup = signal.signal, signal.getsignal
    stops = {signal.SIGINT, signal.SIGTERM}

    def remembering(handler):
        if not callable(handler) or getattr(handler, "kfs_wraps", None) is not None:
            return handler        # SIG_IGN and SIG_DFL are the kernel's; the wakeup fd still hears SIG_IGN-free ones

        def remember(signum, frame):
            INTERRUPTED.set()
            return handler(signum, frame)

        remember.kfs_wraps = handler
        return remember

    def signal_(signum, handler):
        previous = install(signum, remembering(handler) if signum in stops else handler)
        return getattr(previous, "kfs_wraps", previous)

    def getsignal(signum):
        current = lookup(signum)
        return getattr(current, "kfs_wraps", current)

    signal_.kfs_remembers = True
    signal.signal, signal.getsignal = signal_, getsignal


def _is_interrupt(error: BaseException | None) -> bool:
    return isinstance(error, KeyboardInterrupt) or type(error).__name__ == "DagsterExecutionInterruptedError"


def _start_resource_tracker_quietly() -> None:
    """multiprocessing's resource tracker (started by the first library that makes a lock) outlives an
    interrupted run and reports, on the terminal it inherited, the semaphores it then cleans up (a traceback
    after `kfs: interrupted`). Start it now with its stderr on /dev/null: its reports are not the user's."""
    from multiprocessing import resource_tracker

    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _drop_logged_interrupts() -> None:
    """A library that logs the interrupt it was cut by (SQLAlchemy closing a pooled connection) prints a
    traceback: drop such records, whatever logger they come from, so an interrupt stays one line."""
    import logging

    def not_an_interrupt(record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_interrupt(record.exc_info[1]))

    for handler in (logging.lastResort, *logging.getLogger().handlers):
        if handler is not None:
            handler.addFilter(not_an_interrupt)


def _quiet_lost_interrupts(unraisable) -> None:
    """An interrupt raised inside a finalizer (Dagster's handler raises wherever the signal lands) cannot
    propagate: Python would print it as `Exception ignored in ...` with a traceback. Remember it instead (the
    run still ends with 130) and leave every other unraisable error to Python's own report."""
    if _is_interrupt(unraisable.exc_value):
        INTERRUPTED.set()
        return
    sys.__unraisablehook__(unraisable)


INTERRUPT_GRACE_S = 20.0
_WAKEUP_SOCKETS: list = []
_TERMINAL_STDERR: list[int] = []  # a duplicate of the stderr the process started with (see _exit_interrupted)


def _watch_interrupts() -> None:
    """Make sure an interrupt ends the process. Dagster replaces our handlers while a run executes and turns
    SIGINT/SIGTERM into an exception raised wherever the step happens to be: raised inside a finalizer it is
    lost, and a run waiting for a pool slot does not check for it at all. The wakeup fd hears every signal
    whatever handler Python runs; if the process is still alive `INTERRUPT_GRACE_S` after one (or at once on
    a second), its child processes are stopped and it exits 130. A run it abandons this way is reclaimed by
    the next `kfs materialize` (orchestration/recovery.py)."""
    import signal
    import socket
    import threading
    import time

    if threading.current_thread() is not threading.main_thread():
        return
    _TERMINAL_STDERR[:] = [os.dup(2)]
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    _WAKEUP_SOCKETS[:] = [reader, writer]  # the signal machinery keeps only the descriptor: keep the objects
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    stops = {signal.SIGINT, signal.SIGTERM}

    def watch() -> None:
        first = None
        while True:
            reader.settimeout(None if first is None else max(first + INTERRUPT_GRACE_S - time.monotonic(), 0.01))
            try:
                received = [s for s in reader.recv(64) if s in stops]
            except TimeoutError:
                _exit_interrupted()
            if received and first is not None:
                _exit_interrupted()
            if received:
                first = time.monotonic()
                INTERRUPTED.set()

    threading.Thread(target=watch, name="kfs-interrupt-watchdog", daemon=True).start()


def _exit_interrupted() -> None:
    from kfs.runners import stop_child_processes

    stop_child_processes()
    # Written to the stderr this process started with, not to sys.stderr: while a step runs, Dagster's
    # compute-log capture has redirected descriptor 2 into its log (through a child it mirrors with), and a
    # line printed there is lost when we leave at once (CI saw exit 130 with an empty stderr).
    os.write(_TERMINAL_STDERR[0] if _TERMINAL_STDERR else 2, b"kfs: interrupted\n")
    os._exit(130)


def describe_error(error: BaseException) -> tuple[int, str]:
    """(exit status, one line) for any error a command can raise, with secrets removed."""
    from source.pg_server import EmbeddedServerError
    from source.recordings import RecordingFormatError

    error = _root_cause(error)
    if isinstance(error, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(error, (UsageError, SettingsError, SourceUnavailable, EmbeddedServerError, RecordingFormatError)):
        return 2, one_line(str(error))
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return 1, f"{error.strerror}{where}"
    try:
        import psycopg

        if isinstance(error, psycopg.Error):
            return 1, "PostgreSQL: " + _redacted(one_line(str(error)))
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    if isinstance(error, ValueError):
        return 2, _redacted(one_line(str(error)))
    return 1, _redacted(f"{type(error).__name__}: {one_line(str(error))}") + " (run with --debug for the traceback)"


def _root_cause(error: BaseException) -> BaseException:
    """The user's error inside Dagster's wrappers (a failed step, an interrupted run)."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "user_exception", None) or error.__cause__
        if type(error).__name__ == "DagsterExecutionInterruptedError":
            return KeyboardInterrupt()
        if inner is None or type(inner).__name__ == "_RemoteTraceback":  # another process's traceback, as text
            break
        error = inner
    return error




def _redacted(text: str) -> str:
    try:
        dsn = settings().pg_dsn
    except SettingsError:
        return text
    if dsn:
        from core.postgres import redact

        return redact(text, dsn)
    return text


if __name__ == "__main__":
    sys.exit(main())
