"""Volatility classes and the frozen market-level train/validation/test split (DESIGN.md section 4).

Volatility of a market = population standard deviation of its YES mid probability over its events
in the feature store: stable < 0.1 <= moderate < 0.3 <= volatile. The thresholds and split shares are
defined here and handed to dbt (`orchestration.dbt_contract` renders them into the macros that the
dbt model `market_categories` and the split-share test call); the class itself is computed by that
model and read back here through the catalog.

The split is by market, never by row, 250/25/25 per 300 markets, stratified by volatility class and
deterministic from a seed. It is frozen in a registry: a market keeps its split forever, and markets
seen for the first time are assigned on arrival without moving anyone. A new batch is ordered by
(class, seeded hash of the ticker) and dealt out so each split's running count follows its quota
(Bresenham-style), which makes the totals exact and the classes evenly spread.
"""

from __future__ import annotations

import hashlib
from datetime import date

import polars as pl

from core.catalog import Lake
from core.locks import exclusive

STABLE_BELOW = 0.1
VOLATILE_FROM = 0.3
VOLATILITY_CLASSES = ("stable", "moderate", "volatile")
SPLITS = ("train", "validation", "test")
SHARES = {"train": 250 / 300, "validation": 25 / 300, "test": 25 / 300}
DEFAULT_SPLIT_SEED = 20261122
REGISTRY_SCHEMA = {"market_ticker": pl.String, "split": pl.String, "volatility_class": pl.String,
                   "assigned_on": pl.Date, "seed": pl.Int64}


def _hash_rank(seed: int, ticker: str) -> str:
    return hashlib.sha256(f"{seed}:{ticker}".encode()).hexdigest()


def _largest_remainder(total: int, weights: dict[str, float]) -> dict[str, int]:
    raw = {k: max(w, 0.0) for k, w in weights.items()}
    scale = sum(raw.values())
    if scale == 0:
        raw = dict(SHARES)
        scale = 1.0
    exact = {k: total * w / scale for k, w in raw.items()}
    quota = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - quota[k]), SPLITS.index(k)))[: total - sum(quota.values())]:
        quota[k] += 1
    return quota


def assign_splits(registry: pl.DataFrame, classes: pl.DataFrame, assigned_on: date,
                  seed: int = DEFAULT_SPLIT_SEED) -> pl.DataFrame:
    """Registry plus assignments for markets in `classes` (market_ticker, volatility_class) it lacks."""
    known = set(registry["market_ticker"].to_list())
    new = [(row["volatility_class"], _hash_rank(seed, row["market_ticker"]), row["market_ticker"])
           for row in classes.iter_rows(named=True) if row["market_ticker"] not in known]
    if not new:
        return registry
    new.sort(key=lambda item: (VOLATILITY_CLASSES.index(item[0]), item[1]))
    total_after = registry.height + len(new)
    existing = {s: int((registry["split"] == s).sum()) for s in SPLITS}
    # Quotas for this batch bring every split as close to its share of the grown universe as possible.
    quota = _largest_remainder(len(new), {s: SHARES[s] * total_after - existing[s] for s in SPLITS})
    dealt = {s: 0 for s in SPLITS}
    rows = []
    for position, (klass, _, ticker) in enumerate(new, start=1):
        split = max(SPLITS, key=lambda s: (position * quota[s] / len(new) - dealt[s], -SPLITS.index(s)))
        dealt[split] += 1
        rows.append({"market_ticker": ticker, "split": split, "volatility_class": klass,
                     "assigned_on": assigned_on, "seed": seed})
    return pl.concat([registry, pl.DataFrame(rows, schema=REGISTRY_SCHEMA)]).sort("market_ticker")


def read_registry(lake: Lake) -> pl.DataFrame:
    path = lake.location("split_registry")
    return lake.read_parquet(path) if lake.exists(path) else pl.DataFrame(schema=REGISTRY_SCHEMA)


def read_market_categories(lake: Lake) -> pl.DataFrame:
    """Volatility class per market, as the dbt hand-off model `market_categories` wrote it."""
    path = lake.location("market_categories")
    if not lake.exists(path):
        raise FileNotFoundError(f"{path} is missing: build the dbt model market_categories first")
    # A row without a market names nothing to assign: the hand-off of a feature store without a single event
    # holds one all-NULL row (seen with a range of days the recorder had no data for).
    return lake.read_parquet(path).select("market_ticker", "volatility_class").filter(pl.col("market_ticker").is_not_null())


def update_registry(lake: Lake, classes: pl.DataFrame, assigned_on: date, seed: int = DEFAULT_SPLIT_SEED) -> pl.DataFrame:
    with exclusive("split_registry"):  # read-modify-write: two runs at once must not both append
        registry = assign_splits(read_registry(lake), classes, assigned_on, seed)
        check_disjoint(registry)
        lake.write_parquet(registry, lake.location("split_registry"))
    return registry


def check_disjoint(registry: pl.DataFrame) -> None:
    duplicated = registry.filter(pl.col("market_ticker").is_duplicated())
    if duplicated.height:
        raise AssertionError(f"markets in more than one split: {sorted(set(duplicated['market_ticker']))[:5]}")
