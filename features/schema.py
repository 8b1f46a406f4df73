"""The feature store's columns, documented once: the data dictionary, GE checks and tests read this.

Bump EVENTS_SCHEMA_VERSION when a column's meaning changes; it is written into every events file's
parquet metadata and the manifest of each trained model.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.exchange import MAX_PRICE_CENTS, NO_BID
from core.markets import CATEGORIES

# 2.0.0: trades count from the time they were received (live, a trade cannot be used earlier); new
# columns ob_top_imbalance, ob_mid_change_1m, tf_taker_run.
EVENTS_SCHEMA_VERSION = "2.0.0"


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    group: str            # identity, book, orderbook, temporal, trade_flow, metadata, resolution
    doc: str
    low: float | None = None    # inclusive value range, checked by the data-quality suite
    high: float | None = None


_IDENTITY = [
    Column("market_ticker", "str", "identity", "Kalshi market ticker (never a model input)."),
    Column("session_id", "i64", "identity", "Recording session; sequences restart per session."),
    Column("sequence_number", "i64", "identity", "Sequence number within (session, market)."),
    Column("event_id", "i64", "identity", "Source row id of the snapshot or delta."),
    Column("event_kind", "str", "identity", "'snapshot' or 'delta'."),
    Column("timestamp_ms", "i64", "identity", "Receive time of the event, epoch ms (as recorded)."),
    Column("event_time_ms", "i64", "identity",
           "Running maximum of timestamp_ms within the market: the time every window feature uses, "
           "monotone even when recorded timestamps step back."),
]
_BOOK = [
    Column("best_yes_bid_cents", "i16", "book", "Best YES bid; 0 when the YES side is empty.", NO_BID, MAX_PRICE_CENTS),
    Column("best_yes_ask_cents", "i16", "book", "100 - best NO bid; 100 when the NO side is empty.", 1, 100),
    Column("best_no_bid_cents", "i16", "book", "Best NO bid; 0 when the NO side is empty.", NO_BID, MAX_PRICE_CENTS),
    Column("best_no_ask_cents", "i16", "book", "100 - best YES bid; 100 when the YES side is empty.", 1, 100),
    Column("best_yes_bid_size", "i64", "book", "Contracts at the best YES bid (what a YES seller can hit); 0 if empty.",
           0, None),
    Column("best_no_bid_size", "i64", "book",
           "Contracts at the best NO bid = at the best YES ask (what a YES buyer can lift); 0 if empty.", 0, None),
    Column("yes_depth5", "i64", "book", "Contracts on the best five non-empty YES bid levels.", 0, None),
    Column("no_depth5", "i64", "book", "Contracts on the best five non-empty NO bid levels (= YES ask depth).", 0, None),
    Column("book_valid", "bool", "book",
           "False from a sequence gap or a delta before any snapshot of its session until the next snapshot."),
    Column("yes_side_empty", "bool", "book", "No YES bids: YES-bid features use the default 0."),
    Column("no_side_empty", "bool", "book", "No NO bids: YES ask defaults to 100."),
    Column("crossed", "bool", "book", "Best YES bid >= best YES ask (both sides present)."),
    Column("sequence_gap", "bool", "book", "This event followed a missing sequence number."),
    Column("timestamp_out_of_order", "bool", "book", "timestamp_ms is earlier than an earlier event's of the market."),
]
_ORDERBOOK = [
    Column("ob_yes_mid_prob", "f64", "orderbook", "(best YES bid + best YES ask) / 200.", 0.0, 1.0),
    Column("ob_no_mid_prob", "f64", "orderbook", "(best NO bid + best NO ask) / 200 (= 1 - YES mid).", 0.0, 1.0),
    Column("ob_mid_deviation", "f64", "orderbook", "|YES mid - 0.5| * 2: 0 at a coin flip, 1 at certainty.", 0.0, 1.0),
    Column("ob_yes_spread_prob", "f64", "orderbook", "(YES ask - YES bid) / 100; negative when crossed.", -1.0, 1.0),
    Column("ob_yes_relative_spread", "f64", "orderbook", "YES spread / YES mid (both in cents).", -200.0, 200.0),
    Column("ob_no_relative_spread", "f64", "orderbook", "NO spread / NO mid (both in cents).", -200.0, 200.0),
    Column("ob_yes_depth_imbalance", "f64", "orderbook",
           "(YES bid depth5 - YES ask depth5) / sum; YES ask depth = NO bid depth; 0 on an empty book.", -1.0, 1.0),
    Column("ob_no_depth_imbalance", "f64", "orderbook", "The same for the NO book (= -YES imbalance).", -1.0, 1.0),
    Column("ob_distance_from_certainty", "f64", "orderbook", "min(YES mid, 1 - YES mid).", 0.0, 0.5),
    Column("ob_yes_no_inconsistency", "f64", "orderbook",
           "(best YES bid + best NO bid - 100) / 100: minus the spread normally, >= 0 when YES+NO < 1 (crossed).",
           -1.0, 1.0),
    Column("ob_log_depth5", "f64", "orderbook", "log1p(YES depth5 + NO depth5) / log1p(1e6), capped at 1.", 0.0, 1.0),
    Column("ob_traded_volume_norm", "f64", "orderbook",
           "log1p(contracts traded in the trailing 5 min) / log1p(1e4), capped at 1.", 0.0, 1.0),
    Column("ob_top_imbalance", "f64", "orderbook",
           "(contracts at the best YES bid - at the best YES ask) / their sum: the queues at the touch; 0 if both empty.",
           -1.0, 1.0),
    Column("ob_mid_change_1m", "f64", "orderbook",
           "YES mid now - YES mid at the oldest event of the trailing 60 s (probability; 0 at the first).", -1.0, 1.0),
]
_TEMPORAL = [
    Column("tm_log_seconds_since_prev", "f64", "temporal",
           "log1p(seconds since the market's previous event); 0 for its first event.", 0.0, None),
    Column("tm_events_10s_rate", "f64", "temporal", "Events in the trailing 10 s (row-exact) / 10, per second.", 0.0, None),
    Column("tm_events_1m_rate", "f64", "temporal", "Events in the trailing 60 s / 60.", 0.0, None),
    Column("tm_events_5m_rate", "f64", "temporal", "Events in the trailing 300 s / 300.", 0.0, None),
    Column("tm_burst", "f64", "temporal", "1 if the gap to the previous event is < 100 ms.", 0.0, 1.0),
    Column("tm_active", "f64", "temporal", "1 if the gap is < 5 s.", 0.0, 1.0),
    Column("tm_quiet", "f64", "temporal", "1 if the gap is > 30 s (first event of a market counts as quiet).", 0.0, 1.0),
    Column("tm_activity_acceleration", "f64", "temporal",
           "tanh(log1p(mean gap of the 10 gaps before the last 10) - log1p(mean of the last 10)); >0 speeding up.",
           -1.0, 1.0),
    Column("tm_log_hours_to_close", "f64", "temporal", "log1p(hours to the market's close, >= 0); 0 if unknown.", 0.0, None),
    Column("tm_final_hour", "f64", "temporal", "1 within the last hour before close.", 0.0, 1.0),
    Column("tm_final_6h", "f64", "temporal", "1 within the last 6 hours before close.", 0.0, 1.0),
    Column("tm_final_day", "f64", "temporal", "1 within the last 24 hours before close.", 0.0, 1.0),
    Column("tm_hour_sin", "f64", "temporal", "sin(2 pi hour_of_day / 24), UTC.", -1.0, 1.0),
    Column("tm_hour_cos", "f64", "temporal", "cos(2 pi hour_of_day / 24).", -1.0, 1.0),
    Column("tm_dow_sin", "f64", "temporal", "sin(2 pi day_of_week / 7), Monday = 0.", -1.0, 1.0),
    Column("tm_dow_cos", "f64", "temporal", "cos(2 pi day_of_week / 7).", -1.0, 1.0),
]
_TRADE_FLOW = [
    Column("tf_net_flow_1m", "f64", "trade_flow",
           "(YES-taker - NO-taker contracts) / all, of trades received in the trailing 60 s; 0 without trades.",
           -1.0, 1.0),
    Column("tf_net_flow_5m", "f64", "trade_flow", "The same over 300 s.", -1.0, 1.0),
    Column("tf_large_trade_share_5m", "f64", "trade_flow",
           "Share of trailing-5-min contracts in trades of >= 100 contracts.", 0.0, 1.0),
    Column("tf_trade_intensity_1m", "f64", "trade_flow", "log1p(trades in the trailing 60 s).", 0.0, None),
    Column("tf_trade_acceleration", "f64", "trade_flow",
           "tanh(log1p(trades per minute, last 1 min) - log1p(trades per minute, last 5 min)).", -1.0, 1.0),
    Column("tf_vwap_divergence_5m", "f64", "trade_flow",
           "(5-min YES VWAP - YES mid) / 100; 0 without trades.", -1.0, 1.0),
    Column("tf_taker_run", "f64", "trade_flow",
           "Signed length of the current run of same-side takers (each trade within 60 s of the one before), "
           "/ 10, capped at +-1; + for YES takers; 0 when the last trade is over 60 s old.", -1.0, 1.0),
]
_METADATA = [
    *[Column(f"md_category_{c}", "f64", "metadata", f"1 if the market's category is {c} (unknown -> other).", 0.0, 1.0)
      for c in CATEGORIES],
    Column("md_lifecycle_position", "f64", "metadata", "(t - open) / (close - open), clipped to [0, 1]; 0.5 if unknown.",
           0.0, 1.0),
    Column("md_volume_used", "f64", "metadata", "log1p(contracts received in the market so far) / log1p(1e6), capped.",
           0.0, 1.0),
]
_RESOLUTION = [
    Column("rs_category_yes_rate", "f64", "resolution",
           "YES share of same-category markets settled before t; 0.5 when none.", 0.0, 1.0),
    Column("rs_category_brier", "f64", "resolution",
           "Mean (last trade price - outcome)^2 of those markets with a trade; 0.25 when none.", 0.0, 1.0),
    Column("rs_category_confidence", "f64", "resolution", "n / (n + 10), n = markets behind the two above.", 0.0, 1.0),
    Column("rs_series_yes_rate", "f64", "resolution", "As rs_category_yes_rate, same series.", 0.0, 1.0),
    Column("rs_series_brier", "f64", "resolution", "As rs_category_brier, same series.", 0.0, 1.0),
    Column("rs_series_confidence", "f64", "resolution", "As rs_category_confidence, same series.", 0.0, 1.0),
]

EVENT_COLUMNS: list[Column] = [*_IDENTITY, *_BOOK, *_ORDERBOOK, *_TEMPORAL, *_TRADE_FLOW, *_METADATA, *_RESOLUTION]
FEATURE_GROUPS = ("orderbook", "temporal", "trade_flow", "metadata", "resolution")
MODEL_FEATURES = [c.name for c in EVENT_COLUMNS if c.group in FEATURE_GROUPS]


def columns_of(group: str) -> list[Column]:
    return [c for c in EVENT_COLUMNS if c.group == group]
