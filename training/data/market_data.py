"""Per-market arrays for the simulator: features, book prices and sizes, times, settlement; and the
normalisation statistics taken while the rows are placed.

`MarketData` holds every market's arrays back to back (each market's arrays are views of them); the
training cache (training/data/cache.py) builds them once per version of the feature store and maps them
from disk, `market_data_from_events` makes them in memory for small universes and tests. Episodes are cut
from these arrays. Market identity stays here (for bookkeeping and the split assertion) and never enters an
observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numba
import numpy as np
import polars as pl

from features.schema import MODEL_FEATURES
from training.data.roles import ROLES, selection_tickers

BOOK_COLUMNS = ["best_yes_bid_cents", "best_yes_ask_cents", "best_yes_bid_size", "best_no_bid_size"]
# The arrays of a market and their types; the cache keeps one flat file per array.
ARRAY_TYPES = {"time_ms": np.int64, "features": np.float32, "bid": np.int16, "ask": np.int16,
               "bid_size": np.int64, "ask_size": np.int64}


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
    first_row: int | None = None   # row of the market's first event in its MarketData's `arrays`, if there

    def fill_rows(self, latency_ms: int, rows: np.ndarray | None = None) -> np.ndarray:
        """int64, one per row of `rows` (default: every row): the row whose book an order sent at that row
        meets: the last event of this market at or before the order's arrival, `latency_ms` later (never
        past the last row). Computed on demand: a cache of it would grow with the history."""
        sent = self.time_ms if rows is None else self.time_ms[rows]
        return np.searchsorted(self.time_ms, sent + latency_ms, side="right") - 1


@dataclass
class MarketData:
    markets: dict[str, MarketSeries]
    feature_names: list[str]
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    std: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    partitions: list[str] = field(default_factory=list)
    # Every market's rows back to back, per array (the markets' arrays are views of these); None when the
    # markets were made one by one.
    arrays: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _selection: frozenset[str] | None = field(default=None, repr=False)

    def of_split(self, split: str) -> list[MarketSeries]:
        """Markets of a split of the registry: train, validation or test."""
        return [m for m in self.markets.values() if m.split == split]

    def of_role(self, role: str) -> list[MarketSeries]:
        """Markets of a role (training/data/roles.py): fit and select divide the training split, validation and
        test are the registry's (and "train" is fit and select together)."""
        if role not in (*ROLES, "train"):
            raise ValueError(f"unknown role {role!r}; choose {', '.join(ROLES)} (or train: fit and select)")
        if role not in ("fit", "select"):
            return self.of_split(role)
        select = self.selection()
        return [m for m in self.of_split("train") if (m.ticker in select) == (role == "select")]

    def selection(self) -> frozenset[str]:
        """The tickers of the select role, dealt once per MarketData."""
        if self._selection is None:
            self._selection = selection_tickers(sorted(self.of_split("train"), key=lambda m: m.ticker),
                                                self.feature_names)
        return self._selection


def market_facts(info: dict) -> dict:
    """What a market is besides its rows, from its markets-mart row: split, class, settlement."""
    settled = info["settled_ts"]
    resolved = info["result"] in ("yes", "no")
    return {"split": info["split"], "volatility_class": info["volatility_class"],
            "settled_ms": int(settled.timestamp() * 1000) if settled is not None and resolved else None,
            "outcome_yes": (info["result"] == "yes") if resolved else None}


def event_arrays(part: pl.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """The arrays of event rows (any number of markets), in the cache's types."""
    return {"time_ms": part["event_time_ms"].to_numpy().astype(np.int64, copy=False),
            "features": _feature_matrix(part, names),
            "bid": part["best_yes_bid_cents"].to_numpy().astype(np.int16),
            "ask": part["best_yes_ask_cents"].to_numpy().astype(np.int16),
            "bid_size": part["best_yes_bid_size"].to_numpy().astype(np.int64, copy=False),
            "ask_size": part["best_no_bid_size"].to_numpy().astype(np.int64, copy=False)}


def _feature_matrix(part: pl.DataFrame, names: list[str]) -> np.ndarray:
    """float32 [rows, features], row-major, filled a column at a time (a frame's columns are separate arrays;
    converting the frame whole and then making it row-major took 1.6x as long)."""
    matrix = np.empty((part.height, len(names)), np.float32)
    for column, name in enumerate(names):
        matrix[:, column] = part[name].to_numpy()
    return matrix


def market_series(ticker: str, part: pl.DataFrame, info: dict, names: list[str]) -> MarketSeries:
    """One market's arrays from its event rows (sorted by event time) and its markets-mart row."""
    return MarketSeries(ticker=ticker, **event_arrays(part, names), **market_facts(info))


def market_data_from_events(events: pl.DataFrame, markets: pl.DataFrame, min_events: int = 50,
                            partitions: list[str] | None = None) -> MarketData:
    """MarketData in memory from event rows and one row per market (market_ticker, split, volatility_class,
    settled_ts, result); normalisation statistics from the training markets. For small universes and tests;
    `load_market_data` is the one for the lake."""
    info = {row["market_ticker"]: row for row in markets.iter_rows(named=True)}
    names = list(MODEL_FEATURES)
    series = list(_series_of(events, info, names, min_events).values())
    arrays = {name: np.concatenate([getattr(m, name) for m in series]) if series else _empty(name, len(names))
              for name in ARRAY_TYPES}
    placement = Placement({m.split for m in series}, len(names))
    for market in series:
        placement.saw(market.ticker, market.split, {"time_ms": market.time_ms, "features": market.features})
    return assemble(arrays, _index_of(series), names, *placement.normalisation(), partitions or [])


def _series_of(events: pl.DataFrame, info: dict, names: list[str], min_events: int) -> dict[str, MarketSeries]:
    frame = events.filter(pl.col("market_ticker").is_in(list(info))).select(
        "market_ticker", "event_time_ms", *BOOK_COLUMNS, *names).sort("market_ticker", "event_time_ms",
                                                                         maintain_order=True)
    return {ticker: market_series(ticker, part, info[ticker], names)
            for (ticker,), part in frame.group_by(["market_ticker"], maintain_order=True) if part.height >= min_events}


def _empty(name: str, n_features: int) -> np.ndarray:
    return np.zeros((0, n_features) if name == "features" else 0, ARRAY_TYPES[name])


def _index_of(series: list[MarketSeries], first_row: int = 0) -> list[dict]:
    """Where each market's rows are in the flat arrays, and what a market is besides its rows."""
    index = []
    for market in series:
        facts = {key: getattr(market, key) for key in ("split", "volatility_class", "settled_ms", "outcome_yes")}
        index.append(index_entry(market.ticker, facts, first_row, len(market.time_ms)))
        first_row += len(market.time_ms)
    return index


def index_entry(ticker: str, facts: dict, first_row: int, rows: int) -> dict:
    """One market in the cache's index: what it is (`market_facts`) and where its rows are."""
    return {"ticker": ticker, **facts, "first_row": first_row, "rows": rows}


class FeatureMoments:
    """Rows, mean and sum of squared deviations per feature, in float64, taken a block of rows at a time and
    merged by Chan, Golub and LeVeque's pairwise update: one pass over the rows, and the figures agree with
    float64 arithmetic over all rows to float32 precision however the rows are cut into blocks (tested)."""

    def __init__(self, width: int):
        self.rows = 0
        self.mean = np.zeros(width, np.float64)
        self.squares = np.zeros(width, np.float64)

    def add(self, block: np.ndarray) -> None:
        if len(block):
            self.merge(len(block), *_mean_and_squares(block))

    def merge(self, rows: int, mean: np.ndarray, squares: np.ndarray) -> None:
        if rows == 0:
            return
        total = self.rows + rows
        delta = mean - self.mean
        self.mean = self.mean + delta * (rows / total)
        self.squares = self.squares + squares + np.square(delta) * (self.rows * rows / total)
        self.rows = total

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 mean and standard deviation (floor 1e-3); zeros and the floor without rows."""
        if self.rows == 0:
            return np.zeros(len(self.mean), np.float32), np.full(len(self.mean), 1e-3, np.float32)
        std = np.maximum(np.sqrt(self.squares / self.rows), 1e-3)
        return self.mean.astype(np.float32), std.astype(np.float32)


@numba.njit(cache=True)
def _mean_and_squares(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A block's float64 mean and sum of squared deviations per column, in two passes over its rows and no
    copy (NumPy's float64 copy, mean, difference and square took 1.7 times as long, this one's compiling
    included, over the 4x scale universe)."""
    rows, width = block.shape
    mean = np.zeros(width)
    for row in range(rows):
        for column in range(width):
            mean[column] += block[row, column]
    mean /= rows
    squares = np.zeros(width)
    for row in range(rows):
        for column in range(width):
            deviation = block[row, column] - mean[column]
            squares[column] += deviation * deviation
    return mean, squares


class Placement:
    """What placing the rows learns on the way: each split's feature moments, and the markets whose rows did
    not come in event-time order (after the last event time placed of each market)."""

    def __init__(self, splits: Iterable[str], width: int):
        self.width = width
        self.moments = {split: FeatureMoments(width) for split in splits}
        self.unsorted: set[str] = set()
        self.last_time: dict[str, int] = {}

    def saw(self, ticker: str, split: str, run: dict[str, np.ndarray]) -> None:
        """A run of a market's rows, placed after those already placed of it."""
        self.moments[split].add(run["features"])
        times = run["time_ms"]
        if times[0] < self.last_time.get(ticker, times[0]) or bool(np.any(times[1:] < times[:-1])):
            self.unsorted.add(ticker)
        self.last_time[ticker] = int(times[-1])   # the latest so far, unless the market is already unsorted

    def normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation from the training markets, else every market."""
        train = self.moments.get("train")
        chosen = [train] if train is not None and train.rows else list(self.moments.values())
        every = FeatureMoments(self.width)
        for moments in chosen:
            every.merge(moments.rows, moments.mean, moments.squares)
        return every.statistics()


def assemble(arrays: dict[str, np.ndarray], index: list[dict], names: list[str], mean: np.ndarray, std: np.ndarray,
              partitions: list[str]) -> MarketData:
    markets = {}
    for m in index:
        rows = slice(m["first_row"], m["first_row"] + m["rows"])
        markets[m["ticker"]] = MarketSeries(
            ticker=m["ticker"], split=m["split"], volatility_class=m["volatility_class"],
            **{name: arrays[name][rows] for name in ARRAY_TYPES},
            settled_ms=m["settled_ms"], outcome_yes=m["outcome_yes"], first_row=m["first_row"])
    return MarketData(markets=markets, feature_names=names, mean=mean, std=std, partitions=partitions, arrays=arrays)
