"""The live path's speed on the demo universe (the default 300 markets x 7 days, simulated in memory and
replayed in arrival order; needs nothing else).

- replay throughput: events/s through `live.runner.run_live` (the code behind `kfs live`), as fast as
  possible, the backlog drained 4,096 events at a time (the `kfs live` default), features written; and the
  largest difference of any model feature on any event from the offline code path (`events_in_memory`,
  the lake's path in memory): parity on every event of the demo universe;
- per-event decision latency p50/p99: every event its own arrival (feature update + one batched forward
  pass), measured after the first day, when all markets are active;
- batched inference: N markets in one forward pass against N single-market calls, in the same run.

The model is the production architecture (forecaster, encoders, attention) scripted to int8 exactly as
`training.release.publish` does, with untrained weights: inference cost does not depend on the weights, and a
benchmark must not need a training run. It is served through `StaticServer`, which has the three methods
the runner uses from `training.release.serving.PolicyServer`.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from bench.results_io import Result, print_results, write_results
from features.events import events_in_memory
from features.schema import MODEL_FEATURES
from live.decisions import decide
from live.runner import run_live
from live.sources import arrival_times, replay
from source.simulator import SimulationConfig, simulate_in_memory
from training.learners.policy import build_policy
from training.release.publish import script_int8

UNIVERSE = SimulationConfig(start=date(2026, 6, 1))   # the demo's size, signal and effects
LATENCY_EVENTS = 20_000
BATCH_MARKETS = 100


class StaticServer:
    """One scripted model, served as PolicyServer serves its current version."""

    def __init__(self, model: torch.jit.ScriptModule):
        self.model, self.version, self.last_error = model, "bench", None

    def refresh(self) -> bool:
        return False

    def current(self):
        return self.model, self.version


def offline_rows(tables: dict) -> pl.DataFrame:
    events, _ = events_in_memory(tables["snapshots"], tables["deltas"], tables["trades"], pl.from_arrow(tables["markets"]))
    return events


def production_shaped_model(offline: pl.DataFrame) -> torch.jit.ScriptModule:
    features = offline.select(MODEL_FEATURES).to_numpy()
    mean, std = features.mean(axis=0), np.maximum(features.std(axis=0), 1e-3)
    torch.manual_seed(0)
    return script_int8(build_policy(list(MODEL_FEATURES), mean, std).eval())


def replay_throughput(tables: dict, server: StaticServer, offline: pl.DataFrame) -> tuple[float, int, float]:
    """(events/s, events, largest |online - offline| of any model feature on any event)."""
    with tempfile.TemporaryDirectory() as folder:
        report = run_live(replay(tables, batch_events=4096), server, Path(folder) / "out")
        online = pl.read_parquet(Path(folder) / "out" / "features.parquet")
    key = ["market_ticker", "session_id", "sequence_number"]
    joined = offline.select(*key, *MODEL_FEATURES).join(online, on=key, how="full", suffix="_online")
    if joined.height != offline.height or joined.height != online.height:
        return report.events_per_s, report.events, float("inf")
    worst = max(float(np.nanmax(np.abs(joined[name].to_numpy() - joined[f"{name}_online"].to_numpy()), initial=0.0))
                for name in MODEL_FEATURES)
    return report.events_per_s, report.events, worst


def per_event_latency(tables: dict, server: StaticServer) -> tuple[dict[str, float], int]:
    """The first day replayed in batches (every market's state built up), then LATENCY_EVENTS events each as
    its own arrival: their decision latencies (feature update plus one forward pass)."""
    day_ms = int(pl.from_arrow(tables["deltas"])["timestamp_ms"].min()) + 86_400_000
    before, after = _split_at(tables, day_ms, LATENCY_EVENTS)
    with tempfile.TemporaryDirectory() as folder:
        run_live(itertools.chain(replay(before, batch_events=4096), replay(after, batch_events=1)), server,
                 Path(folder) / "out")
        decisions = pl.read_parquet(Path(folder) / "out" / "decisions.parquet")
    late = decisions.filter((pl.col("timestamp_ms") >= day_ms) & (pl.col("arrival_events") == 1))
    active = late["market_ticker"].n_unique()
    latency = late["latency_us"].to_numpy()
    return {"p50_us": float(np.quantile(latency, 0.5)), "p99_us": float(np.quantile(latency, 0.99))}, active


def _split_at(tables: dict, time_ms: int, events_after: int) -> tuple[dict, dict]:
    """(rows that arrived before `time_ms`, the next `events_after` rows), each with the markets table."""
    times = arrival_times(tables)
    later = np.sort(np.concatenate([t[t >= time_ms] for t in times.values()]))
    until = int(later[min(events_after, len(later) - 1)])
    before = {name: tables[name].filter(pa.array(times[name] < time_ms)) for name in times}
    after = {name: tables[name].filter(pa.array((times[name] >= time_ms) & (times[name] < until))) for name in times}
    return {**before, "markets": tables["markets"]}, {**after, "markets": None}  # markets known from before


def batched_against_single(model: torch.jit.ScriptModule, n: int = BATCH_MARKETS, repeats: int = 200) -> tuple[float, float]:
    """Seconds per decision round for n markets: one forward pass against n single-market passes."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n, len(MODEL_FEATURES))).astype(np.float32)
    positions = np.zeros((n, 5), np.float32)
    for _ in range(20):
        decide(model, "bench", features, positions)
        decide(model, "bench", features[:1], positions[:1])
    started = time.perf_counter()
    for _ in range(repeats):
        decide(model, "bench", features, positions)
    batched = (time.perf_counter() - started) / repeats
    started = time.perf_counter()
    for _ in range(repeats):
        for i in range(n):
            decide(model, "bench", features[i:i + 1], positions[i:i + 1])
    single = (time.perf_counter() - started) / repeats
    return batched, single


def main() -> list[Result]:
    torch.set_num_threads(1)
    tables = simulate_in_memory(UNIVERSE)
    offline = offline_rows(tables)
    model = production_shaped_model(offline)
    server = StaticServer(model)
    events_per_s, events, worst = replay_throughput(tables, server, offline)
    del offline
    latency, active = per_event_latency(tables, server)
    batched, single = batched_against_single(model)
    results = [
        Result("replay_events_per_s_one_thread", events_per_s, "events/s", target=">= 100,000"),
        Result("replay_events", events, "events", target=f"{UNIVERSE.markets} markets x {UNIVERSE.days} days"),
        Result("parity_max_abs_difference", worst, "feature units", target="<= 1e-6 on every event"),
        Result("decision_latency_p50_one_event", latency["p50_us"], "us", target=f"{active} active markets"),
        Result("decision_latency_p99_one_event", latency["p99_us"], "us", target="<= 1000"),
        Result(f"batched_inference_{BATCH_MARKETS}_markets", batched * 1e6, "us", f"{BATCH_MARKETS}_single_market_calls",
               single * 1e6, single / batched, ">= 10"),
    ]
    print_results("live decision path (one thread)", results)
    write_results("live.json", results)
    return results


if __name__ == "__main__":
    main()
