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
    rules = baselines.candidate_rules(data, data.of_role("fit"))
    certainty = data.feature_names.index(baselines.CERTAINTY_FEATURE)
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
                    signals = baselines.rule_signals(rule, m.features[:, j], m.features[:, certainty])
                    assert baselines.backtest_signals(m, signals, TradingRules()) == simulated[m.ticker], \
                        (rule.describe(), m.ticker)
                    grid = baselines.backtest_rules([rule], [m], data.feature_names, TradingRules())
                    assert grid.cents[rule] == simulated[m.ticker]
                    assert grid.markets_traded[rule] == int(played.filter(market_ticker=m.ticker)["orders"][0] > 0)
    assert traded > 0  # the comparison covered rules that trade


def test_best_rule_is_tuned_on_fit_markets_and_chosen_on_select_markets(data):
    sample = baselines.tuning_sample(data, 12)
    select = data.of_role("select")
    assert sample and select and not {m.ticker for m in sample} & {m.ticker for m in select}
    assert all(m.split == "train" for m in sample + select) and len(sample) <= 12
    best, report = baselines.tune_best_rule(data, sample, select)
    assert report["rules_tried"] > 1000 and best.feature in data.feature_names and report["chosen_on"] == "select"
    assert best.min_distance == pytest.approx(baselines.TRADABLE_DISTANCE)
    rules = TradingRules()
    assert report["best_fit_cents"] == baselines.backtest(best, sample, data.feature_names, rules)
    assert report["best_select_cents"] == baselines.backtest(best, select, data.feature_names, rules)
    # a rule of the grid counts only if it trades on a fifth of the tuning markets
    on_fit = baselines.backtest_rules([best], sample, data.feature_names, rules)
    assert report["rules_qualified"] == 0 or on_fit.markets_traded[best] >= report["min_markets_traded"] >= 1
    top = report["top_rules"]
    assert top[0]["rule"] == best.describe() and 1 <= len(top) <= baselines.TOP_RULES
    assert [r["select_dollars_per_market"] for r in top] == sorted((r["select_dollars_per_market"] for r in top),
                                                                     reverse=True)
    assert len({r["feature"] for r in top}) == len(top)   # one rule per feature


def test_a_saved_rule_reads_back_as_it_was_and_old_rules_have_no_tradability_filter():
    rule = baselines.ThresholdRule("ob_yes_depth_imbalance", -1, 0.5, 0.1, -np.inf, -0.1, 0.05)
    assert baselines.ThresholdRule.from_dict(rule.as_dict()) == rule
    saved = {k: v for k, v in rule.as_dict().items() if k != "min_distance"}
    assert baselines.ThresholdRule.from_dict(saved).min_distance == 0.0
    assert "from certainty" in rule.describe() and "never trades" in baselines.ThresholdRule(
        "x", 1, np.inf, 0.0, -np.inf, 0.0).describe()


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
