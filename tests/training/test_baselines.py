"""The baselines: the compiled backtester equals the simulator, the best rule is tuned on training markets only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.exchange import TradingRules
from training.evaluation import baselines, scoring


@pytest.fixture(scope="module")
def data(built_store):
    from training.data.cache import load_market_data

    _, lake, _ = built_store
    return load_market_data(lake)


def test_backtester_equals_the_simulator_for_threshold_rules(data):
    markets = sorted(data.of_split("validation") + data.of_split("test"), key=lambda m: m.ticker)[:8]
    rules = baselines.candidate_rules(data, data.of_split("train"))
    rng = np.random.default_rng(0)
    chosen = [rules[k] for k in rng.choice(len(rules), 10, replace=False)]
    traded = 0
    for rule in chosen:
        for split in ("validation", "test"):
            names = [m.ticker for m in markets if m.split == split]
            if not names:
                continue
            played = scoring.market_metrics(scoring.play(data, split, baselines.threshold_actor(data.feature_names, rule),
                                                           markets=names))
            simulated = dict(zip(played["market_ticker"], played["pnl_cents"]))
            traded += int(played["orders"].sum())
            j = data.feature_names.index(rule.feature)
            for m in markets:
                if m.split == split:
                    assert baselines.backtest_signals(m, baselines.rule_signals(rule, m.features[:, j]), TradingRules()) \
                        == simulated[m.ticker], (rule.describe(), m.ticker)
    assert traded > 0  # the comparison covered rules that trade


def test_best_rule_is_tuned_on_a_stratified_training_sample(data):
    sample = baselines.tuning_sample(data, 12)
    assert all(m.split == "train" for m in sample) and len(sample) <= 12
    best, report = baselines.tune_best_rule(data, sample)
    assert report["rules_tried"] > 1000 and best.feature in data.feature_names
    assert report["best_cents"] == baselines.backtest(best, sample, data.feature_names, TradingRules())
    assert report["best_cents"] >= 0  # doing nothing (an entry nobody reaches) is among the candidates


def test_random_baseline_sends_only_orders_that_fill(data):
    from training.environment.batched_env import BatchedMarketEnv
    from training.environment.episodes import market_windows

    windows = [w for m in data.of_split("validation")[:3] for w in market_windows(m)]
    queue = iter(windows)
    env = BatchedMarketEnv(data, lambda _: next(queue), len(windows), auto_reset=False)
    act = baselines.random_fillable(0.5, seed=3)
    sent = filled = 0
    for _ in range(300):
        obs, live = env.observe()
        actions = torch.where(env.actable(), act(obs, live, env), torch.zeros_like(live, dtype=torch.long))
        _, _, info = env.step(actions)
        sent += int((actions != 0).sum())
        filled += int(info["orders"].sum())
    assert sent > 50 and filled == sent
