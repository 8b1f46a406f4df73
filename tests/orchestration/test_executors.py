"""Scale-out on one machine, against real servers: Dagster storage in the embedded PostgreSQL (`KFS_ENV=prod`),
steps on a local dask.distributed cluster (scheduler and worker processes over TCP) and on Dagster's
multiprocess executor; the lake they build equals an in-process run's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import psycopg
import pytest
from psycopg import conninfo

from core.catalog import Lake
from tests import run_once
from tests.conftest import REPO, source_environment
from tests.processes import cmdline, descendants


@pytest.fixture(scope="module")
def dagster_dsn(shared_server):
    """An empty database of this worker's for Dagster's own storage in `prod`."""
    return run_once.create_database(shared_server, f"dagster_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}")


def _materialize_command(small_universe, days, root: Path, **variables: str) -> tuple[list[str], dict]:
    """`kfs materialize` of `days` of the small universe, and the environment of only these variables."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("KFS_", "DAGSTER_"))}
    env.update(source_environment(small_universe["dsn"], small_universe["tables"], root))
    env.pop("KFS_WAREHOUSE")
    env.update(variables)
    return [sys.executable, "-m", "kfs.cli", "materialize", "--start", days[0].isoformat(),
            "--end", days[-1].isoformat()], env


def materialize(small_universe, days, root: Path, **variables: str) -> subprocess.CompletedProcess:
    """`kfs materialize` of `days` of the small universe, in a process of its own, with only these variables."""
    command, env = _materialize_command(small_universe, days, root, **variables)
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)


def lake_contents(lake: Lake) -> dict[str, object]:
    """Raw partitions by bytes (writes are deterministic); the feature store and marts by value."""
    contents: dict[str, object] = {}
    for stream in ("snapshots", "deltas", "trades"):
        for day in lake.partitions(stream):
            path = lake.raw_partition(stream, day)
            contents[f"raw/{stream}/{day}"] = path.read_bytes()
    for day in lake.partitions("features_events"):
        contents[f"events/{day}"] = lake.read_parquet(lake.event_partition(day))
    for name in ("markets_mart", "split_registry", "market_categories"):
        contents[name] = lake.read_parquet(lake.location(name))
    return contents


def assert_same_lake(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        if isinstance(value, pl.DataFrame):
            assert value.equals(actual[key]), key
        else:
            assert value == actual[key], key


@pytest.fixture(scope="module")
def in_process_lake(small_lake):
    """The in-process reference: the shared nightly build of the same days (the same steps, one after another)."""
    return lake_contents(small_lake)


@pytest.mark.slow
def test_a_backfill_on_a_dask_cluster_with_postgres_storage_and_an_s3_lake_equals_in_process(
        small_universe, nightly_days, in_process_lake, dagster_dsn, s3_lake, tmp_path):
    done = materialize(small_universe, nightly_days, tmp_path, KFS_ENV="prod", KFS_EXECUTOR="dask", KFS_WORKERS="2",
                       KFS_DAGSTER_PG_DSN=dagster_dsn, KFS_LAKE=s3_lake)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "lake").exists()
    assert_same_lake(in_process_lake, lake_contents(Lake(s3_lake)))
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in done.stdout + done.stderr

    # Dagster's storage is in PostgreSQL, not SQLite, and never holds the password
    home = tmp_path / "home" / "dagster"
    assert not list(home.rglob("*.db")), list(home.rglob("*.db"))
    password = conninfo.conninfo_to_dict(dagster_dsn).get("password")
    assert password is None or password not in (home / "dagster.yaml").read_text()
    with psycopg.connect(dagster_dsn) as conn:
        runs = dict(conn.execute("SELECT pipeline_name, count(*) FROM runs GROUP BY 1").fetchall())
        assert runs == {"ingest_job": len(nightly_days), "markets_job": 1, "feature_store_job": 1}
        assert conn.execute("SELECT count(*) FROM runs WHERE status <> 'SUCCESS'").fetchone()[0] == 0
        # steps ran in the cluster's worker processes: at least two of them, none of them the command itself
        step_pids = {row[0] for row in conn.execute(
            "SELECT DISTINCT (event::json -> 'dagster_event' ->> 'pid')::int FROM event_logs "
            "WHERE dagster_event_type = 'STEP_START'")}
        run_pids = {row[0] for row in conn.execute(
            "SELECT DISTINCT (event::json -> 'dagster_event' ->> 'pid')::int FROM event_logs "
            "WHERE dagster_event_type = 'RUN_START'")}
    assert len(step_pids) >= 2 and not step_pids & run_pids, (step_pids, run_pids)


@pytest.mark.slow
def test_a_backfill_on_the_multiprocess_executor_equals_in_process(small_universe, nightly_days, in_process_lake,
                                                                    tmp_path):
    done = materialize(small_universe, nightly_days, tmp_path, KFS_EXECUTOR="multiprocess", KFS_WORKERS="2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_lake(in_process_lake, lake_contents(Lake(tmp_path / "lake")))


def test_a_failed_step_on_a_worker_is_one_line(small_universe, nightly_days, tmp_path):
    (tmp_path / "lake" / "raw").mkdir(parents=True)
    (tmp_path / "lake" / "raw" / "trades").write_text("a file where a folder should be")  # the trades step fails
    done = materialize(small_universe, nightly_days[1:2], tmp_path, KFS_EXECUTOR="multiprocess")
    assert done.returncode == 1, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-4000:]
    [line] = lines
    assert line.startswith("kfs: error: RunFailed: ingest_job step raw_trades failed: NotADirectoryError"), line
    assert "Traceback" not in done.stderr, done.stderr


def test_a_bad_scheduler_address_is_one_line(small_universe, nightly_days, tmp_path):
    done = materialize(small_universe, nightly_days, tmp_path, KFS_EXECUTOR="dask", KFS_DASK_SCHEDULER="localhost:8786")
    assert done.returncode == 2 and "KFS_DASK_SCHEDULER must be a scheduler address" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_dask_materialize_killed_with_sigkill_leaves_no_process_behind(small_universe, nightly_days, tmp_path):
    import time

    command, env = _materialize_command(small_universe, nightly_days, tmp_path, KFS_EXECUTOR="dask", KFS_WORKERS="2")
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    seen: set[int] = set()
    try:
        # the moment of F8 (issue 28): two dask workers and two run processes (all spawned) are up, runs started
        while sum("spawn_main" in cmdline(p) for p in seen) < 4:
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before the moment to kill it"
            seen.update(descendants(process.pid))
            time.sleep(0.2)
        time.sleep(3)
        seen.update(descendants(process.pid))
    finally:
        process.kill()
        process.wait(30)
    deadline = time.monotonic() + 60
    while (alive := [p for p in seen if Path(f"/proc/{p}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert alive == [], f"{len(alive)} of {len(seen)} processes outlived the killed command"

