"""The per-event feature table: book replay plus the five feature groups, point-in-time correct.

A row at time t uses only events, trades and settlements with time <= t: replay and windows are
causal passes in stream order; settlements enter the resolution features only once
`settled_ts < t`; market metadata used here (category, series, open and close times) is known when
the market opens. Building a range of days reads `lookback_days` earlier days of raw data, so that
books (sessions started earlier) and trailing windows are complete at the first event of the range.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl

from features import windows
from features.book_features import BOOK_FEATURE_COLUMNS, NO_CLOSE, book_features_kernel
from features.replay import KIND_SNAPSHOT, ReplayCounts, merge_book_events, replay
from features.schema import CATEGORIES, EVENT_COLUMNS, EVENTS_SCHEMA_VERSION
from kfs.lake import Lake, write_parquet_atomic

DEFAULT_LOOKBACK_DAYS = 3
MS_PER_HOUR = 3_600_000
_DTYPES = {"str": pl.String, "i64": pl.Int64, "i16": pl.Int16, "bool": pl.Boolean, "f64": pl.Float64}
_RAW_SCHEMAS = {
    "snapshots": {"id": pl.Int64, "session_id": pl.Int64, "market_ticker": pl.String, "timestamp_ms": pl.Int64,
                  "sequence_number": pl.Int64, "yes_bid_prices": pl.List(pl.Int64), "yes_bid_sizes": pl.List(pl.Int64),
                  "no_bid_prices": pl.List(pl.Int64), "no_bid_sizes": pl.List(pl.Int64)},
    "deltas": {"id": pl.Int64, "session_id": pl.Int64, "market_ticker": pl.String, "timestamp_ms": pl.Int64,
               "sequence_number": pl.Int64, "side": pl.String, "action": pl.String, "price": pl.Int64,
               "old_size": pl.Int64, "new_size": pl.Int64},
    "trades": {"id": pl.Int64, "trade_id": pl.String, "market_ticker": pl.String, "yes_price": pl.Int64,
               "no_price": pl.Int64, "count": pl.Int64, "taker_side": pl.String, "ts": pl.Int64,
               "received_at": pl.Int64},
}


def lookback_days() -> int:
    return int(os.environ.get("KFS_REPLAY_LOOKBACK_DAYS", DEFAULT_LOOKBACK_DAYS))


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
    paths = [lake.raw_partition(stream, first + timedelta(days=i)) for i in range((last - first).days + 1)]
    paths = [p for p in paths if p.exists()]
    if not paths:
        return pl.DataFrame(schema=_RAW_SCHEMAS[stream])
    return pl.concat([pl.read_parquet(p) for p in paths]).cast(_RAW_SCHEMAS[stream])


def load_markets(lake: Lake) -> pl.DataFrame:
    if not lake.raw_markets().exists():
        return pl.DataFrame(schema={"ticker": pl.String, "series_ticker": pl.String, "category": pl.String,
                                    "open_ts": pl.Datetime("ms", "UTC"), "close_ts": pl.Datetime("ms", "UTC"),
                                    "result": pl.String, "settled_ts": pl.Datetime("ms", "UTC")})
    return pl.read_parquet(lake.raw_markets())


def _epoch_ms(column: str) -> pl.Expr:
    return pl.col(column).dt.epoch("ms")


def resolution_history(lake: Lake, markets: pl.DataFrame, until: date) -> pl.DataFrame:
    """Settled markets with their outcome and last traded YES price before close (for the Brier score)."""
    settled = markets.filter(pl.col("result").is_in(["yes", "no"]) & pl.col("settled_ts").is_not_null()).select(
        pl.col("ticker").alias("market_ticker"),
        pl.col("category").str.to_lowercase().replace_strict(
            {c: c for c in CATEGORIES}, default="other").alias("category"),
        pl.col("series_ticker").fill_null("unknown"),
        _epoch_ms("settled_ts").alias("settled_ms"),
        _epoch_ms("close_ts").alias("close_ms"),
        (pl.col("result") == "yes").cast(pl.Float64).alias("outcome"),
    )
    trade_paths = sorted(lake.raw_stream_dir("trades").glob("date=*/*.parquet"))
    trade_paths = [p for p in trade_paths if date.fromisoformat(p.parent.name[5:]) <= until]
    if trade_paths and settled.height:
        last_trades = (
            pl.scan_parquet(trade_paths).select("market_ticker", "ts", "id", "yes_price")
            .join(settled.lazy().select("market_ticker", "close_ms"), on="market_ticker")
            .filter(pl.col("close_ms").is_null() | (pl.col("ts") < pl.col("close_ms")))
            .sort("market_ticker", "ts", "id")
            .group_by("market_ticker").agg((pl.col("yes_price").last() / 100.0).alias("last_price_prob"))
            .collect()
        )
        settled = settled.join(last_trades, on="market_ticker", how="left")
    else:
        settled = settled.with_columns(pl.lit(None, pl.Float64).alias("last_price_prob"))
    return settled


def _resolution_columns(frame: pl.DataFrame, history: pl.DataFrame, key: str, prefix: str) -> list[pl.Series]:
    """YES rate, Brier score and confidence of the markets with the event's `key` settled strictly before
    its time, in frame order. Per key value: cumulative sums over settlement times, then a binary search
    per event (linear in events, no sort of the event table)."""
    n = frame.height
    yes_rate = np.full(n, 0.5)
    brier = np.full(n, 0.25)
    confidence = np.zeros(n)
    values = frame[key].unique().sort().to_list()
    event_codes = frame[key].replace_strict(values, list(range(len(values))), return_dtype=pl.Int32).to_numpy()
    event_times = frame["event_time_ms"].to_numpy()
    code_of = dict(zip(values, range(len(values))))
    for value, settled in history.sort("settled_ms").group_by(key, maintain_order=True):
        if value[0] not in code_of:
            continue
        rows = np.flatnonzero(event_codes == code_of[value[0]])
        if rows.size == 0:
            continue
        times = settled["settled_ms"].to_numpy()
        outcome = settled["outcome"].to_numpy()
        price = settled["last_price_prob"].to_numpy()
        priced = ~np.isnan(price)
        cum_n = np.concatenate([[0], np.arange(1, times.size + 1)])
        cum_yes = np.concatenate([[0.0], np.cumsum(outcome)])
        cum_brier = np.concatenate([[0.0], np.cumsum(np.where(priced, (price - outcome) ** 2, 0.0))])
        cum_priced = np.concatenate([[0], np.cumsum(priced)])
        before = np.searchsorted(times, event_times[rows], side="left")  # settled_ms < t
        seen = before > 0
        count = cum_n[before]
        yes_rate[rows[seen]] = cum_yes[before[seen]] / count[seen]
        with_price = cum_priced[before] > 0
        brier[rows[with_price]] = cum_brier[before[with_price]] / cum_priced[before[with_price]]
        confidence[rows] = count / (count + 10.0)
    return [pl.Series(f"{prefix}_yes_rate", yes_rate), pl.Series(f"{prefix}_brier", brier),
            pl.Series(f"{prefix}_confidence", confidence)]


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
        pl.col("category").str.to_lowercase().replace_strict({c: c for c in CATEGORIES}, default="other")
        .fill_null("other").alias("category"),
        pl.col("series_ticker").fill_null("unknown"),
        _epoch_ms("open_ts").alias("open_ms"), _epoch_ms("close_ts").alias("close_ms"),
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
    frame = frame.with_columns(*_resolution_columns(frame, history, "category", "rs_category"),
                               *_resolution_columns(frame, history, "series_ticker", "rs_series"))
    return frame.select(pl.col(c.name).cast(_DTYPES[c.dtype]) for c in EVENT_COLUMNS)


def build_event_features(lake: Lake, first: date, last: date, lookback: int | None = None
                         ) -> tuple[pl.DataFrame, ReplayCounts]:
    """Feature rows for events with timestamps in the days [first, last]."""
    lookback = lookback_days() if lookback is None else lookback
    load_from = first - timedelta(days=lookback)
    snapshots = load_raw(lake, "snapshots", load_from, last)
    deltas = load_raw(lake, "deltas", load_from, last)
    trades = load_raw(lake, "trades", load_from, last)
    markets = load_markets(lake)
    events, levels = merge_book_events(snapshots, deltas)
    book, counts = replay(events, levels)
    history = resolution_history(lake, markets, last)
    features = compute_event_features(book, trades, markets, history)
    in_range = features.filter(
        (pl.col("timestamp_ms") >= day_start_ms(first)) & (pl.col("timestamp_ms") < day_start_ms(last + timedelta(days=1))))
    return in_range, counts


def event_partition_path(lake: Lake, day: date | str):
    return lake.root / "features" / "events" / f"date={day if isinstance(day, str) else day.isoformat()}" / "part-00000.parquet"


def write_event_partitions(lake: Lake, features: pl.DataFrame, first: date, last: date) -> dict[str, int]:
    """One file per day (also for days without events), sorted by market, session and sequence."""
    rows = {}
    with_day = features.with_columns(pl.from_epoch("timestamp_ms", time_unit="ms").dt.date().alias("_day"))
    for i in range((last - first).days + 1):
        day = first + timedelta(days=i)
        part = with_day.filter(pl.col("_day") == day).drop("_day")
        write_parquet_atomic(part, event_partition_path(lake, day), metadata={"kfs_schema_version": EVENTS_SCHEMA_VERSION})
        rows[day.isoformat()] = part.height
    return rows


def materialize_event_features(lake: Lake, first: date, last: date) -> FeatureReport:
    features, counts = build_event_features(lake, first, last)
    rows = write_event_partitions(lake, features, first, last)
    return FeatureReport(days=list(rows), rows_written=sum(rows.values()), rows_by_day=rows,
                         replay=asdict(counts), markets=features["market_ticker"].n_unique() if features.height else 0)
