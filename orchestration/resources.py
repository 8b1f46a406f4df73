"""Dagster resources. The DSN is read from the environment when a run needs it and is never part of
run config, so it cannot show up in the UI, run records or asset metadata."""


import dagster as dg

from ingest.db import resolve_dsn
from kfs.config import SourceTables
from kfs.lake import Lake


class SourceDatabase(dg.ConfigurableResource):
    """The recorder's PostgreSQL: `KFS_PG_DSN`, or the embedded server when it is unset."""

    def dsn(self) -> str:
        return resolve_dsn()

    def tables(self) -> SourceTables:
        return SourceTables.from_env()


class LakeResource(dg.ConfigurableResource):
    """Root of the parquet lake; empty means `KFS_LAKE` (default ./lake)."""

    root: str = ""

    def lake(self) -> Lake:
        return Lake(self.root or None)


def resources_for(env: str) -> dict:
    # local and prod differ only in where configuration comes from today (environment variables);
    # the dict is the one place to add e.g. an object-store lake for prod.
    resources_by_env = {
        "local": {"source_db": SourceDatabase(), "lake": LakeResource()},
        "prod": {"source_db": SourceDatabase(), "lake": LakeResource()},
    }
    if env not in resources_by_env:
        raise ValueError(f"KFS_ENV must be one of {sorted(resources_by_env)}, got {env!r}")
    return resources_by_env[env]
