"""Scoring: BCa intervals that hold on heavy tails, paired differences, capture ratios, drawdowns."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from tests.training.synthetic import synthetic_data, synthetic_market
from training.environment.spaces import BUY_YES, HOLD
from training.evaluation import scoring


def _per_market(returns: dict[str, float]) -> pl.DataFrame:
    return pl.DataFrame({"market_ticker": list(returns), "return_dollars": list(returns.values())})


def test_bca_intervals_cover_the_mean_of_heavy_tailed_samples_better_than_percentiles():
    rng = np.random.default_rng(1)
    trials, covered, covered_percentile = 200, 0, 0
    for seed in range(trials):
        sample = rng.lognormal(0.0, 1.2, 25) - np.exp(0.72)  # true mean 0, a long right tail, 25 markets
        _, low, high = scoring.bca_interval(sample, seed=seed)
        covered += low <= 0.0 <= high
        means = np.random.default_rng(seed).choice(sample, (4000, 25)).mean(axis=1)
        covered_percentile += np.percentile(means, 2.5) <= 0.0 <= np.percentile(means, 97.5)
    assert covered / trials >= 0.85 and covered >= covered_percentile, (covered, covered_percentile)


def test_degenerate_samples_have_a_point_interval():
    assert scoring.bca_interval(np.zeros(25)) == (0.0, 0.0, 0.0)
    assert scoring.bca_interval(np.array([2.0])) == (2.0, 2.0, 2.0)
    assert scoring.bca_interval(np.array([])) == (0.0, 0.0, 0.0)


def test_paired_differences_and_capture_ratio_pair_markets():
    reference = _per_market({f"M{i}": float(v) for i, v in enumerate(np.linspace(-3, 9, 25))})
    shifted = reference.with_columns(pl.col("return_dollars") + 1.0)
    assert scoring.paired_difference(shifted, reference) == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    half = reference.with_columns(pl.col("return_dollars") * 0.5)
    capture = scoring.capture_ratio(half, reference)
    assert capture["ratio"] == 0.5 and abs(capture["ci_low"] - 0.5) < 1e-9 and abs(capture["ci_high"] - 0.5) < 1e-9
    losing_reference = reference.with_columns(pl.col("return_dollars") - 100.0)
    assert scoring.capture_ratio(half, losing_reference)["ratio"] is None  # nothing to capture


def test_summary_has_the_design_metrics():
    frame = _per_market({"A": 4.0, "B": -2.0, "C": 1.0}).with_columns(
        pl.lit(0).alias("orders"), pl.Series("max_drawdown_dollars", [0.5, 3.0, 1.0]))
    row = scoring.summarize("x", frame)
    assert abs(row["pct_profitable"] - 100 * 2 / 3) < 1e-9
    assert abs(row["cross_market_sharpe"] - 1.0 / np.std([4.0, -2.0, 1.0], ddof=1)) < 1e-12
    assert row["max_drawdown_dollars"] == 3.0


def test_drawdown_follows_the_path_across_windows():
    windows = pl.DataFrame({"market_ticker": ["A"] * 3, "window": [0, 1, 2], "pnl_cents": [500, -300, 100],
                            "orders": [1, 1, 1], "steps": [10, 10, 10], "peak_cents": [600, 0, 150],
                            "low_cents": [0, -400, -50], "drawdown_cents": [100, 400, 200]})
    # peaks at 600 in window 0, ends it at 500, falls to 500 - 400 = 100 in window 1: a 500-cent drawdown
    metrics = scoring.market_metrics(windows)
    assert metrics["max_drawdown_dollars"].to_list() == [5.0]


def test_play_measures_a_position_that_loses_its_value():
    n = 40
    market = synthetic_market("FALL", n, bid=50, ask=51, size=100, split="validation")
    market.bid[20:] = 40  # the bid falls ten cents halfway
    market.ask[20:] = 41
    data = synthetic_data(market)

    def buy_once(obs, live, env):
        first = (env.t == 0)[:, None] & live
        return torch.where(first, torch.full_like(env.yes, BUY_YES), torch.full_like(env.yes, HOLD))

    windows = scoring.play(data, "validation", buy_once)
    row = windows.row(0, named=True)
    assert row["orders"] == 1 and row["pnl_cents"] < -100
    assert row["drawdown_cents"] == row["peak_cents"] - row["low_cents"] and row["low_cents"] == row["pnl_cents"]
