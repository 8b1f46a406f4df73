"""Known-answer rules: traders written with knowledge of the simulator's planted effects.

They exist to measure how much of the available edge the policy recovers, and only for that: they are
evaluation strategies, never a teacher, a warm start, an auxiliary loss or a selection criterion (the
training pipeline does not import this module; a test checks it). Each effect's rule reads the observable
the effect plants (source/simulator_kernel.py); `known_answer` trades all of them. All of them use the
same exit, a generic one: out once the position gained what a news jump brings, lost as much, or aged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from source.simulator_defaults import EFFECTS
from source.simulator_kernel import JUMP_MIN
from training.environment.batched_env import BatchedMarketEnv
from training.environment.spaces import AGE_SCALE, BUY_NO, BUY_YES, HOLD, SELL_NO, SELL_YES


@dataclass(frozen=True)
class KnownAnswer:
    depth_lean: float = 0.85      # |top-5 depth imbalance| beyond this before a jump
    taker_run: float = 0.99       # a run of 10 same-side takers
    quiet_queue: float = 0.97     # |touch queue imbalance| beyond this, on the first event after a quiet gap
    settled_move: float = 0.04    # the mid moved this much in the last minute: the jump already came
    take_profit: float = JUMP_MIN * 0.7  # gain per contract (probability, net of exit) that means the jump came
    stop_loss: float = JUMP_MIN * 1.5    # a jump the other way (an entry alone costs spread and both fees)
    max_age_events: int = 1500
    min_certainty_distance: float = 0.05
    max_spread: float = 0.02


def _column(feature_names: list[str], name: str) -> int:
    return feature_names.index(name)


def known_answer_actor(feature_names: list[str], effects: tuple[str, ...] = EFFECTS,
                       rule: KnownAnswer = KnownAnswer()):
    """The rule for the given effects: enter a lot per event while an effect's footprint shows, in its
    direction; leave a lot per event once the exit says so."""
    n = len(feature_names)
    depth = _column(feature_names, "ob_yes_depth_imbalance")
    run = _column(feature_names, "tf_taker_run")
    queue = _column(feature_names, "ob_top_imbalance")
    quiet = _column(feature_names, "tm_quiet")
    certainty = _column(feature_names, "ob_distance_from_certainty")
    recent_move = _column(feature_names, "ob_mid_change_1m")
    spread = _column(feature_names, "ob_yes_spread_prob")

    def act(obs: torch.Tensor, live: torch.Tensor, env: BatchedMarketEnv) -> torch.Tensor:
        direction = torch.zeros(live.shape, device=obs.device)
        if "depth_lean" in effects:
            lean = obs[..., depth]
            direction = torch.where(lean.abs() > rule.depth_lean, lean.sign(), direction)
        if "taker_run" in effects:
            runs = obs[..., run]
            direction = torch.where(runs.abs() >= rule.taker_run, runs.sign(), direction)
        if "quiet_queue" in effects:
            top = obs[..., queue]
            direction = torch.where((obs[..., quiet] > 0.5) & (top.abs() > rule.quiet_queue), top.sign(), direction)
        tradable = live & (obs[..., certainty] > rule.min_certainty_distance) & \
            (obs[..., recent_move].abs() < rule.settled_move) & (obs[..., spread] <= rule.max_spread + 1e-9)
        yes, no = obs[..., n], obs[..., n + 1]
        age = obs[..., n + 3] * AGE_SCALE
        gain = obs[..., n + 4]
        done = (gain >= rule.take_profit) | (gain <= -rule.stop_loss) | (age >= np.log1p(rule.max_age_events))
        actions = torch.full(live.shape, HOLD, dtype=torch.long, device=obs.device)
        actions = torch.where(tradable & (direction > 0) & (no == 0) & (yes < 1.0), BUY_YES, actions)
        actions = torch.where(tradable & (direction < 0) & (yes == 0) & (no < 1.0), BUY_NO, actions)
        actions = torch.where(live & (yes > 0) & done, SELL_YES, actions)
        actions = torch.where(live & (no > 0) & done, SELL_NO, actions)
        return actions
    return act
