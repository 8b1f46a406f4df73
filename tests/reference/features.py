"""Reference per-event features, written the plain way: one event at a time, lists and loops.

These follow DESIGN.md section 3 and are the oracle for features/events.py. Where the seed design
(the upstream kalshiflow_rl feature_extractors.py) computed something differently, we follow DESIGN
and say why here, so a reviewer can see each deliberate difference:

- Window counts: the seed's `update_frequency` looked only at the last 5 data points
  (len(points) / time span); DESIGN asks for event counts in true 10 s / 1 min / 5 min windows,
  counted row by row so that events later in the same millisecond are not seen.
- Gaps: the seed's `time_since_last_update` was min(gap / 300 s, 1), losing all gaps above 5 min;
  we use log1p(seconds), which keeps the order of long gaps (quiet periods carry the planted signal).
- Asks: the seed read recorded ask maps; older recorders stored them wrongly (upstream-schema.md 2.4),
  so asks are derived from bids here: YES ask = 100 - best NO bid.
- YES+NO inconsistency: the seed's |yes_mid + no_mid - 1| is identically 0 once asks are derived from
  bids; we use (best YES bid + best NO bid - 100) / 100, which is minus the spread and turns
  non-negative exactly when the book is crossed.
- Time of day: the seed mapped 9-16 h to [0, 1] and everything else to 0; prediction markets trade
  around the clock, so we use sin/cos of the UTC hour and weekday.
- Trades count from the time they were received (`received_at`, or `ts` when none was recorded), not from
  their exchange time: live, a trade cannot be used before it arrives.
"""

from __future__ import annotations

import math

CATEGORIES = ("sports", "politics", "economics", "climate", "crypto", "other")


def _mean(values):
    return sum(values) / len(values)


def visible_ms(trade: dict) -> int:
    """When a trade became known: its receive time, never before its exchange time."""
    received = trade.get("received_at")
    return max(received if received is not None else trade["ts"], trade["ts"])


def _taker_run(trades: list[dict], t: int) -> float:
    """Signed length of the current run of same-side takers among trades known at t (each within 60 s of the
    one before), / 10 capped at 1; 0 when the last of them is over 60 s old."""
    side, length, last = 0, 0, None
    for trade in trades:
        if visible_ms(trade) > t:
            break
        this = 1 if trade["taker_side"] == "yes" else -1
        length = length + 1 if (this == side and visible_ms(trade) - last <= 60_000) else 1
        side, last = this, visible_ms(trade)
    if length == 0 or t - last > 60_000:
        return 0.0
    return side * min(length, 10) / 10

def reference_features(book_events: list[dict], trades: list[dict], market: dict, settled: list[dict],
                       at: list[int] | None = None) -> dict[int, dict]:
    """Features of ONE market's events at positions `at` (default: all), keyed by position.

    book_events: the market's events in stream order with keys timestamp_ms, best_yes_bid, best_no_bid
    (0 if empty), best_yes_size, best_no_size, yes_depth5, no_depth5. trades: the market's trades (ts,
    received_at, yes_price, count, taker_side).
    market: category, series_ticker, open_ms, close_ms. settled: all settled markets (category,
    series_ticker, settled_ms, outcome 0/1, last_price_prob or None).
    """
    out = {}
    trades = sorted(trades, key=lambda tr: (visible_ms(tr), tr["ts"], tr.get("id", 0)))
    times = []
    for event in book_events:
        times.append(event["timestamp_ms"] if not times else max(times[-1], event["timestamp_ms"]))
    for i in (range(len(book_events)) if at is None else at):
        event = book_events[i]
        t = times[i]
        bid = event["best_yes_bid"]
        no_bid = event["best_no_bid"]
        ask = 100 - no_bid if no_bid > 0 else 100
        no_ask = 100 - bid if bid > 0 else 100
        yes_mid = (bid + ask) / 200
        depth = event["yes_depth5"] + event["no_depth5"]
        imbalance = (event["yes_depth5"] - event["no_depth5"]) / depth if depth > 0 else 0.0
        gap = (t - times[i - 1]) / 1000 if i > 0 else None
        gaps = [(times[j] - times[j - 1]) / 1000 for j in range(1, i + 1)]

        def count_events(window_s, i=i, t=t):
            return sum(1 for j in range(i + 1) if times[j] > t - window_s * 1000)

        def window_trades(window_s, t=t):
            return [tr for tr in trades if t - window_s * 1000 < visible_ms(tr) <= t]

        def mid_at(j):
            b, nb = book_events[j]["best_yes_bid"], book_events[j]["best_no_bid"]
            return (b + (100 - nb if nb > 0 else 100)) / 200

        trades_1m, trades_5m = window_trades(60), window_trades(300)
        yes_1m = sum(tr["count"] for tr in trades_1m if tr["taker_side"] == "yes")
        no_1m = sum(tr["count"] for tr in trades_1m if tr["taker_side"] != "yes")
        yes_5m = sum(tr["count"] for tr in trades_5m if tr["taker_side"] == "yes")
        no_5m = sum(tr["count"] for tr in trades_5m if tr["taker_side"] != "yes")
        all_5m = yes_5m + no_5m
        large_5m = sum(tr["count"] for tr in trades_5m if tr["count"] >= 100)
        vwap = sum(tr["count"] * tr["yes_price"] for tr in trades_5m) / all_5m if all_5m else None
        volume_so_far = sum(tr["count"] for tr in trades if visible_ms(tr) <= t)
        oldest_in_minute = next(j for j in range(i + 1) if times[j] > t - 60_000)
        top = event["best_yes_size"] + event["best_no_size"]

        close_ms, open_ms = market.get("close_ms"), market.get("open_ms")
        hours_to_close = max((close_ms - t) / 3_600_000, 0.0) if close_ms is not None else None
        seconds_of_day = (t // 1000) % 86400
        hour = (seconds_of_day // 3600) + ((seconds_of_day % 3600) // 60) / 60
        weekday = ((t // 1000 // 86400) + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
        category = market.get("category") if market.get("category") in CATEGORIES else "other"

        row = {
            "ob_yes_mid_prob": yes_mid,
            "ob_no_mid_prob": (no_bid + no_ask) / 200,
            "ob_mid_deviation": abs(yes_mid - 0.5) * 2,
            "ob_yes_spread_prob": (ask - bid) / 100,
            "ob_yes_relative_spread": (ask - bid) / ((bid + ask) / 2),
            "ob_no_relative_spread": (no_ask - no_bid) / ((no_bid + no_ask) / 2),
            "ob_yes_depth_imbalance": imbalance,
            "ob_no_depth_imbalance": -imbalance,
            "ob_distance_from_certainty": min(yes_mid, 1 - yes_mid),
            "ob_yes_no_inconsistency": (bid + no_bid - 100) / 100,
            "ob_log_depth5": min(math.log1p(depth) / math.log1p(1e6), 1.0),
            "ob_traded_volume_norm": min(math.log1p(all_5m) / math.log1p(1e4), 1.0),
            "ob_top_imbalance": (event["best_yes_size"] - event["best_no_size"]) / top if top else 0.0,
            "ob_mid_change_1m": yes_mid - mid_at(oldest_in_minute),
            "tm_log_seconds_since_prev": math.log1p(gap) if gap is not None else 0.0,
            "tm_events_10s_rate": count_events(10) / 10,
            "tm_events_1m_rate": count_events(60) / 60,
            "tm_events_5m_rate": count_events(300) / 300,
            "tm_burst": 1.0 if gap is not None and gap < 0.1 else 0.0,
            "tm_active": 1.0 if gap is not None and gap < 5 else 0.0,
            "tm_quiet": 1.0 if gap is None or gap > 30 else 0.0,
            "tm_activity_acceleration": (math.tanh(math.log1p(_mean(gaps[-20:-10])) - math.log1p(_mean(gaps[-10:])))
                                         if len(gaps) > 10 else 0.0),
            "tm_log_hours_to_close": math.log1p(hours_to_close) if hours_to_close is not None else 0.0,
            "tm_final_hour": 1.0 if hours_to_close is not None and hours_to_close <= 1 else 0.0,
            "tm_final_6h": 1.0 if hours_to_close is not None and hours_to_close <= 6 else 0.0,
            "tm_final_day": 1.0 if hours_to_close is not None and hours_to_close <= 24 else 0.0,
            "tm_hour_sin": math.sin(2 * math.pi * hour / 24),
            "tm_hour_cos": math.cos(2 * math.pi * hour / 24),
            "tm_dow_sin": math.sin(2 * math.pi * weekday / 7),
            "tm_dow_cos": math.cos(2 * math.pi * weekday / 7),
            "tf_net_flow_1m": (yes_1m - no_1m) / (yes_1m + no_1m) if yes_1m + no_1m else 0.0,
            "tf_net_flow_5m": (yes_5m - no_5m) / all_5m if all_5m else 0.0,
            "tf_large_trade_share_5m": large_5m / all_5m if all_5m else 0.0,
            "tf_trade_intensity_1m": math.log1p(len(trades_1m)),
            "tf_trade_acceleration": math.tanh(math.log1p(len(trades_1m)) - math.log1p(len(trades_5m) / 5)),
            "tf_vwap_divergence_5m": (vwap - (bid + ask) / 2) / 100 if vwap is not None else 0.0,
            "tf_taker_run": _taker_run(trades, t),
            "md_lifecycle_position": (min(max((t - open_ms) / (close_ms - open_ms), 0.0), 1.0)
                                      if open_ms is not None and close_ms is not None and close_ms > open_ms else 0.5),
            "md_volume_used": min(math.log1p(volume_so_far) / math.log1p(1e6), 1.0),
        }
        for c in CATEGORIES:
            row[f"md_category_{c}"] = 1.0 if category == c else 0.0
        for key, prefix in (("category", "rs_category"), ("series_ticker", "rs_series")):
            mine = category if key == "category" else market.get("series_ticker")
            before = [s for s in settled if s[key] == mine and s["settled_ms"] < t]
            priced = [s for s in before if s["last_price_prob"] is not None]
            row[f"{prefix}_yes_rate"] = _mean([s["outcome"] for s in before]) if before else 0.5
            row[f"{prefix}_brier"] = (_mean([(s["last_price_prob"] - s["outcome"]) ** 2 for s in priced])
                                      if priced else 0.25)
            row[f"{prefix}_confidence"] = len(before) / (len(before) + 10)
        out[i] = row
    return out
