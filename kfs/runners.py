"""What the `kfs` commands and `make demo` run: simulation, materialization and training through Dagster.

Plain functions over the layers below; the command line (`kfs.cli`) parses arguments and prints,
the demo (`kfs.demo`) strings these together.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from core.catalog import Lake
from core.locks import exclusive, exclusive_or_refuse
from core.postgres import SourceUnavailable, connect, connection, describe_dsn, table_identifier
from core.settings import SourceTables, settings
from kfs.console import CONSOLE_WIDTH, UsageError, one_line
from kfs.interrupts import end_with_parent, stop_child_processes, stop_if_interrupted
from orchestration.definitions import defs
from orchestration.executors import (
    dask_scheduler,
    executor_run_config,
    output_to,
    point_output_at,
    reconstructable_job,
)
from orchestration.instance import write_instance_config
from orchestration.partitions import partition_range_tags
from orchestration.recovery import local_run_tags, reclaim_dead_runs
from source.pg_server import source_dsn


def private_folder(folder: Path) -> Path:
    """`folder`, created or narrowed to its owner: the logs, Dagster's storage and the warehouse hold queries,
    row values and run configuration that other users of the machine have no business reading."""
    folder.mkdir(parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077 and folder.stat().st_uid == os.getuid():
        folder.chmod(0o700)
    return folder


def _owner_only(path: Path) -> None:
    if path.exists() and path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
        path.chmod(0o600)


def ensure_dagster_home() -> None:
    """DAGSTER_HOME (default $KFS_HOME/dagster) with the instance configuration of the settings (SQLite
    storage locally, PostgreSQL in `prod`: orchestration/instance.py)."""

    storage = settings().dagster_storage_dsn
    if storage:   # `prod`: Dagster's storage in PostgreSQL; unreachable is one line naming the variable
        try:
            connect(storage).close()
        except SourceUnavailable as error:
            raise UsageError(f"Dagster's storage (KFS_DAGSTER_PG_DSN, else KFS_PG_DSN): {error}") from None
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(settings().dagster_home)
    home = private_folder(Path(os.environ["DAGSTER_HOME"]))
    with exclusive("dagster_instance"):  # two first runs at once must not both create the storage
        write_instance_config(home)
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


def check_warehouse(path: Path) -> None:
    """A warehouse DuckDB cannot open (damaged, truncated, not DuckDB) stops the run before dbt, with the fix: it
    holds only dbt's views over the lake, so deleting it loses nothing and the run rebuilds it."""
    import duckdb

    if not path.exists():
        return
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.Error as error:
        text = one_line(str(error))
        if "lock" in text.lower():   # another run has it open: the pools order the writers, nothing is damaged
            return
        raise UsageError(f"the warehouse {path} cannot be opened ({text}); it holds only dbt's views over the lake: "
                         f"delete it (rm {path}) and rerun, which rebuilds it") from None


def check_source_tables(dsn: str, tables: SourceTables) -> None:
    """Every configured source table exists: a one-line error naming the table and its variable otherwise."""
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
    check_partition_range(start, end, datetime.now(timezone.utc).date())
    Lake().check_reachable()
    if "ingest" in stages:
        check_source_tables(source_dsn(), settings().tables)
    if "features" in stages:
        check_warehouse(settings().warehouse)
    ensure_dagster_home()

    instance = dg.DagsterInstance.get()
    terminal = console or Console(file=sys.stdout, soft_wrap=True, width=CONSOLE_WIDTH)
    for run in reclaim_dead_runs(instance):
        terminal.print(f"reclaimed the pool slots of run {run.run_id} ({run.job_name}): its process {run.pids} is gone")
    tags = local_run_tags()
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    steps = (len(days) + 1 if "ingest" in stages else 0) + (1 if "features" in stages else 0)
    # dagster-dbt echoes every dbt log line to stdout; keep the terminal to the progress bar and the
    # summary, and the dbt lines in a log file (the Dagster UI has them too, per run).
    dbt_log = private_folder(settings().home / "logs") / "dbt.log"
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
                stop_if_interrupted()
                progress.update(task, description=f"ingesting {day}")
                results.append(ingest_job.execute_in_process(partition_key=day.isoformat(), instance=instance,
                                                             run_config=QUIET_RUN, tags=tags))
                progress.advance(task)
            progress.update(task, description="ingesting markets")
            results.append(defs.resolve_job_def("markets_job").execute_in_process(instance=instance, run_config=QUIET_RUN,
                                                                                  tags=tags))
            progress.advance(task)
        if "features" in stages:
            stop_if_interrupted()
            progress.update(task, description=f"feature store {start} .. {end} (replay, features, dbt, split)")
            with dbt_log.open("a") as log, contextlib.redirect_stdout(log):
                results.append(defs.resolve_job_def("feature_store_job").execute_in_process(
                    instance=instance, run_config=QUIET_RUN,
                    tags={**tags, **partition_range_tags(start, end)}))
            _owner_only(settings().warehouse)
            progress.advance(task)
    return results


def _materialize_distributed(instance, days: list[date], stages: tuple[str, ...], tags: dict, progress, task,
                             dbt_log) -> list:
    """`materialize_range` on the multiprocess or dask executor: up to KFS_WORKERS daily ingest runs at once,
    each run's steps on the executor's workers, then the markets run and the feature-store run (see
    orchestration/executors.py for where steps execute and why DuckDB keeps one writer). Dagster runs are
    not thread-safe within one process (each configures logging), so concurrent runs start from a pool of
    spawned processes; their steps go to the executor's workers."""

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
                stop_if_interrupted()
                results.append(StoredRun.checked(instance, *done.result()))
                progress.advance(task)
            progress.update(task, description="ingesting markets")
            results.append(run("markets_job", tags))
            progress.advance(task)
        if "features" in stages:
            stop_if_interrupted()
            progress.update(task, description=f"feature store {days[0]} .. {days[-1]} ({current.executor})")
            results.append(run("feature_store_job", {**tags, **partition_range_tags(days[0], days[-1])}))
            progress.advance(task)
    return results


@contextlib.contextmanager
def _run_processes(workers: int, log):
    """Spawned processes that each execute one run at a time. Their output and their step processes' (Dagster's
    engine lines, dbt's log) goes to `log`; the terminal keeps the progress bar and one-line errors."""

    with output_to(log):  # the pool's queues start multiprocessing's resource tracker, which outlives us
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_run_process, initargs=(str(log), os.getpid()))
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


def _start_run_process(log: str, parent_pid: int) -> None:
    """A run process: its output to `log`, and it ends when `kfs` does, even killed with SIGKILL."""
    end_with_parent(parent_pid)
    point_output_at(log)


class RunFailed(RuntimeError):
    """A Dagster run whose steps ran in other processes failed; the message names the step and its error."""


def execute_job_run(name: str, run_config: dict, tags: dict) -> tuple[str, str | None]:
    """Run a job of `defs` on the configured executor (steps in other processes): (run id, None) or
    (run id, one line naming the first failed step and its error). Importable, so that a spawned process
    can run it."""

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
        return [entry.dagster_event.event_specific_data for entry in
                self.instance.all_logs(self.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]


def run_training_job(console: Console, profile: str = "nightly", seconds: float | None = None,
                     steps: int | None = None):
    """Train, validate and publish through Dagster (training_job), in-process, with a training profile; `steps`
    and `seconds` override KFS_TRAIN_STEPS and KFS_TRAIN_SECONDS for this run (they travel as run config,
    visible in the UI)."""
    ensure_dagster_home()

    overrides = {key: value for key, value in (("steps", steps), ("seconds", seconds)) if value is not None}
    run_config = {**QUIET_RUN, "ops": {"trained_policy": {"config": {"profile": profile, **overrides}}}}
    # Two runs would write the same candidate (models/candidates/latest) and validate each other's: one at a time.
    with exclusive_or_refuse(Lake().training_lock(), "a `kfs train` on this lake"), \
            console.status(f"training ({profile} profile), validating and publishing the policy", spinner="dots"):
        return defs.resolve_job_def("training_job").execute_in_process(
            instance=dg.DagsterInstance.get(), run_config=run_config, tags=local_run_tags())


