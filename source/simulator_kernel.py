"""Numba kernel of the market simulator: one market's recording, event by event.

The latent state is a martingale probability f(t) = Phi(X(t) / (sigma * sqrt(T - t))) with X a
Brownian motion, so the outcome 1{X(T) > 0} is consistent with every price on the way; once the outcome
is known (`outcome_known_ms`) it is frozen and the price stays converged to it. The visible book follows
100 f (see `_follow`), with news jumps of JUMP_MIN..JUMP_MAX (14-22 cents). Near certainty the favourite's
side of the book empties (bid 99 and no ask, or no bid and ask 1, once the outcome is known): a quote is
never clamped below the value it would pay, so at signal 0 no price on the book is a sure edge.

Planted effects (`EFFECTS`): footprints that informed traders leave before a news jump, each seen through a
different observable:
- `depth_lean`: in the 60 ticks before the jump, quote updates behind the best levels lean the top-5 depth
  towards the jump (ob_yes_depth_imbalance);
- `taker_run`: in the 40 ticks before the jump, small taker orders hit the same side again and again
  (tf_taker_run and the trade-flow features);
- `quiet_queue`: the queue at the touch on the jump's side grows deep just before the last quiet gap (> 30 s)
  before the jump, and the first event after the gap thins the other touch to one contract: an extreme
  touch imbalance (ob_top_imbalance) on an event that ends a quiet gap (tm_quiet). Inside bursts the same
  thinning happens at random, so the lean only means something in that context: no threshold on one
  feature separates the two.
Each jump carries one footprint, drawn with the market's effect weights among the effects that fit it.
The footprints look the same at every signal strength; `signal` sets how often they point the way the jump
goes: with probability (1 + min(signal, 1)) / 2. At signal 0 they point at random and the mid is a
martingale. Footprints without a jump appear too (NOISE_FOOTPRINTS), so none is a certainty.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from core.exchange import MAX_PRICE_CENTS, MIN_PRICE_CENTS, NO_ASK, NO_BID, PAYOUT_CENTS
from core.ladder import TOP_LEVELS, best_price, top_depth

ACTION_ADD, ACTION_REMOVE, ACTION_UPDATE = 0, 1, 2
SIDE_YES, SIDE_NO = 0, 1
MAX_DEPTH = 15             # levels kept behind the best on each side
LEVEL_SIZE_SIGMA = 0.6     # log-sd of a resting order: the extremes of real touch queues come from leans
BURST_GAP_MS = 100         # a gap below this is inside a burst
QUIET_GAP_MS = 30_000      # a gap above this ends a quiet period
JUMP_MIN, JUMP_MAX = 0.14, 0.22  # news moves the probability by this much
E_NONE, E_DEPTH, E_RUN, E_QUEUE = -1, 0, 1, 2
PRE_NEWS_TICKS = 40        # ticks before a jump in which informed liquidity leans its way (depth_lean)
RUN_TICKS = 40             # ticks before a jump in which informed takers hit one side (taker_run)
RUN_TRADE_PROBABILITY = 0.75
QUEUE_LOOKBACK_TICKS = 20  # the quiet gap of a quiet_queue jump is at most this many ticks before it
QUEUE_LEAD_MS = 3_000      # ... and at least this long before it, so that a taker reacting to it can enter
QUEUE_NOISE_PROBABILITY = 0.08  # inside bursts the touch queues lean at random this often
QUEUE_LEAN_FACTOR = 6      # a leaning touch: this many ordinary sizes deep on one side, 1 contract on the other
QUEUE_LEAN_TICKS = 3       # ... for at most this many ticks, then ordinary sizes return
WIDEN_PROBABILITY = 0.012  # a tick that widens the spread by a cent on one side ...
NARROW_PROBABILITY = 0.028  # ... and one that narrows it back: widened 30% of the time
WIDE_SPELL_START, WIDE_SPELL_END = 0.0005, 0.005  # spells a cent wider on both sides: 9% of the time
NOISE_FOOTPRINTS = 0.3     # footprints without a jump, per footprint before one
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
    size = np.random.uniform(JUMP_MIN, JUMP_MAX)
    up = min(size, 0.985 - f)
    down = min(size, f - 0.015)
    if up <= 0.0 or down <= 0.0:
        return f
    return f + up if np.random.random() < down / (up + down) else f - down


@numba.njit(cache=True)
def _level_size(depth):
    # Heavy-tailed sizes that grow with depth, as on real Kalshi books.
    return max(1, int(math.exp(np.random.normal(4.3, LEVEL_SIZE_SIGMA)) * (1.0 + 0.15 * depth)))


@numba.njit(cache=True)
def _best_yes_ask(no):
    """100 - best NO bid; 100 when the NO side is empty."""
    best_no = best_price(no)
    return PAYOUT_CENTS - best_no if best_no > NO_BID else NO_ASK


@numba.njit(cache=True)
def _quotes_around(center, half_width, widened):
    """Best bid and ask around a mid of center + 0.5 with a spread of 2 * half_width + 1 cents, one cent wider
    on one side while `widened` is -1 (bid) or +1 (ask): real books are 1, 2, 3+ cents wide. A quote that
    falls off the 1..99 ladder is absent (NO_BID, NO_ASK): near certainty nobody offers the favourite below
    its value, so the side it would be bought from empties instead of sitting at a clamp (a clamped ask
    below a latent of 99.5 pays the buyer a sure cent or more)."""
    bid = center - half_width - (1 if widened < 0 else 0)
    ask = center + 1 + half_width + (1 if widened > 0 else 0)
    return (bid if bid >= MIN_PRICE_CENTS else NO_BID), (ask if ask <= MAX_PRICE_CENTS else NO_ASK)


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
def _choose(weights):
    """Index drawn with the given non-negative weights, or E_NONE when they are all zero."""
    total = 0.0
    for w in weights:
        total += w
    if total <= 0.0:
        return E_NONE
    u = np.random.random() * total
    for k in range(weights.shape[0]):
        u -= weights[k]
        if u < 0.0:
            return k
    return weights.shape[0] - 1


@numba.njit(cache=True)
def _quiet_tick_before(tick_ms, session_of_tick, j):
    """The latest tick before jump tick j that ends a quiet gap, in j's session, far enough ahead of j for a
    taker to act on it; -1 if none is within QUEUE_LOOKBACK_TICKS."""
    for q in range(j - 1, max(j - QUEUE_LOOKBACK_TICKS, 2) - 1, -1):
        if session_of_tick[q] != session_of_tick[j] or session_of_tick[q - 1] != session_of_tick[j]:
            return -1
        if tick_ms[j] - tick_ms[q] < QUEUE_LEAD_MS:
            continue
        if tick_ms[q] - tick_ms[q - 1] > QUIET_GAP_MS:
            return q
    return -1


@numba.njit(cache=True)
def _plan_footprints(tick_ms, session_of_tick, jump_direction, signal, effect_weights):
    """Per tick: the footprint channel in force (E_NONE if none), its direction (+1 towards YES), and for
    quiet_queue the tick that carries the lean. Jumps are visited in order, so where windows overlap the
    nearer jump's footprint wins; footprints without a jump are added at random places."""
    n = tick_ms.shape[0]
    channel = np.full(n, E_NONE, dtype=np.int64)
    direction = np.zeros(n, dtype=np.int64)
    queue_lean = np.zeros(n, dtype=np.int64)
    right = (1.0 + min(signal, 1.0)) / 2.0
    jumps = 0
    for j in range(n):
        if jump_direction[j] == 0:
            continue
        jumps += 1
        weights = effect_weights.copy()
        q = _quiet_tick_before(tick_ms, session_of_tick, j) if weights[E_QUEUE] > 0 else -1
        if q < 0:
            weights[E_QUEUE] = 0.0
        c = _choose(weights)
        d = jump_direction[j] if np.random.random() < right else -jump_direction[j]
        _mark(channel, direction, queue_lean, c, d, j, q)
    # As many footprints again (times NOISE_FOOTPRINTS) in random places, pointing at random.
    for _ in range(int(jumps * NOISE_FOOTPRINTS + np.random.random())):
        j = np.random.randint(1, n) if n > 1 else 0
        weights = effect_weights.copy()
        q = _quiet_tick_before(tick_ms, session_of_tick, j) if weights[E_QUEUE] > 0 else -1
        if q < 0:
            weights[E_QUEUE] = 0.0
        c = _choose(weights)
        _mark(channel, direction, queue_lean, c, 1 if np.random.random() < 0.5 else -1, j, q)
    return channel, direction, queue_lean


@numba.njit(cache=True)
def _mark(channel, direction, queue_lean, c, d, j, q):
    if c == E_QUEUE:
        queue_lean[q] = d
        queue_lean[q - 1] = 2 * d  # the tick before the quiet gap prepares the deep side
    elif c != E_NONE:
        window = PRE_NEWS_TICKS if c == E_DEPTH else RUN_TICKS
        for i in range(max(j - window, 0), j):
            channel[i] = c
            direction[i] = d


@numba.njit(cache=True)
def _taker_trade(deltas, n_d, trades, n_t, yes, no, b, a, taker_yes, count, session, ts, seq):
    """A taker order of `count` contracts against the opposite best level. One that takes the whole level
    empties it, and a fresh order takes its place at the same price (the touch does not thin to a contract by
    accident: only quiet_queue's footprint and the random leans do that)."""
    if taker_yes:
        level_price = 100 - a
        level = no[level_price]
    else:
        level_price = b
        level = yes[level_price]
    if level < 1 or level_price < 1:
        return n_d, n_t, seq
    count = max(count, 1)
    if count < level:
        count = min(count, level - max(1, level // 5))  # a partial fill leaves a real order, not a sliver
        remaining = level - count
    else:
        count = level
        remaining = 0
    seq += 1
    trades[n_t, 0] = session
    trades[n_t, 1] = ts
    trades[n_t, 2] = a if taker_yes else b
    trades[n_t, 3] = count
    trades[n_t, 4] = 0 if taker_yes else 1
    n_t += 1
    book, side = (no, SIDE_NO) if taker_yes else (yes, SIDE_YES)
    n_d = _set_level(deltas, n_d, book, side, level_price, remaining, session, ts, seq)
    if remaining == 0:
        seq += 1  # the emptied touch is taken by a fresh order at the same price
        n_d = _set_level(deltas, n_d, book, side, level_price, _level_size(0), session, ts, seq)
    return n_d, n_t, seq


@numba.njit(cache=True)
def simulate_market(
    seed, tick_ms, session_of_tick, session_ids, x0, sigma, outcome_known_ms, spread, signal, effect_weights,
    trade_prob, sweep_prob, news_prob, delta_capacity,
):
    """Walk one market's ticks; return (deltas, trades, snapshots, levels, latent_prob, outcome_yes, ok, plan)
    with plan = (jump direction, footprint channel, footprint direction, touch lean) per tick, for tests.

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
    lean_until = -1  # tick at which a leaning touch returns to ordinary sizes (-1: none leans)
    prev_tick_ms = tick_ms[0] - QUIET_GAP_MS - 1

    # Target quotes along the whole path first: the footprints need to know where the next jump goes.
    target_bid = np.empty(n_ticks, dtype=np.int64)
    target_ask = np.empty(n_ticks, dtype=np.int64)
    jump_direction = np.zeros(n_ticks, dtype=np.int64)
    t_prev = tick_ms[0]
    base_half_width = (spread - 1) // 2
    half_width = base_half_width
    widened = 0
    center = -1
    known = False
    outcome_yes = x > 0
    for i in range(n_ticks):
        dt_s = max(tick_ms[i] - t_prev, 0) / 1000.0
        t_prev = tick_ms[i]
        if tick_ms[i] >= outcome_known_ms:
            if not known:  # the outcome becomes known once and for all: the latent stops moving
                known = True
                outcome_yes = x > 0
            f = 0.995 if outcome_yes else 0.005
        else:
            x += sigma * math.sqrt(dt_s) * np.random.normal()
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
        center = min(max(_follow(center, 100.0 * f), 0), MAX_PRICE_CENTS)  # a mid of 0.5 .. 99.5 cents
        if half_width == base_half_width and np.random.random() < WIDE_SPELL_START:
            half_width = base_half_width + 1  # now and then the market's usual width grows a cent on both sides
        elif half_width != base_half_width and np.random.random() < WIDE_SPELL_END:
            half_width = base_half_width
        # One side steps back a cent, and later returns: the half-cent mid moves of real books. Symmetric and
        # short, it moves no price a taker can trade at on average. (Calibrated: docs/calibration.md.)
        if widened == 0 and np.random.random() < WIDEN_PROBABILITY:
            widened = 1 if np.random.random() < 0.5 else -1
        elif widened != 0 and np.random.random() < NARROW_PROBABILITY:
            widened = 0
        target_bid[i], target_ask[i] = _quotes_around(center, half_width, widened)
    if not known:
        outcome_yes = x > 0
    channel, lean_direction, queue_lean = _plan_footprints(tick_ms, session_of_tick, jump_direction, signal,
                                                          effect_weights)

    for i in range(n_ticks):
        if n_d > delta_capacity - 160 or n_t > trades.shape[0] - 40:
            return (deltas[:n_d], trades[:n_t], snapshots[:n_s], levels[:n_l], mids, False, False,
                    (jump_direction, channel, lean_direction, queue_lean))
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

        # Touch queues, before anything else on this tick (so that the first event after a quiet gap shows
        # quiet_queue's footprint): a random thin touch inside bursts lasts a few ticks; quiet_queue deepens
        # the favoured touch before its quiet gap and thins the other one right after it.
        last_of_burst = i + 1 >= n_ticks or tick_ms[i + 1] - tick_ms[i] > BURST_GAP_MS
        if lean_until >= 0 and (i >= lean_until or last_of_burst) and b >= 1 and 100 - a >= 1:
            # (at the burst's last tick at the latest: a random lean never lasts into a quiet gap)
            lean_until = -1
            seq += 1
            n_d = _set_level(deltas, n_d, yes, SIDE_YES, b, _level_size(0), session, ts, seq)
            seq += 1
            n_d = _set_level(deltas, n_d, no, SIDE_NO, 100 - a, _level_size(0), session, ts, seq)
        lean = queue_lean[i]
        if lean == 0 and gap_ms < BURST_GAP_MS and not last_of_burst and np.random.random() < QUEUE_NOISE_PROBABILITY:
            lean = 1 if np.random.random() < 0.5 else -1
            lean_until = i + 1 + np.random.randint(0, QUEUE_LEAN_TICKS)
        if lean != 0 and b >= 1 and 100 - a >= 1:
            towards_yes = lean > 0
            if lean == 2 or lean == -2 or queue_lean[i] == 0 and np.random.random() < 0.5:
                # the favoured touch grows deep (quiet_queue's preparation, or half of the random leans)
                seq += 1
                n_d = _set_level(deltas, n_d, yes if towards_yes else no, SIDE_YES if towards_yes else SIDE_NO,
                                 b if towards_yes else 100 - a, _level_size(0) * QUEUE_LEAN_FACTOR, session, ts, seq)
            if lean == 1 or lean == -1:
                # the touch against the lean drops to one contract
                seq += 1
                n_d = _set_level(deltas, n_d, no if towards_yes else yes, SIDE_NO if towards_yes else SIDE_YES,
                                 100 - a if towards_yes else b, 1, session, ts, seq)

        if b != bt or a != at:
            # Mid move. Order: new deeper levels first, then the levels that must go, then the new best
            # on the side that advances, so the book only widens on the way and is never crossed.
            sweep = np.random.random() < sweep_prob
            # A level about to become the touch is re-quoted first: otherwise whatever thin order sat behind the
            # old touch shows as the touch for an event, an extreme queue imbalance nobody placed.
            ask_quoted = at < NO_ASK   # False: the NO side empties (the favourite YES is no longer offered)
            bid_quoted = bt > NO_BID
            if a < at and ask_quoted and no[100 - at] > 0:
                seq += 1
                n_d = _set_level(deltas, n_d, no, SIDE_NO, 100 - at, _level_size(0), session, ts, seq)
            if b > bt and bid_quoted and yes[bt] > 0:
                seq += 1
                n_d = _set_level(deltas, n_d, yes, SIDE_YES, bt, _level_size(0), session, ts, seq)
            if a != at and ask_quoted and no[100 - at] == 0 and at > a:
                seq += 1
                n_d = _set_level(deltas, n_d, no, SIDE_NO, 100 - at, _level_size(0), session, ts, seq)
                ts += np.random.randint(0, 3)
            if b != bt and bid_quoted and yes[bt] == 0 and bt < b:
                seq += 1
                n_d = _set_level(deltas, n_d, yes, SIDE_YES, bt, _level_size(0), session, ts, seq)
                ts += np.random.randint(0, 3)
            # A sweep eats the touch first; cancels pull the levels behind it first, so the touch goes last and
            # the price gaps in one event (the whole-cent mid moves of real books).
            if a < at:  # ask rises: NO bids above the new NO best go, maybe eaten by a YES taker
                for k in range(at - a):
                    p = 100 - a - k if sweep else 100 - at + 1 + k
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
                for k in range(b - bt):
                    p = b - k if sweep else bt + 1 + k
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
            if bid_quoted and yes[bt] == 0:
                seq += 1
                n_d = _set_level(deltas, n_d, yes, SIDE_YES, bt, _level_size(0), session, ts, seq)
                ts += np.random.randint(0, 3)
            if ask_quoted and no[100 - at] == 0:
                seq += 1
                n_d = _set_level(deltas, n_d, no, SIDE_NO, 100 - at, _level_size(0), session, ts, seq)
                ts += np.random.randint(0, 3)
            # Most of the levels behind the new best fill in (a book keeps several levels on each side).
            for d in range(1, TOP_LEVELS + 1):
                if bt - d >= 1 and yes[bt - d] == 0 and np.random.random() < 0.8:
                    seq += 1
                    n_d = _set_level(deltas, n_d, yes, SIDE_YES, bt - d, _level_size(d), session, ts, seq)
                    ts += np.random.randint(0, 3)
                if 100 - at - d >= 1 and no[100 - at - d] == 0 and np.random.random() < 0.8:
                    seq += 1
                    n_d = _set_level(deltas, n_d, no, SIDE_NO, 100 - at - d, _level_size(d), session, ts, seq)
                    ts += np.random.randint(0, 3)
            if jump_direction[i] != 0:
                # After news the liquidity that leaned its way is spent or pulled: the levels are re-quoted
                # at ordinary sizes, the touch included.
                for d in range(0, MAX_DEPTH + 1):
                    n_d, seq = _requote_level(deltas, n_d, yes, SIDE_YES, bt - d, d, session, ts, seq)
                    n_d, seq = _requote_level(deltas, n_d, no, SIDE_NO, 100 - at - d, d, session, ts, seq)
            last_ts = ts
            continue

        if channel[i] == E_RUN:
            # taker_run: the informed flow is the taker flow; small orders hit its side, again and again
            if np.random.random() < RUN_TRADE_PROBABILITY:
                n_d, n_t, seq = _taker_trade(deltas, n_d, trades, n_t, yes, no, b, a, lean_direction[i] > 0,
                                             1 + np.random.randint(0, 4), session, ts, seq)
                last_ts = ts
                continue
        elif np.random.random() < trade_prob:
            # An uninformed taker trade that takes part of the opposite best level.
            n_d, n_t, seq = _taker_trade(deltas, n_d, trades, n_t, yes, no, b, a, np.random.random() < 0.5,
                                         int(math.exp(np.random.normal(2.8, 1.6))), session, ts, seq)
            last_ts = ts
            continue

        # Quote update. An uninformed one replaces a level's size by a fresh ordinary one (sizes are stationary,
        # as on real books: no level drifts to an extreme by accident); now and then a level behind the touch
        # empties. Before a depth_lean jump most updates push the top-5 depth behind the touch towards the
        # footprint's direction: big clips on the favoured side, thinning on the other.
        if channel[i] == E_DEPTH and np.random.random() < 0.9:
            target = math.tanh(2.0) * lean_direction[i] + 0.05 * np.random.normal()
            yes_depth = top_depth(yes, b)
            no_depth = top_depth(no, 100 - a)
            imbalance = (yes_depth - no_depth) / max(yes_depth + no_depth, 1)
            grow = np.random.random() < 0.5
            favoured = SIDE_YES if imbalance < target else SIDE_NO
            side = favoured if grow else 1 - favoured
            depth = np.random.randint(1, TOP_LEVELS)  # behind the touch: the queues at the touch stay ordinary
            book = yes if side == SIDE_YES else no
            price = (b if side == SIDE_YES else 100 - a) - depth
            if price < 1:
                last_ts = ts
                continue
            old = book[price]
            new = old + 5 * _level_size(depth) if grow else int(old * 0.2 * np.random.random())
        else:
            side = SIDE_YES if np.random.random() < 0.5 else SIDE_NO
            if np.random.random() < 0.6:
                depth = np.random.randint(0, TOP_LEVELS)
            else:
                depth = min(TOP_LEVELS + int(np.random.exponential(3.0)), MAX_DEPTH - 1)
            book = yes if side == SIDE_YES else no
            best = b if side == SIDE_YES else 100 - a
            price = best - depth
            if price < 1:
                last_ts = ts
                continue
            old = book[price]
            new = 0 if (depth > 0 and np.random.random() < 0.15) else _level_size(depth)
        if price == (b if side == SIDE_YES else 100 - a):
            new = max(1, new)  # the best level never empties through a quote update
        if new == old:
            new = old + 1
        seq += 1
        n_d = _set_level(deltas, n_d, book, side, price, new, session, ts, seq)
        last_ts = ts

    return (deltas[:n_d], trades[:n_t], snapshots[:n_s], levels[:n_l], mids, outcome_yes, True,
            (jump_direction, channel, lean_direction, queue_lean))
