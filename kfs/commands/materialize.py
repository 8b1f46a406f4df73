"""`kfs materialize`: daily ingest partitions and the feature store through Dagster."""

from __future__ import annotations

import argparse

from kfs.console import console, err_console, failed_checks, parse_day
from kfs.runners import materialize_range


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every check passed or only warning-severity checks failed (each printed as a warning
    line); exit 1 when an error-severity check failed."""
    start = parse_day(args.start, "--start")
    end = parse_day(args.end, "--end") if args.end else start
    stages = ("ingest", "features") if args.only is None else (args.only,)
    results = materialize_range(start, end, stages=stages, console=console)
    errors, warnings = failed_checks(results)
    console.print(f"materialized {(end - start).days + 1} partitions ({', '.join(stages)}); {len(errors)} failed checks"
                  + (f", {len(warnings)} warnings" if warnings else ""))
    for check in warnings:
        err_console.print(f"kfs: warning: check {check.asset_key.to_user_string()} {check.check_name}: "
                          f"{_check_summary(check)}", highlight=False, markup=False)
    for check in errors:
        console.print(f"  check failed: {check.asset_key.to_user_string()} {check.check_name} {_check_summary(check)}")
    return 1 if errors else 0


def _check_summary(check) -> str:
    return ", ".join(f"{key}={getattr(value, 'value', value)}" for key, value in sorted(check.metadata.items()))
