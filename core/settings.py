"""Settings: the one place that reads `KFS_*` environment variables.

Every variable is declared once in `VARIABLES` (name, parser, default, meaning); `Settings.from_env()`
parses them into a frozen object, and the README's configuration table is generated from the same
declarations (`python -m core.settings`; a test fails when the README is stale). Everything else
asks `settings()` and never touches `os.environ` for a `KFS_` name.

Bad values fail with one line naming the variable, what it expects and what it got.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Callable, Iterator, Mapping

ENVIRONMENTS = ("local", "prod")
TRAIN_DEVICES = ("auto", "cpu", "cuda")
EXECUTORS = ("in_process", "multiprocess", "dask")


class SettingsError(ValueError):
    """A `KFS_*` variable has a value we cannot use; the message is one line."""


@dataclass(frozen=True)
class SourceTables:
    """Names of the recorder's tables. Upstream called the trades table `trades`; ours defaults to `rl_trades`."""

    snapshots: str = "rl_orderbook_snapshots"
    deltas: str = "rl_orderbook_deltas"
    trades: str = "rl_trades"
    markets: str = "markets"


@dataclass(frozen=True)
class Settings:
    env: str = "local"
    pg_dsn: str | None = field(default=None, repr=False)  # may hold a password: never printed
    lake: str = "lake"
    home: Path = Path(".kfs")
    warehouse: Path | None = None
    cache: Path | None = None
    partitions_start: date = date(2026, 1, 1)
    tables: SourceTables = SourceTables()
    quarantine_max_share: float = 0.01
    max_staleness_days: int = 2
    min_row_share: float = 0.3
    late_days: int = 2
    replay_lookback_days: int = 3
    train_seconds: float | None = None  # unset: the training profile's time limit
    train_steps: int | None = None      # unset: the training profile's PPO steps
    train_seed: int = 7
    train_device: str = "auto"
    mapped_mib: int = 256
    executor: str = "in_process"
    dask_scheduler: str | None = None
    workers: int = 2
    dagster_pg_dsn: str | None = field(default=None, repr=False)  # may hold a password: never printed
    model_key: str | None = field(default=None, repr=False)       # signs the model registry: never printed

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict = {}
        tables: dict = {}
        for variable in VARIABLES:
            raw = environ.get(variable.name)
            if raw is None or raw == "":
                continue
            value = variable.parse(variable.name, raw)
            if variable.field.startswith("tables."):
                tables[variable.field.split(".", 1)[1]] = value
            else:
                values[variable.field] = value
        settings = cls(**values, tables=replace(SourceTables(), **tables))
        return settings._resolved()

    def _resolved(self) -> "Settings":
        home = self.home.absolute()
        warehouse = (self.warehouse or home / "warehouse.duckdb").absolute()
        cache = (self.cache or home / "cache").absolute()
        lake = self.lake if "://" in self.lake else str(Path(self.lake).absolute())
        resolved = replace(self, home=home, warehouse=warehouse, cache=cache, lake=lake)
        if resolved.env == "prod" and not resolved.pg_dsn:
            raise SettingsError("KFS_ENV=prod needs KFS_PG_DSN: production never starts the embedded PostgreSQL")
        if resolved.dask_scheduler and not resolved.dask_scheduler.startswith(("tcp://", "tls://", "inproc://")):
            raise SettingsError(f"KFS_DASK_SCHEDULER must be a scheduler address like tcp://host:8786, "
                                f"got {resolved.dask_scheduler!r}")
        return resolved

    @property
    def dagster_storage_dsn(self) -> str | None:
        """PostgreSQL for Dagster's run, event and schedule storage in `prod` (None: SQLite under
        DAGSTER_HOME)."""
        if self.env != "prod":
            return None
        return self.dagster_pg_dsn or self.pg_dsn

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"


def settings() -> Settings:
    """The current settings (read fresh: tests and the CLI change the environment between calls)."""
    return Settings.from_env()


def ensure_private_home(current: Settings | None = None) -> Path:
    """KFS_HOME, created owner-only (0700) when it does not exist: it holds the embedded server's password,
    the model key, logs and locks. An existing folder keeps the mode its owner gave it."""
    home = (current or settings()).home
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home


@contextmanager
def environment_overrides(**values: str) -> Iterator[None]:
    """Set environment variables for a block and restore them after (a run against another lake, a
    benchmark's own universe, a test fixture that cannot use monkeypatch)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- declarations -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variable:
    name: str
    field: str
    parse: Callable[[str, str], object]
    meaning: str
    unset: str | None = None   # what an unset variable means, for fields whose default is None

    @property
    def default(self) -> str:
        """The documented default, read from the dataclasses' own defaults (never written twice)."""
        if self.field.startswith("tables."):
            value = getattr(SourceTables(), self.field.split(".", 1)[1])
        else:
            value = getattr(Settings(), self.field)
        if value is None:
            return f"unset: {self.unset}" if self.unset else "unset"
        shown = value.isoformat() if isinstance(value, date) else value
        return f"`{shown}`"


def _text(name: str, raw: str) -> str:
    return raw


def _dsn(name: str, raw: str) -> str:
    """A libpq connection string, checked here so that no later error can echo it (it may hold a password)."""
    from psycopg import ProgrammingError, conninfo

    try:
        conninfo.conninfo_to_dict(raw)
    except ProgrammingError:
        raise SettingsError(f"{name} is not a valid PostgreSQL connection string (expected "
                            "postgresql://user:password@host:port/dbname or 'host=... dbname=...'); "
                            "its value is not shown because it may hold a password") from None
    return raw


def _path(name: str, raw: str) -> Path:
    return Path(raw)


def _choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw not in options:
            raise SettingsError(f"{name} must be one of {', '.join(options)}, got {raw!r}")
        return raw
    return parse


def _number(kind: type, low: float | None = None, high: float | None = None) -> Callable[[str, str], object]:
    def parse(name: str, raw: str):
        try:
            value = kind(raw)
        except ValueError:
            raise SettingsError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise SettingsError(f"{name} must be a finite number, got {raw!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise SettingsError(f"{name} must be {bounds}, got {raw!r}")
        return value
    return parse


def _day(name: str, raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a date as YYYY-MM-DD, got {raw!r}") from None


def _table(name: str, raw: str) -> str:
    if raw.count(".") > 1 or raw.strip() != raw or any(not part for part in raw.split(".")):
        raise SettingsError(f"{name} must be 'table' or 'schema.table', got {raw!r}")
    return raw


def _key(name: str, raw: str) -> str:
    if len(raw) < 32:
        raise SettingsError(f"{name} must be a secret of at least 32 characters (e.g. `openssl rand -hex 32`), "
                            f"got {len(raw)}")
    return raw


def _lake(name: str, raw: str) -> str:
    scheme = raw.split("://", 1)[0] if "://" in raw else ""
    if scheme not in ("", "s3", "file"):
        raise SettingsError(f"{name} must be a local path or s3://bucket/prefix, got a {scheme}:// URL")
    if scheme == "file":
        return raw.split("://", 1)[1]
    if scheme == "s3" and not raw[5:].split("/", 1)[0]:
        raise SettingsError(f"{name} must name a bucket: s3://bucket/prefix, got {raw!r}")
    return raw.rstrip("/") if scheme else raw


VARIABLES: tuple[Variable, ...] = (
    Variable("KFS_ENV", "env", _choice(ENVIRONMENTS),
             "resource set: `local` (embedded PostgreSQL allowed, SQLite Dagster storage) or `prod` "
             "(requires `KFS_PG_DSN`, never starts a server, Dagster storage in PostgreSQL)"),
    Variable("KFS_PG_DSN", "pg_dsn", _dsn,
             "PostgreSQL with the recorder's tables; unset in `local`: the embedded server in `$KFS_HOME/pg`"),
    Variable("KFS_LAKE", "lake", _lake,
             "root of the parquet lake: a local path or `s3://bucket/prefix`"),
    Variable("KFS_HOME", "home", _path,
             "state of this checkout: embedded server, Dagster instance, locks, logs"),
    Variable("KFS_WAREHOUSE", "warehouse", _path,
             "DuckDB file that holds dbt's views",
             unset='`$KFS_HOME/warehouse.duckdb`'),
    Variable("KFS_CACHE", "cache", _path,
             "local disk for derived data: the memory-mapped training arrays (about 230 bytes per event, one "
             "version per lake)",
             unset='`$KFS_HOME/cache`'),
    Variable("KFS_PARTITIONS_START", "partitions_start", _day,
             "first daily partition; rows before it are quarantined as `invalid_timestamp`"),
    Variable("KFS_TABLE_SNAPSHOTS", "tables.snapshots", _table,
             "source table of book snapshots (`schema.table` allowed)"),
    Variable("KFS_TABLE_DELTAS", "tables.deltas", _table,
             "source table of book deltas"),
    Variable("KFS_TABLE_TRADES", "tables.trades", _table,
             "source table of public trades"),
    Variable("KFS_TABLE_MARKETS", "tables.markets", _table,
             "source table of market metadata"),
    Variable("KFS_QUARANTINE_MAX_SHARE", "quarantine_max_share", _number(float, 0.0, 1.0),
             "quarantined share above which the (warning) check fails"),
    Variable("KFS_MAX_STALENESS_DAYS", "max_staleness_days", _number(int, 0),
             "newest raw partition older than this: the freshness check fails"),
    Variable("KFS_MIN_ROW_SHARE", "min_row_share", _number(float, 0.0, 1.0),
             "newest partition below this share of the recent median: the freshness check warns"),
    Variable("KFS_LATE_DAYS", "late_days", _number(int, 0),
             "days before yesterday that the nightly run re-ingests"),
    Variable("KFS_REPLAY_LOOKBACK_DAYS", "replay_lookback_days", _number(int, 0),
             "earlier raw days read so that books and windows are complete at a range's first event"),
    Variable("KFS_TRAIN_SECONDS", "train_seconds", _number(float, 1.0),
             "a time limit on a training run, in seconds: a safety net that stops its stages where they are "
             "(the training summary says which it cut short)",
             unset="the training profile's limit (`kfs train --help`)"),
    Variable("KFS_TRAIN_STEPS", "train_steps", _number(int, 1),
             "PPO environment steps of a training run (every other stage is a fixed amount of work of the profile)",
             unset="the training profile's (`kfs train --help`)"),
    Variable("KFS_TRAIN_SEED", "train_seed", _number(int, 0),
             "seed of training"),
    Variable("KFS_TRAIN_DEVICE", "train_device", _choice(TRAIN_DEVICES),
             "where training runs: `auto` (CUDA when available), `cpu` or `cuda`"),
    Variable("KFS_MAPPED_MIB", "mapped_mib", _number(int, 16),
             "MiB of the memory-mapped training arrays a process keeps resident before giving their pages back "
             "to the page cache (training/data/mapped_pages.py)"),
    Variable("KFS_EXECUTOR", "executor", _choice(EXECUTORS),
             "where `kfs materialize` runs steps: `in_process` (one day after another), `multiprocess` "
             "(Dagster's multiprocess executor) or `dask` (dagster-dask on a dask.distributed cluster); "
             "see orchestration/executors.py"),
    Variable("KFS_DASK_SCHEDULER", "dask_scheduler", _text,
             "`tcp://host:port` of a dask.distributed scheduler for `KFS_EXECUTOR=dask`",
             unset='a local cluster'),
    Variable("KFS_WORKERS", "workers", _number(int, 1, 256),
             "with `multiprocess` or `dask`: daily runs at once, steps at once per run, and the local "
             "dask cluster's worker processes"),
    Variable("KFS_DAGSTER_PG_DSN", "dagster_pg_dsn", _dsn,
             "PostgreSQL for Dagster's own storage in `prod` (a separate database is best); `local` keeps "
             "SQLite under `DAGSTER_HOME`",
             unset='`KFS_PG_DSN`'),
    Variable("KFS_MODEL_KEY", "model_key", _key,
             "secret (32+ characters) that signs each published model version in the registry (HMAC-SHA256); "
             "a loader refuses versions it did not sign. Set the same on every machine of a cluster",
             unset='a key generated once in `$KFS_HOME/model.key` (mode 0600)'),
)

assert {v.field for v in VARIABLES if "." not in v.field} | {"tables"} == {f.name for f in fields(Settings)}


def markdown_table() -> str:
    """The README's configuration table."""
    lines = ["| variable | meaning | default |", "| --- | --- | --- |"]
    lines += [f"| `{v.name}` | {v.meaning} | {v.default} |" for v in VARIABLES]
    return "\n".join(lines)


def rewrite_readme_table(readme: Path) -> None:
    """Replace the table between the README's settings markers with the generated one."""
    import re

    text = readme.read_text()
    table = f"<!-- settings:start -->\n{markdown_table()}\n<!-- settings:end -->"
    readme.write_text(re.sub(r"<!-- settings:start -->.*?<!-- settings:end -->", lambda _: table, text, flags=re.S))


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--readme"]:
        rewrite_readme_table(Path(sys.argv[2]))
    else:
        print(markdown_table())
