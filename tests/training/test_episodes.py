"""Event-time episodes and the curriculum: training markets only, stage sizes and classes."""

from __future__ import annotations

import numpy as np

from tests.training.synthetic import synthetic_data, synthetic_market
from training.environment.episodes import CURRICULUM, build_episode, curriculum_stage


def test_curriculum_and_training_episodes_use_training_markets_only():
    markets = [synthetic_market(f"KX{i}", 3000, klass=k, split=s, start=i)
               for i, (k, s) in enumerate([("stable", "train"), ("stable", "train"), ("moderate", "train"),
                                           ("volatile", "train"), ("volatile", "train"), ("moderate", "train"),
                                           ("stable", "train"), ("stable", "validation"), ("moderate", "test")])]
    data = synthetic_data(*markets)
    rng = np.random.default_rng(0)
    assert [curriculum_stage(p) for p in (0.0, 0.4, 0.9)] == list(CURRICULUM)
    for progress in (0.0, 0.5, 0.99):
        stage = curriculum_stage(progress)
        for _ in range(10):
            episode = build_episode(data, rng, stage)
            assert stage.slots[0] <= len(episode.tickers) <= stage.slots[1]
            assert {data.markets[t].split for t in episode.tickers} == {"train"}
            assert not set(episode.tickers) & data.selection(), "a select market reached a training episode"
            assert {data.markets[t].volatility_class for t in episode.tickers} <= set(stage.classes)
            assert 500 <= episode.steps <= 2000
            assert (np.diff(episode.index, axis=0) >= 0).all()
