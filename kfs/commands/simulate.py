"""`kfs simulate`: a simulated Kalshi universe into the source tables."""

from __future__ import annotations

import argparse
import time

from kfs.console import console, parse_day
from kfs.simulation import run_simulation


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    start = parse_day(args.start, "--start") if args.start else None
    effects = tuple(name.strip() for name in args.effects.split(",") if name.strip())
    config, summary = run_simulation(args.markets, args.days, args.seed, args.signal, start, args.replace, console,
                                     effects=effects)
    seconds = time.perf_counter() - started
    console.print(
        f"simulated {summary.markets} markets from {config.start} for {config.days} days (seed {config.seed}, "
        f"signal {config.signal}, effects {','.join(config.effects) or 'none'}): "
        f"{summary.sessions} sessions, {summary.snapshots:,} snapshots, "
        f"{summary.deltas:,} deltas, {summary.trades:,} trades, {summary.settled} settled, in {seconds:.1f} s"
    )
    return 0
