"""Feature-build speed on the demo universe (issue: feature store).

- all per-event features (replay + five groups) in events/s, against the plain-Python reference
  implementation (tests/reference) on a sample of the same events, in the same run;
- scaling: time for twice the events, as a multiple of the time for the events once;
- replay + orderbook + temporal features on one core (a subprocess with one Polars and one numba thread).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from bench.results_io import Result, print_results, write_results
from bench.universe import drop_schema, ingest_days, simulate_into
from core.catalog import Lake
from features.events import (
    build_event_features,
    compute_event_features,
    load_markets,
    load_raw,
)
from features.replay import merge_book_events, replay
from features.resolution import build_resolution_history
from source.pg_server import source_dsn
from source.simulator import SimulationConfig
from tests.reference.features import reference_features
from tests.reference.replay import replay_events

REPO = Path(__file__).resolve().parent.parent
SCHEMA = "kfs_bench_features"

ONE_CORE_SCRIPT = """
import json, os, sys, time
from datetime import date
from features.events import load_raw, load_markets, market_meta, stream_core_features
from features.replay import merge_book_events, replay
from core.catalog import Lake
lake, first, last = Lake(sys.argv[1]), date.fromisoformat(sys.argv[2]), date.fromisoformat(sys.argv[3])
snapshots, deltas = load_raw(lake, "snapshots", first, last), load_raw(lake, "deltas", first, last)
trades, meta = load_raw(lake, "trades", first, last), market_meta(load_markets(lake))
warm_events, warm_levels = merge_book_events(snapshots.head(50), deltas.head(5000))
stream_core_features(replay(warm_events, warm_levels)[0], trades.head(100), meta)
best_core = best_all = 1e9
for _ in range(3):
    started = time.perf_counter()
    events, levels = merge_book_events(snapshots, deltas)
    merged = time.perf_counter()
    core = stream_core_features(replay(events, levels)[0], trades, meta)
    done = time.perf_counter()
    best_core, best_all = min(best_core, done - merged), min(best_all, done - started)
print(json.dumps({"events": core.height, "core_s": best_core, "with_merge_s": best_all}))
"""


def ingest_demo_universe(dsn: str, lake: Lake):
    config = SimulationConfig()
    tables, _ = simulate_into(dsn, SCHEMA, config)
    return ingest_days(dsn, tables, lake, config, extra_days=0)


def reference_events_per_second(lake: Lake, first, last, markets: int = 3, sample: int = 150) -> float:
    """Reference replay over whole market streams plus reference features at sampled events, per event."""
    rng = random.Random(7)
    snapshots, deltas = load_raw(lake, "snapshots", first, last), load_raw(lake, "deltas", first, last)
    trades, all_markets = load_raw(lake, "trades", first, last), load_markets(lake)
    settled = build_resolution_history(lake).to_dicts()
    tickers = sorted(set(deltas["market_ticker"].unique().to_list()))
    replay_seconds = feature_seconds = 0.0
    replayed = featured = 0
    for ticker in rng.sample(tickers, markets):
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
        started = time.perf_counter()
        book_events = []
        for session in sorted(streams):
            stream = sorted(streams[session], key=lambda e: (e["sequence_number"], e["kind"] != "snapshot"))
            for event, state in zip(stream, replay_events(stream)):
                book_events.append({"timestamp_ms": event["timestamp_ms"], "best_yes_bid": state.best_yes_bid or 0,
                                    "best_no_bid": 100 - state.best_yes_ask if state.best_yes_ask else 0,
                                    "yes_depth5": state.yes_depth5, "no_depth5": state.no_depth5})
        replay_seconds += time.perf_counter() - started
        replayed += len(book_events)
        info = all_markets.filter(pl.col("ticker") == ticker).row(0, named=True)
        market = {"category": info["category"], "series_ticker": info["series_ticker"],
                  "open_ms": int(info["open_ts"].timestamp() * 1000), "close_ms": int(info["close_ts"].timestamp() * 1000)}
        market_trades = trades.filter(pl.col("market_ticker") == ticker).sort("ts", "id").to_dicts()
        positions = sorted(rng.sample(range(len(book_events)), min(sample, len(book_events))))
        started = time.perf_counter()
        reference_features(book_events, market_trades, market, settled, at=positions)
        feature_seconds += time.perf_counter() - started
        featured += len(positions)
    per_event = replay_seconds / replayed + feature_seconds / featured
    return 1.0 / per_event


def timed_build(book_inputs, trades, markets, history) -> tuple[int, float]:
    snapshots, deltas = book_inputs
    started = time.perf_counter()
    events, levels = merge_book_events(snapshots, deltas)
    book, _ = replay(events, levels)
    features = compute_event_features(book, trades, markets, history)
    return features.height, time.perf_counter() - started


def scaling(lake: Lake, first, last) -> tuple[float, int, int]:
    """Time for the whole universe against half of its markets, normalised to exactly twice the events."""
    snapshots, deltas = load_raw(lake, "snapshots", first, last), load_raw(lake, "deltas", first, last)
    trades, markets = load_raw(lake, "trades", first, last), load_markets(lake)
    history = build_resolution_history(lake)
    tickers = sorted(deltas["market_ticker"].unique().to_list())
    half = set(tickers[::2])
    subset = (snapshots.filter(pl.col("market_ticker").is_in(half)), deltas.filter(pl.col("market_ticker").is_in(half)))
    trades_half = trades.filter(pl.col("market_ticker").is_in(half))
    timed_build(subset, trades_half, markets, history)  # warm-up
    n_half, t_half = min((timed_build(subset, trades_half, markets, history) for _ in range(3)), key=lambda r: r[1])
    n_all, t_all = min((timed_build((snapshots, deltas), trades, markets, history) for _ in range(3)), key=lambda r: r[1])
    return (t_all / t_half) * (2.0 / (n_all / n_half)), n_half, n_all


def main() -> list[Result]:
    dsn = source_dsn()
    lake_dir = Path(tempfile.mkdtemp(prefix="kfs-bench-features-"))
    lake = Lake(lake_dir)
    try:
        days = ingest_demo_universe(dsn, lake)
        first, last = days[0], days[-1]
        build_event_features(lake, first, first)  # compile and warm the caches
        runs = []
        for _ in range(2):
            started = time.perf_counter()
            features, _ = build_event_features(lake, first, last)
            runs.append((features.height, time.perf_counter() - started))
        events, seconds = min(runs, key=lambda r: r[1])
        production_rate = events / seconds
        reference_rate = reference_events_per_second(lake, first, last)
        scale, n_half, n_all = scaling(lake, first, last)
        one_core = subprocess.run(
            [sys.executable, "-c", ONE_CORE_SCRIPT, str(lake_dir), first.isoformat(), last.isoformat()],
            env={**__import__("os").environ, "POLARS_MAX_THREADS": "1", "NUMBA_NUM_THREADS": "1",
                 "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
            capture_output=True, text=True, check=True, cwd=REPO)
        core = json.loads(one_core.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(lake_dir, ignore_errors=True)
        drop_schema(dsn, SCHEMA)
    results = [
        Result("all_features_events_per_s", production_rate, "events/s", "reference_python_events_per_s",
               reference_rate, production_rate / reference_rate, ">= 100"),
        Result("all_features_seconds", seconds, "s", target=f"{events:,} events incl. parquet read"),
        Result("scaling_time_for_2x_events", scale, "x", target="<= 2.2",
               baseline_name=f"time for {n_half:,} events", baseline_value=1.0, ratio=scale),
        Result("replay_orderbook_temporal_one_core_events_per_s", core["events"] / core["core_s"], "events/s",
               target=">= 2,000,000"),
        Result("replay_orderbook_temporal_one_core_incl_merge_events_per_s", core["events"] / core["with_merge_s"],
               "events/s", target="(merge = sorting raw snapshots and deltas into one stream)"),
    ]
    write_results("features.json", results)
    print_results("features (demo universe: 300 markets x 7 days)", results)
    return results


if __name__ == "__main__":
    main()
