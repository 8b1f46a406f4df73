"""The batched market simulator: many event-time episodes stepped together in PyTorch.

State per environment: step, cash and YES/NO contracts per slot. Each step, the slot whose market
produced the step's event (see `actable`) takes one of HOLD, BUY_YES, SELL_YES, BUY_NO, SELL_NO for a
fixed lot of contracts. Orders reach the exchange `latency_ms` after the event they react to and fill
against the replayed book as it is then (the market's last event at or before arrival). The latency
matters: a sweep arrives as a run of deltas within milliseconds, and an order filled at the book between two
of them would trade at prices nobody could have hit. The exchange's rules (core/exchange.py) decide the
rest: up to the best level's size at the best price and the rest one cent worse (only the best level's size
is in the feature store), Kalshi's taker fee per fill level, positions capped, valued at what they could be
sold for net of the fee of selling them (best bid; the NO side at 100 - best YES ask), and paid 100 or 0
when their market settles inside the episode. The reward is the change of that value in dollars, so an
entry costs the spread and both fees at once, and a position open at the end is worth its exit.

Besides its contracts, a slot observes how long its position has been open and what it gains per
contract if closed now: generic facts of the position, the same for every strategy.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from core.exchange import (
    NO_ASK,
    NO_BID,
    PAYOUT_CENTS,
    TradingRules,
    cost_after_sale,
    liquidation_value,
    no_bid_of,
    no_price,
    one_cent_worse_to_buy,
    one_cent_worse_to_sell,
    taker_fee_table,
    taker_fill,
)
from training.data.market_data import MarketData
from training.environment.episodes import Episode
from training.environment.spaces import (
    AGE_SCALE,
    BUY_NO,
    BUY_YES,
    HOLD,
    MAX_SLOTS,
    SELL_NO,
    SELL_YES,
)


class BatchedMarketEnv:
    """`n_envs` episodes from `make_episode`, stepped in lockstep; finished ones restart with a new episode.

    Observations, actions and holdings always have MAX_SLOTS slots; `slots` is how many the episodes fill
    (1 for the evaluation's single-market windows): the per-step arrays are kept for those only and the
    rest is padding (empty, not live), so a batch of single-market windows costs a fifth of the memory."""

    def __init__(self, data: MarketData, make_episode: Callable[[int], Episode], n_envs: int,
                 rules: TradingRules = TradingRules(), max_steps: int = 2000, auto_reset: bool = True,
                 device: torch.device | str = "cpu", slots: int = MAX_SLOTS):
        if not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"slots must be 1..{MAX_SLOTS}, got {slots}")
        self.device = torch.device(device)
        with torch.device(self.device):  # every tensor below is created on the training device
            self._allocate(data, make_episode, n_envs, rules, max_steps, auto_reset, slots)
        for env in range(n_envs):
            self._load(env)

    def _allocate(self, data, make_episode, n_envs, rules, max_steps, auto_reset, slots) -> None:
        self.data = data
        self.make_episode = make_episode
        self.rules = rules
        self.n_envs = n_envs
        self.auto_reset = auto_reset
        self.slots = slots
        n_features = len(data.feature_names)
        self.features = torch.zeros((n_envs, max_steps, slots, n_features), dtype=torch.float32)
        self.bid = torch.zeros((n_envs, max_steps, slots), dtype=torch.int64)
        self.ask = torch.full((n_envs, max_steps, slots), NO_ASK, dtype=torch.int64)
        self.bid_size = torch.zeros((n_envs, max_steps, slots), dtype=torch.int64)
        self.ask_size = torch.zeros((n_envs, max_steps, slots), dtype=torch.int64)
        # The book an order sent at each step meets (see the module docstring).
        self.fill_bid = torch.zeros_like(self.bid)
        self.fill_ask = torch.full_like(self.ask, NO_ASK)
        self.fill_bid_size = torch.zeros_like(self.bid_size)
        self.fill_ask_size = torch.zeros_like(self.ask_size)
        self.live = torch.zeros((n_envs, max_steps, slots), dtype=torch.bool)
        self.event_slot = torch.zeros((n_envs, max_steps), dtype=torch.int64)
        self.settle_step = torch.full((n_envs, MAX_SLOTS), -1, dtype=torch.int64)
        self.outcome = torch.zeros((n_envs, MAX_SLOTS), dtype=torch.int64)
        self.length = torch.ones(n_envs, dtype=torch.int64)
        self.t = torch.zeros(n_envs, dtype=torch.int64)
        self.cash = torch.zeros(n_envs, dtype=torch.int64)
        self.yes = torch.zeros((n_envs, MAX_SLOTS), dtype=torch.int64)
        self.no = torch.zeros((n_envs, MAX_SLOTS), dtype=torch.int64)
        self.cost = torch.zeros((n_envs, MAX_SLOTS), dtype=torch.int64)     # cents paid for what is held
        self.opened = torch.full((n_envs, MAX_SLOTS), -1, dtype=torch.int64)  # step the position opened
        self.episode_pnl = torch.zeros(n_envs, dtype=torch.int64)
        self.episodes: list[Episode | None] = [None] * n_envs
        self.episode_counter = 0
        self._rows = torch.arange(n_envs)
        # Fees are looked up (one gather) rather than computed (six tensor ops) on every fill and valuation.
        self._fees = torch.from_numpy(taker_fee_table(max(rules.contracts, rules.position_limit))).flatten()
        self._fee_stride = PAYOUT_CENTS + 1
        # The positions' value is needed by `observe`, before and after each step: computed once per state.
        self._state_version = 0
        self._values_version = -1
        self._values = torch.zeros((n_envs, MAX_SLOTS), dtype=torch.int64)
        self._padding = MAX_SLOTS - slots   # slots no episode fills: empty books, never live

    def _at(self, steps: torch.Tensor, pad_value=0) -> torch.Tensor:
        """A per-step array at each environment's current step, [B, MAX_SLOTS, ...] with the padding slots."""
        values = steps[self._rows, self.t]
        if not self._padding:
            return values
        padding = values.new_full((values.shape[0], self._padding, *values.shape[2:]), pad_value)
        return torch.cat([values, padding], dim=1)

    def fill_book(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(best YES bid, best YES ask) [B, MAX_SLOTS] of the book an order sent now meets."""
        return self._at(self.fill_bid), self._at(self.fill_ask, NO_ASK)

    # -- episodes --------------------------------------------------------------------------------
    def _load(self, env: int) -> None:
        episode = self.make_episode(self.episode_counter)
        self.episode_counter += 1
        if len(episode.tickers) > self.slots:
            raise ValueError(f"an episode of {len(episode.tickers)} markets in an environment of {self.slots} slots")
        steps = min(episode.steps, self.features.shape[1])
        index = episode.index[:steps]
        self.features[env].zero_()
        self.live[env].zero_()
        self.bid[env].zero_()
        self.ask[env].fill_(NO_ASK)
        self.bid_size[env].zero_()
        self.ask_size[env].zero_()
        self.fill_bid[env].zero_()
        self.fill_ask[env].fill_(NO_ASK)
        self.fill_bid_size[env].zero_()
        self.fill_ask_size[env].zero_()
        for slot, ticker in enumerate(episode.tickers):
            market = self.data.markets[ticker]
            rows = index[:, slot]
            seen = rows >= 0
            safe = np.where(seen, rows, 0)
            settle = episode.settle_step[slot]
            live = seen & ((np.arange(steps) <= settle) if settle >= 0 else True)
            self.features[env, :steps, slot] = torch.from_numpy(market.features[safe] * seen[:, None])
            self.bid[env, :steps, slot] = torch.from_numpy(np.where(seen, market.bid[safe], 0).astype(np.int64))
            self.ask[env, :steps, slot] = torch.from_numpy(np.where(seen, market.ask[safe], NO_ASK).astype(np.int64))
            self.bid_size[env, :steps, slot] = torch.from_numpy(np.where(seen, market.bid_size[safe], 0))
            self.ask_size[env, :steps, slot] = torch.from_numpy(np.where(seen, market.ask_size[safe], 0))
            filled = market.fill_rows(self.rules.latency_ms, safe)
            self.fill_bid[env, :steps, slot] = torch.from_numpy(np.where(seen, market.bid[filled], 0).astype(np.int64))
            self.fill_ask[env, :steps, slot] = torch.from_numpy(np.where(seen, market.ask[filled], NO_ASK).astype(np.int64))
            self.fill_bid_size[env, :steps, slot] = torch.from_numpy(np.where(seen, market.bid_size[filled], 0))
            self.fill_ask_size[env, :steps, slot] = torch.from_numpy(np.where(seen, market.ask_size[filled], 0))
            self.live[env, :steps, slot] = torch.from_numpy(live)
        self.event_slot[env, :steps] = torch.from_numpy(episode.event_slot[:steps])
        self.settle_step[env].fill_(-1)
        self.outcome[env].zero_()
        n = len(episode.tickers)
        self.settle_step[env, :n] = torch.from_numpy(episode.settle_step)
        self.outcome[env, :n] = torch.from_numpy(episode.outcome_yes.astype(np.int64))
        self.length[env] = steps
        self.t[env] = 0
        self.cash[env] = 0
        self.yes[env].zero_()
        self.no[env].zero_()
        self.cost[env].zero_()
        self.opened[env].fill_(-1)
        self.episodes[env] = episode
        self._state_version += 1

    # -- observation -----------------------------------------------------------------------------
    def observe(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(observation [B, S, F + POSITION_FEATURES], live mask [B, S]) at the current step."""
        t = self.t
        features = self._at(self.features)
        limit = float(self.rules.position_limit)
        current = torch.nn.functional.one_hot(self.event_slot[self._rows, t], MAX_SLOTS).to(torch.float32)
        held = self.yes + self.no
        age = torch.where(held > 0, torch.log1p((t[:, None] - self.opened).clamp(min=0).float()) / AGE_SCALE, 0.0)
        value_at_stake = float(PAYOUT_CENTS) * held.clamp(min=1)
        gain = torch.where(held > 0, (self._position_values() - self.cost).float() / value_at_stake, 0.0)
        position = torch.stack([self.yes / limit, self.no / limit, current, age, gain], dim=-1)
        return torch.cat([features, position], dim=-1), self._at(self.live, False)

    def actable(self) -> torch.Tensor:
        """[B, S]: the live slot whose market produced this step's event. Decisions are event-driven: a
        slot acts when its own book changes, and sees the other slots' latest state through attention."""
        current = torch.nn.functional.one_hot(self.event_slot[self._rows, self.t], MAX_SLOTS).bool()
        return self._at(self.live, False) & current

    def _fee(self, contracts: torch.Tensor, price: torch.Tensor) -> torch.Tensor:
        return self._fees[contracts * self._fee_stride + price]

    def _fill(self, contracts, best_price, best_size, worse_price) -> tuple[torch.Tensor, torch.Tensor]:
        return taker_fill(contracts, best_price, best_size, worse_price, minimum=torch.minimum, fee=self._fee)

    def _position_values(self) -> torch.Tensor:
        """[B, S] cents the holdings of each slot would sell for now, net of fees."""
        if self._values_version != self._state_version:
            bid, ask = self._at(self.bid), self._at(self.ask, NO_ASK)
            self._values = liquidation_value(self.yes, bid, self._fee) + liquidation_value(self.no, no_bid_of(ask), self._fee)
            self._values_version = self._state_version
        return self._values

    def value(self) -> torch.Tensor:
        """Cash plus positions at what they could be sold for net of fees, in cents."""
        return self.cash + self._position_values().sum(-1)

    # -- transition ------------------------------------------------------------------------------
    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Apply actions [B, S]; return (reward in dollars [B], episode done [B], info)."""
        t = self.t
        c = self.rules.contracts
        limit = self.rules.position_limit
        live = self._at(self.live, False)
        bid, ask = self.fill_book()
        bid_size, ask_size = self._at(self.fill_bid_size), self._at(self.fill_ask_size)
        before = self.value()
        lot = torch.full_like(bid, c)

        buy_yes = (actions == BUY_YES) & live & (ask < NO_ASK) & (self.yes + c <= limit)
        sell_yes = (actions == SELL_YES) & live & (bid > NO_BID) & (self.yes >= c)
        buy_no = (actions == BUY_NO) & live & (bid > NO_BID) & (self.no + c <= limit)
        sell_no = (actions == SELL_NO) & live & (ask < NO_ASK) & (self.no >= c)
        no_ask, no_bid = no_price(bid), no_price(ask)
        yes_paid, yes_paid_fee = self._fill(lot, ask, ask_size, one_cent_worse_to_buy(ask))
        no_paid, no_paid_fee = self._fill(lot, no_ask, bid_size, one_cent_worse_to_buy(no_ask))
        yes_got, yes_got_fee = self._fill(lot, bid, bid_size, one_cent_worse_to_sell(bid))
        no_got, no_got_fee = self._fill(lot, no_bid, ask_size, one_cent_worse_to_sell(no_bid))
        spend = (yes_paid + yes_paid_fee) * buy_yes + (no_paid + no_paid_fee) * buy_no
        receive = (yes_got - yes_got_fee) * sell_yes + (no_got - no_got_fee) * sell_no
        held = self.yes + self.no
        selling = sell_yes | sell_no
        # cost basis: buys add what they paid; sells take out the average cost of what they sold
        self.cost = torch.where(selling, cost_after_sale(self.cost, c, held.clamp(min=1)), self.cost) + spend
        self.cash += (receive - spend).sum(-1)
        self.yes += c * (buy_yes.long() - sell_yes.long())
        self.no += c * (buy_no.long() - sell_no.long())

        settling = (self.settle_step == t[:, None])
        payout = torch.where(self.outcome == 1, self.yes, self.no) * PAYOUT_CENTS
        self.cash += (payout * settling).sum(-1)
        self.yes *= ~settling
        self.no *= ~settling
        flat = (self.yes + self.no) == 0
        self.cost *= ~flat
        self.opened = torch.where(flat, -1, torch.where((held == 0) & ~flat, t[:, None], self.opened))

        done = t + 1 >= self.length
        self.t = torch.where(done, t, t + 1)
        self._state_version += 1
        after = self.value()
        reward = (after - before).to(torch.float32) / 100.0
        self.episode_pnl += after - before
        orders = (buy_yes | sell_yes | buy_no | sell_no).sum(-1)
        invalid = ((actions != HOLD) & live).sum(-1) - orders
        info = {"episode_pnl_cents": torch.where(done, self.episode_pnl, torch.zeros_like(self.episode_pnl)),
                "orders": orders, "invalid_orders": invalid, "done_episodes": [self.episodes[i] for i in
                                                                                 torch.nonzero(done).flatten().tolist()]}
        if done.any():
            for env in torch.nonzero(done).flatten().tolist():
                self.episode_pnl[env] = 0
                if self.auto_reset:
                    self._load(env)
        return reward, done, info
