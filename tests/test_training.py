"""The simulator's market mechanics, the Gymnasium wrapper, episodes and curriculum, and the
train -> validate -> publish -> hot-reload chain on the small universe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from features.schema import MODEL_FEATURES
from training.env import BUY_NO, BUY_YES, HOLD, SELL_YES, BatchedMarketEnv, TradingRules, taker_fee_cents
from training.episodes import CURRICULUM, build_episode, curriculum_stage, merge_markets
from training.market_data import MarketData, MarketSeries


def _market(ticker, n, bid=40, ask=42, size=5, split="train", klass="stable", settled_ms=None, outcome=None, start=0):
    features = np.zeros((n, len(MODEL_FEATURES)), np.float32)
    return MarketSeries(ticker=ticker, split=split, volatility_class=klass,
                        time_ms=np.arange(start, start + n, dtype=np.int64) * 1000, features=features,
                        bid=np.full(n, bid, np.int16), ask=np.full(n, ask, np.int16),
                        bid_size=np.full(n, size, np.int64), ask_size=np.full(n, size, np.int64),
                        settled_ms=settled_ms, outcome_yes=outcome)


def _data(*markets) -> MarketData:
    names = list(MODEL_FEATURES)
    return MarketData({m.ticker: m for m in markets}, names, np.zeros(len(names), np.float32),
                      np.ones(len(names), np.float32))


def test_kalshi_taker_fee_rounds_the_order_total_up_to_the_cent():
    contracts = torch.tensor([10, 1, 10, 100, 0])
    prices = torch.tensor([50, 50, 90, 50, 50])
    # 0.07 x C x P x (1 - P) dollars: 0.175 -> 18 c, 0.0175 -> 2 c, 0.063 -> 7 c, 1.75 -> 175 c
    assert taker_fee_cents(contracts, prices).tolist() == [18, 2, 7, 175, 0]


def test_fills_walk_the_book_pay_fees_and_settle():
    market = _market("KXA", 4, settled_ms=10_000, outcome=True)
    data = _data(market)
    env = BatchedMarketEnv(data, lambda _: merge_markets([market], [0], 4), 1, rules=TradingRules(10, 50),
                           auto_reset=False)
    rewards = []
    for action in (BUY_YES, SELL_YES, BUY_NO, HOLD):
        actions = torch.zeros((1, 5), dtype=torch.long)
        actions[0, 0] = action
        reward, done, info = env.step(actions)
        rewards.append(round(float(reward[0]), 2))
    # buy 5 @ 42 + 5 @ 43 + fee 18 = 443; value 10 x bid 40 = 400
    # sell 5 @ 40 + 5 @ 39 - fee 17 = 378; buy NO 5 @ 60 + 5 @ 61 + fee 17 = 622, valued at 10 x 58
    # the market settles YES: the NO contracts pay nothing
    assert rewards == [-0.43, -0.22, -0.42, -5.80]
    assert bool(done[0]) and int(info["episode_pnl_cents"][0]) == -687


def test_position_limit_and_missing_liquidity_block_orders():
    market = _market("KXB", 10, bid=0, ask=42)
    env = BatchedMarketEnv(_data(market), lambda _: merge_markets([market], [0], 10), 1,
                           rules=TradingRules(10, 30), auto_reset=False)
    orders = []
    for action in (BUY_YES,) * 4 + (BUY_NO,):
        actions = torch.zeros((1, 5), dtype=torch.long)
        actions[0, 0] = action
        _, _, info = env.step(actions)
        orders.append((int(info["orders"][0]), int(info["invalid_orders"][0])))
    assert orders == [(1, 0), (1, 0), (1, 0), (0, 1), (0, 1)]  # limit 30 = 3 lots; no YES bid -> no NO ask
    assert int(env.yes[0, 0]) == 30


def test_only_the_slot_with_the_current_event_can_act():
    a, b = _market("KXA", 6), _market("KXB", 6, start=0)
    env = BatchedMarketEnv(_data(a, b), lambda _: merge_markets([a, b], [0, 0], 12), 1, auto_reset=False)
    first_slot = int(env.event_slot[0, 0])
    assert env.actable()[0].tolist() == [k == first_slot for k in range(5)]
    actions = torch.full((1, 5), BUY_YES)
    _, _, info = env.step(torch.where(env.actable(), actions, torch.zeros_like(actions)))
    assert int(info["orders"][0]) == 1


def test_orders_meet_the_book_as_it_is_after_the_latency():
    # A sweep: the ask jumps from 42 to 55 30 ms after the first event, then the market rests.
    market = _market("KXS", 4)
    market.time_ms = np.array([0, 30, 40, 5_000], dtype=np.int64)
    market.ask = np.array([42, 55, 55, 55], np.int16)
    market.bid = np.array([40, 53, 53, 53], np.int16)
    rules = TradingRules(contracts=10, position_limit=50, latency_ms=100)
    env = BatchedMarketEnv(_data(market), lambda _: merge_markets([market], [0], 4), 1, rules=rules, auto_reset=False)
    actions = torch.zeros((1, 5), dtype=torch.long)
    actions[0, 0] = BUY_YES
    env.step(actions)
    # 10 at the post-sweep ask (5 @ 55 + 5 @ 56) plus the fee, not at the 42 seen when the order was sent
    assert int(env.cash[0]) == -(5 * 55 + 5 * 56 + int(taker_fee_cents(torch.tensor(10), torch.tensor(55))))


def test_curriculum_and_training_episodes_use_training_markets_only():
    markets = [_market(f"KX{i}", 3000, klass=k, split=s, start=i)
               for i, (k, s) in enumerate([("stable", "train"), ("stable", "train"), ("moderate", "train"),
                                           ("volatile", "train"), ("volatile", "train"), ("stable", "validation"),
                                           ("moderate", "test")])]
    data = _data(*markets)
    rng = np.random.default_rng(0)
    assert [curriculum_stage(p) for p in (0.0, 0.4, 0.9)] == list(CURRICULUM)
    for progress in (0.0, 0.5, 0.99):
        stage = curriculum_stage(progress)
        for _ in range(10):
            episode = build_episode(data, rng, stage)
            assert stage.slots[0] <= len(episode.tickers) <= stage.slots[1]
            assert {data.markets[t].split for t in episode.tickers} == {"train"}
            assert {data.markets[t].volatility_class for t in episode.tickers} <= set(stage.classes)
            assert 500 <= episode.steps <= 2000
            assert (np.diff(episode.index, axis=0) >= 0).all()


def test_gymnasium_wrapper_passes_the_environment_checker():
    from gymnasium.utils.env_checker import check_env

    from training.gym_env import KalshiMarketsEnv

    data = _data(*[_market(f"KX{i}", 2500, start=i) for i in range(3)])
    env = KalshiMarketsEnv(data)
    check_env(env, skip_render_check=True)
    observation, _ = env.reset(seed=3)
    assert observation["features"].shape == (5, len(MODEL_FEATURES) + 3)
    _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert isinstance(reward, float) and not truncated


# -- the chain on the small universe -----------------------------------------------------------------

@pytest.fixture(scope="module")
def published(built_store):
    from training.market_data import load_market_data
    from training.pipeline import run_publish, run_training, run_validation
    from training.ppo import PPOConfig

    _, lake, _ = built_store
    data = load_market_data(lake)
    summary = run_training(lake, PPOConfig(n_envs=8, rollout_steps=64, total_steps=8 * 64 * 12, seed=1, warm_start_batches=5), data=data)
    validation = run_validation(lake, "validation", data=data)
    manifest = run_publish(lake, data=data)
    return lake, data, summary, validation, manifest


def test_training_writes_curves_and_a_summary(published):
    lake, _, summary, _, _ = published
    from training.pipeline import candidate_dir

    assert summary["steps"] == 8 * 64 * 12 and summary["steps_per_second"] > 0
    assert (candidate_dir(lake) / "learning_curves.png").stat().st_size > 1000
    assert summary["partitions"]


def test_validation_reports_every_baseline_with_intervals(published):
    _, _, _, validation, _ = published
    names = [row["strategy"] for row in validation["table"]]
    assert names == ["policy", "always_hold", "random", "imbalance_rule", "buy_and_hold_yes", "warm_start_teacher"]
    for row in validation["table"]:
        assert row["ci_low"] <= row["mean_return_dollars"] <= row["ci_high"]
    hold = next(r for r in validation["table"] if r["strategy"] == "always_hold")
    assert hold["mean_return_dollars"] == 0 and hold["orders"] == 0
    report = open(validation["report"]).read()
    assert "| policy minus |" in report and "equity" in report


def test_published_artifact_loads_with_plain_torch_and_agrees_with_fp32(published):
    lake, data, _, _, manifest = published
    from training.pipeline import validation_observations
    from training.publish import models_root

    folder = models_root(lake) / manifest["version"]
    int8 = torch.jit.load(str(folder / "policy_int8.pt"))
    fp32 = torch.jit.load(str(folder / "policy_fp32.pt"))
    obs, live = validation_observations(data)
    with torch.no_grad():
        same = ((int8(obs, live) == fp32(obs, live)) & live).sum() / live.sum()
    assert float(same) >= 0.99
    assert manifest["int8_fp32_action_agreement"] >= 0.99
    assert manifest["latency_us"]["int8"]["p99_us"] > 0 and manifest["feature_schema_hash"]
    assert manifest["normalization"]["mean"] and manifest["training_partitions"]
    assert set(manifest["baseline_comparison"]) == {"always_hold", "random", "imbalance_rule", "buy_and_hold_yes",
                                                     "warm_start_teacher"}


def test_promotion_gate_and_hot_reload(published, tmp_path):
    from kfs.lake import Lake
    from training.publish import PRODUCTION, promotion_gate, publish, read_registry
    from training.serving import PolicyLoadError, PolicyServer
    from training.pipeline import load_candidate, validation_observations

    source, data, summary, validation, _ = published
    lake = Lake(tmp_path)
    # The latency budget is exercised above with given numbers; here a loaded CI machine must not decide.
    no_budget = float("inf")
    policy = load_candidate(source, data)
    losing = {name: {"mean": -1.0, "ci_low": -2.0, "ci_high": 0.5} for name in ("always_hold", "random", "buy_and_hold_yes")}
    winning = {name: {"mean": 2.0, "ci_low": 0.5, "ci_high": 3.0} for name in losing}
    assert not promotion_gate(losing, {"p99_us": 100}).promote
    assert not promotion_gate(winning, {"p99_us": 5000}).promote
    assert promotion_gate(winning, {"p99_us": 100}).promote
    obs = validation_observations(data, max_steps=50)

    first = publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions, summary, {}, losing, obs,
                    latency_budget_p99_us=no_budget)
    assert not first["promotion"]["promoted"] and PRODUCTION not in read_registry(lake)["aliases"]
    server = PolicyServer(lake, latency_budget_p99_us=no_budget)
    with pytest.raises(PolicyLoadError, match="points at no version"):
        server.refresh()

    second = publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions, summary, {}, winning, obs,
                     latency_budget_p99_us=no_budget)
    assert read_registry(lake)["aliases"][PRODUCTION] == second["version"]
    assert server.refresh() and server.version == second["version"]
    actions = server.act(obs[0][:1], obs[1][:1])
    assert actions.shape == (1, 5)

    third = publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions, summary, {}, winning, obs,
                    latency_budget_p99_us=no_budget)
    (lake.root / "models" / third["version"] / "policy_int8.pt").write_bytes(b"not a model")
    assert server.refresh() is False  # the broken version is refused...
    assert server.version == second["version"] and "cannot load" in server.last_error  # ...the old one keeps serving
    assert server.act(obs[0][:1], obs[1][:1]).shape == (1, 5)
    assert len(read_registry(lake)["versions"]) == 3 and all((lake.root / "models" / v["version"]).exists()
                                                             for v in read_registry(lake)["versions"])
    assert json.loads((lake.root / "models" / third["version"] / "manifest.json").read_text())["version"] == third["version"]
