"""The per-event feature table: book replay plus the five feature groups, point-in-time correct.

A row at time t uses only events, trades and settlements with time <= t: replay and windows are
causal passes in stream order; settlements enter the resolution features only once
`settled_ts < t`; market metadata used here (category, series, open and close times) is known when
the market opens. Building a range of days reads `lookback_days` earlier days of raw data, so that
books (sessions started earlier) and trailing windows are complete at the first event of the range.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone

import polars as pl

from core.catalog import Lake
from core.markets import CATEGORIES
from core.settings import settings
from features import windows
from features.book_features import BOOK_FEATURE_COLUMNS, NO_CLOSE, book_features_kernel
from features.replay import KIND_SNAPSHOT, ReplayCounts, merge_book_events, replay
from features.resolution import (
    category_expr,
    read_resolution_history,
    resolution_columns,
)
from features.schema import EVENT_COLUMNS, EVENTS_SCHEMA_VERSION
from ingest.streams import MARKETS, PARTITIONED_STREAMS

_DTYPES = {"str": pl.String, "i64": pl.Int64, "i16": pl.Int16, "bool": pl.Boolean, "f64": pl.Float64}


@dataclass
class FeatureReport:
    days: list[str]
    rows_written: int
    rows_by_day: dict[str, int]
    replay: dict
    markets: int

    def as_metadata(self) -> dict:
        return {"rows_written": self.rows_written, "markets": self.markets, **self.replay}


def day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)


def load_raw(lake: Lake, stream: str, first: date, last: date) -> pl.DataFrame:
    """Clean raw rows of the days [first, last] that have been ingested (quarantined rows never come here)."""
    schema = PARTITIONED_STREAMS[stream].lake_schema
    paths = lake.partition_files(f"raw_{stream}", first, last)
    if not paths:
        return pl.DataFrame(schema=schema)
    return pl.concat([lake.read_parquet(p) for p in paths]).cast(schema)


def load_markets(lake: Lake) -> pl.DataFrame:
    if not lake.exists(lake.raw_markets()):
        return pl.DataFrame(schema=MARKETS.lake_schema)
    return lake.read_parquet(lake.raw_markets())


def stream_core_features(book: pl.DataFrame, trades: pl.DataFrame, meta: pl.DataFrame) -> pl.DataFrame:
    """The replayed stream with its monotone time, trade windows and the orderbook + temporal groups
    (the compiled core of the feature build)."""
    frame = book.with_row_index("row").with_columns(
        pl.col("timestamp_ms").cum_max().over("market_ticker").alias("event_time_ms"),
        pl.col("market_ticker").rle_id().cast(pl.Int64).alias("market_group"),
    ).join(meta, on="market_ticker", how="left", maintain_order="left").with_columns(
        pl.col("category").fill_null("other"), pl.col("series_ticker").fill_null("unknown"))
    group = frame["market_group"].to_numpy()
    time_ms = frame["event_time_ms"].to_numpy()
    market_groups = frame.select("market_ticker", "market_group").unique("market_ticker")
    trades = trades.join(market_groups, on="market_ticker", how="inner").sort("market_group", "ts", "id")
    trade_args = (trades["market_group"].to_numpy(), trades["ts"].to_numpy(), trades["yes_price"].to_numpy(),
                  trades["count"].to_numpy(), (trades["taker_side"] == "yes").to_numpy())
    flow_1m = windows.trade_windows(group, time_ms, *trade_args, 60_000)
    flow_5m = windows.trade_windows(group, time_ms, *trade_args, 300_000)
    volume_so_far = windows.cumulative_trade_contracts(group, time_ms, trade_args[0], trade_args[1], trade_args[3])
    book_matrix = book_features_kernel(
        group, time_ms, frame["best_yes_bid_cents"].to_numpy(), frame["best_no_bid_cents"].to_numpy(),
        frame["yes_depth5"].to_numpy(), frame["no_depth5"].to_numpy(), flow_5m[1] + flow_5m[2],
        frame["close_ms"].fill_null(NO_CLOSE).to_numpy())
    return frame.with_columns(
        *[pl.Series(name, book_matrix[j]) for j, name in enumerate(BOOK_FEATURE_COLUMNS)],
        pl.Series("trades_1m", flow_1m[0]), pl.Series("yes_taker_1m", flow_1m[1]), pl.Series("no_taker_1m", flow_1m[2]),
        pl.Series("trades_5m", flow_5m[0]), pl.Series("yes_taker_5m", flow_5m[1]), pl.Series("no_taker_5m", flow_5m[2]),
        pl.Series("large_5m", flow_5m[3]), pl.Series("notional_5m", flow_5m[4]),
        pl.Series("volume_so_far", volume_so_far),
    )


def market_meta(markets: pl.DataFrame) -> pl.DataFrame:
    return markets.select(
        pl.col("ticker").alias("market_ticker"),
        category_expr().alias("category"),
        pl.col("series_ticker").fill_null("unknown"),
        pl.col("open_ts").dt.epoch("ms").alias("open_ms"), pl.col("close_ts").dt.epoch("ms").alias("close_ms"),
    )


def compute_event_features(book: pl.DataFrame, trades: pl.DataFrame, markets: pl.DataFrame,
                           history: pl.DataFrame) -> pl.DataFrame:
    """Every feature for a replayed stream (sorted by market, session, sequence)."""
    frame = stream_core_features(book, trades, market_meta(markets))
    bid = pl.col("best_yes_bid_cents").cast(pl.Float64)
    no_bid = pl.col("best_no_bid_cents").cast(pl.Float64)
    ask = pl.when(no_bid > 0).then(100.0 - no_bid).otherwise(100.0)
    no_ask = pl.when(bid > 0).then(100.0 - bid).otherwise(100.0)
    contracts_5m = (pl.col("yes_taker_5m") + pl.col("no_taker_5m")).cast(pl.Float64)
    contracts_1m = (pl.col("yes_taker_1m") + pl.col("no_taker_1m")).cast(pl.Float64)
    lifetime = (pl.col("close_ms") - pl.col("open_ms")).cast(pl.Float64)

    def ratio(numerator: pl.Expr, denominator: pl.Expr, default: float = 0.0) -> pl.Expr:
        return pl.when(denominator > 0).then(numerator / denominator).otherwise(default)

    frame = frame.with_columns(
        pl.when(pl.col("kind") == KIND_SNAPSHOT).then(pl.lit("snapshot")).otherwise(pl.lit("delta")).alias("event_kind"),
        pl.col("id").alias("event_id"),
        ask.cast(pl.Int16).alias("best_yes_ask_cents"),
        no_ask.cast(pl.Int16).alias("best_no_ask_cents"),
        (pl.col("best_yes_bid_cents") == 0).alias("yes_side_empty"),
        (pl.col("best_no_bid_cents") == 0).alias("no_side_empty"),
        ((bid > 0) & (no_bid > 0) & (bid + no_bid >= 100)).alias("crossed"),
        (pl.col("timestamp_ms") < pl.col("event_time_ms")).alias("timestamp_out_of_order"),
        # trade flow
        ratio((pl.col("yes_taker_1m") - pl.col("no_taker_1m")).cast(pl.Float64), contracts_1m).alias("tf_net_flow_1m"),
        ratio((pl.col("yes_taker_5m") - pl.col("no_taker_5m")).cast(pl.Float64), contracts_5m).alias("tf_net_flow_5m"),
        ratio(pl.col("large_5m").cast(pl.Float64), contracts_5m).alias("tf_large_trade_share_5m"),
        pl.col("trades_1m").cast(pl.Float64).log1p().alias("tf_trade_intensity_1m"),
        (pl.col("trades_1m").cast(pl.Float64).log1p() - (pl.col("trades_5m") / 5.0).log1p()).tanh()
        .alias("tf_trade_acceleration"),
        pl.when(contracts_5m > 0).then((pl.col("notional_5m") / contracts_5m - (bid + ask) / 2.0) / 100.0)
        .otherwise(0.0).alias("tf_vwap_divergence_5m"),
        # metadata
        *[(pl.col("category") == c).cast(pl.Float64).alias(f"md_category_{c}") for c in CATEGORIES],
        pl.when(lifetime > 0).then(((pl.col("event_time_ms") - pl.col("open_ms")) / lifetime).clip(0.0, 1.0))
        .otherwise(0.5).fill_null(0.5).alias("md_lifecycle_position"),
        (pl.col("volume_so_far").cast(pl.Float64).log1p() / math.log1p(1e6)).clip(upper_bound=1.0).alias("md_volume_used"),
    )
    frame = frame.with_columns(*resolution_columns(frame, history, "category", "rs_category"),
                               *resolution_columns(frame, history, "series_ticker", "rs_series"))
    return frame.select(pl.col(c.name).cast(_DTYPES[c.dtype]) for c in EVENT_COLUMNS)


def build_event_features(lake: Lake, first: date, last: date, lookback: int | None = None
                         ) -> tuple[pl.DataFrame, ReplayCounts]:
    """Feature rows for events with timestamps in the days [first, last]."""
    lookback = settings().replay_lookback_days if lookback is None else lookback
    load_from = first - timedelta(days=lookback)
    snapshots = load_raw(lake, "snapshots", load_from, last)
    deltas = load_raw(lake, "deltas", load_from, last)
    trades = load_raw(lake, "trades", load_from, last)
    markets = load_markets(lake)
    events, levels = merge_book_events(snapshots, deltas)
    book, counts = replay(events, levels)
    history = read_resolution_history(lake)
    features = compute_event_features(book, trades, markets, history)
    in_range = features.filter(
        (pl.col("timestamp_ms") >= day_start_ms(first)) & (pl.col("timestamp_ms") < day_start_ms(last + timedelta(days=1))))
    return in_range, counts


def write_event_partitions(lake: Lake, features: pl.DataFrame, first: date, last: date) -> dict[str, int]:
    """One file per day (also for days without events), sorted by market, session and sequence."""
    rows = {}
    with_day = features.with_columns(pl.from_epoch("timestamp_ms", time_unit="ms").dt.date().alias("_day"))
    for i in range((last - first).days + 1):
        day = first + timedelta(days=i)
        part = with_day.filter(pl.col("_day") == day).drop("_day")
        lake.write_parquet(part, lake.event_partition(day), metadata={"kfs_schema_version": EVENTS_SCHEMA_VERSION})
        rows[day.isoformat()] = part.height
    return rows


def materialize_event_features(lake: Lake, first: date, last: date) -> FeatureReport:
    features, counts = build_event_features(lake, first, last)
    rows = write_event_partitions(lake, features, first, last)
    return FeatureReport(days=list(rows), rows_written=sum(rows.values()), rows_by_day=rows,
                         replay=asdict(counts), markets=features["market_ticker"].n_unique() if features.height else 0)
