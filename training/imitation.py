"""Warm start: behaviour cloning of a simple order-imbalance trader before PPO.

Why: trading states that pay are rare (a strong lean of the top-5 depth shortly before news), and every
order pays spread and fees at once while the gain arrives tens of events later. PPO from scratch
learns "never trade" long before it finds those states (measured: entropy collapses within ~30
updates on the default universe). Cloning a transparent rule first puts the policy where the reward
is; PPO then keeps, refines or drops that behaviour on its own returns. The teacher sees only
observation columns (no simulator internals), so cloning cannot leak the future either.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from training.env import BatchedMarketEnv, TradingRules
from training.episodes import build_episode, curriculum_stage
from training.market_data import MarketData
from training.policy import MarketPolicy
from training.spaces import BUY_NO, BUY_YES, HOLD, SELL_NO, SELL_YES

MAX_CLASS_WEIGHT = 10.0  # order classes are up-weighted up to this much relative to HOLD


@dataclass(frozen=True)
class TeacherRule:
    enter_imbalance: float = 0.9    # |top-5 depth imbalance| above this opens a position its way
    exit_imbalance: float = 0.3     # the lean has faded below this: close
    max_spread: float = 0.03        # only enter on a normal book (3 cents), not in the middle of a sweep
    min_certainty_distance: float = 0.08  # stay away from 1 and 99, where fees eat any move


def teacher_actions(rule: TeacherRule, feature_names: list[str], obs: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """[B, S] actions of the rule: enter one lot per event while the lean lasts, close when it fades.

    Everything it needs is in the observation (the position columns follow the features), so it can
    label stored rollouts as well as drive an environment."""
    n_features = len(feature_names)
    lean = obs[..., feature_names.index("ob_yes_depth_imbalance")]
    spread = obs[..., feature_names.index("ob_yes_spread_prob")]
    certainty = obs[..., feature_names.index("ob_distance_from_certainty")]
    yes, no = obs[..., n_features], obs[..., n_features + 1]  # contracts / position limit
    has_yes, has_no = yes > 0, no > 0
    can_enter = live & (spread <= rule.max_spread) & (certainty > rule.min_certainty_distance)
    actions = torch.full(live.shape, HOLD, dtype=torch.long)
    # Never label an order the policy's action mask forbids (buying at the limit): its logit is -1e9.
    actions = torch.where(can_enter & (lean > rule.enter_imbalance) & ~has_no & (yes < 1.0), BUY_YES, actions)
    actions = torch.where(can_enter & (lean < -rule.enter_imbalance) & ~has_yes & (no < 1.0), BUY_NO, actions)
    actions = torch.where(live & has_yes & (lean < rule.exit_imbalance), SELL_YES, actions)
    actions = torch.where(live & has_no & (lean > -rule.exit_imbalance), SELL_NO, actions)
    return actions


def imitation_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, max_weight: float = MAX_CLASS_WEIGHT
                   ) -> torch.Tensor:
    """Cross-entropy of the policy's logits against the teacher's actions on the masked (actable) slots,
    each action class weighted by the inverse of its share (capped): orders are rare, and unweighted the
    cheapest fit is HOLD everywhere."""
    target = targets[mask]
    counts = torch.bincount(target, minlength=logits.shape[-1]).float()
    weights = (counts.sum() / counts.clamp(min=1.0)).clamp(max=max_weight)
    return torch.nn.functional.cross_entropy(logits[mask], target, weight=weights / weights[HOLD])


def teacher_actor(rule: TeacherRule, feature_names: list[str]):
    """The rule as an evaluation strategy (same signature as the baselines in `evaluate`)."""
    def act(obs, live, env):
        return teacher_actions(rule, feature_names, obs, live)
    return act


def collect_demonstrations(data: MarketData, rule: TeacherRule, batches: int, seed: int,
                           rules: TradingRules = TradingRules(), n_envs: int = 64, rollout_steps: int = 64,
                           hold_share: float = 0.25) -> tuple[torch.Tensor, ...]:
    """The rule trading training episodes: (obs, live, actions, actable) of every step where it sends an
    order, plus a `hold_share` sample of the steps where it only holds. Orders are ~1% of steps: this
    keeps the informative states and a fair picture of the rest in a smaller dataset (a 5% sample of
    the holds made the clone trade twice as often as the rule on test markets)."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    env = BatchedMarketEnv(data, lambda _: build_episode(data, rng, curriculum_stage(1.0)), n_envs, rules=rules)
    kept: list[tuple[torch.Tensor, ...]] = []
    for _ in range(batches * rollout_steps):
        obs, live = env.observe()
        actable = env.actable()
        actions = torch.where(actable, teacher_actions(rule, data.feature_names, obs, live), torch.zeros_like(env.yes))
        keep = (actions != HOLD).any(-1) | (torch.rand(n_envs, generator=generator) < hold_share)
        kept.append((obs[keep], live[keep], actions[keep], actable[keep]))
        env.step(actions)
    return tuple(torch.cat(column) for column in zip(*kept))


def clone_rule(policy: MarketPolicy, data: MarketData, rule: TeacherRule, batches: int, seed: int,
               rules: TradingRules = TradingRules(), seconds: float | None = None, epochs: int = 30,
               minibatch: int = 1024, learning_rate: float = 1e-3) -> dict:
    """Fit `policy` to the rule's demonstrations on `batches` rollouts of training episodes (for `epochs`
    passes, or until `seconds`); returns the fit on a held-out tenth: how many of the rule's orders the
    policy's greedy action reproduces (recall) and how many of its orders the rule would send (precision)."""
    started = time.perf_counter()
    obs, live, actions, actable = collect_demonstrations(data, rule, batches, seed, rules)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(obs), generator=generator)
    held_out, fit = order[: len(order) // 10], order[len(order) // 10:]
    optimizer = torch.optim.Adam(policy.parameters(), lr=learning_rate)
    done_epochs = 0
    for _ in range(epochs):
        if seconds is not None and time.perf_counter() - started > seconds:
            break
        shuffled = fit[torch.randperm(len(fit), generator=generator)]
        for start in range(0, len(shuffled), minibatch):
            idx = shuffled[start:start + minibatch]
            logits, _ = policy(obs[idx], live[idx])
            loss = torch.nn.functional.cross_entropy(logits[actable[idx]], actions[idx][actable[idx]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        done_epochs += 1
    with torch.no_grad():
        logits, _ = policy(obs[held_out], live[held_out])
        predicted, target = logits.argmax(-1)[actable[held_out]], actions[held_out][actable[held_out]]
    teacher_orders, policy_orders = target != HOLD, predicted != HOLD
    return {"demonstration_steps": len(obs), "teacher_orders": int((actions != HOLD).sum()), "epochs": done_epochs,
            "seconds": time.perf_counter() - started,
            "held_out_order_recall": float((predicted[teacher_orders] == target[teacher_orders]).float().mean()),
            "held_out_order_precision": float((predicted[policy_orders] == target[policy_orders]).float().mean()),
            "rule": rule.__dict__}
