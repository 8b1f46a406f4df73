"""Simulator invariants, on a small universe in real PostgreSQL and on in-memory markets."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict

import numpy as np
import psycopg
import pytest
from psycopg import sql

from core.postgres import table_identifier
from source.simulator import (
    SimulationConfig,
    plan_markets,
    plan_sessions,
    simulate,
    simulate_one_market,
)
from source.simulator_kernel import E_DEPTH, E_RUN, QUEUE_LOOKBACK_TICKS
from tests.conftest import SMALL_START
from tests.reference.replay import replay_events
from tests.reference.source_rows import book_events_by_stream


def _content_digest(dsn, tables) -> str:
    """Everything the simulation decided (not ids or insert times, which belong to the database)."""
    queries = [
        (tables.snapshots, "SELECT session_id, market_ticker, timestamp_ms, sequence_number, yes_bids::text, "
                           "no_bids::text FROM {} ORDER BY 1, 2, 4"),
        (tables.deltas, "SELECT session_id, market_ticker, timestamp_ms, sequence_number, side, action, price, "
                        "old_size, new_size FROM {} ORDER BY 1, 2, 4"),
        (tables.trades, "SELECT trade_id, market_ticker, yes_price, no_price, count, taker_side, ts, received_at "
                        "FROM {} ORDER BY 1"),
        (tables.markets, "SELECT * FROM {} ORDER BY ticker"),
    ]
    digest = hashlib.sha256()
    with psycopg.connect(dsn) as conn:
        for table, query in queries:
            for row in conn.execute(sql.SQL(query).format(table_identifier(table))):
                digest.update(repr(row).encode())
    return digest.hexdigest()


def test_same_seed_same_data_and_other_seed_differs(pg_dsn, fresh_tables):
    digests = []
    for seed in (3, 3, 4):
        tables = fresh_tables()
        with psycopg.connect(pg_dsn) as conn:
            simulate(conn, tables, SimulationConfig(markets=4, days=1, seed=seed, start=SMALL_START), first_session_id=1)
        digests.append(_content_digest(pg_dsn, tables))
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]


def test_books_are_never_crossed_and_have_depth(small_universe):
    streams = book_events_by_stream(small_universe["dsn"], small_universe["tables"])
    assert streams, "the simulator wrote no book events"
    events = crossed = 0
    deepest = 0
    for key, stream in streams.items():
        assert stream[0]["kind"] == "snapshot", f"{key} does not start with a snapshot"
        assert [e["sequence_number"] for e in stream] == list(range(1, len(stream) + 1)), f"{key} has sequence gaps"
        for state in replay_events(stream):
            events += 1
            assert state.valid
            if state.best_yes_bid is not None and state.best_yes_ask is not None:
                crossed += state.best_yes_bid >= state.best_yes_ask
        deepest = max(deepest, max(len(e["yes_bids"]) for e in stream if e["kind"] == "snapshot"))
    assert crossed == 0
    assert events > 10_000
    assert deepest >= 6, "snapshots should carry multi-level books"


def test_trades_match_the_deltas_they_produced(small_universe):
    dsn, tables = small_universe["dsn"], small_universe["tables"]
    with psycopg.connect(dsn) as conn:
        trades = conn.execute(sql.SQL("SELECT market_ticker, ts, yes_price, count, taker_side FROM {}").format(
            table_identifier(tables.trades))).fetchall()
        deltas = conn.execute(sql.SQL(
            "SELECT market_ticker, timestamp_ms, side, price, old_size - new_size FROM {} WHERE new_size < old_size"
        ).format(table_identifier(tables.deltas))).fetchall()
    available = defaultdict(int)
    for ticker, ts, side, price, taken in deltas:
        available[(ticker, ts, side, price, taken)] += 1
    unmatched = 0
    for ticker, ts, yes_price, count, taker in trades:
        # A YES taker lifts a NO bid at 100 - yes_price; a NO taker hits the YES bid at yes_price.
        key = (ticker, ts, "no", 100 - yes_price, count) if taker == "yes" else (ticker, ts, "yes", yes_price, count)
        if available[key] > 0:
            available[key] -= 1
        else:
            unmatched += 1
    assert len(trades) > 1000
    assert unmatched == 0


def test_resolutions_agree_with_final_prices(small_universe):
    dsn, tables = small_universe["dsn"], small_universe["tables"]
    streams = book_events_by_stream(dsn, tables)
    final_mid = {}
    for (_, ticker), stream in sorted(streams.items(), key=lambda kv: kv[1][-1]["timestamp_ms"]):
        state = replay_events(stream)[-1]
        bid, ask = state.best_yes_bid or 0, state.best_yes_ask or 100
        if bid or ask < 100:  # near certainty the favourite's side is empty: 99 / none, or none / 1
            final_mid[ticker] = (bid + ask) / 2
    with psycopg.connect(dsn) as conn:
        results = dict(conn.execute(sql.SQL("SELECT ticker, result FROM {} WHERE result IS NOT NULL").format(
            table_identifier(tables.markets))).fetchall())
    assert len(results) >= 3
    for ticker, result in results.items():
        assert (final_mid[ticker] >= 95) if result == "yes" else (final_mid[ticker] <= 5), (ticker, result, final_mid[ticker])


def _in_memory(config: SimulationConfig):
    """Simulated markets that have at least one recorded tick."""
    ids, starts, ends = plan_sessions(config, 1)
    markets = [simulate_one_market(plan, config, ids, starts, ends) for plan in plan_markets(config)]
    return [m for m in markets if len(m["ticks"])]


def test_volatility_classes_are_all_populated():
    markets = _in_memory(SimulationConfig(markets=120, days=7, seed=5, start=SMALL_START))
    stds = np.array([np.std(m["latent"]) for m in markets if len(m["latent"]) > 50])
    shares = [(stds < 0.1).mean(), ((stds >= 0.1) & (stds < 0.3)).mean(), (stds >= 0.3).mean()]
    assert all(share >= 0.03 for share in shares), shares


def _imbalance_predicts_next_move(markets) -> tuple[float, int]:
    """Correlation of top-5 depth imbalance with the next mid move of a cent or more (its size, not its sign:
    near 1 and 99 a martingale moves up more often than down, by less).

    Measured at resting states (after size updates and partial fills, which never change the best
    prices), so the steps inside one multi-delta move do not count as separate moves.
    """
    xs, ys = [], []
    for m in markets:
        resting = None  # (imbalance, mid) at the last resting state
        for row, yes, no, new_session in _replayed_books(m):
            if new_session:
                resting = None
            if row[4] != 2:  # only 'update' deltas leave a resting state
                continue
            bids, no_bids = np.nonzero(yes)[0], np.nonzero(no)[0]
            if not len(bids) or not len(no_bids):  # one side empty near certainty: no mid to move
                resting = None
                continue
            mid = (bids[-1] + 100 - no_bids[-1]) / 2
            if resting is not None and abs(mid - resting[1]) >= 1:
                # whole-cent moves of both quotes; a one-sided half-cent widening that later narrows back moves
                # the mid but no price a round trip can gain on
                xs.append(resting[0])
                ys.append(mid - resting[1])
            if bids[-1] < 6 or no_bids[-1] < 6:
                # Within 5 cents of 1 or 99 the price grid truncates one side's top-5 depth, and the mid
                # can only move away from the edge: a real but mechanical link, not the planted effect.
                resting = None
                continue
            yes_depth = yes[bids[::-1][:5]].sum()
            no_depth = no[no_bids[::-1][:5]].sum()
            resting = ((yes_depth - no_depth) / (yes_depth + no_depth), mid)
    return float(np.corrcoef(xs, ys)[0, 1]), len(xs)


def test_depth_lean_shows_in_the_top5_imbalance_only_with_a_signal():
    """The book's own mechanics link the imbalance to the next move a little (refills follow the last move).
    At signal 0 the depth_lean footprints (lean orders in a random direction) can only dilute that link, never
    strengthen it; at signal 1 they dominate it."""
    def correlation(signal: float, effects: tuple[str, ...]) -> float:
        markets = _in_memory(SimulationConfig(markets=80, days=3, seed=1, signal=signal, start=SMALL_START,
                                              effects=effects))
        value, moves = _imbalance_predicts_next_move(markets)
        assert moves > 1000
        return value

    mechanics = correlation(0.0, ())
    assert correlation(0.0, ("depth_lean",)) < mechanics + 0.02
    assert correlation(1.0, ("depth_lean",)) > mechanics + 0.15


def _replayed_books(market: dict):
    """(delta row, YES ladder, NO ladder, first delta of a session) after every delta of a simulated market,
    its snapshots and deltas replayed (the ladders are reused: read them before the next step)."""
    yes, no = np.zeros(100, np.int64), np.zeros(100, np.int64)
    snapshots = {int(s[0]): s for s in market["snapshots"]}
    session = None
    for row in market["deltas"]:
        new_session = row[0] != session
        if new_session:
            session = int(row[0])
            yes[:] = 0
            no[:] = 0
            first, count = snapshots[session][3], snapshots[session][4]
            for side, price, size in market["levels"][first:first + count]:
                (yes if side == 0 else no)[price] = size
        (yes if row[3] == 0 else no)[row[5]] = row[7]
        yield row, yes, no, new_session


def _quote_path(market: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, best YES bid, best YES ask) in cents after every delta of a simulated market, its snapshots and
    deltas replayed; an empty side reads 0 (no bid) or 100 (no ask)."""
    times, bids, asks = [], [], []
    for row, yes, no, _ in _replayed_books(market):
        yes_bids, no_bids = np.nonzero(yes)[0], np.nonzero(no)[0]
        times.append(row[1])
        bids.append(yes_bids[-1] if len(yes_bids) else 0)
        asks.append(100 - no_bids[-1] if len(no_bids) else 100)
    return np.array(times), np.array(bids), np.array(asks)


def test_once_the_outcome_is_known_the_favourite_is_never_offered():
    """After the outcome is known the book sits at the winner's end (a YES bid of 90 or more, or a YES ask of
    10 or less) and the side the winner would be bought from is empty: no price on the book pays for sure
    (with the quotes clamped to 97/98 a YES at 98 paid two cents for certain, signal or none)."""
    markets = _in_memory(SimulationConfig(markets=120, days=7, seed=3, start=SMALL_START))
    checked = 0
    for m in markets:
        known = m["outcome_known_ms"]
        if known > m["ticks"][-1] - 600_000:
            continue
        after = m["ticks"] >= known
        assert np.all(m["latent"][after] == (0.995 if m["outcome_yes"] else 0.005)), m["plan"].ticker
        times, bids, asks = _quote_path(m)
        settled = times >= known + 60_000  # a minute for the book to walk there
        if not settled.any():
            continue
        if m["outcome_yes"]:
            assert np.all(asks[settled] == 100) and np.all(bids[settled] >= 90), (m["plan"].ticker, asks[settled].min())
        else:
            assert np.all(bids[settled] == 0) and np.all(asks[settled] <= 10), (m["plan"].ticker, bids[settled].max())
        checked += 1
    assert checked >= 20


def _footprint_agreement(markets: list[dict], channel: int) -> tuple[int, int]:
    """(footprints whose direction is the next jump's, footprints) for jumps that carry `channel`'s footprint."""
    agree = total = 0
    for m in markets:
        jumps = np.flatnonzero(m["jump_direction"] != 0)
        for j in jumps:
            if j > 0 and m["footprint_channel"][j - 1] == channel:
                total += 1
                agree += int(m["footprint_direction"][j - 1] == m["jump_direction"][j])
    return agree, total


def _queue_agreement(markets: list[dict]) -> tuple[int, int]:
    agree = total = 0
    for m in markets:
        jumps = np.flatnonzero(m["jump_direction"] != 0)
        for q in np.flatnonzero(np.abs(m["touch_lean"]) == 1):
            following = jumps[jumps > q]
            if len(following) and following[0] - q <= QUEUE_LOOKBACK_TICKS:
                total += 1
                agree += int(np.sign(m["touch_lean"][q]) == m["jump_direction"][following[0]])
    return agree, total


@pytest.mark.parametrize("signal", [0.0, 1.0])
def test_footprints_point_the_way_of_the_jump_only_with_a_signal(signal):
    """At signal 0 every effect's footprints point at random (the mid stays a martingale); at signal 1 the
    footprints of jumps point their way (footprints without a jump are noise at any signal)."""
    markets = _in_memory(SimulationConfig(markets=150, days=5, seed=2, signal=signal, start=SMALL_START))
    for name, (agree, total) in (("depth_lean", _footprint_agreement(markets, E_DEPTH)),
                                 ("taker_run", _footprint_agreement(markets, E_RUN)),
                                 ("quiet_queue", _queue_agreement(markets))):
        assert total >= 40, (name, total)
        share = agree / total
        if signal == 0.0:
            spread = 3 * math.sqrt(0.25 / total)  # three binomial standard deviations around a coin flip
            assert abs(share - 0.5) <= spread, (name, share, total)
        else:
            assert share >= 0.85, (name, share, total)


def test_each_effect_leaves_its_footprint_in_its_own_observable():
    markets = _in_memory(SimulationConfig(markets=80, days=3, seed=4, signal=1.0, start=SMALL_START))
    run_side = run_trades = thin = leans = 0
    for m in markets:
        ticks, trades = m["ticks"], m["trades"]
        # taker_run: inside its window the trades hit the footprint's side
        tick_of_trade = np.clip(np.searchsorted(ticks, trades[:, 1], side="right") - 1, 0, len(ticks) - 1)
        in_run = m["footprint_channel"][tick_of_trade] == E_RUN
        wanted = np.where(m["footprint_direction"][tick_of_trade] > 0, 0, 1)  # taker side 0 = YES
        run_trades += int(in_run.sum())
        run_side += int((trades[in_run, 4] == wanted[in_run]).sum())
        # quiet_queue: the first event after the quiet gap thins the touch against the lean to one contract
        for q in np.flatnonzero(np.abs(m["touch_lean"]) == 1):
            if not 0.05 < m["latent"][q] < 0.95:
                continue  # near certainty one side of the book is empty: there is no touch to thin
            leans += 1
            side = 1 if m["touch_lean"][q] > 0 else 0
            at_tick = m["deltas"][(m["deltas"][:, 1] >= ticks[q]) & (m["deltas"][:, 1] <= ticks[q] + 3)]
            thin += int(np.any((at_tick[:, 3] == side) & (at_tick[:, 7] == 1)))
    assert run_trades > 200 and run_side / run_trades > 0.85, (run_side, run_trades)
    assert leans > 20 and thin / leans > 0.9, (thin, leans)
