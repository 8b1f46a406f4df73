"""The per-event feature table, built offline from the raw lake with the feature engine.

A row at time t uses only events, trades received and settlements with time <= t: the engine
(features/engine.py) is a causal pass in record order; settlements enter the resolution features only once
`settled_ts < t`; market metadata (category, series, open and close times) is known when the market opens.
Building a range of days starts `KFS_REPLAY_LOOKBACK_DAYS` earlier and walks the raw lake one day at a
time, carrying the engine's state from day to day: books (sessions started earlier) and trailing windows
are complete at the first event of the range, and memory depends on the markets, not on the history.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from itertools import groupby
from typing import Iterator

import numpy as np
import polars as pl
import pyarrow as pa

from core.catalog import RAW_STREAMS, Lake
from core.settings import settings
from features.engine import (
    BOOK_OUTPUTS,
    ENGINE_FEATURES,
    KIND_DELTA,
    KIND_SNAPSHOT,
    KIND_TRADE,
    SIDE_NO,
    SIDE_YES,
    EngineState,
    Markets,
    Output,
    Records,
    ResolutionIndex,
    markets_from_frame,
    run,
)
from features.resolution import read_resolution_history
from features.schema import EVENT_COLUMNS, EVENTS_SCHEMA_VERSION
from ingest.streams import MARKETS, PARTITIONED_STREAMS, trade_visible_expr

_DTYPES = {"str": pl.String, "i64": pl.Int64, "i16": pl.Int16, "bool": pl.Boolean, "f64": pl.Float64}
# Raw rows of a day the engine replays at once (a batch of whole markets): what bounds the feature stage's
# memory rather than the size of the day (replaying and writing a batch peaked near 960 MiB; docs/scaling.md).
FEATURE_BATCH_ROWS = 262_144
_TIME_KEY_SPAN = 10**13  # market id * span + time orders records market by market (times < year 2286)


@dataclass
class ReplayCounts:
    events: int = 0
    snapshots: int = 0
    sequence_gaps: int = 0
    deltas_before_snapshot: int = 0
    invalid_events: int = 0
    crossed_events: int = 0
    out_of_order_timestamps: int = 0

    def add(self, frame: pl.DataFrame) -> None:
        self.events += frame.height
        self.snapshots += int((frame["event_kind"] == "snapshot").sum())
        self.sequence_gaps += int(frame["sequence_gap"].sum())
        self.deltas_before_snapshot += int(frame["delta_before_snapshot"].sum())
        self.invalid_events += int((~frame["book_valid"]).sum())
        self.crossed_events += int(frame["crossed"].sum())
        self.out_of_order_timestamps += int(frame["timestamp_out_of_order"].sum())


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


def load_raw(lake: Lake, stream: str, first: date, last: date, tickers: tuple[str, str] | None = None
             ) -> pl.DataFrame:
    """Clean raw rows of the days [first, last] that have been ingested (quarantined rows never come here);
    with `tickers` (lowest, highest), only the rows of the markets in that range."""
    schema = PARTITIONED_STREAMS[stream].lake_schema
    paths = lake.verified_partition_files(f"raw_{stream}", first, last)
    if not paths:
        return pl.DataFrame(schema=schema)
    if tickers is None:
        return pl.concat([lake.read_parquet(p) for p in paths]).cast(schema)
    # A range, not a list: the raw files are sorted by market, so row-group statistics skip most of a file
    in_range = pl.col("market_ticker").is_between(pl.lit(tickers[0]), pl.lit(tickers[1]), closed="both")
    return lake.scan_parquet(paths).filter(in_range).collect().cast(schema)


def market_ranges(lake: Lake, day: date, batch_rows: int) -> list[tuple[str, str]]:
    """The markets with raw rows on `day`, in ticker order, cut into ranges (lowest, highest ticker) of about
    `batch_rows` rows each (a market is never cut): what the feature engine holds in memory at once.
    Reads the market column only."""
    counts = [lake.scan_parquet(paths).group_by("market_ticker").len()
              for paths in (lake.verified_partition_files(f"raw_{stream}", day, day) for stream in RAW_STREAMS) if paths]
    if not counts:
        return []
    rows = pl.concat(pl.collect_all(counts)).group_by("market_ticker").agg(pl.col("len").sum()).sort("market_ticker")
    ranges = (rows.with_columns(((pl.col("len").cum_sum() - 1) // max(1, batch_rows)).alias("batch"))
              .group_by("batch", maintain_order=True)
              .agg(pl.col("market_ticker").first().alias("low"), pl.col("market_ticker").last().alias("high")))
    return list(zip(ranges["low"].to_list(), ranges["high"].to_list()))


def load_markets(lake: Lake) -> pl.DataFrame:
    if not lake.exists(lake.raw_markets()):
        return pl.DataFrame(schema=MARKETS.lake_schema)
    lake.verify(lake.raw_markets(), fix="kfs materialize --only ingest --start <any day>")
    return lake.read_parquet(lake.raw_markets())


# -- records --------------------------------------------------------------------------------------

@dataclass
class RecordBatch:
    """Records for the engine plus what the kernel does not need but the output rows name."""

    records: Records
    record_id: np.ndarray       # source row id of each record
    timestamp_ms: np.ndarray    # recorded time of each record (book events: timestamp_ms)


def register_markets(markets: Markets, tickers) -> None:
    """Markets seen in events but missing from the markets table get defaults (category other, no times)."""
    for ticker in sorted(set(tickers) - set(markets.index)):
        markets.add(ticker, None, None, None, None)


def book_and_trade_records(snapshots: pl.DataFrame, deltas: pl.DataFrame, trades: pl.DataFrame, markets: Markets,
                           last_time: np.ndarray | None = None) -> RecordBatch:
    """The canonical record order: per market, book events by (session, sequence), and each trade before the
    first book event whose event time (running maximum of timestamps, continuing `last_time` of the market
    from earlier batches) reaches the trade's receive time."""
    register_markets(markets, [*snapshots["market_ticker"].to_list(), *deltas["market_ticker"].to_list(),
                               *trades["market_ticker"].to_list()])
    ids = pl.DataFrame({"market_ticker": markets.tickers, "market": np.arange(len(markets.tickers), dtype=np.int64)},
                       schema={"market_ticker": pl.String, "market": pl.Int64})
    snap = snapshots.join(ids, on="market_ticker", how="left").with_row_index("snapshot_row")
    levels = pl.concat([
        snap.select("snapshot_row", pl.lit(SIDE_YES, pl.Int8).alias("side"),
                    pl.col("yes_bid_prices").alias("price"), pl.col("yes_bid_sizes").alias("size")),
        snap.select("snapshot_row", pl.lit(SIDE_NO, pl.Int8).alias("side"),
                    pl.col("no_bid_prices").alias("price"), pl.col("no_bid_sizes").alias("size")),
    ]).explode("price", "size").drop_nulls("price").sort("snapshot_row", "side", "price")
    offsets = levels.with_row_index("level_row").group_by("snapshot_row").agg(
        pl.col("level_row").min().alias("level_offset"), pl.len().alias("level_count"))
    common = ("market", "session_id", "sequence_number", "id", "timestamp_ms")
    book = pl.concat([
        snap.join(offsets, on="snapshot_row", how="left").select(
            *common, pl.lit(KIND_SNAPSHOT, pl.Int8).alias("kind"), pl.lit(SIDE_YES, pl.Int8).alias("side"),
            pl.lit(0, pl.Int64).alias("price"), pl.lit(0, pl.Int64).alias("size"),
            pl.col("level_offset").fill_null(0).cast(pl.Int64), pl.col("level_count").fill_null(0).cast(pl.Int64)),
        deltas.join(ids, on="market_ticker", how="left").select(
            *common, pl.lit(KIND_DELTA, pl.Int8).alias("kind"),
            pl.when(pl.col("side") == "yes").then(SIDE_YES).otherwise(SIDE_NO).cast(pl.Int8).alias("side"),
            pl.col("price").cast(pl.Int64), pl.col("new_size").cast(pl.Int64).alias("size"),
            pl.lit(0, pl.Int64).alias("level_offset"), pl.lit(0, pl.Int64).alias("level_count")),
    ]).sort("market", "session_id", "sequence_number", "kind", "id")
    previous = np.full(len(markets.tickers), np.iinfo(np.int64).min, np.int64)
    if last_time is not None:
        previous[: min(len(last_time), len(previous))] = last_time[: len(previous)]
    earlier = pl.DataFrame({"market": np.arange(len(previous), dtype=np.int64), "_earlier": previous})
    book = book.join(earlier, on="market", how="left", maintain_order="left").with_columns(
        pl.max_horizontal(pl.col("timestamp_ms").cum_max().over("market"), "_earlier").alias("event_time")
    ).drop("_earlier")
    # A trade is visible from its receive time (its exchange time when the feed did not record one).
    trade_rows = trades.join(ids, on="market_ticker", how="left").select(
        "market", pl.lit(0, pl.Int64).alias("session_id"), pl.lit(0, pl.Int64).alias("sequence_number"), "id",
        pl.col("ts").alias("timestamp_ms"), pl.lit(KIND_TRADE, pl.Int8).alias("kind"),
        pl.when(pl.col("taker_side") == "yes").then(SIDE_YES).otherwise(SIDE_NO).cast(pl.Int8).alias("side"),
        pl.col("yes_price").cast(pl.Int64).alias("price"), pl.col("count").cast(pl.Int64).alias("size"),
        pl.lit(0, pl.Int64).alias("level_offset"), pl.lit(0, pl.Int64).alias("level_count"),
        trade_visible_expr().alias("event_time"),
    ).sort("market", "event_time", "timestamp_ms", "id")
    book_key = book["market"].to_numpy() * _TIME_KEY_SPAN + book["event_time"].to_numpy().clip(0)
    trade_key = trade_rows["market"].to_numpy() * _TIME_KEY_SPAN + trade_rows["event_time"].to_numpy().clip(0)
    trade_position = np.searchsorted(book_key, trade_key, side="left")
    records = pl.concat([
        book.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_position"), pl.lit(1, pl.Int8).alias("_then")),
        trade_rows.with_columns(pl.Series("_position", trade_position, dtype=pl.Int64), pl.lit(0, pl.Int8).alias("_then")),
    ], how="vertical_relaxed").sort("_position", "_then", "market", "event_time", "id", maintain_order=True)
    return RecordBatch(
        records=Records(
            kind=records["kind"].to_numpy(), market=records["market"].to_numpy(),
            session=records["session_id"].to_numpy(), sequence=records["sequence_number"].to_numpy(),
            time_ms=np.where(records["kind"].to_numpy() == KIND_TRADE, records["event_time"].to_numpy(),
                             records["timestamp_ms"].to_numpy()),
            side=records["side"].to_numpy(), price=records["price"].to_numpy(), size=records["size"].to_numpy(),
            level_offset=records["level_offset"].to_numpy(), level_count=records["level_count"].to_numpy(),
            level_side=levels["side"].to_numpy(), level_price=levels["price"].cast(pl.Int64).to_numpy(),
            level_size=levels["size"].cast(pl.Int64).to_numpy()),
        record_id=records["id"].to_numpy(), timestamp_ms=records["timestamp_ms"].to_numpy())


def feature_frame(batch: RecordBatch, output: Output, markets: Markets) -> pl.DataFrame:
    """The event rows of a batch: identity, book columns and every feature, in EVENT_COLUMNS order."""
    rec = output.record
    records = batch.records
    tickers = np.asarray(markets.tickers, dtype=object)
    book = {name: output.book[:, k] for k, name in enumerate(BOOK_OUTPUTS)}
    bid, no_bid = book["best_yes_bid_cents"], book["best_no_bid_cents"]
    columns = {
        "market_ticker": tickers[records.market[rec]] if rec.size else np.array([], dtype=object),
        "session_id": records.session[rec],
        "sequence_number": records.sequence[rec],
        "event_id": batch.record_id[rec],
        "event_kind": np.where(records.kind[rec] == KIND_SNAPSHOT, "snapshot", "delta"),
        "timestamp_ms": batch.timestamp_ms[rec],
        "event_time_ms": book["event_time_ms"],
        "best_yes_bid_cents": bid,
        "best_yes_ask_cents": np.where(no_bid > 0, 100 - no_bid, 100),
        "best_no_bid_cents": no_bid,
        "best_no_ask_cents": np.where(bid > 0, 100 - bid, 100),
        "best_yes_bid_size": book["best_yes_bid_size"],
        "best_no_bid_size": book["best_no_bid_size"],
        "yes_depth5": book["yes_depth5"],
        "no_depth5": book["no_depth5"],
        "book_valid": book["book_valid"] == 1,
        "yes_side_empty": bid == 0,
        "no_side_empty": no_bid == 0,
        "crossed": (bid > 0) & (no_bid > 0) & (bid + no_bid >= 100),
        "sequence_gap": book["sequence_gap"] == 1,
        "delta_before_snapshot": book["delta_before_snapshot"] == 1,
        "timestamp_out_of_order": book["timestamp_out_of_order"] == 1,
        **{name: output.features[:, k] for k, name in enumerate(ENGINE_FEATURES)},
    }
    frame = pl.DataFrame({name: columns[name] for name in (*[c.name for c in EVENT_COLUMNS], "sequence_gap",
                                                          "delta_before_snapshot")})
    return frame.with_columns(pl.col(c.name).cast(_DTYPES[c.dtype]) for c in EVENT_COLUMNS)


@dataclass
class FeatureBuilder:
    """The engine over batches of raw rows (a day of the lake, a simulated universe in memory), one state slot
    per market, the state carried from batch to batch."""

    markets_frame: pl.DataFrame
    history: pl.DataFrame
    markets: Markets = field(default=None)
    state: EngineState = field(default_factory=EngineState)

    def __post_init__(self):
        self.markets = markets_from_frame(self.markets_frame)
        self.resolution = ResolutionIndex.build(self.history, self.markets)

    def update_markets(self, markets_frame: pl.DataFrame, history: pl.DataFrame) -> None:
        """New or changed market metadata and settlements (a live feed): markets keep their state slots."""
        for row in markets_frame.sort("ticker").iter_rows(named=True):
            open_ts, close_ts = row.get("open_ts"), row.get("close_ts")
            known = self.markets.index.get(row["ticker"])
            self.markets.add(row["ticker"], row.get("category"), row.get("series_ticker"),
                             None if open_ts is None else int(open_ts.timestamp() * 1000),
                             None if close_ts is None else int(close_ts.timestamp() * 1000),
                             slot=None if known is None else int(self.markets.slot[known]))
        self.markets_frame, self.history = markets_frame, history
        self.resolution = ResolutionIndex.build(history, self.markets)

    def set_history(self, history: pl.DataFrame) -> None:
        """A resolution history recomputed with more trades (a live feed reaching a settlement)."""
        self.history = history
        self.resolution = ResolutionIndex.build(history, self.markets)

    def batch(self, snapshots: pl.DataFrame, deltas: pl.DataFrame, trades: pl.DataFrame) -> pl.DataFrame:
        known = len(self.markets.tickers)
        batch = book_and_trade_records(snapshots, deltas, trades, self.markets, self._last_times())
        if len(self.markets.tickers) != known:  # markets without metadata: new series codes need their keys
            self.resolution = ResolutionIndex.build(self.history, self.markets)
        output = run(batch.records, self.state, self.markets, self.resolution)
        return feature_frame(batch, output, self.markets)

    def _last_times(self) -> np.ndarray:
        from features.engine import S_EVENTS, S_LAST_TIME, S_OWNER

        last = np.full(len(self.markets.tickers), np.iinfo(np.int64).min, np.int64)
        for m, slot in enumerate(self.markets.slot):
            if slot < self.state.slots and self.state.ints[slot, S_OWNER] == m + 1 and self.state.ints[slot, S_EVENTS]:
                last[m] = self.state.ints[slot, S_LAST_TIME]
        return last


def iter_event_features(lake: Lake, first: date, last: date, lookback: int | None = None,
                        batch_rows: int = FEATURE_BATCH_ROWS) -> Iterator[tuple[date, pl.DataFrame]]:
    """(day, feature rows of the events of a range of markets on that day) for each day in [first, last],
    the markets of a day in ticker order, about `batch_rows` raw rows at a time (the engine's state is per
    market, so a batch of markets gives the rows it gives in one batch of the day: tested); a day without
    events gives one empty frame."""
    lookback = settings().replay_lookback_days if lookback is None else lookback
    engine = FeatureBuilder(load_markets(lake), read_resolution_history(lake))
    day = first - timedelta(days=lookback)
    while day <= last:
        for tickers in market_ranges(lake, day, batch_rows) or [None]:
            rows = engine.batch(*(load_raw(lake, stream, day, day, tickers) for stream in RAW_STREAMS))
            if day >= first:
                yield day, rows
        day += timedelta(days=1)


def build_event_features(lake: Lake, first: date, last: date, lookback: int | None = None,
                         batch_rows: int = FEATURE_BATCH_ROWS) -> tuple[pl.DataFrame, ReplayCounts]:
    """Feature rows for events with timestamps in the days [first, last] (in memory: tests, researchers)."""
    counts = ReplayCounts()
    frames = []
    for _, rows in iter_event_features(lake, first, last, lookback, batch_rows):
        counts.add(rows)
        frames.append(rows)
    features = pl.concat(frames) if frames else pl.DataFrame(schema={c.name: _DTYPES[c.dtype] for c in EVENT_COLUMNS})
    return features.select(c.name for c in EVENT_COLUMNS), counts


def materialize_event_features(lake: Lake, first: date, last: date,
                               batch_rows: int = FEATURE_BATCH_ROWS) -> FeatureReport:
    """One file per day (also for days without events), sorted by market, session and sequence; a day is
    computed and written a batch of markets at a time (ticker ranges in order, so the file is sorted)."""
    counts = ReplayCounts()
    rows_by_day: dict[str, int] = {}
    markets: set[str] = set()

    def sorted_parts(day: date, day_batches) -> Iterator[pl.DataFrame]:
        for _, rows in day_batches:
            counts.add(rows)
            part = rows.select(c.name for c in EVENT_COLUMNS).sort("market_ticker", "session_id", "sequence_number",
                                                                   "event_id")
            rows_by_day[day.isoformat()] = rows_by_day.get(day.isoformat(), 0) + part.height
            markets.update(part["market_ticker"].unique().to_list())
            yield part

    for day, day_batches in groupby(iter_event_features(lake, first, last, batch_rows=batch_rows),
                                    key=lambda item: item[0]):
        lake.write_parquet_frames(sorted_parts(day, day_batches), lake.event_partition(day),
                                  metadata={"kfs_schema_version": EVENTS_SCHEMA_VERSION})
    return FeatureReport(days=list(rows_by_day), rows_written=sum(rows_by_day.values()), rows_by_day=rows_by_day,
                         replay=asdict(counts), markets=len(markets))


def events_in_memory(snapshots: pa.Table, deltas: pa.Table, trades: pa.Table, markets: pl.DataFrame
                     ) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """Per-event features of source rows held in memory (a simulated universe, a recording), with exactly the
    lake's path: the ingest's checks (quarantine), the resolution history, then the engine over all rows at
    once. Returns the event rows and the quarantined rows per stream."""
    from features.resolution import resolution_history
    from ingest.extract import check_rows

    clean, quarantined = {}, {}
    for name, table in (("snapshots", snapshots), ("deltas", deltas), ("trades", trades)):
        clean[name], quarantined[name] = check_rows(name, table)
    history = resolution_history(markets, clean["trades"].lazy())
    events = FeatureBuilder(markets, history).batch(clean["snapshots"], clean["deltas"], clean["trades"])
    return events, quarantined
