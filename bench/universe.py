"""Simulated universes for the benchmarks, in their own PostgreSQL schema and a temporary lake.

A benchmark that needs a feature store builds it here (from a fresh clone: `make bench` needs nothing
else) with the same helper the tests use (kfs/universe.py): simulate into PostgreSQL, ingest every day, run
`feature_store_job`.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.catalog import Lake
from kfs.universe import build_universe, drop_schema
from source.pg_server import source_dsn
from source.simulator import SimulationConfig


@contextmanager
def feature_store(config: SimulationConfig, schema: str) -> Iterator[Lake]:
    """A complete feature store (raw lake, features, dbt marts, split) of `config`, removed afterwards."""
    with feature_store_at(source_dsn(), config, schema) as lake:
        yield lake


@contextmanager
def feature_store_at(dsn: str, config: SimulationConfig, schema: str) -> Iterator[Lake]:
    """`feature_store` on the PostgreSQL server at `dsn`."""
    root = Path(tempfile.mkdtemp(prefix=f"kfs-{schema}-"))
    try:
        lake, run = build_universe(dsn, schema, config, root)
        assert run.success, run.failed_checks()
        yield lake
    finally:
        shutil.rmtree(root, ignore_errors=True)
        drop_schema(dsn, schema)
