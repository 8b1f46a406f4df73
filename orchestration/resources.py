"""Dagster resources, one set per environment (`KFS_ENV`), and they really differ:

- `local`: the source is `KFS_PG_DSN` or, when unset, the embedded PostgreSQL under `KFS_HOME`, started
  on demand (development, tests, `make demo`);
- `prod`: the source is `KFS_PG_DSN` and nothing else; this code path never imports the embedded server.

The DSN is read from the settings when a run needs it and is never part of run config, so it cannot show
up in the UI, run records or asset metadata.
"""

import dagster as dg

from core.catalog import Lake
from core.postgres import SourceUnavailable
from core.settings import ENVIRONMENTS, SourceTables, settings


class SourceDatabase(dg.ConfigurableResource):
    """The recorder's PostgreSQL at `KFS_PG_DSN`."""

    def dsn(self) -> str:
        dsn = settings().pg_dsn
        if not dsn:
            raise SourceUnavailable("KFS_PG_DSN is not set: production reads the recorder's PostgreSQL only")
        return dsn

    def tables(self) -> SourceTables:
        return settings().tables


class LocalSourceDatabase(SourceDatabase):
    """`KFS_PG_DSN` if set, else the embedded PostgreSQL of this checkout (started on demand)."""

    def dsn(self) -> str:
        from source.pg_server import source_dsn

        return source_dsn()


class LakeResource(dg.ConfigurableResource):
    """Root of the parquet lake; empty means `KFS_LAKE` (default ./lake)."""

    root: str = ""

    def lake(self) -> Lake:
        return Lake(self.root or None)


RESOURCES_BY_ENV = {
    "local": lambda: {"source_db": LocalSourceDatabase(), "lake": LakeResource()},
    "prod": lambda: {"source_db": SourceDatabase(), "lake": LakeResource()},
}
assert set(RESOURCES_BY_ENV) == set(ENVIRONMENTS)


def resources_for(env: str) -> dict:
    return RESOURCES_BY_ENV[env]()
