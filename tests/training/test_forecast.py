"""The generic warm start: targets from the data, a forecaster that finds a planted relation, the trader on it."""

from __future__ import annotations

import numpy as np
import torch

from core.exchange import round_trip_cost_probability as round_trip_cost
from tests.training.synthetic import synthetic_data, synthetic_market
from training.learners.forecast import (
    HORIZONS,
    ForecastConfig,
    fit_forecaster,
    forward_mid_moves,
)
from training.learners.forecast_trader import ForecastTrader, trader_signals


def test_forward_moves_end_at_the_settlement():
    market = synthetic_market("S", 50, bid=40, ask=42, settled_ms=49_000, outcome=True)
    moves = forward_mid_moves(market)
    assert moves.shape == (50, len(HORIZONS))
    assert np.allclose(moves[-1], 1.0 - 0.41)  # past the end: the YES settlement
    unsettled = forward_mid_moves(synthetic_market("U", 50, bid=40, ask=42))
    assert np.allclose(unsettled, 0.0)


def _planted_market(ticker: str, n: int, rng: np.random.Generator, split: str = "train"):
    """A bounded random walk of the mid, and one feature that shows the move of the next 10 events (a
    footprint of what is coming); the other features are zero."""
    from features.schema import MODEL_FEATURES

    market = synthetic_market(ticker, n, split=split)
    steps = rng.choice([-2, 0, 2], size=n, p=[0.05, 0.9, 0.05])
    mid = np.empty(n)
    mid[0] = 50
    for k in range(1, n):
        mid[k] = mid[k - 1] + (steps[k] if 20 < mid[k - 1] + steps[k] < 80 else -steps[k])
    later = np.concatenate([mid[10:], np.full(10, mid[-1])])
    market.features[:, MODEL_FEATURES.index("ob_yes_depth_imbalance")] = ((later - mid) / 10).astype(np.float32)
    market.bid[:] = (mid - 1).astype(np.int16)
    market.ask[:] = (mid + 1).astype(np.int16)
    return market


def test_forecaster_learns_a_planted_relation_on_held_out_markets():
    rng = np.random.default_rng(0)
    data = synthetic_data(*[_planted_market(f"M{i:02d}", 3000, rng) for i in range(20)])
    torch.manual_seed(0)
    model, report = fit_forecaster(data, ForecastConfig(hidden=32, batch=512, max_epochs=4))
    # fitted on the fit markets, early-stopped on the select markets (a fifth of the training markets)
    assert report["held_out_markets"] == len(data.of_role("select")) == 4 and report["train_markets"] == 16
    assert report["held_out"]["r2"]["10_events"] > 0.5, report
    assert report["held_out"]["loss"] < report["initial_held_out_loss"]


def test_trader_enters_only_past_the_cost_and_leaves_when_the_forecast_turns():
    trader = ForecastTrader(horizon=0, entry_margin=0.01, exit_margin=0.0)
    mid, spread = np.array([0.5, 0.5, 0.5, 0.5]), np.array([0.01, 0.01, 0.01, 0.01])
    cost = round_trip_cost(mid, spread)
    forecast = np.array([[cost[0] + 0.02], [cost[0]], [-cost[0] - 0.02], [-0.001]])
    enter_yes, leave_yes, enter_no, leave_no = trader_signals(trader, forecast, mid, spread)
    assert enter_yes.tolist() == [True, False, False, False]
    assert enter_no.tolist() == [False, False, True, False]
    assert leave_yes.tolist() == [False, False, True, True] and leave_no.tolist() == [True, True, False, False]
