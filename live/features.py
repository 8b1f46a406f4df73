"""The live feature state: the offline store's feature code fed arrival by arrival, with the book, window and
resolution state carried between arrivals, and the rows it makes as arrays (`EventRows`).

Rows are checked as the ingest checks them (a bad row is quarantined and counted), markets and settlements
are updated as they change, and small arrivals of deltas or trades of known markets take a fast lane that
builds the same records without DataFrames (tested to give the same rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from core.exchange import NO_ASK, NO_BID, PAYOUT_CENTS, no_price
from features.engine import (
    ENGINE_FEATURES,
    KIND_DELTA,
    KIND_TRADE,
    O_BEFORE,
    O_BEST_NO,
    O_BEST_YES,
    O_GAP,
    O_NO_SIZE,
    O_VALID,
    O_YES_SIZE,
    SIDE_NO,
    SIDE_YES,
    Records,
    run,
)
from features.events import FeatureBuilder
from features.resolution import resolution_history
from features.schema import MODEL_FEATURES
from ingest.extract import check_rows
from ingest.quarantine import check_markets, delta_reason, trade_reason
from ingest.streams import MARKETS, PARTITIONED_STREAMS, trade_visible_ms
from live.decisions import invalid_reason
from live.sources import Arrival, arrival_times_of

_MODEL_COLUMNS = np.array([ENGINE_FEATURES.index(name) for name in MODEL_FEATURES], np.int64)

FEATURE_SCHEMA = pa.schema([("market_ticker", pa.string()), ("session_id", pa.int64()), ("sequence_number", pa.int64()),
                            ("timestamp_ms", pa.int64()), *[(name, pa.float64()) for name in MODEL_FEATURES]])
FAST_LANE_MAX_ROWS = 64   # delta-only arrivals up to this size skip the DataFrame path (same rows: tested)


@dataclass
class EventRows:
    """Feature rows of one arrival in record order (by market, then session and sequence), as arrays."""

    tickers: np.ndarray          # object [n]
    session: np.ndarray          # int64 [n]
    sequence: np.ndarray
    timestamp: np.ndarray
    features: np.ndarray         # float64 [n, len(MODEL_FEATURES)]
    bid: np.ndarray              # best YES bid, cents (0: none)
    no_bid: np.ndarray           # best NO bid, cents (0: none)
    bid_size: np.ndarray         # contracts at the best YES bid
    no_bid_size: np.ndarray      # contracts at the best NO bid (= at the best YES ask)
    valid: np.ndarray            # bool: book state fully known
    gap: np.ndarray              # bool: after a sequence gap
    before_snapshot: np.ndarray  # bool: before the session's first snapshot

    def __len__(self) -> int:
        return len(self.session)

    @classmethod
    def from_frame(cls, rows: pl.DataFrame) -> "EventRows":
        column = lambda name: rows[name].to_numpy()  # noqa: E731
        return cls(np.asarray(rows["market_ticker"].to_list(), dtype=object), column("session_id"),
                   column("sequence_number"), column("timestamp_ms"), rows.select(MODEL_FEATURES).to_numpy(),
                   column("best_yes_bid_cents"), column("best_no_bid_cents"), column("best_yes_bid_size"),
                   column("best_no_bid_size"), column("book_valid"),
                   column("sequence_gap"), column("delta_before_snapshot"))

    @classmethod
    def concat(cls, parts: list["EventRows"]) -> "EventRows":
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in cls.__dataclass_fields__))

    @property
    def ask(self) -> np.ndarray:
        return np.where(self.no_bid > NO_BID, no_price(self.no_bid), NO_ASK)

    def refusals(self, rows: np.ndarray) -> list[str | None]:
        bid, no_bid = self.bid[rows], self.no_bid[rows]
        crossed = (bid > NO_BID) & (no_bid > NO_BID) & (bid + no_bid >= PAYOUT_CENTS)
        return [invalid_reason(*flags) for flags in zip(self.valid[rows], self.gap[rows], self.before_snapshot[rows],
                                                        crossed, bid == NO_BID, no_bid == NO_BID)]

    def latest_per_market(self) -> tuple[np.ndarray, np.ndarray]:
        """(row of each market's last event in this arrival, events per market), in first-seen order."""
        tickers = self.tickers
        last, counts = {}, {}
        for i, ticker in enumerate(tickers):
            last[ticker] = i
            counts[ticker] = counts.get(ticker, 0) + 1
        return np.fromiter(last.values(), np.int64, len(last)), np.fromiter(counts.values(), np.int64, len(counts))

    def feature_table(self) -> pa.Table:
        return pa.table({"market_ticker": pa.array(self.tickers, pa.string()), "session_id": self.session,
                         "sequence_number": self.sequence, "timestamp_ms": self.timestamp,
                         **{name: self.features[:, k] for k, name in enumerate(MODEL_FEATURES)}}, schema=FEATURE_SCHEMA)


_NO_ROWS = EventRows(*(np.zeros(0, dtype) for dtype in (object, np.int64, np.int64, np.int64)),
                     np.zeros((0, len(MODEL_FEATURES))), *(np.zeros(0, np.int64) for _ in range(4)),
                     *(np.zeros(0, bool) for _ in range(3)))


class LiveFeatures:
    """The offline feature code, fed arrival by arrival: rows checked as the ingest checks them, markets and
    settlements updated as they change, engine state carried.

    A settlement's Brier term needs the market's last trade before it, which a live feed has only once the
    stream reaches the settlement: a market's history row is recomputed, from its own trades seen so far, at
    the first arrival that reaches its settlement time (the engine counts a settlement only after it)."""

    def __init__(self):
        self.builder: FeatureBuilder | None = None
        self._trades: dict[str, list[tuple]] = {}   # per market: (ts, id, yes_price) of every clean trade
        self.trade_ids: set[str] = set()             # a repeated trade id is a copy, however far apart (as ingest)
        self.markets = pl.DataFrame(schema={c.name: pl.from_arrow(pa.array([], c.source_type)).dtype
                                            for c in MARKETS.columns})
        self.history = resolution_history(self.markets, _trade_frame({}).lazy())
        self.pending_ms = np.zeros(0, np.int64)      # settlement times not yet reached by the stream ...
        self.pending_tickers = np.zeros(0, object)   # ... and their markets
        self.quarantined = 0

    def _add_trades(self, rows) -> None:
        for ticker, ts, trade_id, price in rows:
            self._trades.setdefault(ticker, []).append((ts, trade_id, price))

    def _history_of(self, tickers) -> pl.DataFrame:
        """History rows of these markets from their trades seen so far."""
        wanted = set(tickers)
        return resolution_history(self.markets.filter(pl.col("ticker").is_in(wanted)),
                                  _trade_frame({t: self._trades.get(t, []) for t in wanted}).lazy())

    def _new_trade_id(self, trade_id: str | None) -> bool:
        if trade_id is None:
            return True
        if trade_id in self.trade_ids:
            self.quarantined += 1
            return False
        self.trade_ids.add(trade_id)
        return True

    def update(self, arrival: Arrival) -> EventRows:
        clean = {}
        for name, table in arrival.rows.items():
            if table.num_rows:
                clean[name], bad = check_rows(name, table)
                self.quarantined += bad.height
            else:  # most arrivals of a live feed carry one stream: skip the checks' fixed cost for the others
                clean[name] = _empty_clean(name)
        if clean["trades"].height:
            fresh = [self._new_trade_id(t) for t in clean["trades"]["trade_id"].to_list()]
            clean["trades"] = clean["trades"].filter(pl.Series(fresh, dtype=pl.Boolean))
            self._add_trades(clean["trades"].select("market_ticker", "ts", "id", "yes_price").iter_rows())
        if arrival.markets is not None or self.builder is None:
            if arrival.markets is not None:
                conformed = _conform_markets(arrival.markets)
                self.markets, bad = check_markets(conformed.sort("ticker", nulls_last=False))
                self.quarantined += bad.height
            settled = self.markets.filter(pl.col("result").is_in(["yes", "no"]) & pl.col("settled_ts").is_not_null())
            order = np.argsort(settled["settled_ts"].dt.epoch("ms").to_numpy(), kind="stable")
            self.pending_ms = settled["settled_ts"].dt.epoch("ms").to_numpy().astype(np.int64)[order]
            self.pending_tickers = np.asarray(settled["ticker"].to_list(), dtype=object)[order]
            self.history = self._history_of(settled["ticker"].to_list())
            if self.builder is None:
                self.builder = FeatureBuilder(self.markets, self.history)
            else:
                self.builder.update_markets(self.markets, self.history)
        self._reach(_latest_time(arrival))
        return EventRows.from_frame(self.builder.batch(clean["snapshots"], clean["deltas"], clean["trades"]))

    def _reach(self, time_ms: int) -> None:
        reached = int(np.searchsorted(self.pending_ms, time_ms, side="right"))
        if not reached:
            return
        tickers = self.pending_tickers[:reached].tolist()
        self.history = pl.concat([self.history.filter(~pl.col("market_ticker").is_in(tickers)),
                                  self._history_of(tickers)]).sort("market_ticker")
        self.builder.set_history(self.history)
        self.pending_ms, self.pending_tickers = self.pending_ms[reached:], self.pending_tickers[reached:]

    def fast_lane(self, arrival: Arrival) -> EventRows | None:
        """A few deltas, or a few trades, of known markets (what a live feed mostly delivers): the same checks
        and records as the DataFrame path, built without DataFrames. None when the arrival needs the full
        path (snapshots, market changes, a mix, a repeated sequence key, an unknown market)."""
        if self.builder is None or arrival.markets is not None or arrival.rows["snapshots"].num_rows:
            return None
        deltas, trades = arrival.rows["deltas"], arrival.rows["trades"]
        if deltas.num_rows and trades.num_rows or not 0 < deltas.num_rows + trades.num_rows <= FAST_LANE_MAX_ROWS:
            return None
        table = deltas if deltas.num_rows else trades
        columns = {name: table[name].to_pylist() for name in table.column_names}
        index = self.builder.markets.index
        if any(t not in index for t in columns["market_ticker"] if t is not None):
            return None
        if deltas.num_rows:
            keys = list(zip(columns["session_id"], columns["market_ticker"], columns["sequence_number"]))
            if len(set(keys)) != len(keys):
                return None
            records = self._delta_records(columns)
        else:
            records = self._trade_records(columns)
        if records is None:
            return _NO_ROWS
        output = run(records, self.builder.state, self.builder.markets, self.builder.resolution)
        rec, book = output.record, output.book
        tickers = np.asarray(self.builder.markets.tickers, dtype=object)[records.market[rec]]
        return EventRows(tickers, records.session[rec], records.sequence[rec], records.time_ms[rec],
                         output.features[:, _MODEL_COLUMNS], book[:, O_BEST_YES], book[:, O_BEST_NO],
                         book[:, O_YES_SIZE], book[:, O_NO_SIZE], book[:, O_VALID] == 1, book[:, O_GAP] == 1,
                         book[:, O_BEFORE] == 1)

    def _clean_rows(self, columns: dict, fields: tuple[str, ...], reason) -> list[int]:
        rows = []
        for k in range(len(columns["id"])):
            if reason(*(columns[f][k] for f in fields)) is None:
                rows.append(k)
            else:
                self.quarantined += 1
        return rows

    def _delta_records(self, columns: dict) -> Records | None:
        rows = self._clean_rows(columns, ("market_ticker", "session_id", "timestamp_ms", "sequence_number", "side",
                                          "action", "price", "old_size", "new_size"), delta_reason)
        if not rows:
            return None
        self._reach(max(columns["timestamp_ms"][k] for k in rows))
        pick = lambda name: np.array([columns[name][k] for k in rows], np.int64)  # noqa: E731
        market = np.array([self.builder.markets.index[columns["market_ticker"][k]] for k in rows], np.int64)
        session, sequence = pick("session_id"), pick("sequence_number")
        order = np.lexsort((pick("id"), sequence, session, market))   # the offline sort: market, session, sequence, id
        side = np.array([SIDE_YES if columns["side"][k] == "yes" else SIDE_NO for k in rows], np.int8)
        return _records(KIND_DELTA, market[order], session[order], sequence[order], pick("timestamp_ms")[order],
                        side[order], pick("price")[order], pick("new_size")[order])

    def _trade_records(self, columns: dict) -> Records | None:
        rows = [k for k in self._clean_rows(columns, ("market_ticker", "ts", "yes_price", "no_price", "count",
                                                      "taker_side"), trade_reason)
                if self._new_trade_id(columns["trade_id"][k])]
        if not rows:
            return None
        self._add_trades((columns["market_ticker"][k], columns["ts"][k], columns["id"][k], columns["yes_price"][k])
                         for k in rows)
        pick = lambda name: np.array([columns[name][k] for k in rows], np.int64)  # noqa: E731
        ts = pick("ts")
        event_time = trade_visible_ms(ts, [columns["received_at"][k] for k in rows])
        self._reach(int(event_time.max()))
        market = np.array([self.builder.markets.index[columns["market_ticker"][k]] for k in rows], np.int64)
        order = np.lexsort((pick("id"), ts, event_time, market))
        side = np.array([SIDE_YES if columns["taker_side"][k] == "yes" else SIDE_NO for k in rows], np.int8)
        zeros = np.zeros(len(rows), np.int64)
        return _records(KIND_TRADE, market[order], zeros, zeros, event_time[order], side[order],
                        pick("yes_price")[order], pick("count")[order])


def _records(kind: int, market, session, sequence, time_ms, side, price, size) -> Records:
    n, empty = len(market), np.zeros(0, np.int64)
    return Records(kind=np.full(n, kind, np.int8), market=market, session=session, sequence=sequence, time_ms=time_ms,
                   side=side, price=price, size=size, level_offset=np.zeros(n, np.int64),
                   level_count=np.zeros(n, np.int64), level_side=np.zeros(0, np.int8), level_price=empty,
                   level_size=empty)


def _trade_frame(trades: dict[str, list[tuple]]) -> pl.DataFrame:
    return pl.DataFrame({"market_ticker": [t for t, rows in trades.items() for _ in rows],
                         "ts": [r[0] for rows in trades.values() for r in rows],
                         "id": [r[1] for rows in trades.values() for r in rows],
                         "yes_price": [r[2] for rows in trades.values() for r in rows]},
                        schema={"market_ticker": pl.String, "ts": pl.Int64, "id": pl.Int64, "yes_price": pl.Int64})


def _conform_markets(table: pa.Table) -> pl.DataFrame:
    """The markets table's columns, in order and type; columns a source lacks are null (unknown)."""
    columns = {field.name: table[field.name].cast(field.type) if field.name in table.column_names
               else pa.nulls(table.num_rows, field.type) for field in MARKETS.arrow_schema}
    return pl.from_arrow(pa.table(columns, schema=MARKETS.arrow_schema))


def _empty_clean(stream_name: str) -> pl.DataFrame:
    if stream_name not in _EMPTY:
        _EMPTY[stream_name] = pl.DataFrame(schema=PARTITIONED_STREAMS[stream_name].lake_schema)
    return _EMPTY[stream_name]


_EMPTY: dict[str, pl.DataFrame] = {}


def _latest_time(arrival: Arrival) -> int:
    times = [int(arrival_times_of(name, table).max()) for name, table in arrival.rows.items() if table.num_rows]
    return max(times) if times else np.iinfo(np.int64).min
