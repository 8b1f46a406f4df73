"""Recovery from killed runs: a run whose process is gone gives its pool slots back and is marked failed.

Dagster pools (`dagster.yaml`) hand out slots per step; a run killed with SIGKILL never returns them, and
every later run would wait for the slot forever. Every Dagster event records the pid of the process that
wrote it, so a run that is still `STARTED` while no process that wrote its events is alive on this machine
(or the pid now belongs to a process started after the run) is dead: `reclaim_dead_runs` frees its slots
and reports it failed. `kfs materialize` calls it before it starts, and the sensor below while the Dagster
daemon runs (`make dev`). Only runs that ran on this machine are judged: those kfs tagged with this host,
and, with the local run launcher, runs the UI or the schedule launched. Runs of a cluster's launcher are left
to Dagster's own run monitoring.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import dagster as dg
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.storage.dagster_run import DagsterRunStatus

HOST_TAG = "kfs/host"
ACTIVE = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
NO_EVENTS_GRACE_S = 300


def local_run_tags() -> dict[str, str]:
    """Tags of runs launched by kfs on this machine (the ones reclaim may judge)."""
    return {HOST_TAG: socket.gethostname()}


def _boot_time() -> float:
    with open("/proc/stat") as handle:
        for line in handle:
            if line.startswith("btime"):
                return float(line.split()[1])
    return 0.0


def process_start_time(pid: int) -> float | None:
    """Epoch seconds at which `pid` started, or None when no such process exists."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_alive_since(pid: int, run_start: float) -> bool:
    started = process_start_time(pid)
    return started is not None and started <= run_start + 1.0


@dataclass
class Reclaimed:
    run_id: str
    job_name: str
    pids: list[int]


def _run_pids(instance: dg.DagsterInstance, run_id: str) -> set[int]:
    records = instance.all_logs(run_id)
    return {r.dagster_event.pid for r in records if r.dagster_event is not None and r.dagster_event.pid}


def reclaim_dead_runs(instance: dg.DagsterInstance) -> list[Reclaimed]:
    host = socket.gethostname()
    local_launcher = isinstance(instance.run_launcher, DefaultRunLauncher)
    reclaimed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE)):
        if run.tags.get(HOST_TAG, host if local_launcher else None) != host:
            continue
        record = instance.get_run_record_by_id(run.run_id)
        started = (record.start_time or record.create_timestamp.timestamp()) if record else time.time()
        pids = _run_pids(instance, run.run_id)
        if not pids and time.time() - started < NO_EVENTS_GRACE_S:
            continue  # just created: its process has not written an event yet
        if os.getpid() in pids or any(process_alive_since(pid, started) for pid in pids):
            continue
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        instance.report_run_failed(run, message=f"the run's process ({sorted(pids) or 'unknown'}) is gone, killed "
                                                "before it finished; its pool slots were freed")
        reclaimed.append(Reclaimed(run.run_id, run.job_name, sorted(pids)))
    return reclaimed


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Frees the pool slots of runs whose process was killed and marks those runs failed.")
def dead_run_reclaimer(context: dg.SensorEvaluationContext):
    reclaimed = reclaim_dead_runs(context.instance)
    for run in reclaimed:
        context.log.warning(f"reclaimed dead run {run.run_id} ({run.job_name}, pids {run.pids})")
    return dg.SkipReason(f"reclaimed {len(reclaimed)} dead run(s)")
