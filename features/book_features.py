"""Orderbook (12) and temporal (16) features in one compiled pass over the replayed stream.

One loop computes both groups from the book columns, the market's monotone event time and its close
time, writing a column-major float64 matrix (one contiguous column per feature, handed to Polars
without copying). Doing this in the replay's kernel style rather than as ~30 Polars expressions
keeps the whole step memory-bound: about 0.1 us an event on one core.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from features.schema import columns_of

# The kernel writes the orderbook then the temporal group, each in the order features/schema.py lists
# them (row k of the output is BOOK_FEATURE_COLUMNS[k]); the oracle test catches any mismatch.
BOOK_FEATURE_COLUMNS = tuple(c.name for c in (*columns_of("orderbook"), *columns_of("temporal")))
NO_CLOSE = np.iinfo(np.int64).min  # close time unknown
_LOG_DEPTH_SCALE = math.log1p(1e6)
_LOG_VOLUME_SCALE = math.log1p(1e4)
_WINDOWS_MS = (10_000, 60_000, 300_000)
_ACCELERATION_GAPS = 10


@numba.njit(cache=True, error_model="numpy")  # numpy division semantics: no zero checks in the loop
def book_features_kernel(group, time_ms, best_yes_bid, best_no_bid, yes_depth5, no_depth5, contracts_5m, close_ms):
    n = time_ms.shape[0]
    out = np.empty((len(BOOK_FEATURE_COLUMNS), n), np.float64)  # row per feature: contiguous columns
    lo10 = lo60 = lo300 = 0
    start = 0
    cached_minute = -1
    cached_day = -1
    hour_sin = hour_cos = dow_sin = dow_cos = 0.0
    for i in range(n):
        if i == 0 or group[i] != group[i - 1]:
            start = i
            lo10 = lo60 = lo300 = i
        t = time_ms[i]
        # -- orderbook ------------------------------------------------------------------------
        bid = float(best_yes_bid[i])
        no_bid = float(best_no_bid[i])
        ask = 100.0 - no_bid if no_bid > 0 else 100.0
        no_ask = 100.0 - bid if bid > 0 else 100.0
        yes_mid = (bid + ask) / 200.0
        depth = float(yes_depth5[i] + no_depth5[i])
        imbalance = (yes_depth5[i] - no_depth5[i]) / depth if depth > 0 else 0.0
        out[0, i] = yes_mid
        out[1, i] = (no_bid + no_ask) / 200.0
        out[2, i] = abs(yes_mid - 0.5) * 2.0
        out[3, i] = (ask - bid) / 100.0
        out[4, i] = (ask - bid) / ((bid + ask) / 2.0)
        out[5, i] = (no_ask - no_bid) / ((no_bid + no_ask) / 2.0)
        out[6, i] = imbalance
        out[7, i] = -imbalance
        out[8, i] = min(yes_mid, 1.0 - yes_mid)
        out[9, i] = (bid + no_bid - 100.0) / 100.0
        out[10, i] = min(math.log1p(depth) / _LOG_DEPTH_SCALE, 1.0)
        out[11, i] = min(math.log1p(float(contracts_5m[i])) / _LOG_VOLUME_SCALE, 1.0)
        # -- temporal -------------------------------------------------------------------------
        first = i == start
        gap_s = (t - time_ms[i - 1]) / 1000.0 if not first else 0.0
        out[12, i] = math.log1p(gap_s)
        while time_ms[lo10] <= t - 10_000:
            lo10 += 1
        while time_ms[lo60] <= t - 60_000:
            lo60 += 1
        while time_ms[lo300] <= t - 300_000:
            lo300 += 1
        out[13, i] = (i - lo10 + 1) / 10.0
        out[14, i] = (i - lo60 + 1) / 60.0
        out[15, i] = (i - lo300 + 1) / 300.0
        out[16, i] = 1.0 if (not first and gap_s < 0.1) else 0.0
        out[17, i] = 1.0 if (not first and gap_s < 5.0) else 0.0
        out[18, i] = 1.0 if (first or gap_s > 30.0) else 0.0
        gaps = i - start
        if gaps > _ACCELERATION_GAPS:
            k = min(_ACCELERATION_GAPS, gaps - _ACCELERATION_GAPS)
            j = i - _ACCELERATION_GAPS
            recent = (t - time_ms[j]) / 1000.0 / _ACCELERATION_GAPS
            previous = (time_ms[j] - time_ms[j - k]) / 1000.0 / k
            out[19, i] = math.tanh(math.log1p(previous) - math.log1p(recent))
        else:
            out[19, i] = 0.0
        if close_ms[i] != NO_CLOSE:
            hours = max((close_ms[i] - t) / 3_600_000.0, 0.0)
            out[20, i] = math.log1p(hours)
            out[21, i] = 1.0 if hours <= 1.0 else 0.0
            out[22, i] = 1.0 if hours <= 6.0 else 0.0
            out[23, i] = 1.0 if hours <= 24.0 else 0.0
        else:
            out[20, i] = 0.0
            out[21, i] = 0.0
            out[22, i] = 0.0
            out[23, i] = 0.0
        minute = t // 60_000  # the clock features change once a minute: compute them once a minute
        if minute != cached_minute:
            cached_minute = minute
            seconds_of_day = (t // 1000) % 86400
            hour = (seconds_of_day // 3600) + ((seconds_of_day % 3600) // 60) / 60.0
            hour_sin = math.sin(2.0 * math.pi * hour / 24.0)
            hour_cos = math.cos(2.0 * math.pi * hour / 24.0)
            day = t // 86_400_000
            if day != cached_day:
                cached_day = day
                weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
                dow_sin = math.sin(2.0 * math.pi * weekday / 7.0)
                dow_cos = math.cos(2.0 * math.pi * weekday / 7.0)
        out[24, i] = hour_sin
        out[25, i] = hour_cos
        out[26, i] = dow_sin
        out[27, i] = dow_cos
    return out
