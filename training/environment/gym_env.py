"""A Gymnasium view of one simulator environment, so researchers can plug in other RL libraries.

Observation: {"features": float32 [5, F + POSITION_FEATURES], "live": int8 [5]}; action: MultiDiscrete([5] * 5).
It runs the same batched simulator with a batch of one, so the market mechanics are identical.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from core.exchange import TradingRules
from training.data.market_data import MarketData
from training.environment.batched_env import BatchedMarketEnv
from training.environment.episodes import build_episode, curriculum_stage
from training.environment.spaces import MAX_SLOTS, POSITION_FEATURES


class KalshiMarketsEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, data: MarketData, split: str = "fit", rules: TradingRules = TradingRules(),
                 curriculum_progress: float = 1.0):
        super().__init__()
        self.data = data
        self.split = split
        self.rules = rules
        self.progress = curriculum_progress
        width = len(data.feature_names) + POSITION_FEATURES
        self.observation_space = gym.spaces.Dict({
            "features": gym.spaces.Box(-np.inf, np.inf, shape=(MAX_SLOTS, width), dtype=np.float32),
            "live": gym.spaces.MultiBinary(MAX_SLOTS),
        })
        self.action_space = gym.spaces.MultiDiscrete([5] * MAX_SLOTS)
        self._rng = np.random.default_rng()
        self._env: BatchedMarketEnv | None = None

    def _observation(self) -> dict:
        obs, live = self._env.observe()
        return {"features": obs[0].numpy().astype(np.float32), "live": live[0].numpy().astype(np.int8)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        stage = curriculum_stage(self.progress)
        self._env = BatchedMarketEnv(self.data, lambda _: build_episode(self.data, self._rng, stage, self.split),
                                     n_envs=1, rules=self.rules, auto_reset=False)
        return self._observation(), {}

    def step(self, action):
        actions = torch.as_tensor(np.asarray(action, dtype=np.int64)).reshape(1, MAX_SLOTS)
        reward, done, info = self._env.step(actions)
        terminated = bool(done[0])
        return self._observation(), float(reward[0]), terminated, False, {"orders": int(info["orders"][0])}
