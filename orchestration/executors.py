"""Where a run's steps execute (`KFS_EXECUTOR`), and the reconstructable jobs that other processes load.

- `in_process`: `kfs materialize` runs each job in its own process, one day after another (the default;
  Dagster's UI and schedule launch runs with Dagster's default executor, in or out of process).
- `multiprocess`: Dagster's multiprocess executor; every step in a child process (forked from a server that
  loaded the definitions once), at most `KFS_WORKERS` at a time per run, and `KFS_WORKERS` daily runs at once.
- `dask`: `dagster-dask`; every step is a task on a `dask.distributed` cluster (`KFS_DASK_SCHEDULER`, or a
  local cluster of `KFS_WORKERS` worker processes started for the command), and `KFS_WORKERS` daily runs
  at once share it. Workers load the job from this repository (`orchestration.definitions:defs`) and the
  Dagster instance from its reference, so they need the same code, settings and storage: on a real cluster
  the worker image, the `KFS_*`/AWS variables and PostgreSQL-backed Dagster storage (`KFS_ENV=prod`).

DuckDB's single-writer rule: only dbt steps open the warehouse, they share the `duckdb` pool (one slot), and
`kfs materialize` runs the feature-store job (the only one with dbt steps) once, after every ingest run, so
two writers never meet whichever executor runs the steps. (dagster-dask does not consult Dagster's pools.)
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import dagster as dg

from core.settings import Settings

REPOSITORY_MODULE = "orchestration.definitions"


def executor_definition(kind: str) -> dg.ExecutorDefinition:
    """The executor every job of `defs` uses."""
    if kind == "multiprocess":
        return dg.multiprocess_executor
    if kind == "dask":
        return dask_executor
    return dg.multi_or_in_process_executor


def executor_run_config(current: Settings, scheduler: str | None) -> dict:
    """The `execution` section of a run's config for the chosen executor."""
    if current.executor == "multiprocess":
        # Step processes fork from a server that has imported the definitions once, instead of each importing
        # Dagster, dbt and the assets again (8 s a step here). The module is named: without it Dagster preloads
        # only its executor module, because the job is rebuilt from a repository, not from a module.
        forkserver = {"forkserver": {"preload_modules": [REPOSITORY_MODULE]}}
        return {"execution": {"config": {"max_concurrent": current.workers, "start_method": forkserver}}}
    if current.executor == "dask":
        return {"execution": {"config": {"address": scheduler}}}
    return {}


# -- dask ------------------------------------------------------------------------------------------
# dagster-dask 0.29 (the release for Dagster 1.13) runs each step on a worker with its
# `query_on_dask_worker`, which we reuse; its executor loop has two faults we cannot configure away:
# - it passes the run record to `client.submit`, and dask's argument parsing iterates it, which Dagster 1.13's
#   records refuse ("Iteration is not allowed on `@record` RunOpConcurrency"): every run fails at once;
# - its task keys are `job.step`, so two runs of one job on a shared cluster get the same keys and dask hands
#   the second run the first run's finished task: its steps are reported done without running
#   (dagster-io/dagster#21418). Daily ingest runs are exactly that.
# So the loop below submits the same worker function with the arguments pickled and run-scoped keys.

@dg.executor(name="dask", requirements=dg.multiple_process_executor_requirements(),
             config_schema={"address": dg.Field(dg.StringSource, description="tcp://host:port of the scheduler")})
def dask_executor(init_context):
    """Every step is a task on the dask.distributed cluster at `address` (see the note above)."""
    return RunScopedDaskExecutor(init_context.executor_config["address"])


class RunScopedDaskExecutor(dg.Executor):
    def __init__(self, address: str):
        self.address = address

    @property
    def retries(self):
        from dagster._core.execution.retries import RetryMode

        return RetryMode.DISABLED

    def execute(self, plan_context, execution_plan):
        import cloudpickle
        import dask.distributed
        from dagster._core.errors import raise_execution_interrupts
        from dagster._utils import iterate_with_context
        from dagster_dask.executor import get_dask_resource_requirements

        run = plan_context.dagster_run
        instance_ref = plan_context.instance.get_ref()
        with dask.distributed.Client(self.address) as client:
            futures = {}
            for level in execution_plan.get_steps_to_execute_by_level():
                for step in level:
                    # waiting on the upstream futures is how dask orders the steps
                    upstream = [futures[key] for step_input in step.step_inputs for key in step_input.dependency_keys]
                    arguments = cloudpickle.dumps((plan_context.reconstructable_job, run, plan_context.run_config,
                                                   [step.key], instance_ref, execution_plan.known_state))
                    futures[step.key] = client.submit(
                        run_pickled_step, upstream, arguments, key=f"{run.job_name}.{step.key}.{run.run_id}",
                        pure=False, resources=get_dask_resource_requirements(step.tags))
            done = dask.distributed.as_completed(list(futures.values()), with_results=True)
            for _, events in iterate_with_context(raise_execution_interrupts, done):
                yield from events


def run_pickled_step(upstream: list, arguments: bytes) -> list:
    """On a dask worker: dagster-dask's step function with the arguments unpickled."""
    import cloudpickle
    from dagster_dask.executor import query_on_dask_worker

    return query_on_dask_worker(upstream, *cloudpickle.loads(arguments))


@contextlib.contextmanager
def dask_scheduler(current: Settings, log: Path) -> Iterator[str | None]:
    """The scheduler address for `KFS_EXECUTOR=dask`: `KFS_DASK_SCHEDULER`, or a local cluster of
    `KFS_WORKERS` worker processes (one thread each: Dagster steps are not thread-safe) that lives as long
    as the block, its workers' output (dbt's log, Dagster's engine lines) in `log`. None for the other
    executors."""
    if current.executor != "dask":
        yield None
        return
    if current.dask_scheduler:
        yield current.dask_scheduler
        return
    import logging

    from dask.distributed import LocalCluster

    # The scheduler and nannies live in this process and log to its stderr (a worker lost at an interrupt is
    # a traceback); the terminal keeps the progress bar and one-line errors.
    for name in ["distributed", *logging.Logger.manager.loggerDict]:
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    with output_to(log):  # the worker processes inherit the descriptors they start with
        cluster = LocalCluster(n_workers=current.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, host="127.0.0.1")
    with cluster:
        yield cluster.scheduler_address


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Point this process's stdout and stderr descriptors at `log` for the block: processes started in it
    (dask workers, multiprocessing's resource tracker) keep writing there."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        point_output_at(log)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def point_output_at(log: Path | str) -> None:
    """This process's stdout and stderr descriptors write to `log` from now on (appended, owner-only)."""
    import os

    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)


def reconstructable_job(name: str):
    """A job other processes can rebuild from this repository (multiprocess children, dask workers)."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    return ReconstructableRepository.for_module(REPOSITORY_MODULE, "defs").get_reconstructable_job(name)
