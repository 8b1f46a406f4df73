"""Per-market arrays for the simulator: features, book prices and sizes, times, settlement.

Loaded once from the feature store and the markets mart; episodes are cut from these arrays. Market
identity stays here (for bookkeeping and the split assertion) and never enters an observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from core.catalog import Lake
from features import store
from features.schema import MODEL_FEATURES

_BOOK_COLUMNS = ["best_yes_bid_cents", "best_yes_ask_cents", "best_yes_bid_size", "best_no_bid_size"]


@dataclass
class MarketSeries:
    ticker: str
    split: str
    volatility_class: str
    time_ms: np.ndarray        # int64 [n], monotone
    features: np.ndarray       # float32 [n, F]
    bid: np.ndarray            # int16 [n], best YES bid cents, 0 = none
    ask: np.ndarray            # int16 [n], best YES ask cents, 100 = none
    bid_size: np.ndarray       # int64 [n]
    ask_size: np.ndarray       # int64 [n]
    settled_ms: int | None     # settlement time if settled
    outcome_yes: bool | None
    _fill_rows: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def fill_rows(self, latency_ms: int) -> np.ndarray:
        """int64 [n]: the row whose book an order sent at each row meets: the last event of this market
        at or before the order's arrival, `latency_ms` later (never past the last row)."""
        if latency_ms not in self._fill_rows:
            self._fill_rows[latency_ms] = np.searchsorted(self.time_ms, self.time_ms + latency_ms, side="right") - 1
        return self._fill_rows[latency_ms]


@dataclass
class MarketData:
    markets: dict[str, MarketSeries]
    feature_names: list[str]
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    std: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    partitions: list[str] = field(default_factory=list)

    def of_split(self, split: str) -> list[MarketSeries]:
        return [m for m in self.markets.values() if m.split == split]


def market_series(ticker: str, part: pl.DataFrame, info: dict, names: list[str]) -> MarketSeries:
    """One market's arrays from its event rows (sorted by event time) and its markets-mart row."""
    settled = info["settled_ts"]
    resolved = info["result"] in ("yes", "no")
    return MarketSeries(
        ticker=ticker, split=info["split"], volatility_class=info["volatility_class"],
        time_ms=part["event_time_ms"].to_numpy(),
        features=part.select(names).to_numpy().astype(np.float32, copy=False),
        bid=part["best_yes_bid_cents"].to_numpy().astype(np.int16),
        ask=part["best_yes_ask_cents"].to_numpy().astype(np.int16),
        bid_size=part["best_yes_bid_size"].to_numpy(), ask_size=part["best_no_bid_size"].to_numpy(),
        settled_ms=int(settled.timestamp() * 1000) if settled is not None and resolved else None,
        outcome_yes=(info["result"] == "yes") if resolved else None,
    )


def market_data_from_events(events: pl.DataFrame, markets: pl.DataFrame, min_events: int = 50,
                            partitions: list[str] | None = None) -> MarketData:
    """MarketData from event rows and one row per market (market_ticker, split, volatility_class, settled_ts,
    result); normalisation statistics from the training markets."""
    info = {row["market_ticker"]: row for row in markets.iter_rows(named=True)}
    names = list(MODEL_FEATURES)
    return _normalised(MarketData(markets=_series_of(events, info, names, min_events), feature_names=names,
                                  partitions=partitions or []))


def _series_of(events: pl.DataFrame, info: dict, names: list[str], min_events: int) -> dict[str, MarketSeries]:
    frame = events.filter(pl.col("market_ticker").is_in(list(info))).select(
        "market_ticker", "event_time_ms", *_BOOK_COLUMNS, *names).sort("market_ticker", "event_time_ms",
                                                                         maintain_order=True)
    return {ticker: market_series(ticker, part, info[ticker], names)
            for (ticker,), part in frame.group_by(["market_ticker"], maintain_order=True) if part.height >= min_events}


def _normalised(data: MarketData) -> MarketData:
    names = data.feature_names
    train = [m.features for m in data.of_split("train")] or [m.features for m in data.markets.values()]
    stacked = np.concatenate(train) if train else np.zeros((1, len(names)), np.float32)
    data.mean = stacked.mean(axis=0).astype(np.float32)
    data.std = np.maximum(stacked.std(axis=0), 1e-3).astype(np.float32)
    return data


LOAD_BATCH_MARKETS = 64


def load_market_data(lake: Lake | None = None, splits: tuple[str, ...] = ("train", "validation", "test"),
                     min_events: int = 50, batch_markets: int = LOAD_BATCH_MARKETS) -> MarketData:
    """Every market's arrays, read `batch_markets` markets at a time with only the columns training uses
    (features already as float32, as the arrays keep them): the rows in flight are one batch's, not the
    whole history's (partition files are sorted by market, so each batch reads few row groups). The arrays
    are the ones a single read gives. They themselves still grow with history (about 200 bytes per event);
    see docs/scaling.md."""
    lake = lake or Lake()
    markets = store.load_markets(lake).filter(pl.col("split").is_in(list(splits)))
    info = {row["market_ticker"]: row for row in markets.iter_rows(named=True)}
    names = list(MODEL_FEATURES)
    events = (store.load_events(lake=lake)
              .select("market_ticker", "event_time_ms", *_BOOK_COLUMNS, *names)
              .with_columns(pl.col(names).cast(pl.Float32)))
    tickers = sorted(info)
    series: dict[str, MarketSeries] = {}
    for first in range(0, len(tickers), batch_markets):
        batch = tickers[first:first + batch_markets]
        frame = events.filter(pl.col("market_ticker").is_in(batch)).collect()
        series.update(_series_of(frame, {t: info[t] for t in batch}, names, min_events))
    return _normalised(MarketData(markets=series, feature_names=names,
                                  partitions=[day.isoformat() for day in lake.partitions("features_events")]))
