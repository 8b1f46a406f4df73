"""`kfs`: the command line of kalshi-feature-store. Long work shows progress; errors are one line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from datetime import date, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kfs.config import kfs_home
from kfs.locks import exclusive

# Piped output (make demo | tee, CI logs) gets a wide fixed width instead of 80 columns.
_WIDTH = None if sys.stdout.isatty() else 140
console = Console(stderr=False, soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit status 2."""


# -- pg ------------------------------------------------------------------------------------------

def _embedded():
    from ingest.pg_server import EmbeddedServer

    return EmbeddedServer(kfs_home() / "pg")


def cmd_pg(args: argparse.Namespace) -> int:
    server = _embedded()
    if os.environ.get("KFS_PG_DSN") and args.action != "url":
        console.print("KFS_PG_DSN is set: kfs uses that server, the embedded one is not needed.")
    if args.action == "start":
        dsn = server.start()
        console.print(f"embedded PostgreSQL running: {dsn}")
    elif args.action == "stop":
        console.print("stopped" if server.stop() else "not running")
    elif args.action == "status":
        running = server.is_running()
        console.print(f"embedded PostgreSQL in {server.pgdata}: {'running at ' + server.dsn() if running else 'not running'}")
        return 0 if running else 3
    elif args.action == "url":
        from ingest.db import resolve_dsn

        print(resolve_dsn(start_embedded=False))
    return 0


# -- db ------------------------------------------------------------------------------------------

def cmd_db_init(args: argparse.Namespace) -> int:
    from ingest.db import connection, describe_dsn, resolve_dsn
    from ingest.schema import create_source_tables
    from kfs.config import SourceTables

    dsn = resolve_dsn()
    tables = SourceTables.from_env()
    with connection(dsn) as conn:
        create_source_tables(conn, tables, strict=not args.without_constraints)
    console.print(f"source tables ready in {describe_dsn(dsn)}: {tables.snapshots}, {tables.deltas}, {tables.trades}, {tables.markets}")
    return 0


# -- simulate ------------------------------------------------------------------------------------

def _parse_day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} expects a date as YYYY-MM-DD, got {text!r}") from None


def source_market_count(conn, tables) -> int:
    from psycopg import sql

    from ingest.db import table_identifier

    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table_identifier(tables.markets))).fetchone()[0]


def run_simulation(markets: int, days: int, seed: int, signal: float, start: date | None, replace: bool) -> "object":
    from rich.progress import Progress

    from ingest.db import connection, resolve_dsn
    from ingest.schema import create_source_tables, drop_source_tables, next_session_id
    from ingest.simulator import SimulationConfig, simulate
    from kfs.config import SourceTables

    kwargs = dict(markets=markets, days=days, seed=seed, signal=signal)
    if start is not None:
        kwargs["start"] = start
    config = SimulationConfig(**kwargs)
    dsn = resolve_dsn()
    tables = SourceTables.from_env()
    with connection(dsn) as conn:
        if replace:
            drop_source_tables(conn, tables)
        create_source_tables(conn, tables)
        if source_market_count(conn, tables) and not replace:
            raise UsageError("the source tables already hold markets; pass --replace to start from empty tables")
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"simulating {config.markets} markets x {config.days} days", total=config.markets)
            summary = simulate(conn, tables, config, next_session_id(conn, tables),
                               progress=lambda n: progress.advance(task, n))
    return config, summary


def cmd_simulate(args: argparse.Namespace) -> int:
    import time

    started = time.perf_counter()
    start = _parse_day(args.start, "--start") if args.start else None
    config, summary = run_simulation(args.markets, args.days, args.seed, args.signal, start, args.replace)
    seconds = time.perf_counter() - started
    console.print(
        f"simulated {summary.markets} markets from {config.start} for {config.days} days (seed {config.seed}, "
        f"signal {config.signal}): {summary.sessions} sessions, {summary.snapshots:,} snapshots, "
        f"{summary.deltas:,} deltas, {summary.trades:,} trades, {summary.settled} settled, in {seconds:.1f} s"
    )
    return 0


# -- load-recording ------------------------------------------------------------------------------

def cmd_load_recording(args: argparse.Namespace) -> int:
    from ingest.db import connection, resolve_dsn
    from ingest.recordings import load_files
    from ingest.schema import create_source_tables
    from kfs.config import SourceTables

    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
    tables = SourceTables.from_env()
    with connection(resolve_dsn()) as conn:
        create_source_tables(conn, tables)
        reports = load_files(conn, tables, paths, timezone_name=args.naive_timezone)
    table = Table("file", "format", "markets", "snapshots", "deltas", "trades", "lifecycle", "skipped")
    for r in reports:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(r.skipped.items())) or "-"
        table.add_row(r.path.name, r.format, str(len(r.markets)), f"{r.snapshots:,}", f"{r.deltas:,}", f"{r.trades:,}",
                      str(r.lifecycle), skipped)
    console.print(table)
    return 0


# -- materialize ---------------------------------------------------------------------------------

def _ensure_dagster_home() -> None:
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(kfs_home() / "dagster")
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    instance_config = home / "dagster.yaml"
    with exclusive("dagster_instance"):  # two first runs at once must not both create the storage
        if not instance_config.exists():
            project_config = Path(__file__).resolve().parent.parent / "dagster.yaml"
            instance_config.write_text(project_config.read_text())
        import dagster as dg

        dg.DagsterInstance.get().dispose()


# In-process runs log every step event to the terminal; the progress bar says enough. The events are
# still stored in the Dagster instance, so the UI shows them.
_QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def materialize_range(start: date, end: date, quiet: bool = False, stages: tuple[str, ...] = ("ingest", "features")) -> list:
    """Materialize, in-process and recorded in the Dagster instance: the daily ingest partitions in
    [start, end] and the markets asset, then the feature store over the same range in one run."""
    _ensure_dagster_home()
    import dagster as dg
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from orchestration.definitions import defs

    if end < start:
        raise UsageError(f"--end {end} is before --start {start}")
    instance = dg.DagsterInstance.get()
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    steps = (len(days) + 1 if "ingest" in stages else 0) + (1 if "features" in stages else 0)
    results = []
    # dagster-dbt echoes every dbt log line to stdout; keep the terminal to the progress bar and the
    # summary, and the dbt lines in a log file (the Dagster UI has them too, per run).
    terminal = Console(file=sys.stdout, soft_wrap=True, width=_WIDTH)
    dbt_log = kfs_home() / "logs" / "dbt.log"
    dbt_log.parent.mkdir(parents=True, exist_ok=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=terminal, transient=quiet, disable=quiet) as progress:
        task = progress.add_task("materializing", total=steps)
        if "ingest" in stages:
            ingest_job = defs.resolve_job_def("ingest_job")
            for day in days:
                progress.update(task, description=f"ingesting {day}")
                results.append(ingest_job.execute_in_process(partition_key=day.isoformat(), instance=instance,
                                                             run_config=_QUIET_RUN))
                progress.advance(task)
            progress.update(task, description="ingesting markets")
            results.append(defs.resolve_job_def("markets_job").execute_in_process(instance=instance, run_config=_QUIET_RUN))
            progress.advance(task)
        if "features" in stages:
            progress.update(task, description=f"feature store {start} .. {end} (replay, features, dbt, split)")
            with dbt_log.open("a") as log, contextlib.redirect_stdout(log):
                results.append(defs.resolve_job_def("feature_store_job").execute_in_process(
                    instance=instance, run_config=_QUIET_RUN,
                    tags={"dagster/asset_partition_range_start": start.isoformat(),
                          "dagster/asset_partition_range_end": end.isoformat()}))
            progress.advance(task)
    return results


def run_training_job(quiet: bool = False):
    """Train, validate and publish through Dagster (training_job), in-process."""
    _ensure_dagster_home()
    import dagster as dg

    from orchestration.definitions import defs

    with console.status("training, validating and publishing the policy (budget KFS_TRAIN_SECONDS)", spinner="dots"):
        return defs.resolve_job_def("training_job").execute_in_process(
            instance=dg.DagsterInstance.get(), run_config=_QUIET_RUN)


def print_policy_summary(target: Console) -> None:
    import json

    from kfs.lake import Lake
    from training.pipeline import candidate_dir
    from training.publish import PRODUCTION, models_root, read_registry

    lake = Lake()
    validation = json.loads((candidate_dir(lake) / "validation.json").read_text())
    table = Table(title="validation markets: per-market P&L ($, net of spread and fees)")
    for column in ("strategy", "markets", "mean $", "95% CI", "% profitable", "Sharpe", "consistency", "orders"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in validation["table"]:
        table.add_row(row["strategy"], str(row["markets"]), f"{row['mean_return_dollars']:+.2f}",
                      f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]", f"{row['pct_profitable']:.0f}%",
                      f"{row['mean_sharpe']:+.2f}", f"{row['mean_consistency']:.2f}", str(row["orders"]))
    target.print(table)
    registry = read_registry(lake)
    latest = registry["versions"][-1]
    production = registry["aliases"].get(PRODUCTION)
    target.print(f"published {latest['version']} -> {models_root(lake) / latest['version'] / 'policy_int8.pt'}")
    target.print(f"alias production -> {production or 'none yet'}; this version {'promoted' if latest['promoted'] else 'not promoted'}: "
                 + "; ".join(latest["reasons"]))


def cmd_train(args: argparse.Namespace) -> int:
    if args.seconds is not None:
        os.environ["KFS_TRAIN_SECONDS"] = str(args.seconds)
    result = run_training_job()
    print_policy_summary(console)
    return 0 if result.success else 1


def cmd_materialize(args: argparse.Namespace) -> int:
    start = _parse_day(args.start, "--start")
    end = _parse_day(args.end, "--end") if args.end else start
    stages = ("ingest", "features") if args.only is None else (args.only,)
    results = materialize_range(start, end, stages=stages)
    failed = [c for r in results for c in r.get_asset_check_evaluations() if not c.passed]
    console.print(f"materialized {(end - start).days + 1} partitions ({', '.join(stages)}); {len(failed)} failed checks")
    for check in failed:
        console.print(f"  check failed: {check.asset_key.to_user_string()} {check.check_name} {check.metadata}")
    return 1 if failed else 0


# -- demo ----------------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    from kfs.demo import run_demo

    return run_demo(console)


def cmd_bench(args: argparse.Namespace) -> int:
    import runpy

    bench_dir = Path(__file__).resolve().parent.parent / "bench"
    runpy.run_path(str(bench_dir / "run_all.py"), run_name="__main__")
    return 0


# -- wiring --------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from ingest.simulator import DEFAULT_DAYS, DEFAULT_MARKETS, DEFAULT_SEED, DEFAULT_SIGNAL

    parser = argparse.ArgumentParser(prog="kfs", description="kalshi-feature-store command line")
    sub = parser.add_subparsers(dest="command", required=True)

    pg = sub.add_parser("pg", help="the embedded PostgreSQL server (used when KFS_PG_DSN is unset)")
    pg.add_argument("action", choices=["start", "stop", "status", "url"])
    pg.set_defaults(func=cmd_pg)

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
                     help="strength of the planted order-imbalance effect; 0 = martingale prices")
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

    train_cmd = sub.add_parser("train", help="train, validate and publish the policy on the feature store")
    train_cmd.add_argument("--seconds", type=float, help="training budget in seconds (default KFS_TRAIN_SECONDS or 240)")
    train_cmd.set_defaults(func=cmd_train)

    demo = sub.add_parser("demo", help="the main job on the embedded default: simulate, ingest, features, train, publish")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="run the benchmarks, write bench/results/*.json")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ingest.db import SourceUnavailable
    from ingest.pg_server import EmbeddedServerError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SourceUnavailable, EmbeddedServerError, UsageError, ValueError) as error:
        err_console.print(f"kfs: error: {error}", highlight=False, markup=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("kfs: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
