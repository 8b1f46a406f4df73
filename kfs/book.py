"""Order-book arithmetic shared by the simulator and the replay: dense int64[100] ladders by price."""

from __future__ import annotations

import numba

TOP_LEVELS = 5


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
