"""Trailing trade windows per market, as compiled two-pointer passes.

Events are one market's rows in stream order with a non-decreasing `time_ms`; trades are visible
from their own `ts` on: a trade at time t is included at book events with time >= t. (Event-count
windows live in features/book_features.py; they count rows <= i only, so an event never sees a
later event of the same millisecond, which Polars `rolling_*_by` and SQL RANGE frames would:
../shared/notes/anchors_perf.md section 3.2.)
"""

from __future__ import annotations

import numba
import numpy as np

LARGE_TRADE_CONTRACTS = 100


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
