"""A simulated universe end to end, for tests, benchmarks and the quality runs: simulated into its own
PostgreSQL schema, every day ingested into a lake, and the feature store built by `feature_store_job`.

The one way to make a feature store from a `SimulationConfig` outside a deployment; the demo and the nightly
schedule go through `kfs.runners` and Dagster's instance instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import psycopg
from psycopg import sql

from core.catalog import Lake
from core.settings import SourceTables, environment_overrides
from ingest.extract import ingest_markets, ingest_partition
from ingest.streams import PARTITIONED_STREAMS
from orchestration.definitions import defs
from orchestration.partitions import partition_range_tags
from source.ddl import create_source_tables, drop_source_tables
from source.simulator import SimulationConfig, SimulationSummary, simulate


def schema_tables(schema: str) -> SourceTables:
    """The recorder's tables inside `schema`."""
    return SourceTables(**{name: f"{schema}.{table}" for name, table in SourceTables().__dict__.items()})


def simulate_into(dsn: str, schema: str, config: SimulationConfig) -> tuple[SourceTables, SimulationSummary]:
    """`config` simulated into fresh source tables in `schema` (created if missing, emptied if there)."""
    tables = schema_tables(schema)
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        drop_source_tables(conn, tables)
        create_source_tables(conn, tables)
        summary = simulate(conn, tables, config, first_session_id=1)
        conn.execute("ANALYZE")
    return tables, summary


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def universe_days(config: SimulationConfig, extra_days: int = 1) -> list[date]:
    """The days a universe's events fall on: its `days`, and `extra_days` after them (the last markets'
    final events spill past midnight)."""
    return [config.start + timedelta(days=i) for i in range(config.days + extra_days)]


def ingest_days(dsn: str, tables: SourceTables, lake: Lake, days: list[date]) -> None:
    """Every stream of every day, then the markets, into `lake`."""
    for day in days:
        for stream in PARTITIONED_STREAMS:
            ingest_partition(dsn, stream, day, lake, tables)
    ingest_markets(dsn, lake, tables)


@dataclass(frozen=True)
class CheckRecord:
    asset: str
    name: str
    passed: bool
    severity: str


@dataclass(frozen=True)
class RunRecord:
    """What a finished in-process Dagster run did, in plain values (it outlives the run and its process)."""

    success: bool
    materialized: tuple[str, ...]
    checks: tuple[CheckRecord, ...]

    @classmethod
    def of(cls, result) -> "RunRecord":
        return cls(result.success,
                   tuple(sorted({m.asset_key.to_user_string() for m in result.get_asset_materialization_events()})),
                   tuple(CheckRecord(c.asset_key.to_user_string(), c.check_name, c.passed, c.severity.value)
                         for c in result.get_asset_check_evaluations()))

    def failed_checks(self) -> list[tuple[str, str]]:
        return [(c.asset, c.name) for c in self.checks if not c.passed]

    def as_dict(self) -> dict:
        return {"success": self.success, "materialized": list(self.materialized),
                "checks": [c.__dict__ for c in self.checks]}

    @classmethod
    def from_dict(cls, saved: dict) -> "RunRecord":
        return cls(saved["success"], tuple(saved["materialized"]), tuple(CheckRecord(**c) for c in saved["checks"]))


def build_feature_store(lake: Lake, warehouse: Path, days: list[date]) -> RunRecord:
    """`feature_store_job` over `days` (resolution history, features, dbt, split, marts) on `lake`, in
    process, with an ephemeral Dagster instance."""
    with environment_overrides(KFS_LAKE=str(lake.root), KFS_WAREHOUSE=str(warehouse)):
        result = defs.resolve_job_def("feature_store_job").execute_in_process(
            instance=dg.DagsterInstance.ephemeral(), tags=partition_range_tags(days[0], days[-1]))
    return RunRecord.of(result)


def build_universe(dsn: str, schema: str, config: SimulationConfig, root: Path) -> tuple[Lake, RunRecord]:
    """`config` simulated into `schema`, ingested into `root/lake` and built into its feature store
    (warehouse `root/warehouse.duckdb`)."""
    tables, _ = simulate_into(dsn, schema, config)
    lake = Lake(root / "lake")
    days = universe_days(config)
    ingest_days(dsn, tables, lake, days)
    return lake, build_feature_store(lake, root / "warehouse.duckdb", days)
