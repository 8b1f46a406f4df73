"""The market-agnostic policy (DESIGN.md section 5).

Per slot: normalised features, the position, and the forward-move forecast (training/learners/forecast.py, fitted
on training markets before PPO and frozen in it) with its edge over a round trip's cost -> shared market
encoder; the temporal and trade-flow features -> a temporal encoder; both joined, then attention across
the live slots (padding masked), then per-slot action logits (HOLD, BUY_YES, SELL_YES, BUY_NO, SELL_NO).
The value head pools the live slots. Normalisation statistics are buffers, so the exported artifact takes
raw feature values. Market identity is never an input. Everything is Linear layers and tensor ops:
TorchScript-able and dynamically int8-quantizable.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from core.exchange import TAKER_FEE_PER_PROBABILITY
from features.schema import columns_of
from training.environment.spaces import N_ACTIONS, POSITION_FEATURES
from training.learners.forecast import HORIZONS, TARGET_SCALE, Forecaster

# The temporal encoder sees the groups that describe activity over time.
TEMPORAL_GROUPS = ("temporal", "trade_flow")


class MarketPolicy(nn.Module):
    def __init__(self, n_features: int, temporal_index: list[int], mean: torch.Tensor, std: torch.Tensor,
                 forecaster: Forecaster, mid_index: int, spread_index: int, hidden: int = 64, temporal_hidden: int = 32):
        super().__init__()
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("std", std.clone().float())
        self.register_buffer("temporal_index", torch.tensor(temporal_index, dtype=torch.long))
        self.forecaster = forecaster
        self.mid_index = mid_index
        self.spread_index = spread_index
        n_in = n_features + POSITION_FEATURES + 3 * len(HORIZONS)
        self.market_encoder = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.temporal_encoder = nn.Sequential(nn.Linear(len(temporal_index), temporal_hidden), nn.Tanh())
        self.join = nn.Linear(hidden + temporal_hidden, hidden)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value_proj = nn.Linear(hidden, hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.actor = nn.Linear(hidden, N_ACTIONS)
        self.critic = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.scale = float(hidden) ** -0.5
        self.fee_rate = TAKER_FEE_PER_PROBABILITY  # attributes, so TorchScript sees constants, not globals
        self.target_scale = TARGET_SCALE

    def start_cautious(self, trade_probability: float) -> None:
        """Initial policy: HOLD unless exploring, each order action with trade_probability / 4.

        A uniform start trades on four steps of five and loses so much to spread and fees that PPO
        learns 'never trade' before it ever sees the rare states where trading pays."""
        with torch.no_grad():
            self.actor.weight.mul_(0.01)
            self.actor.bias.zero_()
            self.actor.bias[0] = math.log((1 - trade_probability) / (trade_probability / (N_ACTIONS - 1)))

    def encode(self, obs: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """obs [B, S, F + P], live [B, S] bool -> per-slot embedding [B, S, H]."""
        n_features = self.mean.shape[0]
        raw = obs[..., :n_features]
        features = (raw - self.mean) / self.std
        x = torch.cat([features.clamp(-10.0, 10.0), obs[..., n_features:], self.forecast_inputs(raw)], dim=-1)
        market = self.market_encoder(x)
        temporal = self.temporal_encoder(features.index_select(-1, self.temporal_index).clamp(-10.0, 10.0))
        h = torch.tanh(self.join(torch.cat([market, temporal], dim=-1)))
        scores = torch.matmul(self.query(h), self.key(h).transpose(1, 2)) * self.scale       # [B, S, S]
        scores = scores.masked_fill(~live.unsqueeze(1), -1e9)
        attended = torch.matmul(torch.softmax(scores, dim=-1), self.value_proj(h))             # [B, S, H]
        return h + torch.tanh(self.attention_out(attended))

    def forecast_inputs(self, raw: torch.Tensor) -> torch.Tensor:
        """The forecast moves and their edge over a round trip for a YES and a NO entry, in tenths of a
        probability: what the warm start taught the policy to act on."""
        move = self.forecaster(raw)
        mid, spread = raw[..., self.mid_index], raw[..., self.spread_index]
        cost = (spread + 2 * self.fee_rate * mid * (1 - mid)).unsqueeze(-1)   # = exchange.round_trip_cost_probability
        return torch.cat([move, move - cost, -move - cost], dim=-1) * self.target_scale

    def forward(self, obs: torch.Tensor, live: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Action logits [B, S, 5] (impossible actions masked) and state value [B]."""
        h = self.encode(obs, live)
        weights = live.to(h.dtype).unsqueeze(-1)
        pooled = (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.actor(h).masked_fill(~self.possible_actions(obs), -1e9), self.critic(pooled).squeeze(-1)

    def possible_actions(self, obs: torch.Tensor) -> torch.Tensor:
        """[B, S, 5]: selling needs contracts to sell, buying needs room under the position limit.
        Masking these keeps exploration on real choices instead of orders that would do nothing."""
        n_features = self.mean.shape[0]
        yes = obs[..., n_features]
        no = obs[..., n_features + 1]
        hold = torch.ones_like(yes, dtype=torch.bool)
        return torch.stack([hold, yes < 1.0, yes > 0.0, no < 1.0, no > 0.0], dim=-1)


class GreedyPolicy(nn.Module):
    """What is exported: the best action per slot (HOLD on slots that are not live)."""

    def __init__(self, policy: MarketPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        logits, _ = self.policy(obs, live)
        return torch.where(live, logits.argmax(-1), torch.zeros_like(live, dtype=torch.long))


def temporal_feature_index(feature_names: list[str]) -> list[int]:
    """Positions of the temporal and trade-flow features among the model features."""
    wanted = {c.name for group in TEMPORAL_GROUPS for c in columns_of(group)}
    return [i for i, name in enumerate(feature_names) if name in wanted]


def build_policy(feature_names: list[str], mean, std, hidden: int = 64, forecaster: Forecaster | None = None,
                 forecast_hidden: int = 128) -> MarketPolicy:
    """A policy for these model features, normalised with the training markets' statistics, around a fitted
    forecaster (or a fresh one of `forecast_hidden` units, to load saved weights into)."""
    mean, std = torch.as_tensor(mean), torch.as_tensor(std)
    forecaster = forecaster if forecaster is not None else Forecaster(mean, std, forecast_hidden)
    return MarketPolicy(len(feature_names), temporal_feature_index(feature_names), mean, std, forecaster,
                        feature_names.index("ob_yes_mid_prob"), feature_names.index("ob_yes_spread_prob"),
                        hidden=hidden)
