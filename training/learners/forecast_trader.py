"""The generic warm start, part 2: the trader that acts on the learned forecast, tuned on fit markets.

It knows what every Kalshi taker knows and nothing about planted effects: a round trip costs the spread and
two taker fees (core/exchange.py). It buys YES when the forecast mid move at its horizon
beats that cost by `entry_margin`, NO when the forecast fall does, and leaves a position once the forecast
turns against it by `exit_margin`. The horizon and margins are chosen on a stratified sample of fit markets
(training/data/roles.py) by the compiled backtester. The policy is warm-started by distilling this trader
(training/learners/warm_start.py), so whatever edge it has comes from the forecaster, which learned it from data.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from core.exchange import TAKER_FEE_PER_PROBABILITY, TradingRules, round_trip_cost_probability
from training.data.market_data import MarketData, MarketSeries
from training.environment.spaces import BUY_NO, BUY_YES, HOLD, SELL_NO, SELL_YES
from training.evaluation.baselines import backtest_signals
from training.learners.forecast import HORIZONS, Forecaster

ENTRY_MARGINS = (0.0, 0.01, 0.02, 0.04)
EXIT_MARGINS = (-0.02, -0.01, 0.0, 0.01, 0.03)  # negative: leave once the edge has faded below |margin|


@dataclass(frozen=True)
class ForecastTrader:
    horizon: int = 1           # index into forecast.HORIZONS
    entry_margin: float = 0.01
    exit_margin: float = 0.01

    def describe(self) -> str:
        return (f"enter when the {HORIZONS[self.horizon]}-event forecast beats spread + fees by {self.entry_margin:.2f}; "
                f"leave when it turns {self.exit_margin:.2f} against the position")

    def as_dict(self) -> dict:
        return {**asdict(self), "horizon_events": HORIZONS[self.horizon], "rule": self.describe()}

    @classmethod
    def from_dict(cls, saved: dict) -> "ForecastTrader":
        return cls(saved["horizon"], saved["entry_margin"], saved["exit_margin"])


def entry_exit_signals(move: Tensor, cost: Tensor, entry_margin: float, exit_margin: float
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(enter YES, leave YES, enter NO, leave NO) for a forecast move and a round trip's cost, elementwise on
    NumPy arrays (the tuning backtester) or tensors (the served policy, TorchScript)."""
    return move - cost > entry_margin, move < -exit_margin, -move - cost > entry_margin, move > exit_margin


def trader_signals(trader: ForecastTrader, forecast, mid, spread):
    """The trader's signals for forecasts [..., H] and the book's mid and spread [...] (arrays or tensors)."""
    return entry_exit_signals(forecast[..., trader.horizon], round_trip_cost_probability(mid, spread),
                              trader.entry_margin, trader.exit_margin)


class BookColumns:
    """Positions of the book's mid and spread among the model features (generic facts every strategy sees)."""

    def __init__(self, feature_names: list[str]):
        self.mid = feature_names.index("ob_yes_mid_prob")
        self.spread = feature_names.index("ob_yes_spread_prob")
        self.n_features = len(feature_names)


class TraderPolicy(nn.Module):
    """The forecast trader as a servable policy, like GreedyPolicy: (obs [B, S, F + P], live [B, S]) -> one
    action per slot (HOLD on slots that are not live), TorchScript-able; dynamic int8 quantization reaches the
    forecaster's Linear layers. Holdings come from the position columns, so it labels stored observations
    (the warm start's demonstrations) as well as it drives an environment or a live market."""

    def __init__(self, trader: ForecastTrader, forecaster: Forecaster, columns: BookColumns):
        super().__init__()
        self.forecaster = forecaster
        self.horizon = trader.horizon
        self.entry_margin = float(trader.entry_margin)
        self.exit_margin = float(trader.exit_margin)
        self.mid_index, self.spread_index, self.n_features = columns.mid, columns.spread, columns.n_features
        # attributes, so TorchScript sees constants, not globals
        self.fee_rate = TAKER_FEE_PER_PROBABILITY
        self.hold, self.buy_yes, self.sell_yes, self.buy_no, self.sell_no = HOLD, BUY_YES, SELL_YES, BUY_NO, SELL_NO

    def forward(self, obs: Tensor, live: Tensor) -> Tensor:
        move = self.forecaster(obs[..., :self.n_features])[..., self.horizon]
        mid, spread = obs[..., self.mid_index], obs[..., self.spread_index]
        cost = spread + 2 * (self.fee_rate * mid * (1 - mid))   # = exchange.round_trip_cost_probability
        enter_yes, leave_yes, enter_no, leave_no = entry_exit_signals(move, cost, self.entry_margin, self.exit_margin)
        yes, no = obs[..., self.n_features], obs[..., self.n_features + 1]  # contracts / position limit
        actions = torch.full(live.shape, self.hold, dtype=torch.long, device=obs.device)
        actions = torch.where(enter_yes & (no == 0) & (yes < 1.0), self.buy_yes, actions)
        actions = torch.where(enter_no & (yes == 0) & (no < 1.0), self.buy_no, actions)
        actions = torch.where(leave_yes & (yes > 0), self.sell_yes, actions)
        actions = torch.where(leave_no & (no > 0), self.sell_no, actions)
        return torch.where(live, actions, torch.zeros_like(actions))


def trader_policy(trader: ForecastTrader, forecaster: Forecaster, feature_names: list[str]) -> TraderPolicy:
    return TraderPolicy(trader, forecaster, BookColumns(feature_names)).eval()


def trader_actor(trader: ForecastTrader, forecaster: Forecaster, feature_names: list[str]):
    """The trader as a strategy (the evaluation's signature)."""
    policy = trader_policy(trader, forecaster, feature_names)

    def act(obs, live, env):
        with torch.no_grad():
            return policy(obs, live)
    return act


def market_forecasts(forecaster: Forecaster, market: MarketSeries, chunk: int = 1 << 16) -> np.ndarray:
    # A copy per chunk: the cache's arrays are read-only maps, which torch cannot wrap without a warning.
    with torch.no_grad():
        return torch.cat([forecaster(torch.from_numpy(np.array(market.features[i:i + chunk])))
                          for i in range(0, len(market.features), chunk)]).numpy()


def tune_trader(forecaster: Forecaster, data: MarketData, markets: list[MarketSeries],
                rules: TradingRules = TradingRules()) -> tuple[ForecastTrader, dict]:
    """The horizon and margins that make the most on `markets` (fit markets only)."""
    columns = BookColumns(data.feature_names)
    prepared = [(m, market_forecasts(forecaster, m), m.features[:, columns.mid].astype(np.float64),
                 m.features[:, columns.spread].astype(np.float64)) for m in markets]
    scores = {}
    for horizon, entry, leave in itertools.product(range(len(HORIZONS)), ENTRY_MARGINS, EXIT_MARGINS):
        trader = ForecastTrader(horizon, entry, leave)
        scores[trader] = sum(backtest_signals(m, np.stack(trader_signals(trader, f, mid, spread), axis=1), rules)
                             for m, f, mid, spread in prepared)
    best = max(scores, key=lambda t: (scores[t], -t.entry_margin, t.horizon))
    return best, {"markets": len(markets), "candidates": len(scores), "best_cents": scores[best],
                  "best_dollars_per_market": scores[best] / 100 / max(len(markets), 1)}
