"""The generic warm start, part 3: distil the forecast trader into the policy network before PPO.

Why a warm start at all: trading states that pay are rare and every order pays spread and fees at once,
while the gain arrives tens of events later; PPO from a random policy learns "never trade" long before it
meets them. The forecast trader (learned from data, training/learners/forecast_trader.py) puts the policy where
the reward is, and PPO then keeps, refines or drops that behaviour on its own returns.

Demonstrations come from training episodes in two rounds (DAgger): first the trader drives, then the
distilled policy drives and the trader labels the states it reaches, so the policy also learns what to do
in the positions its own mistakes lead to. The fit is reported on whole training markets held out from
the demonstrations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from core.exchange import TradingRules
from training.data.market_data import MarketData
from training.environment.batched_env import BatchedMarketEnv
from training.environment.episodes import build_episode, curriculum_stage
from training.environment.spaces import HOLD
from training.learners.forecast_trader import BookColumns, ForecastTrader, trader_actions
from training.learners.limits import NO_LIMIT, TimeLimit
from training.learners.policy import MarketPolicy

MAX_CLASS_WEIGHT = 10.0  # order classes are up-weighted up to this much relative to HOLD


@dataclass(frozen=True)
class DistillConfig:
    rounds: int = 2               # 1: the trader's states only; 2: plus the policy's own (DAgger)
    rollouts_per_round: int = 60  # rollouts of n_envs x rollout_steps per round
    n_envs: int = 64
    rollout_steps: int = 64
    hold_share: float = 0.25      # share of hold-only steps kept (orders are ~1% of steps)
    epochs: int = 8
    minibatch: int = 1024
    learning_rate: float = 1e-3
    held_out_share: float = 0.1   # of training markets, whole markets
    label_smoothing: float = 0.0  # > 0 leaves PPO alternatives to sample, at a price (see PPOConfig)


def imitation_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                   max_weight: float = MAX_CLASS_WEIGHT, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy on the actable slots, each action class weighted by the inverse of its share (capped):
    orders are rare, and unweighted the cheapest fit is HOLD everywhere. Label smoothing leaves the distilled
    policy some probability on the alternatives, which PPO needs to explore from it."""
    target = targets[mask]
    counts = torch.bincount(target, minlength=logits.shape[-1]).float()
    weights = (counts.sum() / counts.clamp(min=1.0)).clamp(max=max_weight)
    # impossible actions carry -1e9 logits: smoothing must not ask for them
    possible = logits[mask] > -1e8
    return torch.nn.functional.cross_entropy(logits[mask].masked_fill(~possible, -1e4), target,
                                             weight=weights / weights[HOLD], label_smoothing=label_smoothing)


def _labeller(policy: MarketPolicy, trader: ForecastTrader, columns: BookColumns):
    def label(obs: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            forecast = policy.forecaster(obs[..., :columns.n_features])
        return trader_actions(trader, forecast, obs, live, columns)
    return label


def collect(data: MarketData, tickers: set[str], label, driver, config: DistillConfig, seed: int,
            rules: TradingRules, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(obs, live, trader's actions, actable) on episodes of `tickers`, steps chosen as the class docstring
    says; `driver` (None: the trader itself) picks the actions that move the environment."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    env = BatchedMarketEnv(data, lambda _: build_episode(data, rng, curriculum_stage(1.0), tickers=tickers),
                           config.n_envs, rules=rules, device=device)
    kept: list[tuple[torch.Tensor, ...]] = []
    for _ in range(config.rollouts_per_round * config.rollout_steps):
        obs, live = env.observe()
        actable = env.actable()
        targets = torch.where(actable, label(obs, live), torch.zeros_like(env.yes))
        moves = targets if driver is None else torch.where(actable, driver(obs, live), torch.zeros_like(env.yes))
        keep = (targets != HOLD).any(-1) | (moves != HOLD).any(-1) | \
            (torch.rand(config.n_envs, generator=generator, device=device) < config.hold_share)
        kept.append((obs[keep], live[keep], targets[keep], actable[keep]))
        env.step(moves)
    return tuple(torch.cat(column) for column in zip(*kept))


def _fit(policy: MarketPolicy, demonstrations, config: DistillConfig, generator: torch.Generator,
         time_limit: TimeLimit) -> int:
    obs, live, actions, actable = demonstrations
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.learning_rate)
    epochs = 0
    for _ in range(config.epochs):
        if time_limit.passed():
            break
        order = torch.randperm(len(obs), generator=generator).to(obs.device)
        for start in range(0, len(order), config.minibatch):
            idx = order[start:start + config.minibatch]
            logits, _ = policy(obs[idx], live[idx])
            loss = imitation_loss(logits, actions[idx], actable[idx], label_smoothing=config.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epochs += 1
    return epochs


def agreement(policy: MarketPolicy, demonstrations) -> dict:
    """How many of the trader's orders the policy's greedy action reproduces (recall), how many of the
    policy's orders the trader would send (precision), on the actable slots."""
    obs, live, actions, actable = demonstrations
    with torch.no_grad():
        logits, _ = policy(obs, live)
    predicted, target = logits.argmax(-1)[actable], actions[actable]
    trader_orders, policy_orders = target != HOLD, predicted != HOLD
    return {"steps": len(obs), "trader_orders": int(trader_orders.sum()), "policy_orders": int(policy_orders.sum()),
            "order_recall": float((predicted[trader_orders] == target[trader_orders]).float().mean())
            if trader_orders.any() else None,
            "order_precision": float((predicted[policy_orders] == target[policy_orders]).float().mean())
            if policy_orders.any() else None}


def distill_trader(policy: MarketPolicy, data: MarketData, trader: ForecastTrader, config: DistillConfig = DistillConfig(),
                   seed: int = 0, rules: TradingRules = TradingRules(), time_limit: TimeLimit = NO_LIMIT,
                   device: torch.device | str = "cpu") -> dict:
    """Fit `policy`'s actor to the trader (its forecaster stays as it is); returns the held-out fit."""
    started = time.perf_counter()
    device = torch.device(device)
    columns = BookColumns(data.feature_names)
    label = _labeller(policy, trader, columns)
    train = sorted(m.ticker for m in data.of_role("fit"))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(train, max(1, int(round(len(train) * config.held_out_share))), replace=False).tolist()) \
        if len(train) > 1 else set()
    fit = set(train) - held or set(train)
    generator = torch.Generator().manual_seed(seed)
    demonstrations: list[tuple[torch.Tensor, ...]] = []
    rounds = 0
    for round_index in range(config.rounds):
        if time_limit.passed() and rounds > 0:
            break
        driver = None if round_index == 0 else _greedy(policy)
        demonstrations.append(collect(data, fit, label, driver, config, seed + round_index, rules, device))
        merged = tuple(torch.cat(column) for column in zip(*demonstrations))
        _fit(policy, merged, config, generator, time_limit)
        rounds += 1
    sample = replace(config, rollouts_per_round=max(config.rollouts_per_round // 4, 1))
    held_out = collect(data, held, label, _greedy(policy), sample, seed + 1000, rules, device) if held else None
    return {"rounds": rounds, "cut_short": time_limit.passed(), "seconds": time.perf_counter() - started, "fit_markets": len(fit),
            "held_out_markets": len(held), "demonstration_steps": int(sum(len(d[0]) for d in demonstrations)),
            "held_out": agreement(policy, held_out) if held_out is not None else None, "trader": trader.as_dict()}


def _greedy(policy: MarketPolicy):
    def act(obs, live):
        with torch.no_grad():
            logits, _ = policy(obs, live)
        return torch.where(live, logits.argmax(-1), torch.zeros_like(live, dtype=torch.long))
    return act
