"""The Dagster instance of a checkout: `$DAGSTER_HOME/dagster.yaml`, written from the project's `dagster.yaml`
and the settings.

`local` keeps Dagster's run, event-log and schedule storage in SQLite under DAGSTER_HOME. `prod` keeps it in
PostgreSQL (`dagster-postgres`; `KFS_DAGSTER_PG_DSN`, else `KFS_PG_DSN`), which every process of a run can
reach: multiprocess children, dask workers on other machines, the daemon and the UI. The connection URL is
never written to the file: the file names the environment variable `DAGSTER_PG_URL`, which `export_storage_url`
sets for this process and its children (set it yourself for `dagster dev` or a worker started by hand).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from core.settings import Settings, settings

PROJECT_CONFIG = Path(__file__).resolve().parent.parent / "dagster.yaml"
STORAGE_URL_VARIABLE = "DAGSTER_PG_URL"
_POSTGRES_STORAGE = f"""
# KFS_ENV=prod: run, event-log and schedule storage in PostgreSQL (the URL comes from the environment)
storage:
  postgres:
    postgres_url:
      env: {STORAGE_URL_VARIABLE}
"""


def instance_yaml(current: Settings) -> str:
    config = PROJECT_CONFIG.read_text()
    return config + _POSTGRES_STORAGE if current.dagster_storage_dsn else config


def postgres_url(dsn: str) -> str:
    """A SQLAlchemy URL (what dagster-postgres takes) for a libpq DSN in either form."""
    from psycopg import conninfo

    params = conninfo.conninfo_to_dict(dsn)
    user = quote(str(params.pop("user", "")), safe="")
    password = params.pop("password", None)
    credentials = f"{user}:{quote(str(password), safe='')}@" if password is not None else (f"{user}@" if user else "")
    host = str(params.pop("host", "127.0.0.1"))
    port = params.pop("port", None)
    database = quote(str(params.pop("dbname", "postgres")), safe="")
    query = "&".join(f"{key}={quote(str(value), safe='')}" for key, value in sorted(params.items()))
    # psycopg2, the driver dagster-postgres is written for (SQLAlchemy 2.1 would pick psycopg 3 for
    # postgresql://, on which some of its statements fail)
    return f"postgresql+psycopg2://{credentials}{host}{f':{port}' if port else ''}/{database}{'?' + query if query else ''}"


def export_storage_url(current: Settings) -> None:
    if current.dagster_storage_dsn:
        os.environ[STORAGE_URL_VARIABLE] = postgres_url(current.dagster_storage_dsn)


def write_instance_config(home: Path, current: Settings | None = None) -> Path:
    """`home/dagster.yaml` for the current settings (rewritten only when it changes)."""
    from core.catalog import write_bytes_atomic

    current = current or settings()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    wanted = instance_yaml(current)
    if not target.exists() or target.read_text() != wanted:
        write_bytes_atomic(target, wanted.encode())
    export_storage_url(current)
    return target


if __name__ == "__main__":  # `make dev`: the instance configuration of DAGSTER_HOME (default .kfs/dagster)
    print(write_instance_config(Path(os.environ.get("DAGSTER_HOME") or settings().dagster_home)))
