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

from training.env import BUY_NO, BUY_YES, HOLD, SELL_NO, SELL_YES, BatchedMarketEnv, TradingRules
from training.episodes import build_episode, curriculum_stage
from training.market_data import MarketData
from training.policy import MarketPolicy


@dataclass(frozen=True)
class TeacherRule:
    enter_imbalance: float = 0.9    # |top-5 depth imbalance| above this opens a position its way
    exit_imbalance: float = 0.3     # the lean has faded below this: close
    max_spread: float = 0.03        # only enter on a normal book (3 cents), not in the middle of a sweep
    min_certainty_distance: float = 0.08  # stay away from 1 and 99, where fees eat any move


def teacher_actions(rule: TeacherRule, feature_names: list[str], obs: torch.Tensor, live: torch.Tensor,
                    yes: torch.Tensor, no: torch.Tensor) -> torch.Tensor:
    """[B, S] actions of the rule: enter one lot per event while the lean lasts, close when it fades."""
    lean = obs[..., feature_names.index("ob_yes_depth_imbalance")]
    spread = obs[..., feature_names.index("ob_yes_spread_prob")]
    certainty = obs[..., feature_names.index("ob_distance_from_certainty")]
    can_enter = live & (spread <= rule.max_spread) & (certainty > rule.min_certainty_distance)
    actions = torch.full_like(yes, HOLD)
    actions = torch.where(can_enter & (lean > rule.enter_imbalance) & (no == 0), BUY_YES, actions)
    actions = torch.where(can_enter & (lean < -rule.enter_imbalance) & (yes == 0), BUY_NO, actions)
    actions = torch.where(live & (yes > 0) & (lean < rule.exit_imbalance), SELL_YES, actions)
    actions = torch.where(live & (no > 0) & (lean > -rule.exit_imbalance), SELL_NO, actions)
    return actions


def teacher_actor(rule: TeacherRule, feature_names: list[str]):
    """The rule as an evaluation strategy (same signature as the baselines in `evaluate`)."""
    def act(obs, live, env):
        return teacher_actions(rule, feature_names, obs, live, env.yes, env.no)
    return act


def clone_rule(policy: MarketPolicy, data: MarketData, rule: TeacherRule, batches: int, seed: int,
               rules: TradingRules = TradingRules(), seconds: float | None = None, n_envs: int = 64,
               rollout_steps: int = 64, learning_rate: float = 1e-3, epochs_per_batch: int = 4) -> dict:
    """Fit `policy` to the rule on `batches` batches of training episodes (stopping early after `seconds`
    if given); returns fit statistics.

    Order actions are rare, so the loss weights each action class by the inverse of its share in the
    batch (capped): otherwise the cheapest fit is HOLD everywhere, which is what we are escaping.
    """
    rng = np.random.default_rng(seed)
    env = BatchedMarketEnv(data, lambda _: build_episode(data, rng, curriculum_stage(1.0)), n_envs, rules=rules)
    optimizer = torch.optim.Adam(policy.parameters(), lr=learning_rate)
    started = time.perf_counter()
    done = 0
    agreement = order_recall = float("nan")
    while done < batches and (seconds is None or time.perf_counter() - started < seconds):
        observations, lives, targets, masks = [], [], [], []
        for _ in range(rollout_steps):
            obs, live = env.observe()
            actable = env.actable()
            actions = torch.where(actable, teacher_actions(rule, data.feature_names, obs, live, env.yes, env.no),
                                  torch.zeros_like(env.yes))
            observations.append(obs)
            lives.append(live)
            targets.append(actions)
            masks.append(actable)
            env.step(actions)
        obs, live = torch.cat(observations), torch.cat(lives)
        target, mask = torch.cat(targets)[torch.cat(masks)], torch.cat(masks)
        counts = torch.bincount(target, minlength=5).float()
        weights = (counts.sum() / counts.clamp(min=1.0)).clamp(max=10.0)
        weights = weights / weights[HOLD]
        for _ in range(epochs_per_batch):  # collecting is the slow part: fit each batch a few times
            logits, _ = policy(obs, live)
            chosen = logits[mask]
            loss = torch.nn.functional.cross_entropy(chosen, target, weight=weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        done += 1
        with torch.no_grad():
            predicted = chosen.argmax(-1)
            agreement = float((predicted == target).float().mean())
            orders = target != HOLD
            order_recall = float((predicted[orders] == target[orders]).float().mean()) if orders.any() else float("nan")
    return {"batches": done, "seconds": time.perf_counter() - started, "agreement": agreement,
            "order_recall": order_recall, "rule": rule.__dict__}

