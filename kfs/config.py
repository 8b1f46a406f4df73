"""Configuration from the environment: one place that knows every `KFS_*` variable.

`KFS_PG_DSN`  PostgreSQL to read from; absent means the embedded server under `KFS_HOME`.
`KFS_LAKE`    root of the parquet lake (default `./lake`).
`KFS_HOME`    state of this checkout: embedded server, Dagster instance (default `./.kfs`).
`KFS_PARTITIONS_START`  first daily partition Dagster knows (default 2026-01-01).
`KFS_TABLE_SNAPSHOTS|DELTAS|TRADES|MARKETS`  source table names (`schema.table` allowed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PARTITIONS_START = "2026-01-01"


def kfs_home() -> Path:
    return Path(os.environ.get("KFS_HOME", ".kfs")).absolute()


def lake_root() -> Path:
    return Path(os.environ.get("KFS_LAKE", "lake")).absolute()


def partitions_start() -> str:
    return os.environ.get("KFS_PARTITIONS_START", DEFAULT_PARTITIONS_START)


@dataclass(frozen=True)
class SourceTables:
    """Names of the recorder's tables. Upstream called the trades table `trades`; ours defaults to `rl_trades`."""

    snapshots: str = "rl_orderbook_snapshots"
    deltas: str = "rl_orderbook_deltas"
    trades: str = "rl_trades"
    markets: str = "markets"

    @classmethod
    def from_env(cls) -> "SourceTables":
        defaults = cls()
        return cls(
            snapshots=os.environ.get("KFS_TABLE_SNAPSHOTS", defaults.snapshots),
            deltas=os.environ.get("KFS_TABLE_DELTAS", defaults.deltas),
            trades=os.environ.get("KFS_TABLE_TRADES", defaults.trades),
            markets=os.environ.get("KFS_TABLE_MARKETS", defaults.markets),
        )
