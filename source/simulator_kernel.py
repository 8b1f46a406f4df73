"""Numba kernel of the market simulator: one market's recording, event by event.

The latent state is a martingale probability f(t) = Phi(X(t) / (sigma * sqrt(T - t))) with X a
Brownian motion, so the outcome 1{X(T) > 0} is consistent with every price on the way. The visible
book follows 100 f (see `_follow`), with occasional news jumps of several cents. The planted
microstructure effect lives only in the *sizes* of the top five levels: quote updates steer the top-5
depth imbalance towards the direction of the next mid move, strongly before big moves and inside
bursts or after quiet gaps, weakly otherwise. With signal 0 the sizes are independent of the future
and the mid is a martingale.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from core.ladder import TOP_LEVELS, best_price, top_depth

ACTION_ADD, ACTION_REMOVE, ACTION_UPDATE = 0, 1, 2
SIDE_YES, SIDE_NO = 0, 1
MAX_DEPTH = 15             # levels kept behind the best on each side; the top five carry the planted signal
BURST_GAP_MS = 100         # a gap below this is inside a burst
QUIET_GAP_MS = 30_000      # a gap above this ends a quiet period
PRE_NEWS_TICKS = 60        # ticks before a news jump in which informed liquidity leans its way
DELTA_FIELDS = 8           # session, ts, seq, side, action, price, old, new
TRADE_FIELDS = 5           # session, ts, yes_price, count, taker_side (0 yes, 1 no)
SNAPSHOT_FIELDS = 5        # session, ts, seq, first level row, level count


@numba.njit(cache=True)
def _phi(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@numba.njit(cache=True)
def _phi_inverse(p):
    """Inverse standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9)."""
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
         -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
         -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
         4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
    if p < 0.02425:
        q = math.sqrt(-2.0 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0)
    if p > 1.0 - 0.02425:
        q = math.sqrt(-2.0 * math.log(1.0 - p))
        return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)


@numba.njit(cache=True)
def _news_jump(f):
    """A martingale jump of the probability: up by u with odds d/(u+d), down by d otherwise."""
    size = np.random.uniform(0.15, 0.25)
    up = min(size, 0.985 - f)
    down = min(size, f - 0.015)
    if up <= 0.0 or down <= 0.0:
        return f
    return f + up if np.random.random() < down / (up + down) else f - down


@numba.njit(cache=True)
def _level_size(depth):
    # Heavy-tailed sizes that grow with depth, as on real Kalshi books.
    return max(1, int(math.exp(np.random.normal(4.3, 1.1)) * (1.0 + 0.15 * depth)))


@numba.njit(cache=True)
def _best_yes_ask(no):
    """100 - best NO bid; 100 when the NO side is empty."""
    best_no = best_price(no)
    return 100 - best_no if best_no > 0 else 100


@numba.njit(cache=True)
def _quotes_around(center, half_width):
    """Best bid and ask for a mid of center + 0.5 and an odd spread of 2 * half_width + 1 cents."""
    center = min(max(center, 1 + half_width), 98 - half_width)
    return center - half_width, center + 1 + half_width


@numba.njit(cache=True)
def _follow(center, latent_cents):
    """Move the book's center once the latent is a whole cent away, by stochastic rounding.

    Rounding the latent every tick would make the mid mean-revert around each cent boundary (a
    martingale that just crossed a boundary recrosses it first); plain truncation would leave the
    latent ahead of the mid after each move (momentum). Moving by whole cents and then one more
    cent with probability equal to the remaining fraction keeps E[mid] equal to the latent, so the
    next move is up or down with equal odds: the mid is a martingale.
    """
    gap = latent_cents - (center + 0.5)
    if gap >= 1.0 or gap <= -1.0:
        whole = int(gap)  # truncates towards zero
        remainder = gap - whole
        center += whole
        if np.random.random() < abs(remainder):
            center += 1 if remainder > 0 else -1
    return center


@numba.njit(cache=True)
def _emit_delta(deltas, n, session, ts, seq, side, action, price, old, new):
    deltas[n, 0] = session
    deltas[n, 1] = ts
    deltas[n, 2] = seq
    deltas[n, 3] = side
    deltas[n, 4] = action
    deltas[n, 5] = price
    deltas[n, 6] = old
    deltas[n, 7] = new
    return n + 1


@numba.njit(cache=True)
def _set_level(deltas, n, book, side, price, new_size, session, ts, seq):
    old = book[price]
    if old == 0 and new_size > 0:
        action = ACTION_ADD
    elif new_size == 0:
        action = ACTION_REMOVE
    else:
        action = ACTION_UPDATE
    book[price] = new_size
    return _emit_delta(deltas, n, session, ts, seq, side, action, price, old, new_size)


@numba.njit(cache=True)
def _requote_level(deltas, n, book, side, price, depth, session, ts, seq):
    """Give an existing level an ordinary size for its depth; returns (rows written, sequence number)."""
    if price >= 1 and book[price] > 0:
        size = _level_size(depth)
        if size != book[price]:
            seq += 1
            n = _set_level(deltas, n, book, side, price, size, session, ts, seq)
    return n, seq


@numba.njit(cache=True)
def simulate_market(
    seed, tick_ms, session_of_tick, session_ids, x0, sigma, outcome_known_ms, spread, signal, trade_prob,
    sweep_prob, news_prob, delta_capacity,
):
    """Walk one market's ticks; return (deltas, trades, snapshots, levels, latent_prob, outcome_yes, ok).

    ok is False when delta_capacity was too small; the caller retries with more room (the RNG is
    re-seeded here, so a retry reproduces the same market).
    """
    np.random.seed(seed)
    n_ticks = tick_ms.shape[0]
    deltas = np.empty((delta_capacity, DELTA_FIELDS), dtype=np.int64)
    trades = np.empty((delta_capacity // 2 + 16, TRADE_FIELDS), dtype=np.int64)
    snapshots = np.empty((session_ids.shape[0] + 1, SNAPSHOT_FIELDS), dtype=np.int64)
    levels = np.empty(((session_ids.shape[0] + 1) * 200, 3), dtype=np.int64)
    mids = np.empty(n_ticks, dtype=np.float64)  # latent probability at each tick, for tests
    yes = np.zeros(100, dtype=np.int64)
    no = np.zeros(100, dtype=np.int64)
    n_d = 0
    n_t = 0
    n_s = 0
    n_l = 0
    x = x0
    seq = 0
    current_session = -1
    last_ts = 0
    prev_tick_ms = tick_ms[0] - QUIET_GAP_MS - 1

    # Target quotes along the whole path first: the planted signal needs to know the next move.
    target_bid = np.empty(n_ticks, dtype=np.int64)
    target_ask = np.empty(n_ticks, dtype=np.int64)
    jump_direction = np.zeros(n_ticks, dtype=np.int64)
    t_prev = tick_ms[0]
    base_half_width = (spread - 1) // 2
    half_width = base_half_width
    center = -1
    for i in range(n_ticks):
        dt_s = max(tick_ms[i] - t_prev, 0) / 1000.0
        t_prev = tick_ms[i]
        x += sigma * math.sqrt(dt_s) * np.random.normal()
        if tick_ms[i] >= outcome_known_ms:
            f = 0.995 if x > 0 else 0.005
        else:
            tau_s = max((outcome_known_ms - tick_ms[i]) / 1000.0, 1.0)
            f = _phi(x / (sigma * math.sqrt(tau_s)))
            if np.random.random() < news_prob[i]:
                # News: the probability jumps several cents (a martingale jump); the latent is re-based
                # so that the outcome stays consistent with the new price.
                jumped = _news_jump(f)
                if jumped != f:
                    jump_direction[i] = 1 if jumped > f else -1
                    f = jumped
                    x = _phi_inverse(f) * sigma * math.sqrt(tau_s)
        mids[i] = f
        if center < 0:
            center = int(math.floor(100.0 * f - 0.5 + 0.5))
        center = _follow(center, 100.0 * f)
        if np.random.random() < 0.002:
            # Spreads stay odd (1, 3, 5 cents) and symmetric about the mid, so a spread change never moves
            # it; they widen for a while and return to the market's usual width.
            half_width = base_half_width + 1 if half_width == base_half_width else base_half_width
        target_bid[i], target_ask[i] = _quotes_around(center, half_width)
    outcome_yes = x > 0

    # Direction and size (cents) of the next mid move after each tick (0 if none follows).
    next_direction = np.zeros(n_ticks, dtype=np.int64)
    next_size = np.zeros(n_ticks, dtype=np.float64)
    upcoming = 0
    upcoming_size = 0.0
    # Direction of the next news jump and how many ticks away it is.
    news_direction = np.zeros(n_ticks, dtype=np.int64)
    ticks_to_news = np.full(n_ticks, n_ticks, dtype=np.int64)
    upcoming_news = 0
    news_tick = n_ticks + n_ticks
    for i in range(n_ticks - 1, -1, -1):
        next_direction[i] = upcoming
        next_size[i] = upcoming_size
        news_direction[i] = upcoming_news
        ticks_to_news[i] = news_tick - i
        if jump_direction[i] != 0:
            upcoming_news = jump_direction[i]
            news_tick = i
        if i > 0:
            move = (target_bid[i] + target_ask[i]) - (target_bid[i - 1] + target_ask[i - 1])
            if move != 0:
                upcoming = 1 if move > 0 else -1
                upcoming_size = abs(move) / 2.0

    for i in range(n_ticks):
        if n_d > delta_capacity - 160 or n_t > trades.shape[0] - 40:
            return deltas[:n_d], trades[:n_t], snapshots[:n_s], levels[:n_l], mids, False, False
        ts = max(tick_ms[i], last_ts)
        session_index = session_of_tick[i]
        session = session_ids[session_index]
        bt = target_bid[i]
        at = target_ask[i]

        if session_index != current_session:
            # A new recording session: the recorder subscribes and receives a full snapshot.
            current_session = session_index
            seq = 1
            yes[:] = 0
            no[:] = 0
            for d in range(np.random.randint(6, MAX_DEPTH + 1)):
                if bt - d >= 1:
                    yes[bt - d] = _level_size(d)
            for d in range(np.random.randint(6, MAX_DEPTH + 1)):
                if 100 - at - d >= 1:
                    no[100 - at - d] = _level_size(d)
            snapshots[n_s, 0] = session
            snapshots[n_s, 1] = ts
            snapshots[n_s, 2] = seq
            snapshots[n_s, 3] = n_l
            count = 0
            for p in range(1, 100):
                if yes[p] > 0:
                    levels[n_l, 0] = SIDE_YES
                    levels[n_l, 1] = p
                    levels[n_l, 2] = yes[p]
                    n_l += 1
                    count += 1
                if no[p] > 0:
                    levels[n_l, 0] = SIDE_NO
                    levels[n_l, 1] = p
                    levels[n_l, 2] = no[p]
                    n_l += 1
                    count += 1
            snapshots[n_s, 4] = count
            n_s += 1
            last_ts = ts
            prev_tick_ms = tick_ms[i]
            continue

        gap_ms = tick_ms[i] - prev_tick_ms
        prev_tick_ms = tick_ms[i]
        b = best_price(yes)
        a = _best_yes_ask(no)

        if b != bt or a != at:
            # Mid move. Order: new deeper levels first, then the levels that must go, then the new best
            # on the side that advances, so the book only widens on the way and is never crossed.
            sweep = np.random.random() < sweep_prob
            if a != at and no[100 - at] == 0 and at > a:
                seq += 1
                n_d = _set_level(deltas, n_d, no, SIDE_NO, 100 - at, _level_size(0), session, ts, seq)
                ts += np.random.randint(0, 3)
            if b != bt and yes[bt] == 0 and bt < b:
                seq += 1
                n_d = _set_level(deltas, n_d, yes, SIDE_YES, bt, _level_size(0), session, ts, seq)
                ts += np.random.randint(0, 3)
            if a < at:  # ask rises: NO bids above the new NO best go, maybe eaten by a YES taker
                for p in range(100 - a, 100 - at, -1):
                    if no[p] > 0:
                        seq += 1
                        if sweep:
                            trades[n_t, 0] = session
                            trades[n_t, 1] = ts
                            trades[n_t, 2] = 100 - p
                            trades[n_t, 3] = no[p]
                            trades[n_t, 4] = 0
                            n_t += 1
                        n_d = _set_level(deltas, n_d, no, SIDE_NO, p, 0, session, ts, seq)
                        ts += np.random.randint(0, 3)
            if b > bt:  # bid falls: YES bids above the new best go, maybe eaten by a NO taker
                for p in range(b, bt, -1):
                    if yes[p] > 0:
                        seq += 1
                        if sweep:
                            trades[n_t, 0] = session
                            trades[n_t, 1] = ts
                            trades[n_t, 2] = p
                            trades[n_t, 3] = yes[p]
                            trades[n_t, 4] = 1
                            n_t += 1
                        n_d = _set_level(deltas, n_d, yes, SIDE_YES, p, 0, session, ts, seq)
                        ts += np.random.randint(0, 3)
            if yes[bt] == 0:
                seq += 1
                n_d = _set_level(deltas, n_d, yes, SIDE_YES, bt, _level_size(0), session, ts, seq)
                ts += np.random.randint(0, 3)
            if no[100 - at] == 0:
                seq += 1
                n_d = _set_level(deltas, n_d, no, SIDE_NO, 100 - at, _level_size(0), session, ts, seq)
                ts += np.random.randint(0, 3)
            # Some of the levels the move jumped over fill in behind the new best.
            for d in range(1, 4):
                if bt - d >= 1 and yes[bt - d] == 0 and np.random.random() < 0.5:
                    seq += 1
                    n_d = _set_level(deltas, n_d, yes, SIDE_YES, bt - d, _level_size(d), session, ts, seq)
                    ts += np.random.randint(0, 3)
                if 100 - at - d >= 1 and no[100 - at - d] == 0 and np.random.random() < 0.5:
                    seq += 1
                    n_d = _set_level(deltas, n_d, no, SIDE_NO, 100 - at - d, _level_size(d), session, ts, seq)
                    ts += np.random.randint(0, 3)
            if jump_direction[i] != 0:
                # After news the liquidity that leaned its way is spent or pulled: the levels behind the new
                # best are re-quoted at ordinary sizes (only the planted lean ever made them unusual).
                for d in range(1, MAX_DEPTH + 1):
                    n_d, seq = _requote_level(deltas, n_d, yes, SIDE_YES, bt - d, d, session, ts, seq)
                    n_d, seq = _requote_level(deltas, n_d, no, SIDE_NO, 100 - at - d, d, session, ts, seq)
            last_ts = ts
            continue

        if np.random.random() < trade_prob:
            # A taker trade that takes part of the opposite best level.
            taker_yes = np.random.random() < 0.5
            if taker_yes:
                level_price = 100 - a
                level = no[level_price]
            else:
                level_price = b
                level = yes[level_price]
            if level > 1:
                count = min(level - 1, max(1, int(math.exp(np.random.normal(2.5, 1.2)))))
                seq += 1
                trades[n_t, 0] = session
                trades[n_t, 1] = ts
                trades[n_t, 2] = a if taker_yes else b
                trades[n_t, 3] = count
                trades[n_t, 4] = 0 if taker_yes else 1
                n_t += 1
                if taker_yes:
                    n_d = _set_level(deltas, n_d, no, SIDE_NO, level_price, level - count, session, ts, seq)
                else:
                    n_d = _set_level(deltas, n_d, yes, SIDE_YES, level_price, level - count, session, ts, seq)
                last_ts = ts
                continue

        # Quote update. Most updates steer the top-5 depth imbalance towards a target: noise, plus with
        # signal > 0 the direction of the next mid move, more inside bursts or after quiet gaps. Before
        # news, informed liquidity steers more often and in bigger clips. All of that scales with the
        # signal: at signal 0 neither how often nor how much the top levels change depends on the future.
        # The rest of the updates reshuffle the deeper book at random.
        pre_news = news_direction[i] != 0 and ticks_to_news[i] <= PRE_NEWS_TICKS
        informed = min(signal, 1.0) * pre_news
        steer_probability = 0.6 + 0.35 * informed
        clip = 1.0 + 4.0 * informed
        if np.random.random() < steer_probability:
            if pre_news:
                target = math.tanh(2.0 * signal) * news_direction[i] + 0.05 * np.random.normal()
            else:
                context = 1.0 if (gap_ms < BURST_GAP_MS or gap_ms > QUIET_GAP_MS) else 0.3
                size_weight = min(next_size[i], 2.0) / 2.0
                target = 0.5 * math.tanh(signal * context * size_weight) * next_direction[i] + 0.15 * np.random.normal()
            yes_depth = top_depth(yes, b)
            no_depth = top_depth(no, 100 - a)
            imbalance = (yes_depth - no_depth) / max(yes_depth + no_depth, 1)
            grow = np.random.random() < 0.5
            favoured = SIDE_YES if imbalance < target else SIDE_NO
            if (favoured == SIDE_YES) != (news_direction[i] > 0):
                clip = 1.0  # big clips only push towards the news, never back from an overshoot
            side = favoured if grow else 1 - favoured
            # Informed flow thins the other side behind its best level, so the best stays takeable.
            depth = np.random.randint(1 if (clip > 1.0 and not grow) else 0, TOP_LEVELS)
        else:
            side = SIDE_YES if np.random.random() < 0.5 else SIDE_NO
            depth = min(TOP_LEVELS + int(np.random.exponential(3.0)), MAX_DEPTH - 1)
            grow = np.random.random() < 0.5
            clip = 1.0
        book = yes if side == SIDE_YES else no
        best = b if side == SIDE_YES else 100 - a
        price = best - depth
        if price < 1:
            last_ts = ts
            continue
        old = book[price]
        if grow:
            new = old + max(1, int(_level_size(depth) * (0.5 + np.random.random()) * clip))
        elif old > 0:
            factor = np.random.random() / clip
            new = int(old * factor)
            if depth == 0 or (new == 0 and price == best):
                new = max(1, new)  # the best level never empties through a quote update
        else:
            last_ts = ts
            continue
        if new == old:
            new = old + 1
        seq += 1
        n_d = _set_level(deltas, n_d, book, side, price, new, session, ts, seq)
        last_ts = ts

    return deltas[:n_d], trades[:n_t], snapshots[:n_s], levels[:n_l], mids, outcome_yes, True
