"""The generic warm start, part 3: distil the forecast trader into the policy network before PPO.

Why a warm start at all: trading states that pay are rare and every order pays spread and fees at once,
while the gain arrives tens of events later; PPO from a random policy learns "never trade" long before it
meets them. The forecast trader (learned from data, training/learners/forecast_trader.py) puts the policy where
the reward is, and PPO then keeps, refines or drops that behaviour on its own returns.

Demonstrations come from training episodes in two rounds (DAgger): first the trader drives, then the
distilled policy drives and the trader labels the states it reaches, so the policy also learns what to do
in the positions its own mistakes lead to. The fit is reported on whole training markets held out from
the demonstrations.

Orders are rare (about 1% of decisions), so the fit up-weights them (`MAX_CLASS_WEIGHT`) and keeps only
`hold_share` of the steps where nobody trades. Both shift the fitted class probabilities towards orders by
a known factor per class, and a policy that takes the argmax of shifted probabilities trades far more than
the trader it imitates (the nightly warm start once placed 967 orders where the trader placed 504).
`DistillConfig.adjust_priors` takes the loss on the logits plus the log of that factor instead (logit
adjustment, Menon et al. 2021, "Long-tail learning via logit adjustment"): the weights still steer the
gradient towards orders, while the policy's own logits estimate the trader's unshifted choices. It is off by
default: with it, the quality seed's policy no longer beat the fair best rule with an interval above zero
(issue 24's note), and whether it pays is for the replication over seeds to say, not that seed.
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
from training.environment.spaces import HOLD, N_ACTIONS
from training.learners.forecast_trader import BookColumns, ForecastTrader, TraderPolicy
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
    adjust_priors: bool = False   # the loss on logits shifted by the weighting's log factor (module docstring)


def class_weights(targets: torch.Tensor, n_classes: int, max_weight: float = MAX_CLASS_WEIGHT) -> torch.Tensor:
    """Each action class weighted by the inverse of its share among `targets` (capped), relative to HOLD's:
    orders are rare, and unweighted the cheapest fit is HOLD everywhere."""
    counts = torch.bincount(targets, minlength=n_classes).float()
    weights = (counts.sum() / counts.clamp(min=1.0)).clamp(max=max_weight)
    return weights / weights[HOLD]


def prior_adjustment(weights: torch.Tensor, kept: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """log of how much more the fit counts each class than the trader chooses it, relative to HOLD: its
    weight times the share of its labels the demonstrations kept (`kept` of `seen`, per class)."""
    keep_rate = kept.float() / seen.float().clamp(min=1.0)
    keep_rate = torch.where(kept > 0, keep_rate, torch.ones_like(keep_rate))   # a class never seen: no shift
    factor = weights * keep_rate
    return torch.log(factor / factor[HOLD])


def imitation_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None,
                   adjustment: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Weighted cross-entropy on the actable slots (`weights`, else the minibatch's own `class_weights`),
    taken on the logits plus `adjustment` when given (see the module's docstring), so that the logits
    themselves fit the trader's unweighted choices. Label smoothing leaves the distilled policy some
    probability on the alternatives, which PPO needs to explore from it."""
    target = targets[mask]
    weights = class_weights(target, logits.shape[-1]) if weights is None else weights
    # impossible actions carry -1e9 logits: smoothing must not ask for them
    possible = logits[mask] > -1e8
    fitted = logits[mask].masked_fill(~possible, -1e4)
    if adjustment is not None:
        fitted = fitted + adjustment
    return torch.nn.functional.cross_entropy(fitted, target, weight=weights, label_smoothing=label_smoothing)


def _labeller(policy: MarketPolicy, trader: ForecastTrader, columns: BookColumns):
    labeller = TraderPolicy(trader, policy.forecaster, columns)

    def label(obs: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return labeller(obs, live)
    return label


def collect(data: MarketData, tickers: set[str], label, driver, config: DistillConfig, seed: int,
            rules: TradingRules, device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """(obs, live, trader's actions, actable) on episodes of `tickers`, steps chosen as the class docstring
    says, and the trader's actions per class on every actable slot met (kept or not); `driver` (None: the
    trader itself) picks the actions that move the environment."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    env = BatchedMarketEnv(data, lambda _: build_episode(data, rng, curriculum_stage(1.0), tickers=tickers),
                           config.n_envs, rules=rules, device=device)
    kept: list[tuple[torch.Tensor, ...]] = []
    seen = torch.zeros(N_ACTIONS, dtype=torch.long, device=device)
    for _ in range(config.rollouts_per_round * config.rollout_steps):
        obs, live = env.observe()
        actable = env.actable()
        targets = torch.where(actable, label(obs, live), torch.zeros_like(env.yes))
        seen += torch.bincount(targets[actable], minlength=N_ACTIONS)
        moves = targets if driver is None else torch.where(actable, driver(obs, live), torch.zeros_like(env.yes))
        keep = (targets != HOLD).any(-1) | (moves != HOLD).any(-1) | \
            (torch.rand(config.n_envs, generator=generator, device=device) < config.hold_share)
        kept.append((obs[keep], live[keep], targets[keep], actable[keep]))
        env.step(moves)
    return tuple(torch.cat(column) for column in zip(*kept)), seen


def _fit(policy: MarketPolicy, demonstrations, seen: torch.Tensor, config: DistillConfig, generator: torch.Generator,
         time_limit: TimeLimit) -> tuple[int, torch.Tensor]:
    """Epochs over the demonstrations; returns the epochs run and the prior adjustment the loss used (zero
    unless `config.adjust_priors`: then the class weights are those of all the demonstrations, else each
    minibatch's own)."""
    obs, live, actions, actable = demonstrations
    weights = adjustment = None
    if config.adjust_priors:
        targets = actions[actable]
        weights = class_weights(targets, N_ACTIONS)
        adjustment = prior_adjustment(weights, torch.bincount(targets, minlength=N_ACTIONS), seen)
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
            loss = imitation_loss(logits, actions[idx], actable[idx], weights, adjustment,
                                  label_smoothing=config.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epochs += 1
    return epochs, torch.zeros(N_ACTIONS) if adjustment is None else adjustment


def agreement(policy: MarketPolicy, demonstrations) -> dict:
    """On the actable slots: the share of all actions the policy's greedy choice shares with the trader
    (`action_agreement`), how many of the trader's orders it reproduces (recall) and how many of its own
    orders the trader would send (precision)."""
    obs, live, actions, actable = demonstrations
    with torch.no_grad():
        logits, _ = policy(obs, live)
    predicted, target = logits.argmax(-1)[actable], actions[actable]
    trader_orders, policy_orders = target != HOLD, predicted != HOLD
    return {"steps": len(obs), "trader_orders": int(trader_orders.sum()), "policy_orders": int(policy_orders.sum()),
            "action_agreement": float((predicted == target).float().mean()) if len(target) else None,
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
    seen = torch.zeros(N_ACTIONS, dtype=torch.long, device=device)
    rounds = 0
    adjustment = torch.zeros(N_ACTIONS)
    for round_index in range(config.rounds):
        if time_limit.passed() and rounds > 0:
            break
        driver = None if round_index == 0 else _greedy(policy)
        collected, seen_now = collect(data, fit, label, driver, config, seed + round_index, rules, device)
        demonstrations.append(collected)
        seen += seen_now
        merged = tuple(torch.cat(column) for column in zip(*demonstrations))
        _, adjustment = _fit(policy, merged, seen, config, generator, time_limit)
        rounds += 1
    sample = replace(config, rollouts_per_round=max(config.rollouts_per_round // 4, 1))
    held_out = collect(data, held, label, _greedy(policy), sample, seed + 1000, rules, device)[0] if held else None
    return {"rounds": rounds, "cut_short": time_limit.passed(), "seconds": time.perf_counter() - started, "fit_markets": len(fit),
            "held_out_markets": len(held), "demonstration_steps": int(sum(len(d[0]) for d in demonstrations)),
            "prior_adjustment": [round(float(a), 4) for a in adjustment.cpu()],
            "held_out": agreement(policy, held_out) if held_out is not None else None, "trader": trader.as_dict()}


def _greedy(policy: MarketPolicy):
    def act(obs, live):
        with torch.no_grad():
            logits, _ = policy(obs, live)
        return torch.where(live, logits.argmax(-1), torch.zeros_like(live, dtype=torch.long))
    return act
