"""`kfs`: the command line of kalshi-feature-store. Long work shows progress; errors are one line.

This module parses and dispatches: each command is a module of `kfs.commands` with a `run(args)`, imported
only when that command runs, so `kfs pg status` does not load Dagster or torch. Signals are kfs/interrupts.py's.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys

from core.postgres import SourceUnavailable, redact
from core.settings import SettingsError, ensure_private_home, settings
from kfs.console import UsageError, err_console, one_line
from kfs.interrupts import INTERRUPTED, exit_interrupted_cleanly, own_signals
from source.simulator_defaults import (
    DEFAULT_DAYS,
    DEFAULT_MARKETS,
    DEFAULT_SEED,
    DEFAULT_SIGNAL,
    EFFECTS,
    MAX_DAYS,
    MAX_MARKETS,
)
from training.profiles import DEFAULT_PROFILE, PROFILE_NAMES

# Errors of modules a command may have loaded, told apart by class without importing those modules here:
# an error of a module that was never imported cannot have been raised.
USAGE_ERRORS = (("source.pg_server", "EmbeddedServerError"), ("source.recordings", "RecordingFormatError"))


def _bounded(kind: type, low: float, high: float | None = None, low_open: bool = False):
    """An argparse type: a finite `kind` in [low, high] ((low, high] with `low_open`), refused before any
    work with argparse's one-line usage error (exit 2)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low) or (high is not None and value > high):
            above = f"above {low:g}" if low_open else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {above}{f' and at most {high:g}' if high is not None else ''}, "
                                             f"got {text!r}")
        return value
    parse.__name__ = kind.__name__   # argparse names the type in its messages
    return parse


class HelpWithProfiles(argparse.Action):
    """`kfs train --help`, with what each training profile trains (read from the training code only when asked:
    it imports torch, which every other command can do without)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from training.pipeline import describe_profiles

        parser.epilog = describe_profiles()
        parser.print_help()
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kfs", description="kalshi-feature-store command line")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.set_defaults(stops_cleanly=False)
    sub = parser.add_subparsers(dest="command", required=True)

    pg = sub.add_parser("pg", help="the embedded PostgreSQL server (used when KFS_PG_DSN is unset)")
    pg.add_argument("action", choices=["start", "stop", "status", "url"])
    pg.set_defaults(command_module="kfs.commands.pg")

    store = sub.add_parser("objectstore", help="a local S3 server (SeaweedFS) for KFS_LAKE=s3://...")
    store.add_argument("action", choices=["start", "stop", "url", "env"],
                       help="env prints export lines (with the generated keys) for `eval`")
    store.add_argument("--bucket", default="kfs", help="bucket to create at start and to name in env (default kfs)")
    store.set_defaults(command_module="kfs.commands.objectstore")

    db = sub.add_parser("db", help="source database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    init = db_sub.add_parser("init", help="create the source tables (DESIGN.md section 1)")
    init.add_argument("--without-constraints", action="store_true",
                      help="omit CHECK/NOT NULL constraints, as in databases created before the recorder had them")
    init.set_defaults(command_module="kfs.commands.db")

    sim = sub.add_parser("simulate", help="write a simulated Kalshi universe into PostgreSQL")
    sim.add_argument("--markets", type=_bounded(int, 1, MAX_MARKETS), default=DEFAULT_MARKETS)
    sim.add_argument("--days", type=_bounded(int, 1, MAX_DAYS), default=DEFAULT_DAYS)
    sim.add_argument("--seed", type=_bounded(int, 0), default=DEFAULT_SEED)
    sim.add_argument("--signal", type=_bounded(float, 0, 4), default=DEFAULT_SIGNAL,
                     help="strength of the planted effects (0..4; 0 = martingale prices, 1 = footprints always right)")
    sim.add_argument("--effects", default=",".join(EFFECTS),
                     help=f"planted effects, comma-separated, mixed across markets (default all: {','.join(EFFECTS)})")
    sim.add_argument("--start", help="first day (YYYY-MM-DD); default: --days days before today (UTC)")
    sim.add_argument("--replace", action="store_true", help="drop and recreate the source tables first")
    sim.set_defaults(command_module="kfs.commands.simulate")

    load = sub.add_parser("load-recording", help="load Kalshi websocket JSONL or recorded CSV files")
    load.add_argument("files", nargs="+")
    load.add_argument("--naive-timezone", default="UTC",
                      help="time zone of timestamps written without one (default UTC)")
    load.set_defaults(command_module="kfs.commands.load_recording")

    mat = sub.add_parser("materialize", help="ingest daily partitions and build the feature store through Dagster")
    mat.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    mat.add_argument("--end", help="last day (inclusive), default --start")
    mat.add_argument("--only", choices=["ingest", "features"], help="one stage only (default: both)")
    mat.set_defaults(command_module="kfs.commands.materialize")

    rec = sub.add_parser("reconcile", help="account for every source row: written, quarantined or unaccounted")
    rec.add_argument("--start", help="first day (default KFS_PARTITIONS_START)")
    rec.add_argument("--end", help="last day, inclusive (default today, UTC)")
    rec.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rec.set_defaults(command_module="kfs.commands.reconcile")

    feats = sub.add_parser("features", help="the features as of each row of a labels file (a point-in-time join)")
    feats.add_argument("--entities", required=True,
                       help="a .parquet or .csv file with market_ticker, timestamp_ms (epoch ms) and any labels")
    feats.add_argument("--out", required=True, help="the .parquet or .csv file to write")
    feats.add_argument("--features", help="comma-separated feature columns (default: every feature)")
    feats.add_argument("--max-age", help="leave out feature rows older than this: 90s, 10m, 2h, 1d (default: no limit)")
    feats.set_defaults(command_module="kfs.commands.features")

    train_cmd = sub.add_parser("train", help="train, validate and publish the policy on the feature store",
                               add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    train_cmd.add_argument("-h", "--help", action=HelpWithProfiles, nargs=0, help="show this help message and exit")
    train_cmd.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILE_NAMES,
                           help=f"training profile: {', '.join(PROFILE_NAMES)} (default {DEFAULT_PROFILE}; see below)")
    train_cmd.add_argument("--steps", type=_bounded(int, 1),
                           help="PPO environment steps (default KFS_TRAIN_STEPS, else the profile's)")
    train_cmd.add_argument("--seconds", type=_bounded(float, 1),
                           help="time limit: stages stop where they are once it passed (default KFS_TRAIN_SECONDS, "
                                "else the profile's)")
    train_cmd.set_defaults(command_module="kfs.commands.train")

    evaluate = sub.add_parser("evaluate", help="score a published version against every baseline on validation or test markets")
    evaluate.add_argument("--split", required=True, choices=["validation", "test"])
    evaluate.add_argument("--version", help="published version (default: the production alias, else the latest)")
    evaluate.add_argument("--json", help="also write the results as JSON to this path")
    evaluate.add_argument("--no-latency-check", action="store_true",
                          help="score the version whatever its p99 latency on this machine (still measured and shown)")
    evaluate.set_defaults(command_module="kfs.commands.evaluate")

    live = sub.add_parser("live", help="features and decisions of the production model on live events")
    live.add_argument("--recording", nargs="+", metavar="FILE", help="replay recordings (the formats load-recording reads)")
    live.add_argument("--follow", action="store_true", help="follow the source PostgreSQL tables as the recorder writes them")
    live.add_argument("--realtime", action="store_true", help="replay at the recorded pace (default: as fast as possible)")
    live.add_argument("--out", metavar="DIR", help="write DIR/features.parquet and DIR/decisions.parquet")
    live.add_argument("--batch-events", type=_bounded(int, 1), default=4096,
                      help="most events taken in one arrival (replay as fast as possible: the backlog drained at once)")
    live.add_argument("--poll", type=_bounded(float, 0, 3600, low_open=True), default=0.2,
                      help="seconds between polls of the source tables (--follow)")
    live.add_argument("--until-idle", action="store_true", help="with --follow: stop at the first poll with nothing new")
    live.add_argument("--reload-every", type=_bounded(float, 0, 86400, low_open=True), default=1.0,
                      help="seconds between checks of the production alias")
    live.add_argument("--naive-timezone", default="UTC", help="time zone of recorded times without one")
    live.add_argument("--no-latency-check", action="store_true",
                      help="load models without the p99 latency check (tests, shared machines)")
    live.set_defaults(command_module="kfs.commands.live", stops_cleanly=True)  # a stop is how a live run ends (exit 0)

    demo = sub.add_parser("demo", help="the main job on the embedded default: simulate, ingest, features, train, publish")
    demo.set_defaults(command_module="kfs.commands.demo")

    bench = sub.add_parser("bench", help="run the benchmarks, write bench/results/*.json")
    bench.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    bench.set_defaults(command_module="kfs.commands.bench")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure is one line on stderr (`kfs: error: ...`): 2 for bad input or an
    unreachable source, 1 for a failed run or a failed check, 130 when interrupted; `--debug` shows the
    traceback instead. As the program (`kfs ...`, argv from the command line) it also owns the process's
    signals (kfs/interrupts.py): SIGTERM stops the run like Ctrl-C, and an interrupt always ends the process.
    Called with an explicit argv (tests, other programs) it leaves signals alone."""
    args = build_parser().parse_args(argv)
    if argv is None:
        own_signals()
        status = _run(args)
        if status == 130:
            exit_interrupted_cleanly()
        return status
    return _run(args)


def _run(args) -> int:
    try:
        ensure_private_home()
        status = importlib.import_module(args.command_module).run(args)
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


def describe_error(error: BaseException) -> tuple[int, str]:
    """(exit status, one line) for any error a command can raise, with secrets removed."""
    error = _root_cause(error)
    if isinstance(error, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(error, (UsageError, SettingsError, SourceUnavailable)) or _raised_by(error, USAGE_ERRORS):
        return 2, one_line(str(error))
    if type(error).__name__ == "DagsterAssetCheckFailedError":   # its first line counts the checks, the rest names them
        return 1, " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if type(error).__name__ == "DagsterDbtCliRuntimeError":
        return 1, "dbt failed: " + _redacted(dbt_error_line(str(error)))
    if _raised_by(error, (("core.catalog", "DamagedLakeFile"),)):
        return 1, one_line(str(error))
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return 1, f"{error.strerror}{where}"
    if _raised_by(error, (("psycopg", "OperationalError"),)):   # the server went away mid-statement
        return 2, "PostgreSQL unreachable: " + _redacted(one_line(str(error)))
    if _raised_by(error, (("psycopg", "Error"),)):
        return 1, "PostgreSQL: " + _redacted(one_line(str(error)))
    if isinstance(error, ValueError):
        return 2, _redacted(one_line(str(error)))
    return 1, _redacted(f"{type(error).__name__}: {one_line(str(error))}") + " (run with --debug for the traceback)"


def dbt_error_line(message: str) -> str:
    """The first error dbt itself reported, from dagster-dbt's message (its "Errors parsed from dbt logs:"
    section, else the debug log it names), instead of that message's first line, which names only the command."""
    _, marker, parsed = message.partition("Errors parsed from dbt logs:")
    if marker and one_line(parsed) != "(no message)":
        return one_line(parsed)
    log = message.split("view the dbt debug log: ", 1)[1].split(",")[0].rstrip(".").strip() \
        if "view the dbt debug log: " in message else ""
    try:
        with open(log, errors="replace") as handle:
            errors = [line.strip() for line in handle if "[error]" in line.lower() or "Error" in line.split(":", 1)[0]]
    except OSError:
        errors = []
    return errors[0] if errors else one_line(message)


def _raised_by(error: BaseException, classes: tuple[tuple[str, str], ...]) -> bool:
    """Whether `error` is one of these (module, class): only modules already loaded can have raised it."""
    return any(module in sys.modules and isinstance(error, getattr(sys.modules[module], name))
               for module, name in classes)


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
    return redact(text, dsn) if dsn else text


if __name__ == "__main__":
    sys.exit(main())
