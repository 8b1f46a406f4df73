"""A Kalshi-like market universe, written into the source tables with COPY.

What it produces, and why each part is there:
- six categories with their own lifetimes, open/close times, and a resolution per market that is
  consistent with its prices (the latent probability is a martingale that ends at 0 or 1);
- recording sessions: a snapshot per market at every session start, then sequence-numbered
  deltas; multi-level books on both sides with heavy-tailed sizes, never crossed;
- bursty event times: bursts milliseconds apart (some in the same millisecond), quiet gaps of
  minutes; trades that take liquidity and the deltas that go with them;
- a spread of volatilities that fills the stable, moderate and volatile classes;
- the planted effect of strength `signal` (see simulator_kernel): signal 0 is a martingale.
Same seed and start, same data.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Callable

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from core.markets import CATEGORIES
from core.postgres import table_identifier
from core.settings import SourceTables
from source.simulator_defaults import (
    DEFAULT_DAYS,
    DEFAULT_MARKETS,
    DEFAULT_SEED,
    DEFAULT_SIGNAL,
    EARLIEST_START,
    EFFECTS,
    MAX_DAYS,
    MAX_MARKETS,
)
from source.simulator_kernel import (
    BURST_GAP_MS,
    QUIET_GAP_MS,
    SIDE_YES,
    simulate_market,
)

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 24 * MS_PER_HOUR

_CATEGORY_WEIGHTS = (0.3, 0.14, 0.14, 0.14, 0.18, 0.10)
_LIFETIME_HOURS = {  # (min, max) hours between open and close
    "sports": (4, 36), "politics": (48, 240), "economics": (24, 160),
    "climate": (18, 60), "crypto": (6, 30), "other": (24, 200),
}
_SERIES = {
    "sports": ("KXNBAGAME", "KXNFLGAME", "KXNHLGAME"), "politics": ("KXSENATE", "KXAPPROVAL"),
    "economics": ("KXCPI", "KXFED", "KXJOBS"), "climate": ("KXHIGHNY", "KXRAINSFO"),
    "crypto": ("KXBTCD", "KXETHD"), "other": ("KXOSCARS", "KXTSAPAX"),
}
# Share of markets whose outcome is known well before close (a game that ended, a number that was published).
_EARLY_OUTCOME_SHARE = {"sports": 0.4, "politics": 0.2, "economics": 0.3, "climate": 0.3, "crypto": 0.2, "other": 0.2}
_ACTIONS = np.array(["add", "remove", "update"])
_SIDES = np.array(["yes", "no"])
_ALL_SIDES = np.array(["yes", "no"])


@dataclass(frozen=True)
class SimulationConfig:
    markets: int = DEFAULT_MARKETS
    days: int = DEFAULT_DAYS
    seed: int = DEFAULT_SEED
    signal: float = DEFAULT_SIGNAL
    start: date = field(default_factory=lambda: datetime.now(timezone.utc).date() - timedelta(days=DEFAULT_DAYS))
    events_per_hour: float = 350.0  # mean tick rate of a market; moves and sweeps add deltas on top
    effects: tuple[str, ...] = EFFECTS  # planted effects; each market mixes them with its own weights

    def __post_init__(self) -> None:
        unknown = sorted(set(self.effects) - set(EFFECTS))
        if unknown:
            raise ValueError(f"unknown effect {', '.join(unknown)}; choose from {', '.join(EFFECTS)}")
        if self.markets < 1:
            raise ValueError(f"--markets must be at least 1, got {self.markets}")
        if self.markets > MAX_MARKETS:
            raise ValueError(f"--markets must be at most {MAX_MARKETS}, got {self.markets}")
        if not 1 <= self.days <= MAX_DAYS:
            raise ValueError(f"--days must be between 1 and {MAX_DAYS}, got {self.days}")
        if not 0.0 <= self.signal <= 4.0:
            raise ValueError(f"--signal must be between 0 and 4, got {self.signal}")
        earliest, latest = date.fromisoformat(EARLIEST_START), datetime.now(timezone.utc).date() + timedelta(days=MAX_DAYS)
        if self.start < earliest:
            raise ValueError(f"--start must be {earliest} or later (the source tables refuse earlier times), "
                             f"got {self.start}")
        if self.start + timedelta(days=self.days) > latest:
            raise ValueError(f"the universe must end by {latest} (a year from today), got {self.start} + {self.days} days")

    @property
    def window_start_ms(self) -> int:
        return int(datetime(self.start.year, self.start.month, self.start.day, tzinfo=timezone.utc).timestamp() * 1000)

    @property
    def window_end_ms(self) -> int:
        return self.window_start_ms + self.days * MS_PER_DAY


@dataclass
class MarketPlan:
    index: int
    ticker: str
    event_ticker: str
    series_ticker: str
    category: str
    title: str
    open_ms: int
    close_ms: int
    z0: float           # standardised distance of the latent from the 50% line when the recording starts
    spread_cents: int
    rate_per_hour: float
    effect_weights: tuple[float, ...]  # how this market's jumps choose among the planted effects


@dataclass
class SimulationSummary:
    markets: int = 0
    sessions: int = 0
    snapshots: int = 0
    deltas: int = 0
    trades: int = 0
    settled: int = 0

    @property
    def book_events(self) -> int:
        return self.snapshots + self.deltas


def plan_markets(config: SimulationConfig) -> list[MarketPlan]:
    rng = np.random.default_rng([config.seed, 1])
    window = config.window_end_ms - config.window_start_ms
    plans = []
    for index in range(config.markets):
        category = CATEGORIES[rng.choice(len(CATEGORIES), p=_CATEGORY_WEIGHTS)]
        low, high = _LIFETIME_HOURS[category]
        lifetime_ms = int(rng.uniform(low, high) * MS_PER_HOUR)
        close_ms = config.window_start_ms + int(rng.uniform(0.12, 1.12) * window)
        open_ms = close_ms - lifetime_ms
        series = _SERIES[category][rng.integers(len(_SERIES[category]))]
        day_code = datetime.fromtimestamp(close_ms / 1000, tz=timezone.utc).strftime("%y%b%d").upper()
        event_ticker = f"{series}-{day_code}"
        ticker = f"{event_ticker}-M{index:04d}"
        # Mixture of starting distances: near-certain, contested and coin-flip markets.
        kind = rng.random()
        if kind < 0.1:
            z0 = rng.uniform(1.4, 2.6)
        elif kind < 0.5:
            z0 = rng.uniform(0.45, 1.3)
        else:
            z0 = rng.uniform(0.0, 0.35)
        z0 *= 1 if rng.random() < 0.5 else -1
        plans.append(
            MarketPlan(
                index=index, ticker=ticker, event_ticker=event_ticker, series_ticker=series,
                category=category, title=f"Simulated {category} market {index}",
                open_ms=open_ms, close_ms=close_ms, z0=float(z0),
                spread_cents=int(rng.choice([1, 1, 1, 1, 1, 3])),
                rate_per_hour=float(config.events_per_hour * rng.lognormal(0.0, 0.5)),
                effect_weights=tuple(float(w) for w in _effect_weights(rng, config.effects)),
            )
        )
    return plans


def _effect_weights(rng: np.random.Generator, enabled: tuple[str, ...]) -> np.ndarray:
    """A market's mix of the enabled effects (Dirichlet(1): some markets lean on one, others mix)."""
    weights = np.zeros(len(EFFECTS))
    draw = rng.dirichlet(np.ones(len(EFFECTS)))  # drawn whatever is enabled, so other choices stay the same
    for k, name in enumerate(EFFECTS):
        if name in enabled:
            weights[k] = draw[k]
    return weights


def plan_sessions(config: SimulationConfig, first_session_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recorder sessions: (ids, start_ms, end_ms). Restarts every 8-30 h with a short outage between."""
    rng = np.random.default_rng([config.seed, 2])
    starts, ends = [], []
    t = config.window_start_ms - 3 * MS_PER_DAY  # markets opened before the window are recorded from its start
    first_recorded = config.window_start_ms
    while t < config.window_end_ms:
        end = t + int(rng.uniform(8, 30) * MS_PER_HOUR)
        if end > first_recorded:
            starts.append(max(t, first_recorded))
            ends.append(min(end, config.window_end_ms))
        t = end + int(rng.uniform(30_000, 300_000))  # recorder outage
    ids = np.arange(first_session_id, first_session_id + len(starts), dtype=np.int64)
    return ids, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


def market_ticks(plan: MarketPlan, config: SimulationConfig, session_starts: np.ndarray,
                 session_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Bursty tick times inside the market's recorded life, the session of each, and when the outcome is known."""
    rng = np.random.default_rng([config.seed, 3, plan.index])
    rec_start = max(plan.open_ms, config.window_start_ms)
    rec_end = min(plan.close_ms, config.window_end_ms)
    hours = max((rec_end - rec_start) / MS_PER_HOUR, 0.0)
    mean_burst = 5.0
    n_clusters = max(int(hours * plan.rate_per_hour / mean_burst * 1.5) + 8, 8)
    mean_quiet_gap_ms = MS_PER_HOUR * mean_burst / plan.rate_per_hour
    quiet_gaps = rng.lognormal(0.0, 1.3, n_clusters)  # heavy tail: some gaps last many minutes
    quiet_gaps *= mean_quiet_gap_ms / math.exp(1.3**2 / 2)
    burst_sizes = rng.geometric(1.0 / mean_burst, n_clusters)
    cluster_starts = rec_start + np.cumsum(quiet_gaps).astype(np.int64)
    total = int(burst_sizes.sum())
    within = np.floor(rng.exponential(BURST_GAP_MS / 6, total)).astype(np.int64)  # zeros: same-millisecond events
    starts_of_tick = np.repeat(cluster_starts, burst_sizes)
    first_in_cluster = np.cumsum(burst_sizes) - burst_sizes
    offsets = np.cumsum(within)
    offsets -= np.repeat(offsets[first_in_cluster], burst_sizes)
    ticks = starts_of_tick + offsets

    # Most outcomes become known minutes before close; some (a game that ended, a number that was
    # published) hours before, after which the market sits at 1 or 99 until it closes.
    if rng.random() < _EARLY_OUTCOME_SHARE[plan.category]:
        outcome_known_ms = plan.close_ms - int(rng.uniform(0.1, 0.3) * (plan.close_ms - plan.open_ms))
    else:
        outcome_known_ms = plan.close_ms - int(rng.uniform(60_000, 20 * 60_000))
    extra = []
    if outcome_known_ms < rec_end:
        # The outcome becomes known shortly before close: a burst that takes the price to 1 or 99.
        extra.append(outcome_known_ms + np.cumsum(rng.integers(0, 40, 24)))
    session_index_of = np.arange(len(session_starts))
    for s in session_index_of[(session_starts < rec_end) & (session_ends > rec_start)]:
        extra.append(np.array([max(session_starts[s], rec_start) + int(rng.integers(0, 2000))], dtype=np.int64))
    ticks = np.sort(np.concatenate([ticks, *extra])) if extra else np.sort(ticks)
    ticks = ticks[(ticks >= rec_start) & (ticks < rec_end)]
    session_of_tick = np.searchsorted(session_starts, ticks, side="right") - 1
    in_session = (session_of_tick >= 0) & (ticks < session_ends[np.clip(session_of_tick, 0, None)])
    return ticks[in_session], session_of_tick[in_session].astype(np.int64), outcome_known_ms


NEWS_PER_LIFETIME = 12.0  # expected news jumps between open and the outcome becoming known


def news_probability(ticks: np.ndarray, plan: "MarketPlan", outcome_known_ms: int) -> np.ndarray:
    """Chance that news moves the market at each tick: most often right after a quiet gap.

    A bounded martingale can only move so far: every jump of size s uses up s^2 of the at most
    f (1 - f) of variance the price has left, so news arrives a fixed number of times per market
    lifetime (not per hour); more would pin most markets at 1 or 99 within hours.
    """
    if len(ticks) == 0:
        return np.zeros(0)
    gaps = np.diff(ticks, prepend=ticks[0] - 60_000)
    weight = np.where(gaps > QUIET_GAP_MS, 20.0, np.where(gaps < BURST_GAP_MS, 0.5, 1.0))
    life_hours = max((outcome_known_ms - plan.open_ms) / MS_PER_HOUR, 1.0)
    per_tick = NEWS_PER_LIFETIME / (plan.rate_per_hour * life_hours)
    return np.minimum(per_tick * weight / weight.mean(), 0.5)


def simulate_one_market(plan: MarketPlan, config: SimulationConfig, session_ids: np.ndarray,
                        session_starts: np.ndarray, session_ends: np.ndarray) -> dict:
    ticks, session_of_tick, outcome_known_ms = market_ticks(plan, config, session_starts, session_ends)
    # The recording finds the market at standardised distance z0 from the 50% line: contested markets stay
    # contested whether they opened an hour or a week before the recorder subscribed.
    sigma = 1.0
    first = ticks[0] if len(ticks) else plan.open_ms
    x0 = plan.z0 * sigma * math.sqrt(max((outcome_known_ms - first) / 1000.0, 1.0))
    capacity = len(ticks) * 4 + 4096
    seed = int(np.random.default_rng([config.seed, 5, plan.index]).integers(0, 2**31 - 1))
    if len(ticks) == 0:
        empty = np.empty((0, 8), dtype=np.int64)
        return {"plan": plan, "deltas": empty, "trades": np.empty((0, 5), np.int64), "snapshots": np.empty((0, 5), np.int64),
                "levels": np.empty((0, 3), np.int64), "latent": np.empty(0), "outcome_yes": x0 > 0, "ticks": ticks}
    while True:
        deltas, trades, snapshots, levels, latent, outcome_yes, ok, footprints = simulate_market(
            seed, ticks, session_of_tick, session_ids, x0, sigma, outcome_known_ms, plan.spread_cents,
            config.signal, np.asarray(plan.effect_weights), 0.12, 0.3, news_probability(ticks, plan, outcome_known_ms),
            capacity,
        )
        if ok:
            break
        capacity *= 2
    jumps, channel, direction, queue_lean = footprints
    return {"plan": plan, "deltas": deltas, "trades": trades, "snapshots": snapshots, "levels": levels,
            "latent": latent, "outcome_yes": bool(outcome_yes), "ticks": ticks, "outcome_known_ms": outcome_known_ms,
            "jump_direction": jumps, "footprint_channel": channel, "footprint_direction": direction,
            "touch_lean": queue_lean}


# -- writing ---------------------------------------------------------------------------------

def _copy_table(conn: psycopg.Connection, table: str, arrow_table: pa.Table) -> None:
    if arrow_table.num_rows == 0:
        return
    buffer = io.BytesIO()
    pacsv.write_csv(arrow_table, buffer, pacsv.WriteOptions(include_header=False))
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in arrow_table.column_names)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(table_identifier(table), columns)
    view = buffer.getbuffer()
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for offset in range(0, len(view), 1 << 20):
            copy.write(view[offset:offset + (1 << 20)])


def _deltas_table(markets: list[dict]) -> pa.Table:
    parts = [m["deltas"] for m in markets]
    tickers = np.concatenate([np.repeat(m["plan"].ticker, len(m["deltas"])) for m in markets])
    d = np.concatenate(parts)
    return pa.table({
        "session_id": d[:, 0], "market_ticker": tickers, "timestamp_ms": d[:, 1], "sequence_number": d[:, 2],
        "side": _SIDES[d[:, 3]], "action": _ACTIONS[d[:, 4]], "price": d[:, 5], "old_size": d[:, 6],
        "new_size": d[:, 7],
    })


def _trades_table(markets: list[dict], seed: int) -> pa.Table:
    rows = []
    for m in markets:
        t = m["trades"]
        if len(t) == 0:
            continue
        rng = np.random.default_rng([seed, 6, m["plan"].index])
        ids = [f"sim-{seed}-{m['plan'].index}-{k}" for k in range(len(t))]
        rows.append(pa.table({
            "trade_id": ids, "market_ticker": np.repeat(m["plan"].ticker, len(t)),
            "yes_price": t[:, 2], "no_price": 100 - t[:, 2], "count": t[:, 3],
            "taker_side": _ALL_SIDES[t[:, 4]], "ts": t[:, 1], "received_at": t[:, 1] + rng.integers(5, 80, len(t)),
        }))
    return pa.concat_tables(rows) if rows else pa.table({})


def _book_json(levels: np.ndarray, side: int, mirror: bool) -> str:
    chosen = levels[levels[:, 0] == side]
    if mirror:
        return json.dumps({str(100 - int(p)): int(s) for _, p, s in chosen[::-1]})
    return json.dumps({str(int(p)): int(s) for _, p, s in chosen})


def _snapshots_table(markets: list[dict]) -> pa.Table:
    rows: dict[str, list] = {k: [] for k in (
        "session_id", "market_ticker", "timestamp_ms", "sequence_number", "yes_bids", "yes_asks", "no_bids",
        "no_asks", "total_volume")}
    for m in markets:
        for session, ts, seq, first, count in m["snapshots"]:
            levels = m["levels"][first:first + count]
            rows["session_id"].append(int(session))
            rows["market_ticker"].append(m["plan"].ticker)
            rows["timestamp_ms"].append(int(ts))
            rows["sequence_number"].append(int(seq))
            rows["yes_bids"].append(_book_json(levels, SIDE_YES, mirror=False))
            rows["no_bids"].append(_book_json(levels, 1 - SIDE_YES, mirror=False))
            rows["yes_asks"].append(_book_json(levels, 1 - SIDE_YES, mirror=True))
            rows["no_asks"].append(_book_json(levels, SIDE_YES, mirror=True))
            rows["total_volume"].append(0)
    return pa.table(rows)


def _markets_table(results: list[dict], config: SimulationConfig) -> pa.Table:
    def ts(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)

    rows: dict[str, list] = {k: [] for k in (
        "ticker", "event_ticker", "series_ticker", "title", "category", "open_ts", "close_ts",
        "expected_expiration_ts", "status", "result", "settled_ts")}
    rng = np.random.default_rng([config.seed, 7])
    for m in results:
        plan = m["plan"]
        settled_ms = plan.close_ms + int(rng.uniform(60_000, 45 * 60_000))
        settled = settled_ms <= config.window_end_ms
        rows["ticker"].append(plan.ticker)
        rows["event_ticker"].append(plan.event_ticker)
        rows["series_ticker"].append(plan.series_ticker)
        rows["title"].append(plan.title)
        rows["category"].append(plan.category)
        rows["open_ts"].append(ts(plan.open_ms))
        rows["close_ts"].append(ts(plan.close_ms))
        rows["expected_expiration_ts"].append(ts(plan.close_ms))
        if settled:
            rows["status"].append("settled")
            rows["result"].append("yes" if m["outcome_yes"] else "no")
            rows["settled_ts"].append(ts(settled_ms))
        else:
            rows["status"].append("closed" if plan.close_ms <= config.window_end_ms else "active")
            rows["result"].append(None)
            rows["settled_ts"].append(None)
    return pa.table(rows, schema=pa.schema([
        ("ticker", pa.string()), ("event_ticker", pa.string()), ("series_ticker", pa.string()),
        ("title", pa.string()), ("category", pa.string()), ("open_ts", pa.timestamp("ms", "UTC")),
        ("close_ts", pa.timestamp("ms", "UTC")), ("expected_expiration_ts", pa.timestamp("ms", "UTC")),
        ("status", pa.string()), ("result", pa.string()), ("settled_ts", pa.timestamp("ms", "UTC")),
    ]))


@dataclass
class SimulatedBatch:
    """Source-format tables of a batch of markets (the columns COPY writes; ids are PostgreSQL's to give)."""

    snapshots: pa.Table
    deltas: pa.Table
    trades: pa.Table


def simulate_batches(config: SimulationConfig, first_session_id: int, batch_markets: int = 25,
                     progress: Callable[[int], None] | None = None):
    """Simulate the universe batch by batch; yields SimulatedBatch, then returns the markets table."""
    session_ids, session_starts, session_ends = plan_sessions(config, first_session_id)
    plans = plan_markets(config)
    outcomes = []
    for offset in range(0, len(plans), batch_markets):
        batch = [simulate_one_market(p, config, session_ids, session_starts, session_ends)
                 for p in plans[offset:offset + batch_markets]]
        yield SimulatedBatch(_snapshots_table(batch), _deltas_table(batch), _trades_table(batch, config.seed))
        outcomes.extend({"plan": m["plan"], "outcome_yes": m["outcome_yes"]} for m in batch)
        if progress:
            progress(len(batch))
    return _markets_table(outcomes, config)


def _drain(batches, on_batch: Callable) -> pa.Table:
    """Hand every batch of a `simulate_batches` generator to `on_batch`; return the markets table it ends with."""
    while True:
        try:
            on_batch(next(batches))
        except StopIteration as finished:
            return finished.value


def simulate(conn: psycopg.Connection, tables: SourceTables, config: SimulationConfig, first_session_id: int,
             progress: Callable[[int], None] | None = None, batch_markets: int = 25) -> SimulationSummary:
    """Simulate the universe and COPY it into the source tables, in batches of markets."""
    summary = SimulationSummary(markets=config.markets, sessions=len(plan_sessions(config, first_session_id)[0]))
    def copy(batch) -> None:
        _copy_table(conn, tables.snapshots, batch.snapshots)
        _copy_table(conn, tables.deltas, batch.deltas)
        _copy_table(conn, tables.trades, batch.trades)
        summary.snapshots += batch.snapshots.num_rows
        summary.deltas += batch.deltas.num_rows
        summary.trades += batch.trades.num_rows

    markets = _drain(simulate_batches(config, first_session_id, batch_markets, progress), copy)
    _copy_table(conn, tables.markets, markets)
    summary.settled = sum(1 for r in markets.column("result").to_pylist() if r is not None)
    conn.commit()
    return summary


def simulate_in_memory(config: SimulationConfig, first_session_id: int = 1) -> dict[str, pa.Table]:
    """The whole universe as source-format tables with row ids, without a database (experiments, calibration)."""
    parts: dict[str, list[pa.Table]] = {"snapshots": [], "deltas": [], "trades": []}
    markets = _drain(simulate_batches(config, first_session_id),
                     lambda batch: [parts[name].append(getattr(batch, name)) for name in parts])
    tables = {name: pa.concat_tables(tables) if tables else pa.table({}) for name, tables in parts.items()}
    for name, table in tables.items():
        tables[name] = table.add_column(0, "id", pa.array(range(1, table.num_rows + 1), pa.int64()))
    return {**tables, "markets": markets}
