"""Event-time episodes: markets active in the same period, stepped through their merged events.

An episode picks an anchor time in one market, adds markets that are live at that moment, and walks
the merged sequence of their events (500-2000 of them). Each step is one event of one market; every
slot shows its market's latest state. The curriculum of the seed design: early episodes hold 1-2
stable markets, then 3 from stable and moderate, then 5 from all classes. Only training markets are
allowed here, and that is asserted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.market_data import MarketData, MarketSeries

MIN_STEPS, MAX_STEPS = 500, 2000


@dataclass
class Episode:
    tickers: list[str]               # slot -> market (bookkeeping only; never observed)
    index: np.ndarray                # int64 [L, S]: row of each slot's market at each step (-1 = not yet live)
    event_slot: np.ndarray           # int64 [L]: the slot whose event this step is
    settle_step: np.ndarray          # int64 [S]: step at which the market settles (-1: not in the episode)
    outcome_yes: np.ndarray          # bool [S]

    @property
    def steps(self) -> int:
        return self.index.shape[0]


@dataclass(frozen=True)
class CurriculumStage:
    slots: tuple[int, int]           # inclusive range of markets per episode
    classes: tuple[str, ...]


CURRICULUM = (
    CurriculumStage((1, 2), ("stable",)),
    CurriculumStage((3, 3), ("stable", "moderate")),
    CurriculumStage((5, 5), ("stable", "moderate", "volatile")),
)


def curriculum_stage(progress: float) -> CurriculumStage:
    """Stage for the fraction of training done: thirds of the budget, as in the seed design."""
    return CURRICULUM[min(int(progress * len(CURRICULUM)), len(CURRICULUM) - 1)]


def _live_at(market: MarketSeries, t_ms: int) -> bool:
    settled_later = market.settled_ms is None or market.settled_ms > t_ms
    return market.time_ms[0] <= t_ms < market.time_ms[-1] and settled_later


def build_episode(data: MarketData, rng: np.random.Generator, stage: CurriculumStage, split: str = "fit",
                  steps: int | None = None, tickers: set[str] | None = None) -> Episode:
    """An episode of markets of `split`, a role of training/data/roles.py (only those in `tickers` when given),
    for a curriculum stage."""
    candidates = [m for m in data.of_role(split) if tickers is None or m.ticker in tickers]
    pool = [m for m in candidates if m.volatility_class in stage.classes] or candidates
    if not pool:
        raise ValueError(f"no {split} markets with events to build episodes from")
    if split == "fit":
        assert all(m.split == "train" and m.ticker not in data.selection() for m in pool), \
            "a market that is not a fit market reached training episodes"
    n_slots = int(rng.integers(stage.slots[0], stage.slots[1] + 1))
    first = pool[int(rng.integers(len(pool)))]
    anchor_row = int(rng.integers(0, max(len(first.time_ms) - MIN_STEPS // 2, 1)))
    t0 = int(first.time_ms[anchor_row])
    others = [m for m in pool if m is not first and _live_at(m, t0)]
    rng.shuffle(others)
    chosen = [first, *others[: n_slots - 1]]
    starts = [int(np.searchsorted(m.time_ms, t0, side="left")) for m in chosen]
    return merge_markets(chosen, starts, steps if steps is not None else int(rng.integers(MIN_STEPS, MAX_STEPS + 1)))


def merge_markets(markets: list[MarketSeries], starts: list[int], steps: int) -> Episode:
    """The merged event sequence of `markets` from their rows `starts` on (at most `steps` events)."""
    times = np.concatenate([m.time_ms[s: s + steps] for m, s in zip(markets, starts)])
    slots = np.concatenate([np.full(min(steps, len(m.time_ms) - s), k) for k, (m, s) in enumerate(zip(markets, starts))])
    rows = np.concatenate([np.arange(s, min(s + steps, len(m.time_ms))) for m, s in zip(markets, starts)])
    order = np.lexsort((slots, times))[:steps]
    times, slots, rows = times[order], slots[order], rows[order]
    index = np.full((len(order), len(markets)), -1, dtype=np.int64)
    for k, start in enumerate(starts):
        mine = np.where(slots == k, rows, -1)
        # Before its first event in the episode a slot shows the market's last state before t0, if any.
        initial = start - 1 if start > 0 else -1
        index[:, k] = np.maximum.accumulate(np.where(mine >= 0, mine, initial))
    # A settled market whose last recorded event is in the episode settles right after that event.
    settle_step = np.full(len(markets), -1, dtype=np.int64)
    outcome = np.zeros(len(markets), dtype=bool)
    last_row = np.array([len(m.time_ms) - 1 for m in markets])
    for k, market in enumerate(markets):
        final = np.flatnonzero((slots == k) & (rows == last_row[k]))
        if market.settled_ms is not None and final.size:
            settle_step[k] = int(final[0])
            outcome[k] = bool(market.outcome_yes)
    return Episode([m.ticker for m in markets], index, slots.astype(np.int64), settle_step, outcome)


def market_windows(market: MarketSeries, steps: int = MAX_STEPS) -> list[Episode]:
    """Single-market evaluation episodes: the market's whole recorded life in consecutive windows."""
    return [merge_markets([market], [start], steps) for start in range(0, len(market.time_ms), steps)]
