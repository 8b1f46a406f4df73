"""The simulator against real Kalshi recordings: the statistics it is calibrated on, side by side.

`python -m features.calibration --write docs/calibration.md` regenerates the table; a test regenerates it
and fails when the committed file is stale (a simulator change that moved a statistic without the document
saying so). Both sides go through the same path as the lake: the ingest's checks, then the feature engine.

Real data (`../shared/data/real/`): the SagnikBhadra NBA delta recordings (books, inter-arrival times, mid
moves), the trades of the chris-mulligan KXINX recording (trade sizes) and the SagnikBhadra Super Bowl
top-of-book recording (levels per side). Simulated data: `CALIBRATION_UNIVERSE`, in memory.

The targets were written down from the real recordings before the simulator's spreads, sizes and clocks
were tuned (TARGETS: a band per statistic); the table says which statistics fall inside their band.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from features.events import events_in_memory
from source.recordings import read_recordings, recording_tables
from source.simulator import SimulationConfig, simulate_in_memory

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
SAGNIK = "SagnikBhadra__Arbitrage-Betting"
CHRIS = "chris-mulligan-50__FINM-33150-Quantitative-Trading-Strategies-Final-Project-Kalshi-Market-Making-"
CALIBRATION_UNIVERSE = SimulationConfig(markets=60, days=3, seed=11, start=date(2026, 5, 4))
DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "calibration.md"


@dataclass(frozen=True)
class Target:
    name: str
    low: float
    high: float
    why: str


# Bands around the real recordings (written before tuning; wide where the recordings disagree with each other).
TARGETS = (
    Target("spread 1c share", 0.35, 0.65, "NBA 46%, Super Bowl 94%"),
    Target("spread 2c share", 0.10, 0.35, "NBA 29%"),
    Target("spread 3-5c share", 0.08, 0.30, "NBA 20%"),
    Target("spread >5c share", 0.0, 0.10, "NBA 5%"),
    Target("gaps < 100 ms", 0.60, 0.95, "NBA 87%: events come in bursts"),
    Target("gap coefficient of variation", 5.0, 200.0, "NBA 62: heavy-tailed quiet periods"),
    Target("events that move the mid", 0.03, 0.20, "NBA 7.8%"),
    Target("mid moves of half a cent", 0.30, 0.85, "NBA 73%"),
    Target("trade size median", 5.0, 60.0, "NBA 46, KXINX 12"),
    Target("trade size p90", 60.0, 600.0, "NBA 480, KXINX 121"),
    Target("trades of 100+ contracts", 0.05, 0.35, "KXINX 14%"),
    Target("levels per side (median)", 5.0, 40.0, "Super Bowl 38; REST dumps of quiet markets 3"),
)


def _markets_frame(tickers: list[str], category: str) -> pl.DataFrame:
    return pl.DataFrame({"ticker": tickers}).with_columns(
        pl.lit(None, pl.String).alias("series_ticker"), pl.lit(category).alias("category"),
        pl.lit(None, pl.Datetime("ms", "UTC")).alias("open_ts"), pl.lit(None, pl.Datetime("ms", "UTC")).alias("close_ts"),
        pl.lit(None, pl.String).alias("result"), pl.lit(None, pl.Datetime("ms", "UTC")).alias("settled_ts"))


def book_statistics(events: pl.DataFrame) -> dict[str, float]:
    """Spread shares, burstiness and mid moves of per-event rows (valid two-sided books)."""
    both = events.filter((pl.col("best_yes_bid_cents") > 0) & (pl.col("best_no_bid_cents") > 0) & pl.col("book_valid"))
    spread = (both["best_yes_ask_cents"] - both["best_yes_bid_cents"]).cast(pl.Int64).to_numpy()
    gaps = events.sort("market_ticker", "event_time_ms").with_columns(
        pl.col("event_time_ms").diff().over("market_ticker").alias("gap")).drop_nulls("gap")["gap"].to_numpy()
    mids = both.sort("market_ticker", "event_time_ms").with_columns(
        ((pl.col("best_yes_bid_cents") + pl.col("best_yes_ask_cents")) / 2).diff().over("market_ticker").abs().alias("move")
    ).drop_nulls("move")["move"].to_numpy()
    moves = mids[mids > 0]
    return {
        "spread 1c share": float(np.mean(spread == 1)),
        "spread 2c share": float(np.mean(spread == 2)),
        "spread 3-5c share": float(np.mean((spread >= 3) & (spread <= 5))),
        "spread >5c share": float(np.mean(spread > 5)),
        "gaps < 100 ms": float(np.mean(gaps < 100)),
        "gap coefficient of variation": float(gaps.std() / gaps.mean()),
        "events that move the mid": float(len(moves) / max(len(mids), 1)),
        "mid moves of half a cent": float(np.mean(moves == 0.5)) if len(moves) else 0.0,
    }


def trade_statistics(sizes: np.ndarray) -> dict[str, float]:
    return {"trade size median": float(np.median(sizes)), "trade size p90": float(np.quantile(sizes, 0.9)),
            "trades of 100+ contracts": float(np.mean(sizes >= 100))}


def real_statistics(real: Path = REAL) -> dict[str, float]:
    """The statistics of the real recordings (see the module docstring for which recording gives which)."""
    paths = sorted((real / SAGNIK).glob("Kalshi_*_WIN.csv"))
    if not paths:
        raise FileNotFoundError(f"no real recordings under {real / SAGNIK}")
    tables = recording_tables(read_recordings(paths))
    tickers = tables["markets"]["ticker"].to_pylist()
    events, _ = events_in_memory(tables["snapshots"], tables["deltas"], tables["trades"], _markets_frame(tickers, "sports"))
    stats = book_statistics(events)
    stats.update(trade_statistics(pl.read_parquet(real / CHRIS / "kalshi_kxinx_clean.parquet")["quantity"].to_numpy()))
    top = pl.read_csv(real / SAGNIK / "orderbook_snapshots_20260208.csv")
    stats["levels per side (median)"] = float(np.median(np.concatenate([top["bid_levels"].to_numpy(),
                                                                         top["ask_levels"].to_numpy()])))
    return stats


def simulated_statistics(config: SimulationConfig = CALIBRATION_UNIVERSE) -> dict[str, float]:
    tables = simulate_in_memory(config)
    events, _ = events_in_memory(tables["snapshots"], tables["deltas"], tables["trades"], pl.from_arrow(tables["markets"]))
    stats = book_statistics(events)
    stats.update(trade_statistics(tables["trades"]["count"].to_numpy()))
    snapshots = pl.from_arrow(tables["snapshots"])
    levels = [len(json.loads(text)) for column in ("yes_bids", "no_bids") for text in snapshots[column].to_list()]
    stats["levels per side (median)"] = float(np.median(levels))
    return stats


def _value(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 1 else f"{x:.1f}"


def calibration_markdown(real: dict[str, float], simulated: dict[str, float]) -> str:
    config = CALIBRATION_UNIVERSE
    lines = ["# Simulator calibration", "",
             "Generated by `python -m features.calibration --write docs/calibration.md`; a test fails when this file is",
             "stale. Real: the recordings in `../shared/data/real/` (NBA delta recordings for books and clocks, KXINX",
             "trades for sizes, the Super Bowl recording for levels). Simulated: "
             f"{config.markets} markets x {config.days} days, seed {config.seed}, signal {config.signal}, all effects.",
             "Targets were written from the real recordings before tuning.", "",
             "| statistic | real | simulated | target band | inside | real source |",
             "| --- | --- | --- | --- | --- | --- |"]
    for target in TARGETS:
        value = simulated[target.name]
        inside = "yes" if target.low <= value <= target.high else "**no**"
        lines.append(f"| {target.name} | {_value(real[target.name])} | {_value(value)} | "
                     f"{_value(target.low)} - {_value(target.high)} | {inside} | {target.why} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write the markdown table here (default: print it)")
    args = parser.parse_args(argv)
    text = calibration_markdown(real_statistics(), simulated_statistics())
    if args.write:
        args.write.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
