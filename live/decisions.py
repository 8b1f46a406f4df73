"""Decisions for the markets whose book changed: paper positions, observations as the simulator builds them,
one forward pass of the served model for all of them.

The decision stream is the interface to execution, which is out of scope: the positions the policy sees are
paper positions, filled by the exchange's rules (core/exchange.py) against the book the decision was taken on:
one lot (`TradingRules.contracts`), the touch's displayed size at the touch and the rest a cent worse, each
part paying the taker fee, as the simulator fills them (which meets the book `latency_ms` later: a live
decision cannot know that book yet). An execution system that knows the real fills would set them with
`PaperPositions.set`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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
    taker_fill,
)
from training.environment.spaces import (
    ACTIONS,
    AGE_SCALE,
    BUY_NO,
    BUY_YES,
    MAX_SLOTS,
    POSITION_FEATURES,
    SELL_NO,
    SELL_YES,
)


def invalid_reason(book_valid: bool, sequence_gap: bool, delta_before_snapshot: bool, crossed: bool,
                   yes_side_empty: bool, no_side_empty: bool) -> str | None:
    """Why no decision may be taken on this book state (None: it may)."""
    if delta_before_snapshot:
        return "before the first snapshot"
    if sequence_gap:
        return "sequence gap"
    if crossed:
        return "crossed book"
    if not book_valid:
        return "book state unknown"
    if yes_side_empty or no_side_empty:
        return "one-sided book"
    return None


@dataclass
class PaperPositions:
    """YES and NO contracts, their cost (cents) and the event count at opening, per market. A position's age
    counts the market's own book events (training counts the episode's events, which mix 1-5 markets)."""

    rules: TradingRules = field(default_factory=TradingRules)
    yes: dict[str, int] = field(default_factory=dict)
    no: dict[str, int] = field(default_factory=dict)
    cost: dict[str, int] = field(default_factory=dict)
    opened: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)

    def features(self, tickers: list[str], bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
        """float32 [n, POSITION_FEATURES] as the simulator's `observe` builds them (this market is the slot that
        produced the event)."""
        limit = float(self.rules.position_limit)
        yes = np.array([self.yes.get(t, 0) for t in tickers], np.int64)
        no = np.array([self.no.get(t, 0) for t in tickers], np.int64)
        held = yes + no
        age = np.array([self.events.get(t, 0) - self.opened.get(t, 0) for t in tickers], np.float64)
        out = np.zeros((len(tickers), POSITION_FEATURES), np.float32)
        out[:, 2] = 1.0
        if not held.any():   # flat everywhere (the usual case): nothing to value
            return out
        bid, ask = bid.astype(np.int64), ask.astype(np.int64)
        value = liquidation_value(yes, bid) + liquidation_value(no, no_bid_of(ask))
        cost = np.array([self.cost.get(t, 0) for t in tickers], np.int64)
        out[:, 0] = yes / limit
        out[:, 1] = no / limit
        out[:, 3] = np.where(held > 0, np.log1p(np.maximum(age, 0)) / AGE_SCALE, 0.0)
        out[:, 4] = np.where(held > 0, (value - cost) / (float(PAYOUT_CENTS) * np.maximum(held, 1)), 0.0)
        return out

    def fill(self, ticker: str, action: int, bid: int, ask: int, bid_size: int, ask_size: int) -> None:
        """Apply a decision, filled against this book (`bid_size` YES contracts at the best YES bid, `ask_size`
        at the best YES ask); an order the position limit or an empty side forbids is ignored, as the simulator
        ignores it."""
        c, limit = self.rules.contracts, self.rules.position_limit
        yes, no = self.yes.get(ticker, 0), self.no.get(ticker, 0)
        if action == BUY_YES and ask < NO_ASK and yes + c <= limit:
            self._buy(ticker, self.yes, yes + no, taker_fill(c, ask, ask_size, one_cent_worse_to_buy(ask)))
        elif action == BUY_NO and bid > NO_BID and no + c <= limit:
            no_ask = no_price(bid)
            self._buy(ticker, self.no, yes + no, taker_fill(c, no_ask, bid_size, one_cent_worse_to_buy(no_ask)))
        elif action == SELL_YES and bid > NO_BID and yes >= c:
            self._sell(ticker, self.yes, yes + no)
        elif action == SELL_NO and ask < NO_ASK and no >= c:
            self._sell(ticker, self.no, yes + no)

    def set(self, ticker: str, yes: int, no: int, cost_cents: int) -> None:
        self.yes[ticker], self.no[ticker], self.cost[ticker] = yes, no, cost_cents

    def _buy(self, ticker: str, side: dict[str, int], held: int, fill: tuple[int, int]) -> None:
        """Buys add what they paid, fees included, to the cost basis (as the simulator counts it)."""
        paid, fee = fill
        if held == 0:
            self.opened[ticker] = self.events.get(ticker, 0)
        side[ticker] = side.get(ticker, 0) + self.rules.contracts
        self.cost[ticker] = self.cost.get(ticker, 0) + paid + fee

    def _sell(self, ticker: str, side: dict[str, int], held: int) -> None:
        """Sells take the average cost of what they sold out of the cost basis."""
        self.cost[ticker] = cost_after_sale(self.cost.get(ticker, 0), self.rules.contracts, held)
        side[ticker] -= self.rules.contracts


@dataclass
class DecisionBatch:
    actions: np.ndarray     # int64 [n]
    version: str
    inference_us: float


def decide(model: torch.jit.ScriptModule, version: str, features: np.ndarray, positions: np.ndarray) -> DecisionBatch:
    """One forward pass for n markets: each is its own observation with one live slot, its model features
    then its position features (as the simulator lays them out)."""
    n, f = features.shape
    obs = torch.zeros((n, MAX_SLOTS, f + POSITION_FEATURES))
    obs[:, 0, :f] = torch.from_numpy(features.astype(np.float32, copy=False))
    obs[:, 0, f:] = torch.from_numpy(positions)
    live = torch.zeros((n, MAX_SLOTS), dtype=torch.bool)
    live[:, 0] = True
    started = time.perf_counter()
    with torch.no_grad():
        actions = model(obs, live)
    inference_us = (time.perf_counter() - started) * 1e6
    return DecisionBatch(actions[:, 0].numpy().astype(np.int64), version, inference_us)


def action_names(actions: np.ndarray) -> list[str]:
    return [ACTIONS[a] for a in actions]
