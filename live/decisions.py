"""Decisions for the markets whose book changed: paper positions, observations as the simulator builds them,
one forward pass of the served model for all of them.

The decision stream is the interface to execution, which is out of scope: the positions the policy sees are
paper positions, filled at the touch (one lot, `TradingRules.contracts`) the moment a decision is taken. An
execution system that knows the real fills would set them with `PaperPositions.set`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from training.env import TradingRules, liquidation_value
from training.spaces import (
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
        """float32 [n, POSITION_FEATURES] as training/env.py:observe builds them (this market is the slot that
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
        value = (liquidation_value(torch.from_numpy(yes), torch.from_numpy(bid.astype(np.int64)))
                 + liquidation_value(torch.from_numpy(no), torch.from_numpy(np.where(ask < 100, 100 - ask, 0).astype(np.int64)))).numpy()
        cost = np.array([self.cost.get(t, 0) for t in tickers], np.int64)
        out[:, 0] = yes / limit
        out[:, 1] = no / limit
        out[:, 3] = np.where(held > 0, np.log1p(np.maximum(age, 0)) / AGE_SCALE, 0.0)
        out[:, 4] = np.where(held > 0, (value - cost) / (100.0 * np.maximum(held, 1)), 0.0)
        return out

    def fill(self, ticker: str, action: int, bid: int, ask: int) -> None:
        """Apply a decision as if filled at the touch; an order the position limit or an empty side forbids is
        ignored, as the simulator ignores it."""
        c, limit = self.rules.contracts, self.rules.position_limit
        yes, no = self.yes.get(ticker, 0), self.no.get(ticker, 0)
        if action == BUY_YES and ask < 100 and yes + c <= limit:
            self._open(ticker, yes + no)
            self.yes[ticker] = yes + c
            self.cost[ticker] = self.cost.get(ticker, 0) + c * ask
        elif action == BUY_NO and bid > 0 and no + c <= limit:
            self._open(ticker, yes + no)
            self.no[ticker] = no + c
            self.cost[ticker] = self.cost.get(ticker, 0) + c * (100 - bid)
        elif action == SELL_YES and bid > 0 and yes >= c:
            self._reduce(ticker, "yes", c)
        elif action == SELL_NO and ask < 100 and no >= c:
            self._reduce(ticker, "no", c)

    def set(self, ticker: str, yes: int, no: int, cost_cents: int) -> None:
        self.yes[ticker], self.no[ticker], self.cost[ticker] = yes, no, cost_cents

    def _open(self, ticker: str, held: int) -> None:
        if held == 0:
            self.opened[ticker] = self.events.get(ticker, 0)

    def _reduce(self, ticker: str, side: str, c: int) -> None:
        book = self.yes if side == "yes" else self.no
        held = self.yes.get(ticker, 0) + self.no.get(ticker, 0)
        self.cost[ticker] = self.cost.get(ticker, 0) * (held - c) // max(held, 1)
        book[ticker] -= c


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
