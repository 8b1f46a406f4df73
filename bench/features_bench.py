"""Feature-build speed on the demo universe (300 markets x 7 days).

- every per-event feature, offline from the raw lake (parquet read, record ordering, engine, frame), in
  events/s, against the plain-Python reference (tests/reference) on a sample of the same events;
- scaling: time for twice the events, as a multiple of the time for the events once;
- the engine kernel alone on one core (a subprocess with one Polars and one numba thread), records ready;
- point-in-time retrieval (`features.store.historical_features`) of 1M labelled rows at random times, in rows/s,
  against DuckDB's ASOF JOIN over the same files (which must find the same feature times).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import polars as pl

from bench.results_io import Result, print_results, write_results
from core.catalog import Lake
from features.events import build_event_features, load_markets, load_raw, materialize_event_features
from features.resolution import build_resolution_history, materialize_resolution_history
from kfs.universe import drop_schema, ingest_days, simulate_into, universe_days
from source.pg_server import source_dsn
from source.simulator import SimulationConfig
from tests.reference.features import reference_features
from tests.reference.replay import replay_events

REPO = Path(__file__).resolve().parent.parent
SCHEMA = "kfs_bench_features"

ONE_CORE_SCRIPT = """
import json, sys, time
from datetime import date, timedelta
from core.catalog import Lake
from features.engine import EngineState, ResolutionIndex, markets_from_frame, run
from features.events import book_and_trade_records, load_markets, load_raw
from features.resolution import read_resolution_history
lake, first, last = Lake(sys.argv[1]), date.fromisoformat(sys.argv[2]), date.fromisoformat(sys.argv[3])
raw = [load_raw(lake, s, first, last) for s in ("snapshots", "deltas", "trades")]
best = 1e9
for _ in range(3):
    markets = markets_from_frame(load_markets(lake))
    resolution = ResolutionIndex.build(read_resolution_history(lake), markets)
    batch = book_and_trade_records(*raw, markets)
    state = EngineState()
    started = time.perf_counter()
    output = run(batch.records, state, markets, resolution)
    best = min(best, time.perf_counter() - started)
print(json.dumps({"events": int(output.record.size), "records": len(batch.records), "kernel_s": best}))
"""


def ingest_demo_universe(dsn: str, lake: Lake) -> list[date]:
    config = SimulationConfig()
    tables, _ = simulate_into(dsn, SCHEMA, config)
    days = universe_days(config, extra_days=0)
    ingest_days(dsn, tables, lake, days)
    materialize_resolution_history(lake)
    return days


def _book_events(lake: Lake, ticker: str, first: date, last: date) -> list[dict]:
    snapshots, deltas = load_raw(lake, "snapshots", first, last), load_raw(lake, "deltas", first, last)
    streams: dict[int, list[dict]] = {}
    for row in snapshots.filter(pl.col("market_ticker") == ticker).iter_rows(named=True):
        streams.setdefault(row["session_id"], []).append({
            "kind": "snapshot", "sequence_number": row["sequence_number"], "timestamp_ms": row["timestamp_ms"],
            "yes_bids": dict(zip(row["yes_bid_prices"], row["yes_bid_sizes"])),
            "no_bids": dict(zip(row["no_bid_prices"], row["no_bid_sizes"]))})
    for row in deltas.filter(pl.col("market_ticker") == ticker).iter_rows(named=True):
        streams.setdefault(row["session_id"], []).append({
            "kind": "delta", "sequence_number": row["sequence_number"], "timestamp_ms": row["timestamp_ms"],
            "side": row["side"], "price": row["price"], "new_size": row["new_size"]})
    events = []
    for session in sorted(streams):
        stream = sorted(streams[session], key=lambda e: (e["sequence_number"], e["kind"] != "snapshot"))
        for event, state in zip(stream, replay_events(stream)):
            events.append({"timestamp_ms": event["timestamp_ms"], "best_yes_bid": state.best_yes_bid or 0,
                           "best_no_bid": 100 - state.best_yes_ask if state.best_yes_ask else 0,
                           "best_yes_size": state.best_yes_size, "best_no_size": state.best_no_size,
                           "yes_depth5": state.yes_depth5, "no_depth5": state.no_depth5})
    return events


def reference_events_per_second(lake: Lake, first: date, last: date, markets: int = 3, sample: int = 150) -> float:
    """Reference replay over whole market streams plus reference features at sampled events, per event."""
    rng = random.Random(7)
    trades, all_markets = load_raw(lake, "trades", first, last), load_markets(lake)
    settled = build_resolution_history(lake).to_dicts()
    tickers = sorted(set(load_raw(lake, "deltas", first, first)["market_ticker"].unique().to_list()))
    replay_seconds = feature_seconds = 0.0
    replayed = featured = 0
    for ticker in rng.sample(tickers, markets):
        started = time.perf_counter()
        book_events = _book_events(lake, ticker, first, last)
        replay_seconds += time.perf_counter() - started
        replayed += len(book_events)
        info = all_markets.filter(pl.col("ticker") == ticker).row(0, named=True)
        market = {"category": info["category"], "series_ticker": info["series_ticker"],
                  "open_ms": int(info["open_ts"].timestamp() * 1000), "close_ms": int(info["close_ts"].timestamp() * 1000)}
        market_trades = trades.filter(pl.col("market_ticker") == ticker).to_dicts()
        positions = sorted(rng.sample(range(len(book_events)), min(sample, len(book_events))))
        started = time.perf_counter()
        reference_features(book_events, market_trades, market, settled, at=positions)
        feature_seconds += time.perf_counter() - started
        featured += len(positions)
    return 1.0 / (replay_seconds / replayed + feature_seconds / featured)


def _subset_lake(lake: Lake, root: Path, keep: set[str]) -> Lake:
    """A lake with the raw partitions of some markets only (for the scaling measurement)."""
    subset = Lake(root)
    for stream in ("snapshots", "deltas", "trades"):
        for day in lake.partitions(stream):
            frame = lake.read_parquet(lake.raw_partition(stream, day)).filter(pl.col("market_ticker").is_in(keep))
            subset.write_parquet(frame, subset.raw_partition(stream, day))
    subset.write_parquet(lake.read_parquet(lake.raw_markets()), subset.raw_markets())
    subset.write_parquet(lake.read_parquet(lake.location("resolution_history")), subset.location("resolution_history"))
    return subset


def _timed_build(lake: Lake, first: date, last: date) -> tuple[int, float]:
    started = time.perf_counter()
    features, _ = build_event_features(lake, first, last, lookback=0)
    return features.height, time.perf_counter() - started


def scaling(lake: Lake, first: date, last: date, root: Path) -> tuple[float, int, int]:
    """Time for the whole universe against half of its markets, normalised to exactly twice the events."""
    tickers = sorted(load_markets(lake)["ticker"].to_list())
    half = _subset_lake(lake, root / "half", set(tickers[::2]))
    _timed_build(half, first, first)  # warm-up
    n_half, t_half = min((_timed_build(half, first, last) for _ in range(2)), key=lambda r: r[1])
    n_all, t_all = min((_timed_build(lake, first, last) for _ in range(2)), key=lambda r: r[1])
    return (t_all / t_half) * (2.0 / (n_all / n_half)), n_half, n_all


def point_in_time(lake: Lake, entities: int = 1_000_000) -> tuple[float, float]:
    """(seconds of historical_features, seconds of DuckDB's ASOF JOIN) for `entities` random labelled rows;
    both must give each row the same feature time."""
    import duckdb
    import numpy as np

    from features import store

    times = store.load_events(lake=lake, columns=["event_time_ms"]).collect()
    rng = np.random.default_rng(11)
    labels = pl.DataFrame({
        "market_ticker": times["market_ticker"].unique().sort().sample(entities, with_replacement=True, seed=11),
        "timestamp_ms": rng.integers(times["event_time_ms"].min(), times["event_time_ms"].max(), entities)})
    started = time.perf_counter()
    ours = store.historical_features(labels, features=["ob_yes_mid_prob", "ob_yes_depth_imbalance", "tm_burst"],
                                     lake=lake)
    ours_s = time.perf_counter() - started
    files = [str(path) for path in lake.verified_partition_files("features_events")]
    connection = duckdb.connect()
    connection.register("labels", labels.with_row_index("row").to_arrow())
    started = time.perf_counter()
    theirs = pl.from_arrow(connection.execute(
        f"SELECT f.event_time_ms, f.ob_yes_mid_prob, f.ob_yes_depth_imbalance, f.tm_burst FROM labels l "
        f"ASOF LEFT JOIN read_parquet({files}) f ON l.market_ticker = f.market_ticker "
        f"AND l.timestamp_ms >= f.event_time_ms ORDER BY l.row").to_arrow_table())
    duckdb_s = time.perf_counter() - started
    assert ours["feature_event_time_ms"].equals(theirs["event_time_ms"].cast(pl.Int64)), "the joins disagree"
    return ours_s, duckdb_s


def main() -> list[Result]:
    dsn = source_dsn()
    root = Path(tempfile.mkdtemp(prefix="kfs-bench-features-"))
    lake = Lake(root / "lake")
    try:
        days = ingest_demo_universe(dsn, lake)
        first, last = days[0], days[-1]
        build_event_features(lake, first, first, lookback=0)  # compile and warm the caches
        events, seconds = min((_timed_build(lake, first, last) for _ in range(2)), key=lambda r: r[1])
        production_rate = events / seconds
        reference_rate = reference_events_per_second(lake, first, last)
        scale, n_half, n_all = scaling(lake, first, last, root)
        one_core = subprocess.run(
            [sys.executable, "-c", ONE_CORE_SCRIPT, str(lake.root), first.isoformat(), last.isoformat()],
            env={**os.environ, "POLARS_MAX_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                 "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True, cwd=REPO)
        kernel = json.loads(one_core.stdout.strip().splitlines()[-1])
        materialize_event_features(lake, first, last)
        pit_s, pit_duckdb_s = point_in_time(lake)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        drop_schema(dsn, SCHEMA)
    results = [
        Result("all_features_events_per_s", production_rate, "events/s", "reference_python_events_per_s",
               reference_rate, production_rate / reference_rate, ">= 100"),
        Result("all_features_seconds", seconds, "s", target=f"{events:,} events incl. parquet read, day by day"),
        Result("scaling_time_for_2x_events", scale, "x", target="<= 2.2",
               baseline_name=f"time for {n_half:,} events", baseline_value=1.0, ratio=scale),
        Result("engine_kernel_one_core_events_per_s", kernel["events"] / kernel["kernel_s"], "events/s",
               target=f">= 2,000,000 ({kernel['records']:,} records incl. trades)"),
        Result("point_in_time_rows_per_s", 1_000_000 / pit_s, "rows/s", "duckdb_asof_join_rows_per_s",
               1_000_000 / pit_duckdb_s, pit_duckdb_s / pit_s, target=f"1M labels over {events:,} feature rows"),
    ]
    write_results("features.json", results)
    print_results("features (demo universe: 300 markets x 7 days)", results)
    return results


if __name__ == "__main__":
    main()
