"""What the `kfs` commands and `make demo` run: simulation, materialization and training through Dagster.

Plain functions over the layers below; the command line (`kfs.cli`) parses arguments and prints,
the demo (`kfs.demo`) strings these together.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from datetime import date, timedelta

from psycopg import sql
from rich.console import Console

from core.locks import exclusive
from core.postgres import connection, table_identifier
from core.settings import SourceTables, settings

# Piped output (make demo | tee, CI logs) gets a wide fixed width instead of 80 columns.
# Set by the command line's signal watchdog at the first SIGINT/SIGTERM (kfs/cli.py:_watch_interrupts); long
# loops check it between steps, so an interrupt that Dagster swallowed inside a step still stops the run.
INTERRUPTED = threading.Event()
CONSOLE_WIDTH = None if sys.stdout.isatty() else 140


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit status 2."""


def parse_day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} expects a date as YYYY-MM-DD, got {text!r}") from None


def source_market_count(conn, tables: SourceTables) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table_identifier(tables.markets))).fetchone()[0]


def run_simulation(markets: int, days: int, seed: int, signal: float, start: date | None, replace: bool,
                   console: Console, **options):
    """Simulate a universe into the source tables (the embedded server unless KFS_PG_DSN is set)."""
    from rich.progress import Progress

    from source.ddl import create_source_tables, drop_source_tables, next_session_id
    from source.pg_server import source_dsn
    from source.simulator import SimulationConfig, simulate

    kwargs = dict(markets=markets, days=days, seed=seed, signal=signal, **options)
    if start is not None:
        kwargs["start"] = start
    config = SimulationConfig(**kwargs)
    tables = settings().tables
    with connection(source_dsn()) as conn:
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


def ensure_dagster_home() -> None:
    """DAGSTER_HOME (default $KFS_HOME/dagster) with the instance configuration of the settings (SQLite
    storage locally, PostgreSQL in `prod`: orchestration/instance.py)."""
    import os
    from pathlib import Path

    from orchestration.instance import write_instance_config

    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(settings().dagster_home)
    home = Path(os.environ["DAGSTER_HOME"])
    with exclusive("dagster_instance"):  # two first runs at once must not both create the storage
        write_instance_config(home)
        import dagster as dg

        dg.DagsterInstance.get().dispose()


# In-process runs log every step event (and every failure, with its traceback) to the terminal; the progress
# bar and our one-line errors say enough. The events are
# still stored in the Dagster instance, so the UI shows them.
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def check_partition_range(start: date, end: date, today: date) -> None:
    """Days Dagster has partitions for: from KFS_PARTITIONS_START to today (UTC)."""
    first = settings().partitions_start
    if end < start:
        raise UsageError(f"--end {end} is before --start {start}")
    if start < first:
        raise UsageError(f"--start {start} is before the first partition {first} (KFS_PARTITIONS_START)")
    if end > today:
        raise UsageError(f"--end {end} is in the future: the last partition is today, {today} (UTC)")


def check_source_tables(dsn: str, tables: SourceTables) -> None:
    """Every configured source table exists: a one-line error naming the table and its variable otherwise."""
    from core.postgres import describe_dsn

    with connection(dsn) as conn:
        for attr in ("snapshots", "deltas", "trades", "markets"):
            name = getattr(tables, attr)
            if conn.execute("SELECT to_regclass(%s)", (table_identifier(name).as_string(conn),)).fetchone()[0] is None:
                raise UsageError(f"source table {name} (KFS_TABLE_{attr.upper()}) does not exist in "
                                 f"{describe_dsn(dsn)}; create it with `kfs db init` or set the variable")


def materialize_range(start: date, end: date, quiet: bool = False, stages: tuple[str, ...] = ("ingest", "features"),
                      console: Console | None = None) -> list:
    """Materialize, in-process and recorded in the Dagster instance: the daily ingest partitions in
    [start, end] and the markets asset, then the feature store over the same range in one run. Runs left
    behind by a killed process give their pool slots back first."""
    from datetime import datetime, timezone

    check_partition_range(start, end, datetime.now(timezone.utc).date())
    from core.catalog import Lake

    Lake().check_reachable()
    if "ingest" in stages:
        from source.pg_server import source_dsn

        check_source_tables(source_dsn(), settings().tables)
    ensure_dagster_home()
    import dagster as dg
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from orchestration.definitions import defs
    from orchestration.recovery import local_run_tags, reclaim_dead_runs

    instance = dg.DagsterInstance.get()
    terminal = console or Console(file=sys.stdout, soft_wrap=True, width=CONSOLE_WIDTH)
    for run in reclaim_dead_runs(instance):
        terminal.print(f"reclaimed the pool slots of run {run.run_id} ({run.job_name}): its process {run.pids} is gone")
    tags = local_run_tags()
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    steps = (len(days) + 1 if "ingest" in stages else 0) + (1 if "features" in stages else 0)
    # dagster-dbt echoes every dbt log line to stdout; keep the terminal to the progress bar and the
    # summary, and the dbt lines in a log file (the Dagster UI has them too, per run).
    dbt_log = settings().home / "logs" / "dbt.log"
    dbt_log.parent.mkdir(parents=True, exist_ok=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=terminal, transient=quiet, disable=quiet) as progress:
        task = progress.add_task("materializing", total=steps)
        if "ingest" in stages:
            # ingest's steps share the pool `postgres_read`: as many read the recorder as daily runs go at once
            distributed = settings().executor != "in_process"
            instance.event_log_storage.set_concurrency_slots("postgres_read", settings().workers if distributed else 1)
        if settings().executor != "in_process":
            return _materialize_distributed(instance, days, stages, tags, progress, task, dbt_log)
        results = []
        if "ingest" in stages:
            ingest_job = defs.resolve_job_def("ingest_job")
            for day in days:
                _stop_if_interrupted()
                progress.update(task, description=f"ingesting {day}")
                results.append(ingest_job.execute_in_process(partition_key=day.isoformat(), instance=instance,
                                                             run_config=QUIET_RUN, tags=tags))
                progress.advance(task)
            progress.update(task, description="ingesting markets")
            results.append(defs.resolve_job_def("markets_job").execute_in_process(instance=instance, run_config=QUIET_RUN,
                                                                                  tags=tags))
            progress.advance(task)
        if "features" in stages:
            _stop_if_interrupted()
            progress.update(task, description=f"feature store {start} .. {end} (replay, features, dbt, split)")
            with dbt_log.open("a") as log, contextlib.redirect_stdout(log):
                results.append(defs.resolve_job_def("feature_store_job").execute_in_process(
                    instance=instance, run_config=QUIET_RUN,
                    tags={**tags, "dagster/asset_partition_range_start": start.isoformat(),
                          "dagster/asset_partition_range_end": end.isoformat()}))
            progress.advance(task)
    return results


def _materialize_distributed(instance, days: list[date], stages: tuple[str, ...], tags: dict, progress, task,
                             dbt_log) -> list:
    """`materialize_range` on the multiprocess or dask executor: up to KFS_WORKERS daily ingest runs at once,
    each run's steps on the executor's workers, then the markets run and the feature-store run (see
    orchestration/executors.py for where steps execute and why DuckDB keeps one writer). Dagster runs are
    not thread-safe within one process (each configures logging), so concurrent runs start from a pool of
    spawned processes; their steps go to the executor's workers."""
    from concurrent.futures import as_completed

    from orchestration.executors import dask_scheduler, executor_run_config

    current = settings()
    results = []
    run_log = dbt_log.parent / "runs.log"
    with dask_scheduler(current, run_log) as scheduler, _run_processes(current.workers, run_log) as pool:
        run_config = {**QUIET_RUN, **executor_run_config(current, scheduler)}

        def run(name: str, run_tags: dict) -> StoredRun:
            return StoredRun.checked(instance, *pool.submit(execute_job_run, name, run_config, run_tags).result())

        if "ingest" in stages:
            progress.update(task, description=f"ingesting {days[0]} .. {days[-1]} ({current.executor}, "
                                              f"{current.workers} at once)")
            runs = [pool.submit(execute_job_run, "ingest_job", run_config, {**tags, "dagster/partition": d.isoformat()})
                    for d in days]
            for done in as_completed(runs):
                _stop_if_interrupted()
                results.append(StoredRun.checked(instance, *done.result()))
                progress.advance(task)
            progress.update(task, description="ingesting markets")
            results.append(run("markets_job", tags))
            progress.advance(task)
        if "features" in stages:
            _stop_if_interrupted()
            progress.update(task, description=f"feature store {days[0]} .. {days[-1]} ({current.executor})")
            results.append(run("feature_store_job", {**tags, "dagster/asset_partition_range_start": days[0].isoformat(),
                                                     "dagster/asset_partition_range_end": days[-1].isoformat()}))
            progress.advance(task)
    return results


@contextlib.contextmanager
def _run_processes(workers: int, log):
    """Spawned processes that each execute one run at a time. Their output and their step processes' (Dagster's
    engine lines, dbt's log) goes to `log`; the terminal keeps the progress bar and one-line errors."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from orchestration.executors import output_to

    with output_to(log):  # the pool's queues start multiprocessing's resource tracker, which outlives us
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_send_output_to, initargs=(str(log),))
    with pool:
        try:
            yield pool
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            stop_child_processes()  # the runs in flight (Dagster marks them failed) and the local dask workers
            raise
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # a failed range starts no more runs; those in flight end
            raise


def _send_output_to(log: str) -> None:
    from orchestration.executors import point_output_at

    point_output_at(log)


class RunFailed(RuntimeError):
    """A Dagster run whose steps ran in other processes failed; the message names the step and its error."""


def execute_job_run(name: str, run_config: dict, tags: dict) -> tuple[str, str | None]:
    """Run a job of `defs` on the configured executor (steps in other processes): (run id, None) or
    (run id, one line naming the first failed step and its error). Importable, so that a spawned process
    can run it."""
    import dagster as dg

    from orchestration.executors import reconstructable_job

    with dg.execute_job(reconstructable_job(name), instance=dg.DagsterInstance.get(), run_config=run_config,
                        tags=tags) as result:
        return result.run_id, None if result.success else _first_failure(result, name)


def _first_failure(result, job_name: str) -> str:
    """The first failed step's error, else the error of the run itself (the executor failed), in one line."""
    for event in result.all_events:
        if event.is_step_failure:
            return f"{job_name} step {event.step_key} failed: {_innermost(event.step_failure_data.error)}"
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            return f"{job_name} run failed: {_innermost(error)}"
    return f"{job_name} run {result.run_id} failed (see the Dagster UI)"


def _innermost(error) -> str:
    while error.cause is not None:
        error = error.cause
    return f"{error.cls_name}: {one_line(error.message).removeprefix(f'{error.cls_name}: ')}"


def one_line(text: str) -> str:
    """The first non-empty line of an error message (every failure is one line on the terminal)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


class StoredRun:
    """A finished run read back from the Dagster instance (it ran in another process)."""

    def __init__(self, instance, run_id: str):
        self.instance, self.run_id = instance, run_id

    @classmethod
    def checked(cls, instance, run_id: str, failure: str | None) -> "StoredRun":
        if failure:
            raise RunFailed(failure)
        return cls(instance, run_id)

    def get_asset_check_evaluations(self) -> list:
        from dagster import DagsterEventType

        return [entry.dagster_event.event_specific_data for entry in
                self.instance.all_logs(self.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)]


def _stop_if_interrupted() -> None:
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


def run_training_job(console: Console, seconds: float | None = None):
    """Train, validate and publish through Dagster (training_job), in-process; `seconds` overrides the
    budget of KFS_TRAIN_SECONDS for this run (it travels as run config, visible in the UI)."""
    ensure_dagster_home()
    import dagster as dg

    from orchestration.definitions import defs

    run_config = dict(QUIET_RUN)
    if seconds is not None:
        run_config["ops"] = {"trained_policy": {"config": {"seconds": float(seconds)}}}
    from orchestration.recovery import local_run_tags

    with console.status("training, validating and publishing the policy", spinner="dots"):
        return defs.resolve_job_def("training_job").execute_in_process(
            instance=dg.DagsterInstance.get(), run_config=run_config, tags=local_run_tags())


def failed_checks(results: list) -> tuple[list, list]:
    """(errors, warnings): failed checks by severity. Errors fail a command; warnings are printed."""
    failed = [c for r in results for c in r.get_asset_check_evaluations() if not c.passed]
    errors = [c for c in failed if c.severity.value != "WARN"]
    return errors, [c for c in failed if c.severity.value == "WARN"]


def child_pids(pid: int | None = None) -> list[int]:
    """Processes whose parent is `pid` (default: this process), from /proc."""
    import os
    from pathlib import Path

    pid = os.getpid() if pid is None else pid
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def stop_child_processes(grace_s: float = 5.0) -> None:
    """SIGTERM every child process (dbt, a benchmark), SIGKILL what is left after `grace_s`. The embedded
    PostgreSQL is not a child: pg_ctl detaches it."""
    import os
    import signal
    import time

    children = child_pids()
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in children):
        time.sleep(0.1)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
