"""`kfs features`: the features as of each labelled row of a file (a point-in-time join), written to a file."""

from __future__ import annotations

import argparse
import re
import time
from datetime import timedelta
from pathlib import Path

import polars as pl

from core.catalog import Lake
from features.store import AS_OF_TIME, historical_features
from kfs.console import UsageError, console

_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_FORMATS = (".parquet", ".csv")


def parse_duration(text: str) -> timedelta:
    """'250ms', '90s', '10m', '2h', '1d' as a timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d)\s*", text)
    if not match:
        raise UsageError(f"--max-age expects a whole number and a unit (ms, s, m, h, d), such as 10m; got {text!r}")
    return timedelta(milliseconds=int(match.group(1)) * _UNITS[match.group(2)])


def _format(path: Path, flag: str) -> str:
    if path.suffix.lower() not in _FORMATS:
        raise UsageError(f"{flag} must name a .parquet or .csv file, got {str(path)!r}")
    return path.suffix.lower()


def read_entities(path: Path) -> pl.DataFrame:
    kind = _format(path, "--entities")
    if not path.is_file():
        raise UsageError(f"--entities {str(path)!r} is not a file")
    try:
        if kind == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path, schema_overrides={"market_ticker": pl.String, "timestamp_ms": pl.Int64})
    except (pl.exceptions.PolarsError, OSError) as error:
        raise UsageError(f"--entities {str(path)!r} cannot be read: {str(error).strip().splitlines()[0]}") from None


def write_frame(frame: pl.DataFrame, path: Path) -> None:
    """Written beside the target and renamed over it, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if path.suffix.lower() == ".parquet":
        frame.write_parquet(partial)
    else:
        frame.write_csv(partial)
    partial.replace(path)


def run(args: argparse.Namespace) -> int:
    entities_path, out = Path(args.entities), Path(args.out)
    _format(out, "--out")
    max_age = parse_duration(args.max_age) if args.max_age else None
    features = [name.strip() for name in args.features.split(",") if name.strip()] if args.features else None
    entities = read_entities(entities_path)
    started = time.perf_counter()
    try:
        frame = historical_features(entities, features=features, max_age=max_age, lake=Lake())
    except ValueError as error:
        raise UsageError(str(error)) from None
    write_frame(frame, out)
    found = frame[AS_OF_TIME].is_not_null().sum()
    console.print(f"{frame.height:,} rows, {found:,} with a feature row in reach, {frame.width - entities.width - 1} "
                  f"features, in {time.perf_counter() - started:.1f} s: {out}", highlight=False)
    return 0
