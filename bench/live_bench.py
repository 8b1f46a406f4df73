"""The live path's speed on a simulated universe replayed in memory (needs nothing else).

- replay throughput: events/s through `live.runner.run_live` (the code behind `kfs live`), as fast as
  possible, the backlog drained 1024 events at a time, features written;
- per-event decision latency p50/p99: every event its own arrival (feature update + one batched forward
  pass), measured after the first day, when all markets are active;
- batched inference: N markets in one forward pass against N single-market calls, in the same run.

The model is the production architecture (forecaster, encoders, attention) scripted to int8 exactly as
`training.publish` does, with untrained weights: inference cost does not depend on the weights, and a
benchmark must not need a training run. It is served through `StaticServer`, which has the three methods
the runner uses from `training.serving.PolicyServer`.
"""

from __future__ import annotations

import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import torch

from bench.results_io import Result, print_results, write_results
from features.events import events_in_memory
from features.schema import MODEL_FEATURES
from live.decisions import decide
from live.runner import run_live
from live.sources import replay
from source.simulator import SimulationConfig, simulate_in_memory
from training.policy import build_policy
from training.publish import script_int8

UNIVERSE = SimulationConfig(markets=120, days=2, seed=5, start=date(2026, 6, 1))
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


def production_shaped_model(tables: dict) -> torch.jit.ScriptModule:
    events, _ = events_in_memory(tables["snapshots"], tables["deltas"], tables["trades"], pl.from_arrow(tables["markets"]))
    features = events.select(MODEL_FEATURES).to_numpy()
    mean, std = features.mean(axis=0), np.maximum(features.std(axis=0), 1e-3)
    torch.manual_seed(0)
    return script_int8(build_policy(list(MODEL_FEATURES), mean, std).eval())


def replay_throughput(tables: dict, server: StaticServer) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder:
        report = run_live(replay(tables, batch_events=1024), server, Path(folder) / "out")
    return report.events_per_s, report.events


def per_event_latency(tables: dict, server: StaticServer) -> tuple[dict[str, float], int]:
    """Each event its own arrival; latencies of the events after the first day (every market active)."""
    day_ms = int(pl.from_arrow(tables["deltas"])["timestamp_ms"].min()) + 86_400_000
    with tempfile.TemporaryDirectory() as folder:
        trimmed = _first_events(tables, day_ms, LATENCY_EVENTS)
        run_live(replay(trimmed, batch_events=1), server, Path(folder) / "out")
        decisions = pl.read_parquet(Path(folder) / "out" / "decisions.parquet")
    late = decisions.filter(pl.col("timestamp_ms") >= day_ms)
    active = late["market_ticker"].n_unique()
    latency = late["latency_us"].to_numpy()
    return {"p50_us": float(np.percentile(latency, 50)), "p99_us": float(np.percentile(latency, 99))}, active


def _first_events(tables: dict, day_ms: int, after: int) -> dict:
    """The universe up to `after` book events past `day_ms` (the latency run need not replay everything)."""
    deltas = pl.from_arrow(tables["deltas"])
    late = deltas.filter(pl.col("timestamp_ms") >= day_ms).sort("timestamp_ms")
    until = int(late["timestamp_ms"][min(after, late.height - 1)])
    keep = {"snapshots": "timestamp_ms", "deltas": "timestamp_ms", "trades": "ts"}
    out = {name: pl.from_arrow(tables[name]).filter(pl.col(column) <= until).to_arrow() for name, column in keep.items()}
    out["markets"] = tables["markets"]
    return out


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
    model = production_shaped_model(tables)
    server = StaticServer(model)
    events_per_s, events = replay_throughput(tables, server)
    latency, active = per_event_latency(tables, server)
    batched, single = batched_against_single(model)
    results = [
        Result("replay_events_per_s_one_thread", events_per_s, "events/s", target=">= 100,000"),
        Result("replay_events", events, "events"),
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
