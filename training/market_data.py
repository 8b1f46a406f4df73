"""Per-market arrays for the simulator: features, book prices and sizes, times, settlement.

Built once per version of the feature store into a local cache of flat column files (one per array, all
markets back to back) and mapped read-only from there, so the arrays of every market cost address space, not
memory: training reads the rows it samples, the operating system keeps what it can in its page cache and
drops it under pressure, the process gives mapped pages back past a budget (training/mapped_pages.py), and
its memory depends on batches, episodes and that budget, not on the history (docs/scaling.md). Episodes are
cut from these arrays. Market identity stays here (for bookkeeping and the split assertion) and never
enters an observation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numba
import numpy as np
import polars as pl
import pyarrow.parquet as pq

from core.catalog import Lake, fsync_dir, write_bytes_atomic
from core.locks import exclusive
from features import store
from features.schema import MODEL_FEATURES
from training.mapped_pages import mapped_array

_BOOK_COLUMNS = ["best_yes_bid_cents", "best_yes_ask_cents", "best_yes_bid_size", "best_no_bid_size"]
# The arrays of a market and their types; the cache keeps one flat file per array.
ARRAY_TYPES = {"time_ms": np.int64, "features": np.float32, "bid": np.int16, "ask": np.int16,
               "bid_size": np.int64, "ask_size": np.int64}
CACHE_FORMAT = 1   # bump when the cache's layout or the meaning of its arrays changes


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

    def of_split(self, split: str) -> list[MarketSeries]:
        return [m for m in self.markets.values() if m.split == split]


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
    return _assemble(arrays, _index_of(series), names, *placement.normalisation(), partitions or [])


def _series_of(events: pl.DataFrame, info: dict, names: list[str], min_events: int) -> dict[str, MarketSeries]:
    frame = events.filter(pl.col("market_ticker").is_in(list(info))).select(
        "market_ticker", "event_time_ms", *_BOOK_COLUMNS, *names).sort("market_ticker", "event_time_ms",
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
        index.append(_index_entry(market.ticker, facts, first_row, len(market.time_ms)))
        first_row += len(market.time_ms)
    return index


def _index_entry(ticker: str, facts: dict, first_row: int, rows: int) -> dict:
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


def _assemble(arrays: dict[str, np.ndarray], index: list[dict], names: list[str], mean: np.ndarray, std: np.ndarray,
              partitions: list[str]) -> MarketData:
    markets = {}
    for m in index:
        rows = slice(m["first_row"], m["first_row"] + m["rows"])
        markets[m["ticker"]] = MarketSeries(
            ticker=m["ticker"], split=m["split"], volatility_class=m["volatility_class"],
            **{name: arrays[name][rows] for name in ARRAY_TYPES},
            settled_ms=m["settled_ms"], outcome_yes=m["outcome_yes"], first_row=m["first_row"])
    return MarketData(markets=markets, feature_names=names, mean=mean, std=std, partitions=partitions, arrays=arrays)


def load_market_data(lake: Lake | None = None, splits: tuple[str, ...] = ("train", "validation", "test"),
                     min_events: int = 50) -> MarketData:
    """Every market's arrays, memory-mapped from the training cache of the lake's current feature store
    (built first if this version has none, see `_build_cache`). The arrays and statistics are the ones one
    read of every event gives (tested)."""
    lake = lake or Lake()
    markets = store.load_markets(lake).filter(pl.col("split").is_in(list(splits)))
    files = lake.partition_files("features_events")
    if not files:
        raise FileNotFoundError(f"no event features under {lake.location('features_events')}: run `kfs materialize` first")
    key = _cache_key(lake, files, splits, min_events)
    root = lake.local_cache("training_arrays")
    with exclusive(f"training-cache-{root.name}"):
        folder = root / key
        if not (folder / "index.json").exists():
            _build_cache(lake, files, markets, folder, min_events)
            _remove_other_versions(root, keep=folder)
        return open_cache(folder)


def _cache_key(lake: Lake, files: list, splits: tuple[str, ...], min_events: int) -> str:
    """A name for this version of the training arrays: what they are built from and how."""
    parts = [f"format={CACHE_FORMAT}", f"splits={','.join(splits)}", f"min_events={min_events}",
             f"features={','.join(MODEL_FEATURES)}", f"markets={lake.fingerprint(lake.location('markets_mart'))}"]
    parts += [f"{path}={lake.fingerprint(path)}" for path in files]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


READ_ROWS = 1 << 16   # rows of a feature file decoded at a time while the cache is built


def _build_cache(lake: Lake, files: list, markets: pl.DataFrame, folder: Path, min_events: int) -> None:
    """The column files, holding one slice of `READ_ROWS` rows (or one market) in memory, never the history:
    (1) the market column of every day file gives each market's number of rows and so its place in the
    output; (2) every day file, a slice at a time, is written run by run (files are sorted by market) into
    place with pwrite (`ColumnFiles`), days in order, taking the statistics on the way (`Placement`);
    (3) a market whose rows did not come in event-time order is sorted (stable: what sorting the
    concatenated rows by market and time gives). Nothing written is read back unless a market needs sorting:
    under memory pressure the kernel writes the new pages out and drops them, and reading them back read
    gigabytes from the disk (4x scale universe). The folder appears whole (built under a temporary name, then
    renamed) or not at all."""
    info = {row["market_ticker"]: row for row in markets.iter_rows(named=True)}
    names = list(MODEL_FEATURES)
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        counts = _market_rows(lake, files, set(info))
        index, first_row = [], 0
        for ticker in sorted(t for t, rows in counts.items() if rows >= min_events):
            index.append(_index_entry(ticker, market_facts(info[ticker]), first_row, counts[ticker]))
            first_row += counts[ticker]
        with ColumnFiles(building, first_row, len(names)) as columns:
            placement = _place_rows(lake, files, names, index, columns)
            for market in index:
                if market["ticker"] in placement.unsorted:
                    _sort_by_event_time(columns, market["first_row"], market["rows"])
        mean, std = placement.normalisation()
        manifest = {"format": CACHE_FORMAT, "feature_names": names, "markets": index,
                    "mean": mean.tolist(), "std": std.tolist(),
                    "partitions": [day.isoformat() for day in lake.partitions("features_events")]}
        write_bytes_atomic(building / "index.json", json.dumps(manifest).encode())
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(building, folder)
        fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _market_rows(lake: Lake, files: list, wanted: set[str]) -> dict[str, int]:
    """Rows per wanted market over every file, from the market column alone."""
    counts: dict[str, int] = {}
    for path in files:
        for frame in _row_slices(lake, path, ["market_ticker"]):
            for length, ticker in _runs_of(frame):
                if ticker in wanted:
                    counts[ticker] = counts.get(ticker, 0) + length
    return counts


def _runs_of(frame: pl.DataFrame) -> Iterator[tuple[int, str]]:
    """(rows, market) of each run of equal markets, in order."""
    return frame.select(pl.col("market_ticker").rle()).unnest("market_ticker").iter_rows()


class ColumnFiles:
    """The cache's column files at their final size, open for reading and writing rows in place (pread/pwrite:
    the process maps nothing, so the written pages are the page cache's, never its own resident memory). As a
    context: on disk and closed on leaving normally, closed on an error."""

    def __init__(self, folder: Path, rows: int, width: int):
        self.width = width
        self.handles = {name: open(folder / f"{name}.bin", "w+b") for name in ARRAY_TYPES}
        for name, handle in self.handles.items():
            handle.truncate(rows * self.row_bytes(name))

    def __enter__(self) -> "ColumnFiles":
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        try:
            if error_type is None:
                self.sync()
        finally:
            for handle in self.handles.values():
                handle.close()

    def row_bytes(self, name: str) -> int:
        return np.dtype(ARRAY_TYPES[name]).itemsize * (self.width if name == "features" else 1)

    def write(self, name: str, first: int, values: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(values, ARRAY_TYPES[name])).cast("B")
        offset = first * self.row_bytes(name)
        while data:
            written = os.pwrite(self.handles[name].fileno(), data, offset)
            data, offset = data[written:], offset + written

    def read(self, name: str, first: int, rows: int) -> np.ndarray:
        size = rows * self.row_bytes(name)
        data = os.pread(self.handles[name].fileno(), size, first * self.row_bytes(name))
        if len(data) != size:
            raise OSError(f"{self.handles[name].name}: read {len(data)} of {size} bytes at row {first}")
        values = np.frombuffer(data, ARRAY_TYPES[name])
        return values.reshape(rows, self.width) if name == "features" else values

    def sync(self) -> None:
        """On disk, not just in the page cache: the folder is renamed into place after this, and a version
        whose index survived a crash must not read rows that never reached the disk."""
        for handle in self.handles.values():
            os.fsync(handle.fileno())


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


def _place_rows(lake: Lake, files: list, names: list[str], index: list[dict], columns: ColumnFiles) -> Placement:
    """Every kept market's rows, read a slice at a time (converted once per slice; a market's run is a view
    of it), written after the rows of it already placed."""
    first_rows = {m["ticker"]: m["first_row"] for m in index}
    split_of = {m["ticker"]: m["split"] for m in index}
    placement = Placement(set(split_of.values()), len(names))
    placed = dict.fromkeys(first_rows, 0)
    for path in files:
        for frame in _row_slices(lake, path, ["market_ticker", "event_time_ms", *_BOOK_COLUMNS, *names]):
            arrays, offset = event_arrays(frame, names), 0
            for length, ticker in _runs_of(frame):
                if ticker in first_rows:
                    run = {name: values[offset:offset + length] for name, values in arrays.items()}
                    for name, values in run.items():
                        columns.write(name, first_rows[ticker] + placed[ticker], values)
                    placement.saw(ticker, split_of[ticker], run)
                    placed[ticker] += length
                offset += length
    return placement


def _sort_by_event_time(columns: ColumnFiles, first: int, rows: int) -> None:
    """Put a market's rows in event-time order if they are not (a stable sort: ties keep the file order)."""
    if rows < 2:
        return
    times = columns.read("time_ms", first, rows)
    if bool(np.all(times[1:] >= times[:-1])):
        return
    order = np.argsort(times, kind="stable")
    for name in ARRAY_TYPES:
        columns.write(name, first, columns.read(name, first, rows)[order])


def _row_slices(lake: Lake, path: Path, columns: list[str]) -> Iterator[pl.DataFrame]:
    """A feature file's `columns`, `READ_ROWS` rows at a time (a local file or an object)."""
    with (lake.fs.open(path.path, "rb") if lake.remote else open(path, "rb")) as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=READ_ROWS, columns=columns):
            yield pl.from_arrow(batch)


def _remove_other_versions(root: Path, keep: Path) -> None:
    """Older versions of this lake's training arrays (a process still mapping one keeps its pages: unlinked
    files live until unmapped) and folders of builds that were killed."""
    for folder in root.iterdir():
        if folder != keep and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def open_cache(folder: Path) -> MarketData:
    """The MarketData of a built cache folder, its arrays mapped from the files."""
    manifest = json.loads((folder / "index.json").read_text())
    if manifest.get("format") != CACHE_FORMAT:
        raise ValueError(f"{folder} holds training arrays of format {manifest.get('format')}, not {CACHE_FORMAT}")
    names = manifest["feature_names"]
    arrays = {name: mapped_array(folder / f"{name}.bin", ARRAY_TYPES[name], len(names) if name == "features" else None)
              for name in ARRAY_TYPES}
    return _assemble(arrays, manifest["markets"], names, np.asarray(manifest["mean"], np.float32),
                     np.asarray(manifest["std"], np.float32), manifest["partitions"])
