"""The researcher's API to the feature store.

    from features import store
    events = store.load_events(split="train", start="2026-11-15", end="2026-11-17",
                               columns=["ob_yes_mid_prob", "tm_burst"])   # a Polars LazyFrame
    markets = store.load_markets()                                        # a Polars DataFrame
    store.data_dictionary()                                               # every column, documented

`start` and `end` are UTC days, both inclusive; partitions outside them are never read.
"""

from __future__ import annotations

from datetime import date

import polars as pl

from core.catalog import DATASETS, Lake
from features.schema import EVENT_COLUMNS, EVENTS_SCHEMA_VERSION
from features.splits import SPLITS, read_registry

_IDENTITY_ALWAYS = ("market_ticker", "timestamp_ms")


def _as_day(value: str | date | None, name: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be a date or 'YYYY-MM-DD', got {value!r}") from None


def load_events(split: str | None = None, start: str | date | None = None, end: str | date | None = None,
                columns: list[str] | None = None, markets: list[str] | None = None,
                lake: Lake | None = None) -> pl.LazyFrame:
    """Event feature rows as a LazyFrame, filtered by split, day range, columns and markets."""
    lake = lake or Lake()
    start, end = _as_day(start, "start"), _as_day(end, "end")
    if start and end and end < start:
        raise ValueError(f"end {end} is before start {start}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    known = [c.name for c in EVENT_COLUMNS]
    if columns is not None:
        unknown = sorted(set(columns) - set(known))
        if unknown:
            raise ValueError(f"unknown columns {unknown}; see features.store.data_dictionary()")
    files = lake.verified_partition_files("features_events", start, end)
    if not files:
        raise FileNotFoundError(f"no event features under {lake.location('features_events')} for {start or '...'}"
                                f" .. {end or '...'}: run `kfs materialize` first")
    frame = lake.scan_parquet(files)
    if markets is not None:
        frame = frame.filter(pl.col("market_ticker").is_in(list(markets)))
    if split is not None:
        registry = read_registry(lake)
        if registry.is_empty():
            raise FileNotFoundError("the split registry is empty: materialize split_registry first")
        chosen = registry.filter(pl.col("split") == split).select("market_ticker")
        frame = frame.join(chosen.lazy(), on="market_ticker", how="semi")
    if columns is not None:
        keep = list(dict.fromkeys([*_IDENTITY_ALWAYS, *columns]))
        frame = frame.select(keep)
    return frame


def load_markets(lake: Lake | None = None) -> pl.DataFrame:
    """One row per market: metadata, statistics, volatility class, split (the dbt mart `markets`)."""
    lake = lake or Lake()
    path = lake.location("markets_mart")
    if not lake.exists(path):
        raise FileNotFoundError(f"{path} is missing: run `kfs materialize` first")
    return lake.read_parquet(path)


def data_dictionary() -> pl.DataFrame:
    """Every event column: name, type, group, valid range and meaning."""
    return pl.DataFrame(
        [{"column": c.name, "dtype": c.dtype, "group": c.group, "low": c.low, "high": c.high, "doc": c.doc}
         for c in EVENT_COLUMNS],
        schema={"column": pl.String, "dtype": pl.String, "group": pl.String, "low": pl.Float64, "high": pl.Float64,
                "doc": pl.String},
    )


def data_dictionary_markdown() -> str:
    """docs/data_dictionary.md, generated from features/schema.py (`python -m features.store > docs/...`)."""
    lines = [
        "# Data dictionary: features/events",
        "",
        f"Generated from `features/schema.py` (schema version {EVENTS_SCHEMA_VERSION}); do not edit by hand,",
        "run `python -m features.store > docs/data_dictionary.md`. One row per (market, book event);",
        f"files: `<lake>/{DATASETS['features_events'].glob()}`. Prices in cents, probabilities = cents / 100.",
        "",
    ]
    for group in ("identity", "book", "orderbook", "temporal", "trade_flow", "metadata", "resolution"):
        rows = [c for c in EVENT_COLUMNS if c.group == group]
        lines += [f"## {group} ({len(rows)})", "", "| column | type | range | meaning |", "| --- | --- | --- | --- |"]
        for c in rows:
            low = "" if c.low is None else f"{c.low:g}"
            high = "" if c.high is None else f"{c.high:g}"
            valid = f"[{low}, {high}]" if (low or high) else ""
            lines.append(f"| `{c.name}` | {c.dtype} | {valid} | {c.doc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(data_dictionary_markdown(), end="")
