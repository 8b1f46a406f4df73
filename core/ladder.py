"""Order-book ladder arithmetic shared by the simulator and the replay (hftbacktest's dense-vector depth).

A side of a Kalshi book is a dense `int64[100]` ladder indexed by price in cents (1..99; index 0 is
unused): contracts resting at each price. The best bid is the highest non-empty price; it is tracked
incrementally by the callers and rescanned downwards only when the best level empties.
"""

from __future__ import annotations

import numba

from core.exchange import MAX_PRICE_CENTS

TOP_LEVELS = 5
NO_PRICE = 0  # "side empty" as a best price


@numba.njit(cache=True)
def best_at_or_below(ladder, start):
    """Highest non-empty price at or below `start` (0 = the side is empty)."""
    p = start
    while p >= 1 and ladder[p] == 0:
        p -= 1
    return p


@numba.njit(cache=True)
def best_price(ladder):
    """Highest non-empty price of the ladder (0 = empty)."""
    return best_at_or_below(ladder, MAX_PRICE_CENTS)


@numba.njit(cache=True)
def best_after_update(ladder, best, price, size):
    """The best price after `ladder[price]` was set to `size`, given the best before the update."""
    if size > 0 and price > best:
        return price
    if size == 0 and price == best:
        return best_at_or_below(ladder, price)
    return best


@numba.njit(cache=True)
def top_depth(ladder, best):
    """Contracts on the best five non-empty levels at or below `best` (0 when best is 0)."""
    total = 0
    seen = 0
    p = best
    while p >= 1 and seen < TOP_LEVELS:
        if ladder[p] > 0:
            total += ladder[p]
            seen += 1
        p -= 1
    return total
