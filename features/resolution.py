"""Resolution history: settled markets, their outcome and how well their last price called it.

Computed once, here, and written to the lake (`resolution_history`): the per-event resolution features
read it (only markets settled strictly before an event's time enter that event's features), and dbt's
`markets` mart reads the same file for each market's Brier contribution.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from core.catalog import Lake
from core.markets import CATEGORIES, FALLBACK_CATEGORY

HISTORY_SCHEMA = {"market_ticker": pl.String, "category": pl.String, "series_ticker": pl.String,
                  "settled_ms": pl.Int64, "close_ms": pl.Int64, "outcome": pl.Float64,
                  "last_price_prob": pl.Float64, "brier": pl.Float64}
CONFIDENCE_PRIOR_MARKETS = 10.0   # confidence = n / (n + 10)
NO_HISTORY_YES_RATE = 0.5
NO_HISTORY_BRIER = 0.25


def category_expr(column: str = "category") -> pl.Expr:
    """The category normalised to one of CATEGORIES (unknown or missing -> other)."""
    return (pl.col(column).str.strip_chars().str.to_lowercase()
            .replace_strict({c: c for c in CATEGORIES}, default=FALLBACK_CATEGORY).fill_null(FALLBACK_CATEGORY))


def resolution_history(markets: pl.DataFrame, trades: pl.LazyFrame) -> pl.DataFrame:
    """One row per settled market: outcome (1 = YES), last traded YES price before close (and before
    settlement) as a probability, and (last price - outcome)^2. Markets without a trade have no price."""
    settled = markets.filter(pl.col("result").is_in(["yes", "no"]) & pl.col("settled_ts").is_not_null()).select(
        pl.col("ticker").alias("market_ticker"),
        category_expr().alias("category"),
        pl.col("series_ticker").fill_null("unknown"),
        pl.col("settled_ts").dt.epoch("ms").alias("settled_ms"),
        pl.col("close_ts").dt.epoch("ms").alias("close_ms"),
        (pl.col("result") == "yes").cast(pl.Float64).alias("outcome"),
    )
    last_trades = (
        trades.select("market_ticker", "ts", "id", "yes_price")
        .join(settled.lazy().select("market_ticker", "close_ms", "settled_ms"), on="market_ticker")
        .filter(pl.col("ts") < pl.coalesce("close_ms", "settled_ms"))
        .filter(pl.col("ts") <= pl.col("settled_ms"))
        .group_by("market_ticker").agg(
            (pl.col("yes_price").top_k_by(["ts", "id"], k=1).first() / 100.0).alias("last_price_prob"))
        # Streaming, with a top-1 per market instead of a sort of every trade: memory follows the markets,
        # not the trade history
        .collect(engine="streaming")
    )
    history = settled.join(last_trades, on="market_ticker", how="left").with_columns(
        ((pl.col("last_price_prob") - pl.col("outcome")) ** 2).alias("brier"))
    return history.select(pl.col(name).cast(dtype) for name, dtype in HISTORY_SCHEMA.items()).sort("market_ticker")


def build_resolution_history(lake: Lake, until: date | None = None) -> pl.DataFrame:
    """The history from the raw lake: every ingested market and trade (up to `until`, if given)."""
    if not lake.exists(lake.raw_markets()):
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    files = lake.verified_partition_files("raw_trades", end=until)
    trades = lake.scan_parquet(files) if files else pl.LazyFrame(
        schema={"market_ticker": pl.String, "ts": pl.Int64, "id": pl.Int64, "yes_price": pl.Int64})
    return resolution_history(lake.read_parquet(lake.raw_markets()), trades)


def materialize_resolution_history(lake: Lake) -> pl.DataFrame:
    history = build_resolution_history(lake)
    lake.write_parquet(history, lake.location("resolution_history"))
    return history


def read_resolution_history(lake: Lake) -> pl.DataFrame:
    path = lake.location("resolution_history")
    return lake.read_parquet(path) if lake.exists(path) else build_resolution_history(lake)


def resolution_columns(frame: pl.DataFrame, history: pl.DataFrame, key: str, prefix: str) -> list[pl.Series]:
    """YES rate, Brier score and confidence of the markets with the event's `key` settled strictly before
    its time, in frame order. Per key value: cumulative sums over settlement times, then a binary search
    per event (linear in events, no sort of the event table)."""
    n = frame.height
    yes_rate = np.full(n, NO_HISTORY_YES_RATE)
    brier = np.full(n, NO_HISTORY_BRIER)
    confidence = np.zeros(n)
    values = frame[key].unique().sort().to_list()
    event_codes = frame[key].replace_strict(values, list(range(len(values))), return_dtype=pl.Int32).to_numpy()
    event_times = frame["event_time_ms"].to_numpy()
    code_of = dict(zip(values, range(len(values))))
    for value, settled in history.sort("settled_ms", "market_ticker").group_by(key, maintain_order=True):
        if value[0] not in code_of:
            continue
        rows = np.flatnonzero(event_codes == code_of[value[0]])
        if rows.size == 0:
            continue
        times = settled["settled_ms"].to_numpy()
        outcome = settled["outcome"].to_numpy()
        contribution = settled["brier"].to_numpy()
        priced = ~np.isnan(contribution)
        cum_n = np.concatenate([[0], np.arange(1, times.size + 1)])
        cum_yes = np.concatenate([[0.0], np.cumsum(outcome)])
        cum_brier = np.concatenate([[0.0], np.cumsum(np.where(priced, contribution, 0.0))])
        cum_priced = np.concatenate([[0], np.cumsum(priced)])
        before = np.searchsorted(times, event_times[rows], side="left")  # settled_ms < t
        seen = before > 0
        count = cum_n[before]
        yes_rate[rows[seen]] = cum_yes[before[seen]] / count[seen]
        with_price = cum_priced[before] > 0
        brier[rows[with_price]] = cum_brier[before[with_price]] / cum_priced[before[with_price]]
        confidence[rows] = count / (count + CONFIDENCE_PRIOR_MARKETS)
    return [pl.Series(f"{prefix}_yes_rate", yes_rate), pl.Series(f"{prefix}_brier", brier),
            pl.Series(f"{prefix}_confidence", confidence)]
