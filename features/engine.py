"""The feature engine: every per-event feature, one compiled kernel, one definition for offline and online.

A stream of records (book snapshots, book deltas, trades) is processed in order against per-market state:
the replayed book (two dense 1..99 ladders, core/ladder.py), the market's event clock and a ring of recent
event times and mids, a ring of recent trades with running window sums, and a few running values (volume
so far, the current run of same-side takers). Each book event emits its book columns and every model
feature (features/schema.py). The kernel never looks ahead: a row uses the records before it and itself.

- Offline (features/events.py) feeds the raw lake day by day, keeping the state between days, so memory
  depends on the markets, not on the history.
- Online (`live.features.LiveFeatures`, the live path) feeds records as they arrive, in batches.
The same records in the same order per market give the same rows (parity is tested to 1e-6).

Record order within a market: book events in (session, sequence) order; a trade is visible from the time
it was received (`received_at`, not the exchange time: live, a trade cannot be used before it arrives) and
enters before the first book event whose event time reaches it (`canonical_order`).

Semantics that the reference oracle (tests/reference/features.py) shares: a snapshot resets its session's
book; a delta after a sequence gap, or before any snapshot of its session, leaves the book invalid until
the next snapshot; a new session resets the book but not the market's clock or windows; event time is the
running maximum of the recorded timestamps; windows are row-exact (an event never sees a later event of
the same millisecond).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np
import polars as pl

from core.ladder import best_after_update, best_price, top_depth
from core.markets import CATEGORIES

KIND_SNAPSHOT, KIND_DELTA, KIND_TRADE = 0, 1, 2
SIDE_YES, SIDE_NO = 0, 1
NO_TIME = np.iinfo(np.int64).min          # unknown open/close time
LARGE_TRADE_CONTRACTS = 100
TAKER_RUN_GAP_MS = 60_000                 # trades further apart than this start a new run
TAKER_RUN_CAP = 10
_LOG_DEPTH_SCALE = math.log1p(1e6)
_LOG_VOLUME_SCALE = math.log1p(1e4)
_LOG_USED_SCALE = math.log1p(1e6)
_ACCELERATION_GAPS = 10
MIN_RING = 64                             # at least the 21 events the acceleration feature looks back on

# The features this engine computes, in the order of its output matrix. A test checks that this is exactly
# the model feature set of features/schema.py: a feature added to the schema without its computation here
# (offline and online alike) fails it.
ENGINE_FEATURES = (
    "ob_yes_mid_prob", "ob_no_mid_prob", "ob_mid_deviation", "ob_yes_spread_prob", "ob_yes_relative_spread",
    "ob_no_relative_spread", "ob_yes_depth_imbalance", "ob_no_depth_imbalance", "ob_distance_from_certainty",
    "ob_yes_no_inconsistency", "ob_log_depth5", "ob_traded_volume_norm", "ob_top_imbalance", "ob_mid_change_1m",
    "tm_log_seconds_since_prev", "tm_events_10s_rate", "tm_events_1m_rate", "tm_events_5m_rate", "tm_burst",
    "tm_active", "tm_quiet", "tm_activity_acceleration", "tm_log_hours_to_close", "tm_final_hour", "tm_final_6h",
    "tm_final_day", "tm_hour_sin", "tm_hour_cos", "tm_dow_sin", "tm_dow_cos",
    "tf_net_flow_1m", "tf_net_flow_5m", "tf_large_trade_share_5m", "tf_trade_intensity_1m", "tf_trade_acceleration",
    "tf_vwap_divergence_5m", "tf_taker_run",
    *(f"md_category_{c}" for c in CATEGORIES), "md_lifecycle_position", "md_volume_used",
    "rs_category_yes_rate", "rs_category_brier", "rs_category_confidence",
    "rs_series_yes_rate", "rs_series_brier", "rs_series_confidence",
)
N_FEATURES = len(ENGINE_FEATURES)
_F_CATEGORY = ENGINE_FEATURES.index(f"md_category_{CATEGORIES[0]}")
_F_RESOLUTION = ENGINE_FEATURES.index("rs_category_yes_rate")

# Integer outputs per book event.
BOOK_OUTPUTS = ("best_yes_bid_cents", "best_no_bid_cents", "best_yes_bid_size", "best_no_bid_size", "yes_depth5",
                "no_depth5", "event_time_ms", "book_valid", "sequence_gap", "delta_before_snapshot",
                "timestamp_out_of_order")
(O_BEST_YES, O_BEST_NO, O_YES_SIZE, O_NO_SIZE, O_YES_DEPTH, O_NO_DEPTH, O_TIME, O_VALID, O_GAP, O_BEFORE,
 O_OUT_OF_ORDER) = range(len(BOOK_OUTPUTS))

# Per-slot integer state (columns of `ints`).
(S_OWNER, S_BEST_YES, S_BEST_NO, S_VALID, S_SEEN_SNAPSHOT, S_SESSION, S_HAS_SESSION, S_LAST_SEQ, S_LAST_TIME,
 S_EVENTS, S_LO10, S_LO60, S_LO300, S_TRADES, S_TLO1, S_TLO5, S_T1_COUNT, S_T1_YES, S_T1_NO, S_T5_COUNT, S_T5_YES,
 S_T5_NO, S_T5_LARGE, S_T5_NOTIONAL, S_VOLUME, S_RUN_SIDE, S_RUN_LEN, S_LAST_TRADE_TIME) = range(28)
N_STATE = 28
# Kernel exit statuses.
DONE, GROW_EVENTS, GROW_TRADES = 0, 1, 2


@numba.njit(cache=True)
def _reset_slot(ints, yes, no, slot, owner):
    ints[slot, :] = 0
    ints[slot, S_OWNER] = owner
    ints[slot, S_LAST_TRADE_TIME] = NO_TIME
    yes[slot, :] = 0
    no[slot, :] = 0


@numba.njit(cache=True)
def _evict_trades(ints, tr_time, tr_count, tr_yes, tr_price, slot, t):
    """Drop trades that left the 1-minute and 5-minute windows ending at t from the running sums."""
    tr_cap = tr_time.shape[1]
    while ints[slot, S_TLO1] < ints[slot, S_TRADES] and tr_time[slot, ints[slot, S_TLO1] % tr_cap] <= t - 60_000:
        j = ints[slot, S_TLO1] % tr_cap
        ints[slot, S_T1_COUNT] -= 1
        if tr_yes[slot, j]:
            ints[slot, S_T1_YES] -= tr_count[slot, j]
        else:
            ints[slot, S_T1_NO] -= tr_count[slot, j]
        ints[slot, S_TLO1] += 1
    while ints[slot, S_TLO5] < ints[slot, S_TRADES] and tr_time[slot, ints[slot, S_TLO5] % tr_cap] <= t - 300_000:
        j = ints[slot, S_TLO5] % tr_cap
        ints[slot, S_T5_COUNT] -= 1
        if tr_yes[slot, j]:
            ints[slot, S_T5_YES] -= tr_count[slot, j]
        else:
            ints[slot, S_T5_NO] -= tr_count[slot, j]
        if tr_count[slot, j] >= LARGE_TRADE_CONTRACTS:
            ints[slot, S_T5_LARGE] -= tr_count[slot, j]
        ints[slot, S_T5_NOTIONAL] -= tr_count[slot, j] * tr_price[slot, j]
        ints[slot, S_TLO5] += 1


@numba.njit(cache=True)
def _resolution(out, i, base, offsets, times, cum_n, cum_yes, cum_brier, cum_priced, key, t):
    """YES rate, Brier score and confidence of the key's markets settled strictly before t."""
    yes_rate = 0.5
    brier = 0.25
    confidence = 0.0
    if key >= 0:
        lo = offsets[key]
        hi = offsets[key + 1]
        # first settlement time >= t: the markets before it settled before t
        a, b = lo, hi
        while a < b:
            mid = (a + b) // 2
            if times[mid] < t:
                a = mid + 1
            else:
                b = mid
        before = a - lo
        if before > 0:
            k = a - 1
            yes_rate = cum_yes[k] / cum_n[k]
            if cum_priced[k] > 0:
                brier = cum_brier[k] / cum_priced[k]
            confidence = before / (before + 10.0)
    out[i, base] = yes_rate
    out[i, base + 1] = brier
    out[i, base + 2] = confidence


@numba.njit(cache=True, error_model="numpy")
def engine_kernel(kind, market, session, sequence, time_ms, side, price, size, level_offset, level_count,
                  level_side, level_price, level_size,
                  market_slot, market_category, market_series, market_open, market_close,
                  cat_offsets, cat_times, cat_n, cat_yes, cat_brier, cat_priced,
                  ser_offsets, ser_times, ser_n, ser_yes, ser_brier, ser_priced,
                  ints, yes, no, ev_time, ev_mid, tr_time, tr_count, tr_yes, tr_price,
                  start, out_record, out_book, out):
    """Process records[start:] into state; write one output row per book event.

    Returns (next record to process, rows written, status). Status GROW_EVENTS / GROW_TRADES: a ring would
    overflow at record `next`, nothing of it was applied; the caller grows the ring and calls again."""
    n = kind.shape[0]
    n_out = 0
    ev_cap = ev_time.shape[1]
    tr_cap = tr_time.shape[1]
    for r in range(start, n):
        m = market[r]
        slot = market_slot[m]
        if ints[slot, S_OWNER] != m + 1:          # owner is stored +1 so that a zeroed slot belongs to nobody
            _reset_slot(ints, yes, no, slot, m + 1)
        t_rec = time_ms[r]
        if kind[r] == KIND_TRADE:
            # Trades that left the windows by this trade's time leave now (no later event can see them: in
            # record order every later event of the market is at or after it), so the ring stays small in
            # markets that trade without book events.
            _evict_trades(ints, tr_time, tr_count, tr_yes, tr_price, slot, t_rec)
            held = ints[slot, S_TRADES] - ints[slot, S_TLO5]
            if held + 1 >= tr_cap:
                return r, n_out, GROW_TRADES
            k = ints[slot, S_TRADES]
            j = k % tr_cap
            count = size[r]
            taker_yes = side[r] == SIDE_YES
            tr_time[slot, j] = t_rec
            tr_count[slot, j] = count
            tr_yes[slot, j] = taker_yes
            tr_price[slot, j] = price[r]
            ints[slot, S_TRADES] = k + 1
            for window_count, window_yes, window_no in ((S_T1_COUNT, S_T1_YES, S_T1_NO), (S_T5_COUNT, S_T5_YES, S_T5_NO)):
                ints[slot, window_count] += 1
                if taker_yes:
                    ints[slot, window_yes] += count
                else:
                    ints[slot, window_no] += count
            if count >= LARGE_TRADE_CONTRACTS:
                ints[slot, S_T5_LARGE] += count
            ints[slot, S_T5_NOTIONAL] += count * price[r]
            ints[slot, S_VOLUME] += count
            run_side = 1 if taker_yes else -1
            if ints[slot, S_RUN_SIDE] == run_side and t_rec - ints[slot, S_LAST_TRADE_TIME] <= TAKER_RUN_GAP_MS:
                ints[slot, S_RUN_LEN] += 1
            else:
                ints[slot, S_RUN_SIDE] = run_side
                ints[slot, S_RUN_LEN] = 1
            ints[slot, S_LAST_TRADE_TIME] = t_rec
            continue

        # -- a book event ------------------------------------------------------------------------
        held = ints[slot, S_EVENTS] - min(ints[slot, S_LO300], max(ints[slot, S_EVENTS] - 2 * _ACCELERATION_GAPS - 1, 0))
        if held + 1 >= ev_cap:
            return r, n_out, GROW_EVENTS
        if ints[slot, S_HAS_SESSION] == 0 or ints[slot, S_SESSION] != session[r]:
            yes[slot, :] = 0
            no[slot, :] = 0
            ints[slot, S_BEST_YES] = 0
            ints[slot, S_BEST_NO] = 0
            ints[slot, S_VALID] = 0
            ints[slot, S_SEEN_SNAPSHOT] = 0
            ints[slot, S_SESSION] = session[r]
            ints[slot, S_HAS_SESSION] = 1
            ints[slot, S_LAST_SEQ] = sequence[r] - 1
        gap = False
        before_snapshot = False
        if kind[r] == KIND_SNAPSHOT:
            yes[slot, :] = 0
            no[slot, :] = 0
            for lv in range(level_offset[r], level_offset[r] + level_count[r]):
                if level_side[lv] == SIDE_YES:
                    yes[slot, level_price[lv]] = level_size[lv]
                else:
                    no[slot, level_price[lv]] = level_size[lv]
            ints[slot, S_BEST_YES] = best_price(yes[slot])
            ints[slot, S_BEST_NO] = best_price(no[slot])
            ints[slot, S_VALID] = 1
            ints[slot, S_SEEN_SNAPSHOT] = 1
        else:
            if sequence[r] != ints[slot, S_LAST_SEQ] + 1:
                gap = True
                ints[slot, S_VALID] = 0
            if ints[slot, S_SEEN_SNAPSHOT] == 0:
                before_snapshot = True
            p = price[r]
            if side[r] == SIDE_YES:
                yes[slot, p] = size[r]
                ints[slot, S_BEST_YES] = best_after_update(yes[slot], ints[slot, S_BEST_YES], p, size[r])
            else:
                no[slot, p] = size[r]
                ints[slot, S_BEST_NO] = best_after_update(no[slot], ints[slot, S_BEST_NO], p, size[r])
        ints[slot, S_LAST_SEQ] = sequence[r]

        best_yes = ints[slot, S_BEST_YES]
        best_no = ints[slot, S_BEST_NO]
        yes_size = yes[slot, best_yes] if best_yes > 0 else 0
        no_size = no[slot, best_no] if best_no > 0 else 0
        yes_depth = top_depth(yes[slot], best_yes) if best_yes > 0 else 0
        no_depth = top_depth(no[slot], best_no) if best_no > 0 else 0

        # -- the market's clock -------------------------------------------------------------------
        k = ints[slot, S_EVENTS]
        first = k == 0
        previous_t = ev_time[slot, (k - 1) % ev_cap] if not first else t_rec
        t = t_rec if first else max(previous_t, t_rec)
        bid = float(best_yes)
        no_bid = float(best_no)
        ask = 100.0 - no_bid if no_bid > 0 else 100.0
        no_ask = 100.0 - bid if bid > 0 else 100.0
        yes_mid = (bid + ask) / 200.0
        ev_time[slot, k % ev_cap] = t
        ev_mid[slot, k % ev_cap] = yes_mid
        ints[slot, S_EVENTS] = k + 1
        ints[slot, S_LAST_TIME] = t
        while ev_time[slot, ints[slot, S_LO10] % ev_cap] <= t - 10_000:
            ints[slot, S_LO10] += 1
        while ev_time[slot, ints[slot, S_LO60] % ev_cap] <= t - 60_000:
            ints[slot, S_LO60] += 1
        while ev_time[slot, ints[slot, S_LO300] % ev_cap] <= t - 300_000:
            ints[slot, S_LO300] += 1
        _evict_trades(ints, tr_time, tr_count, tr_yes, tr_price, slot, t)

        # -- outputs ------------------------------------------------------------------------------
        i = n_out
        out_record[i] = r
        out_book[i, O_BEST_YES] = best_yes
        out_book[i, O_BEST_NO] = best_no
        out_book[i, O_YES_SIZE] = yes_size
        out_book[i, O_NO_SIZE] = no_size
        out_book[i, O_YES_DEPTH] = yes_depth
        out_book[i, O_NO_DEPTH] = no_depth
        out_book[i, O_TIME] = t
        out_book[i, O_VALID] = ints[slot, S_VALID]
        out_book[i, O_GAP] = 1 if gap else 0
        out_book[i, O_BEFORE] = 1 if before_snapshot else 0
        out_book[i, O_OUT_OF_ORDER] = 1 if t_rec < t else 0

        # orderbook
        depth = float(yes_depth + no_depth)
        imbalance = (yes_depth - no_depth) / depth if depth > 0 else 0.0
        top = float(yes_size + no_size)
        contracts_5m = ints[slot, S_T5_YES] + ints[slot, S_T5_NO]
        out[i, 0] = yes_mid
        out[i, 1] = (no_bid + no_ask) / 200.0
        out[i, 2] = abs(yes_mid - 0.5) * 2.0
        out[i, 3] = (ask - bid) / 100.0
        out[i, 4] = (ask - bid) / ((bid + ask) / 2.0)
        out[i, 5] = (no_ask - no_bid) / ((no_bid + no_ask) / 2.0)
        out[i, 6] = imbalance
        out[i, 7] = -imbalance
        out[i, 8] = min(yes_mid, 1.0 - yes_mid)
        out[i, 9] = (bid + no_bid - 100.0) / 100.0
        out[i, 10] = min(math.log1p(depth) / _LOG_DEPTH_SCALE, 1.0)
        out[i, 11] = min(math.log1p(float(contracts_5m)) / _LOG_VOLUME_SCALE, 1.0)
        out[i, 12] = (yes_size - no_size) / top if top > 0 else 0.0
        out[i, 13] = yes_mid - ev_mid[slot, ints[slot, S_LO60] % ev_cap]
        # temporal
        gap_s = (t - previous_t) / 1000.0 if not first else 0.0
        out[i, 14] = math.log1p(gap_s)
        out[i, 15] = (k - ints[slot, S_LO10] + 1) / 10.0
        out[i, 16] = (k - ints[slot, S_LO60] + 1) / 60.0
        out[i, 17] = (k - ints[slot, S_LO300] + 1) / 300.0
        out[i, 18] = 1.0 if (not first and gap_s < 0.1) else 0.0
        out[i, 19] = 1.0 if (not first and gap_s < 5.0) else 0.0
        out[i, 20] = 1.0 if (first or gap_s > 30.0) else 0.0
        if k > _ACCELERATION_GAPS:
            back = min(_ACCELERATION_GAPS, k - _ACCELERATION_GAPS)
            t_mid = ev_time[slot, (k - _ACCELERATION_GAPS) % ev_cap]
            t_old = ev_time[slot, (k - _ACCELERATION_GAPS - back) % ev_cap]
            recent = (t - t_mid) / 1000.0 / _ACCELERATION_GAPS
            previous = (t_mid - t_old) / 1000.0 / back
            out[i, 21] = math.tanh(math.log1p(previous) - math.log1p(recent))
        else:
            out[i, 21] = 0.0
        close = market_close[m]
        if close != NO_TIME:
            hours = max((close - t) / 3_600_000.0, 0.0)
            out[i, 22] = math.log1p(hours)
            out[i, 23] = 1.0 if hours <= 1.0 else 0.0
            out[i, 24] = 1.0 if hours <= 6.0 else 0.0
            out[i, 25] = 1.0 if hours <= 24.0 else 0.0
        else:
            out[i, 22] = 0.0
            out[i, 23] = 0.0
            out[i, 24] = 0.0
            out[i, 25] = 0.0
        seconds_of_day = (t // 1000) % 86400
        hour = (seconds_of_day // 3600) + ((seconds_of_day % 3600) // 60) / 60.0
        weekday = (t // 86_400_000 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        out[i, 26] = math.sin(2.0 * math.pi * hour / 24.0)
        out[i, 27] = math.cos(2.0 * math.pi * hour / 24.0)
        out[i, 28] = math.sin(2.0 * math.pi * weekday / 7.0)
        out[i, 29] = math.cos(2.0 * math.pi * weekday / 7.0)
        # trade flow
        contracts_1m = ints[slot, S_T1_YES] + ints[slot, S_T1_NO]
        out[i, 30] = (ints[slot, S_T1_YES] - ints[slot, S_T1_NO]) / contracts_1m if contracts_1m > 0 else 0.0
        out[i, 31] = (ints[slot, S_T5_YES] - ints[slot, S_T5_NO]) / contracts_5m if contracts_5m > 0 else 0.0
        out[i, 32] = ints[slot, S_T5_LARGE] / contracts_5m if contracts_5m > 0 else 0.0
        trades_1m = float(ints[slot, S_T1_COUNT])
        out[i, 33] = math.log1p(trades_1m)
        out[i, 34] = math.tanh(math.log1p(trades_1m) - math.log1p(ints[slot, S_T5_COUNT] / 5.0))
        out[i, 35] = (ints[slot, S_T5_NOTIONAL] / contracts_5m - (bid + ask) / 2.0) / 100.0 if contracts_5m > 0 else 0.0
        if ints[slot, S_RUN_LEN] > 0 and t - ints[slot, S_LAST_TRADE_TIME] <= TAKER_RUN_GAP_MS:
            out[i, 36] = ints[slot, S_RUN_SIDE] * min(ints[slot, S_RUN_LEN], TAKER_RUN_CAP) / TAKER_RUN_CAP
        else:
            out[i, 36] = 0.0
        # metadata
        for c in range(_F_RESOLUTION - _F_CATEGORY - 2):
            out[i, _F_CATEGORY + c] = 1.0 if market_category[m] == c else 0.0
        opened = market_open[m]
        if opened != NO_TIME and close != NO_TIME and close > opened:
            out[i, _F_RESOLUTION - 2] = min(max((t - opened) / float(close - opened), 0.0), 1.0)
        else:
            out[i, _F_RESOLUTION - 2] = 0.5
        out[i, _F_RESOLUTION - 1] = min(math.log1p(float(ints[slot, S_VOLUME])) / _LOG_USED_SCALE, 1.0)
        # resolution
        _resolution(out, i, _F_RESOLUTION, cat_offsets, cat_times, cat_n, cat_yes, cat_brier, cat_priced,
                    market_category[m], t)
        _resolution(out, i, _F_RESOLUTION + 3, ser_offsets, ser_times, ser_n, ser_yes, ser_brier, ser_priced,
                    market_series[m], t)
        n_out += 1
    return n, n_out, DONE


@numba.njit(cache=True)
def _regrow(old, new, ints, lo_column, count_column, extra_back):
    """Copy each slot's live part of a ring into a larger ring (absolute index modulo capacity)."""
    old_cap = old.shape[1]
    new_cap = new.shape[1]
    for slot in range(old.shape[0]):
        end = ints[slot, count_column]
        begin = max(min(ints[slot, lo_column], end - extra_back), 0)
        for k in range(begin, end):
            new[slot, k % new_cap] = old[slot, k % old_cap]


# -- state, markets and resolution history around the kernel ------------------------------------

@dataclass
class EngineState:
    """Per-slot state; slots are added as markets appear, rings double when a window outgrows them."""

    slots: int = 0
    ring_events: int = 1024
    ring_trades: int = 1024
    ints: np.ndarray = field(default=None)
    yes: np.ndarray = field(default=None)
    no: np.ndarray = field(default=None)
    ev_time: np.ndarray = field(default=None)
    ev_mid: np.ndarray = field(default=None)
    tr_time: np.ndarray = field(default=None)
    tr_count: np.ndarray = field(default=None)
    tr_yes: np.ndarray = field(default=None)
    tr_price: np.ndarray = field(default=None)

    def __post_init__(self):
        self.ring_events = max(self.ring_events, MIN_RING)
        self.ring_trades = max(self.ring_trades, 2)
        self.ints = np.zeros((0, N_STATE), np.int64)
        self.yes = np.zeros((0, 100), np.int64)
        self.no = np.zeros((0, 100), np.int64)
        self.ev_time = np.zeros((0, self.ring_events), np.int64)
        self.ev_mid = np.zeros((0, self.ring_events), np.float64)
        self.tr_time = np.zeros((0, self.ring_trades), np.int64)
        self.tr_count = np.zeros((0, self.ring_trades), np.int64)
        self.tr_yes = np.zeros((0, self.ring_trades), np.bool_)
        self.tr_price = np.zeros((0, self.ring_trades), np.int64)
        slots, self.slots = self.slots, 0
        self.ensure_slots(slots)

    def ensure_slots(self, slots: int) -> None:
        if slots <= self.slots:
            return
        grow = max(slots, 2 * self.slots) - self.slots
        for name in ("ints", "yes", "no", "ev_time", "ev_mid", "tr_time", "tr_count", "tr_yes", "tr_price"):
            array = getattr(self, name)
            setattr(self, name, np.concatenate([array, np.zeros((grow, *array.shape[1:]), array.dtype)]))
        self.slots += grow

    def grow_event_ring(self) -> None:
        self.ring_events *= 2
        for name in ("ev_time", "ev_mid"):
            old = getattr(self, name)
            new = np.zeros((old.shape[0], self.ring_events), old.dtype)
            _regrow(old, new, self.ints, S_LO300, S_EVENTS, 2 * _ACCELERATION_GAPS + 1)
            setattr(self, name, new)

    def grow_trade_ring(self) -> None:
        self.ring_trades *= 2
        for name in ("tr_time", "tr_count", "tr_yes", "tr_price"):
            old = getattr(self, name)
            new = np.zeros((old.shape[0], self.ring_trades), old.dtype)
            _regrow(old, new, self.ints, S_TLO5, S_TRADES, 0)
            setattr(self, name, new)

    def kernel_state(self) -> tuple:
        return (self.ints, self.yes, self.no, self.ev_time, self.ev_mid, self.tr_time, self.tr_count, self.tr_yes,
                self.tr_price)


@dataclass
class Markets:
    """Market ids (positions in these arrays), their metadata and the state slot each one uses."""

    tickers: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    slot: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    category: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    series: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    open_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    close_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    series_codes: dict[str, int] = field(default_factory=dict)

    def add(self, ticker: str, category: str | None, series: str | None, open_ms: int | None, close_ms: int | None,
            slot: int | None = None) -> int:
        """Register a market (or update its metadata); returns its id. Without a slot it gets its own."""
        from core.markets import normalize_category

        if ticker not in self.index:
            self.index[ticker] = len(self.tickers)
            self.tickers.append(ticker)
            for name in ("slot", "category", "series", "open_ms", "close_ms"):
                setattr(self, name, np.append(getattr(self, name), np.int64(0)))
        m = self.index[ticker]
        self.slot[m] = m if slot is None else slot
        self.category[m] = CATEGORIES.index(normalize_category(category))
        self.series[m] = self.series_codes.setdefault(series or "unknown", len(self.series_codes))
        self.open_ms[m] = NO_TIME if open_ms is None else open_ms
        self.close_ms[m] = NO_TIME if close_ms is None else close_ms
        return m

    def kernel_arrays(self) -> tuple:
        return self.slot, self.category, self.series, self.open_ms, self.close_ms


def markets_from_frame(frame: pl.DataFrame, shared_slot: bool = False) -> Markets:
    """Markets from the raw lake's markets table (or any frame with its columns), in ticker order."""
    markets = Markets()
    for row in frame.sort("ticker").iter_rows(named=True):
        open_ts, close_ts = row.get("open_ts"), row.get("close_ts")
        markets.add(row["ticker"], row.get("category"), row.get("series_ticker"),
                    None if open_ts is None else int(open_ts.timestamp() * 1000),
                    None if close_ts is None else int(close_ts.timestamp() * 1000), slot=0 if shared_slot else None)
    return markets


@dataclass
class ResolutionIndex:
    """Per category and per series: settlement times and running YES / Brier sums, for binary searches."""

    category: tuple
    series: tuple

    @classmethod
    def build(cls, history: pl.DataFrame, markets: Markets) -> "ResolutionIndex":
        history = history.sort("settled_ms", "market_ticker")
        category_keys = [CATEGORIES.index(c) for c in history["category"].to_list()]
        series_keys = [markets.series_codes.get(s, -1) for s in history["series_ticker"].to_list()]
        return cls(_segments(history, category_keys, len(CATEGORIES)),
                   _segments(history, series_keys, max(len(markets.series_codes), 1)))

    def kernel_arrays(self) -> tuple:
        return (*self.category, *self.series)


def _segments(history: pl.DataFrame, keys: list[int], n_keys: int) -> tuple:
    keys_array = np.asarray(keys, np.int64)
    keep = keys_array >= 0
    order = np.argsort(keys_array[keep], kind="stable")  # by key, settlement order kept within a key
    times = history["settled_ms"].to_numpy()[keep][order]
    outcome = history["outcome"].to_numpy()[keep][order]
    brier = history["brier"].to_numpy()[keep][order]
    keys_sorted = keys_array[keep][order]
    offsets = np.searchsorted(keys_sorted, np.arange(n_keys + 1)).astype(np.int64)
    priced = ~np.isnan(brier)
    cum_n = np.zeros(times.size, np.int64)
    cum_yes = np.zeros(times.size)
    cum_brier = np.zeros(times.size)
    cum_priced = np.zeros(times.size, np.int64)
    for key in range(n_keys):
        lo, hi = offsets[key], offsets[key + 1]
        cum_n[lo:hi] = np.arange(1, hi - lo + 1)
        cum_yes[lo:hi] = np.cumsum(outcome[lo:hi])
        cum_brier[lo:hi] = np.cumsum(np.where(priced[lo:hi], brier[lo:hi], 0.0))
        cum_priced[lo:hi] = np.cumsum(priced[lo:hi])
    return offsets, times.astype(np.int64), cum_n, cum_yes, cum_brier, cum_priced


@dataclass
class Records:
    """A batch of records in processing order (see the module docstring), as the kernel's arrays."""

    kind: np.ndarray
    market: np.ndarray
    session: np.ndarray
    sequence: np.ndarray
    time_ms: np.ndarray
    side: np.ndarray
    price: np.ndarray
    size: np.ndarray
    level_offset: np.ndarray
    level_count: np.ndarray
    level_side: np.ndarray
    level_price: np.ndarray
    level_size: np.ndarray

    def __len__(self) -> int:
        return self.kind.shape[0]

    def kernel_arrays(self) -> tuple:
        return (self.kind, self.market, self.session, self.sequence, self.time_ms, self.side, self.price, self.size,
                self.level_offset, self.level_count, self.level_side, self.level_price, self.level_size)


@dataclass
class Output:
    record: np.ndarray     # int64 [n]: index of the book record each row belongs to
    book: np.ndarray       # int64 [n, len(BOOK_OUTPUTS)]
    features: np.ndarray   # float64 [n, N_FEATURES], ENGINE_FEATURES order


def run(records: Records, state: EngineState, markets: Markets, resolution: ResolutionIndex) -> Output:
    """Feed `records` through the kernel, growing rings as needed; one output row per book record."""
    state.ensure_slots(int(markets.slot.max()) + 1 if len(markets.slot) else 1)
    n_book = int((records.kind != KIND_TRADE).sum())
    out_record = np.empty(n_book, np.int64)
    out_book = np.empty((n_book, len(BOOK_OUTPUTS)), np.int64)
    out = np.empty((n_book, N_FEATURES), np.float64)
    start, written = 0, 0
    while True:
        next_record, n_out, status = engine_kernel(
            *records.kernel_arrays(), *markets.kernel_arrays(), *resolution.kernel_arrays(), *state.kernel_state(),
            start, out_record[written:], out_book[written:], out[written:])
        written += n_out
        if status == DONE:
            return Output(out_record, out_book, out)
        if status == GROW_EVENTS:
            state.grow_event_ring()
        else:
            state.grow_trade_ring()
        start = next_record
