"""The training cache: every market's arrays built once per version of the feature store into flat column
files on local disk (one per array, all markets back to back) and mapped read-only from there.

The arrays of every market cost address space, not memory: training reads the rows it samples, the operating
system keeps what it can in its page cache and drops it under pressure, the process gives mapped pages back
past a budget (training/data/mapped_pages.py), and its memory depends on batches, episodes and that budget,
not on the history (docs/scaling.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from core.catalog import Lake, fsync_dir, write_bytes_atomic
from core.locks import exclusive
from features import store
from features.schema import MODEL_FEATURES
from training.data.mapped_pages import mapped_array
from training.data.market_data import (
    ARRAY_TYPES,
    BOOK_COLUMNS,
    MarketData,
    Placement,
    assemble,
    event_arrays,
    index_entry,
    market_facts,
)

CACHE_FORMAT = 1   # bump when the cache's layout or the meaning of its arrays changes


def load_market_data(lake: Lake | None = None, splits: tuple[str, ...] = ("train", "validation", "test"),
                     min_events: int = 50) -> MarketData:
    """Every market's arrays, memory-mapped from the training cache of the lake's current feature store
    (built first if this version has none, see `_build_cache`). The arrays and statistics are the ones one
    read of every event gives (tested)."""
    lake = lake or Lake()
    markets = store.load_markets(lake).filter(pl.col("split").is_in(list(splits)))
    files = lake.verified_partition_files("features_events")
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
            index.append(index_entry(ticker, market_facts(info[ticker]), first_row, counts[ticker]))
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


def _place_rows(lake: Lake, files: list, names: list[str], index: list[dict], columns: ColumnFiles) -> Placement:
    """Every kept market's rows, read a slice at a time (converted once per slice; a market's run is a view
    of it), written after the rows of it already placed."""
    first_rows = {m["ticker"]: m["first_row"] for m in index}
    split_of = {m["ticker"]: m["split"] for m in index}
    placement = Placement(set(split_of.values()), len(names))
    placed = dict.fromkeys(first_rows, 0)
    for path in files:
        for frame in _row_slices(lake, path, ["market_ticker", "event_time_ms", *BOOK_COLUMNS, *names]):
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
    return assemble(arrays, manifest["markets"], names, np.asarray(manifest["mean"], np.float32),
                     np.asarray(manifest["std"], np.float32), manifest["partitions"])
