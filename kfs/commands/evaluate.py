"""`kfs evaluate`: a published version against every baseline on validation or test markets."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.catalog import Lake
from kfs.console import UsageError, console, err_console
from kfs.summaries import print_results
from training.release.publish import LATENCY_BUDGET_P99_US
from training.release.runs import run_evaluate


def run(args: argparse.Namespace) -> int:
    def progress(strategy: str, done: int, total: int) -> None:
        err_console.print(f"  scored {strategy} ({done}/{total})", highlight=False)

    if args.json and Path(args.json).is_dir():
        raise UsageError(f"--json {args.json} is a directory: name the file to write")
    budget = float("inf") if args.no_latency_check else LATENCY_BUDGET_P99_US
    err_console.print(f"evaluating on {args.split} markets: loading the version, then every strategy in the simulator",
                      highlight=False)
    result = run_evaluate(Lake(), args.split, args.version, Path(args.json) if args.json else None,
                          latency_budget_p99_us=budget, progress=progress)
    print_results(console, result, f"{args.split} markets, version {result['version']}: per-market P&L ($)")
    latency = result["latency_us"]
    console.print(f"int8 latency on this machine: p50 {latency['p50_us']:.0f} us, p99 {latency['p99_us']:.0f} us "
                  f"(budget {LATENCY_BUDGET_P99_US:.0f} us{', not checked' if args.no_latency_check else ''})",
                  highlight=False)
    if args.json:
        console.print(f"wrote {args.json}")
    return 0
