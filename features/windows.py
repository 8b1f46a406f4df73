"""Row-exact trailing windows per market, as compiled two-pointer passes.

Rows are one market's events in stream order (ties in time broken by sequence), with a
non-decreasing `time_ms`. Window counts at row i include rows <= i only, so an event never sees a
later event of the same millisecond (Polars `rolling_*_by` and SQL RANGE frames include such peers:
look-ahead, ../shared/notes/anchors_perf.md section 3.2). Trades are visible from their own `ts` on:
a trade at time t is included at book events with time >= t.
"""

from __future__ import annotations

import numba
import numpy as np

LARGE_TRADE_CONTRACTS = 100


@numba.njit(cache=True)
def event_window_counts(group, time_ms, window_ms):
    """Number of rows of the same group in (time - window, time], rows after i excluded."""
    n = time_ms.shape[0]
    counts = np.zeros(n, np.int64)
    lo = 0
    for i in range(n):
        if i == 0 or group[i] != group[i - 1]:
            lo = i
        while time_ms[lo] <= time_ms[i] - window_ms:
            lo += 1
        counts[i] = i - lo + 1
    return counts


@numba.njit(cache=True)
def mean_gap_windows(group, time_ms, width):
    """Mean gap (s) between consecutive events over the last `width` gaps and the `width` before them.

    Returns (recent, previous); a window without any gap in the group gets -1 (caller decides)."""
    n = time_ms.shape[0]
    recent = np.full(n, -1.0)
    previous = np.full(n, -1.0)
    start = 0
    for i in range(n):
        if i == 0 or group[i] != group[i - 1]:
            start = i
        gaps_available = i - start
        if gaps_available >= 1:
            k = min(width, gaps_available)
            recent[i] = (time_ms[i] - time_ms[i - k]) / 1000.0 / k
        if gaps_available >= width + 1:
            k = min(width, gaps_available - width)
            j = i - width
            previous[i] = (time_ms[j] - time_ms[j - k]) / 1000.0 / k
    return recent, previous


@numba.njit(cache=True)
def trade_windows(event_group, event_time_ms, trade_group, trade_ts, trade_yes_price, trade_count,
                  trade_taker_yes, window_ms):
    """Trailing trade aggregates over (t - window, t] for each event, per market group.

    Both inputs are sorted by (group, time) with the same group numbering. Returns per event:
    (trades, yes_taker_contracts, no_taker_contracts, large_contracts, notional_cents).
    """
    n = event_time_ms.shape[0]
    m = trade_ts.shape[0]
    trades = np.zeros(n, np.int64)
    yes_contracts = np.zeros(n, np.int64)
    no_contracts = np.zeros(n, np.int64)
    large = np.zeros(n, np.int64)
    notional = np.zeros(n, np.int64)
    # running sums over trades[lo:hi]
    lo = 0
    hi = 0
    c_trades = 0
    c_yes = 0
    c_no = 0
    c_large = 0
    c_notional = 0
    for i in range(n):
        g = event_group[i]
        t = event_time_ms[i]
        if i == 0 or g != event_group[i - 1]:
            # jump both pointers to this group's trades
            while hi < m and trade_group[hi] < g:
                hi += 1
            lo = hi
            c_trades = c_yes = c_no = c_large = c_notional = 0
        while hi < m and trade_group[hi] == g and trade_ts[hi] <= t:
            c_trades += 1
            if trade_taker_yes[hi]:
                c_yes += trade_count[hi]
            else:
                c_no += trade_count[hi]
            if trade_count[hi] >= LARGE_TRADE_CONTRACTS:
                c_large += trade_count[hi]
            c_notional += trade_count[hi] * trade_yes_price[hi]
            hi += 1
        while lo < hi and trade_ts[lo] <= t - window_ms:
            c_trades -= 1
            if trade_taker_yes[lo]:
                c_yes -= trade_count[lo]
            else:
                c_no -= trade_count[lo]
            if trade_count[lo] >= LARGE_TRADE_CONTRACTS:
                c_large -= trade_count[lo]
            c_notional -= trade_count[lo] * trade_yes_price[lo]
            lo += 1
        trades[i] = c_trades
        yes_contracts[i] = c_yes
        no_contracts[i] = c_no
        large[i] = c_large
        notional[i] = c_notional
    return trades, yes_contracts, no_contracts, large, notional


@numba.njit(cache=True)
def cumulative_trade_contracts(event_group, event_time_ms, trade_group, trade_ts, trade_count):
    """Contracts traded in the market up to and including each event's time (volume used so far)."""
    n = event_time_ms.shape[0]
    m = trade_ts.shape[0]
    out = np.zeros(n, np.int64)
    hi = 0
    total = 0
    for i in range(n):
        g = event_group[i]
        if i == 0 or g != event_group[i - 1]:
            while hi < m and trade_group[hi] < g:
                hi += 1
            total = 0
        while hi < m and trade_group[hi] == g and trade_ts[hi] <= event_time_ms[i]:
            total += trade_count[hi]
            hi += 1
        out[i] = total
    return out
