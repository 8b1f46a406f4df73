"""The batched simulator's market mechanics: fees, fills, limits, event-driven slots, latency."""

from __future__ import annotations

import numpy as np
import torch

from core.exchange import TradingRules, taker_fee_cents
from tests.training.synthetic import synthetic_data, synthetic_market
from training.environment.batched_env import BatchedMarketEnv
from training.environment.episodes import merge_markets
from training.environment.spaces import BUY_NO, BUY_YES, HOLD, SELL_YES


def test_kalshi_taker_fee_rounds_the_order_total_up_to_the_cent():
    contracts = torch.tensor([10, 1, 10, 100, 0])
    prices = torch.tensor([50, 50, 90, 50, 50])
    # 0.07 x C x P x (1 - P) dollars: 0.175 -> 18 c, 0.0175 -> 2 c, 0.063 -> 7 c, 1.75 -> 175 c
    assert taker_fee_cents(contracts, prices).tolist() == [18, 2, 7, 175, 0]


def test_fills_walk_the_book_pay_fees_and_settle():
    market = synthetic_market("KXA", 4, settled_ms=10_000, outcome=True)
    data = synthetic_data(market)
    env = BatchedMarketEnv(data, lambda _: merge_markets([market], [0], 4), 1, rules=TradingRules(10, 50),
                           auto_reset=False)
    rewards = []
    for action in (BUY_YES, SELL_YES, BUY_NO, HOLD):
        actions = torch.zeros((1, 5), dtype=torch.long)
        actions[0, 0] = action
        reward, done, info = env.step(actions)
        rewards.append(round(float(reward[0]), 2))
    # fees per fill level: buy 5 @ 42 (fee 9) + 5 @ 43 (fee 9) = 443, worth 10 x 40 less the exit fee 17 = 383
    # sell 5 @ 40 + 5 @ 39 less fees 9 + 9 = 377; buy NO 5 @ 60 + 5 @ 61 + fees 9 + 9 = 623, worth 10 x 58 - 18
    # the market settles YES: the NO contracts pay nothing
    assert rewards == [-0.60, -0.06, -0.61, -5.62]
    assert bool(done[0]) and int(info["episode_pnl_cents"][0]) == -689


def test_position_limit_and_missing_liquidity_block_orders():
    market = synthetic_market("KXB", 10, bid=0, ask=42)
    env = BatchedMarketEnv(synthetic_data(market), lambda _: merge_markets([market], [0], 10), 1,
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
    a, b = synthetic_market("KXA", 6), synthetic_market("KXB", 6, start=0)
    env = BatchedMarketEnv(synthetic_data(a, b), lambda _: merge_markets([a, b], [0, 0], 12), 1, auto_reset=False)
    first_slot = int(env.event_slot[0, 0])
    assert env.actable()[0].tolist() == [k == first_slot for k in range(5)]
    actions = torch.full((1, 5), BUY_YES)
    _, _, info = env.step(torch.where(env.actable(), actions, torch.zeros_like(actions)))
    assert int(info["orders"][0]) == 1


def test_orders_meet_the_book_as_it_is_after_the_latency():
    # A sweep: the ask jumps from 42 to 55 30 ms after the first event, then the market rests.
    market = synthetic_market("KXS", 4)
    market.time_ms = np.array([0, 30, 40, 5_000], dtype=np.int64)
    market.ask = np.array([42, 55, 55, 55], np.int16)
    market.bid = np.array([40, 53, 53, 53], np.int16)
    rules = TradingRules(contracts=10, position_limit=50, latency_ms=100)
    env = BatchedMarketEnv(synthetic_data(market), lambda _: merge_markets([market], [0], 4), 1, rules=rules, auto_reset=False)
    actions = torch.zeros((1, 5), dtype=torch.long)
    actions[0, 0] = BUY_YES
    env.step(actions)
    # 10 at the post-sweep ask (5 @ 55 + 5 @ 56) plus the fee, not at the 42 seen when the order was sent
    assert int(env.cash[0]) == -(5 * 55 + 5 * 56 + int(taker_fee_cents(torch.tensor(10), torch.tensor(55))))
