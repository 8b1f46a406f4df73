"""Raw-stage checks of DESIGN.md section 8: each bad row leaves with a reason, nothing is dropped, nothing
a recorder can write crashes a partition.

Every function returns (clean, quarantined); `quarantined` has the input columns plus `reason`.
The first failing rule names the reason, in the order the rules are listed. Frames arrive with the column
`earlier_copy` (the extract's answer to "did an earlier day already hold this row's identity?"), which
the checks consume.
"""

from __future__ import annotations

import json
import math
import re

import polars as pl

from core.exchange import MAX_PRICE_CENTS, MIN_PRICE_CENTS, PAYOUT_CENTS, is_valid_price

REASONS = (
    "null_ticker", "null_field", "invalid_timestamp", "unknown_side", "unknown_action", "unknown_taker_side",
    "price_out_of_range", "price_sum_not_100", "negative_size", "size_out_of_range", "non_positive_count",
    "malformed_book", "negative_sequence", "duplicate_sequence", "duplicate_trade", "unknown_result",
    "close_before_open",
)
EARLIER_COPY = "earlier_copy"
# The largest size of a level or a trade, in contracts. Sizes are summed (depth over 2 x 99 levels, trade flow
# over a day's prints), so the bound leaves room: 2 x 99 levels of 10^12 sum to 2e14, well inside int64 and
# exact in float64 (2^53 = 9e15). A real level holds thousands of contracts.
MAX_SIZE = 10**12
_PRICE_KEY = re.compile(r"[1-9][0-9]?")   # plain ASCII 1..99: no sign, space, leading zero, underscore
_INTEGER_KEY = re.compile(r"-?(0|[1-9][0-9]*)")  # a canonical integer, but out of range
_BOOK_LIST = pl.List(pl.Int64)


def _split(frame: pl.DataFrame, rules: list[tuple[str, pl.Expr]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    reason = pl.lit(None, dtype=pl.String)
    for name, failed in reversed(rules):
        reason = pl.when(failed.fill_null(True)).then(pl.lit(name)).otherwise(reason)
    tagged = frame.with_columns(reason.alias("reason"))
    if EARLIER_COPY in tagged.columns:
        tagged = tagged.drop(EARLIER_COPY)
    clean = tagged.filter(pl.col("reason").is_null()).drop("reason")
    bad = tagged.filter(pl.col("reason").is_not_null())
    return clean, bad


def _null_ticker(column: str = "market_ticker") -> pl.Expr:
    return pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")


def _nulls(*columns: str) -> pl.Expr:
    return pl.any_horizontal([pl.col(c).is_null() for c in columns])


def _price_out_of_range(column: str) -> pl.Expr:
    return ~pl.col(column).is_between(MIN_PRICE_CENTS, MAX_PRICE_CENTS)


def _earlier_copy() -> pl.Expr:
    return pl.col(EARLIER_COPY).fill_null(False)


def _with_earlier_copy(frame: pl.DataFrame) -> pl.DataFrame:
    """Frames not read by the extract (tests, loaders) have no earlier days to repeat."""
    return frame if EARLIER_COPY in frame.columns else frame.with_columns(pl.lit(False).alias(EARLIER_COPY))


def _repeated(*keys: str) -> pl.Expr:
    """A row whose keys equal the previous row's (rows arrive sorted so that copies are adjacent and the
    first copy comes first); the first copy keeps its place."""
    return pl.all_horizontal([pl.col(k).eq_missing(pl.col(k).shift(1)) & pl.col(k).is_not_null() for k in keys]
                             ).fill_null(False)


def _duplicate_sequence() -> pl.Expr:
    return _repeated("session_id", "market_ticker", "sequence_number") | _earlier_copy()


def _negative_sequence() -> pl.Expr:
    """Sequences count up from 0 within a session (the recorder's DDL forbids negatives): a negative one would
    sort before the session's snapshot and break the replay of every later event."""
    return pl.col("sequence_number") < 0


def check_deltas(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    return _split(_with_earlier_copy(frame), [
        ("null_ticker", _null_ticker()),
        ("null_field", _nulls("session_id", "timestamp_ms", "sequence_number", "new_size")),
        ("unknown_side", ~pl.col("side").is_in(["yes", "no"])),
        ("unknown_action", ~pl.col("action").is_in(["add", "remove", "update"])),
        ("price_out_of_range", _price_out_of_range("price")),
        ("negative_size", (pl.col("new_size") < 0) | (pl.col("old_size").fill_null(0) < 0)),
        ("size_out_of_range", (pl.col("new_size") > MAX_SIZE) | (pl.col("old_size").fill_null(0) > MAX_SIZE)),
        ("negative_sequence", _negative_sequence()),
        ("duplicate_sequence", _duplicate_sequence()),
    ])


def delta_reason(market_ticker, session_id, timestamp_ms, sequence_number, side, action, price, old_size,
                 new_size) -> str | None:
    """`check_deltas`'s verdict on one row, without a DataFrame (the live path's lane for single events; a
    test holds the two to the same answer on random malformed rows). Duplicates need the neighbouring
    rows: the caller sends arrivals with a repeated key through `check_deltas`."""
    if market_ticker is None or market_ticker.strip() == "":
        return "null_ticker"
    if session_id is None or timestamp_ms is None or sequence_number is None or new_size is None:
        return "null_field"
    if side not in ("yes", "no"):
        return "unknown_side"
    if action not in ("add", "remove", "update"):
        return "unknown_action"
    if price is None or not is_valid_price(price):
        return "price_out_of_range"
    if new_size < 0 or (old_size or 0) < 0:
        return "negative_size"
    if new_size > MAX_SIZE or (old_size or 0) > MAX_SIZE:
        return "size_out_of_range"
    if sequence_number < 0:
        return "negative_sequence"
    return None


def trade_reason(market_ticker, ts, yes_price, no_price, count, taker_side) -> str | None:
    """`check_trades`'s verdict on one row without a DataFrame, except for repeated trade ids (the caller
    keeps the ids it has seen)."""
    if market_ticker is None or market_ticker.strip() == "":
        return "null_ticker"
    if ts is None or yes_price is None or no_price is None or count is None:
        return "null_field"
    if taker_side not in ("yes", "no"):
        return "unknown_taker_side"
    if not is_valid_price(yes_price) or not is_valid_price(no_price):
        return "price_out_of_range"
    if yes_price + no_price != PAYOUT_CENTS:
        return "price_sum_not_100"
    if count <= 0:
        return "non_positive_count"
    if count > MAX_SIZE:
        return "size_out_of_range"
    return None


def check_trades(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Trades arrive sorted by (market, ts, id); a repeated non-null trade_id is a copy wherever it is."""
    first_of_id = pl.int_range(pl.len()).over("trade_id") == 0
    repeated_id = (pl.col("trade_id").is_not_null() & ~first_of_id) | _earlier_copy()
    return _split(_with_earlier_copy(frame), [
        ("null_ticker", _null_ticker()),
        ("null_field", _nulls("ts", "yes_price", "no_price", "count")),
        ("unknown_taker_side", ~pl.col("taker_side").is_in(["yes", "no"])),
        ("price_out_of_range", _price_out_of_range("yes_price") | _price_out_of_range("no_price")),
        ("price_sum_not_100", (pl.col("yes_price") + pl.col("no_price")) != PAYOUT_CENTS),
        ("non_positive_count", pl.col("count") <= 0),
        ("size_out_of_range", pl.col("count") > MAX_SIZE),
        ("duplicate_trade", repeated_id),
    ])


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _DuplicateKey()
    return dict(pairs)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a size")


def parse_book(text: str | None) -> tuple[list[int], list[int], str | None]:
    """A snapshot's `{"price_cents": size}` map as (prices, sizes) sorted by price, or the reason it is bad.

    Price keys are plain ASCII integers 1..99 (`"050"`, `" 50 "`, `"5_0"` or other digits are malformed, as
    a key written twice is); sizes are whole numbers in 0..MAX_SIZE."""
    if text is None:
        return [], [], "null_field"
    try:
        book = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return [], [], "malformed_book"
    if not isinstance(book, dict):
        return [], [], "malformed_book"
    levels = []
    for key, size in book.items():
        if not _PRICE_KEY.fullmatch(key):
            return [], [], "price_out_of_range" if _INTEGER_KEY.fullmatch(key) else "malformed_book"
        if isinstance(size, bool) or not isinstance(size, (int, float)):
            return [], [], "malformed_book"
        if isinstance(size, float):
            if math.isinf(size):
                return [], [], "size_out_of_range"
            if not size.is_integer():
                return [], [], "malformed_book"
        if size < 0:
            return [], [], "negative_size"
        if size > MAX_SIZE:
            return [], [], "size_out_of_range"
        levels.append((int(key), int(size)))
    levels.sort()
    return [p for p, _ in levels], [s for _, s in levels], None


def check_snapshots(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse both bid maps into typed lists; ask maps are never read (DESIGN.md section 1)."""
    parsed: dict[str, list] = {k: [] for k in ("yes_bid_prices", "yes_bid_sizes", "no_bid_prices", "no_bid_sizes")}
    book_reason = []
    for yes_text, no_text in zip(frame["yes_bids"].to_list(), frame["no_bids"].to_list()):
        yes_prices, yes_sizes, yes_reason = parse_book(yes_text)
        no_prices, no_sizes, no_reason = parse_book(no_text)
        reason = yes_reason or no_reason
        if reason is not None:  # a bad row's levels are not kept (they may not even fit the column type)
            yes_prices = yes_sizes = no_prices = no_sizes = []
        parsed["yes_bid_prices"].append(yes_prices)
        parsed["yes_bid_sizes"].append(yes_sizes)
        parsed["no_bid_prices"].append(no_prices)
        parsed["no_bid_sizes"].append(no_sizes)
        book_reason.append(reason)
    frame = _with_earlier_copy(frame).with_columns(
        *[pl.Series(name, values, dtype=_BOOK_LIST) for name, values in parsed.items()],
        pl.Series("_book_reason", book_reason, dtype=pl.String),
    )
    book_rules = [(reason, pl.col("_book_reason").eq_missing(reason))
                  for reason in ("malformed_book", "price_out_of_range", "negative_size", "size_out_of_range",
                                 "null_field")]
    clean, bad = _split(frame, [
        ("null_ticker", _null_ticker()),
        ("null_field", _nulls("session_id", "timestamp_ms", "sequence_number")),
        *book_rules,
        ("negative_sequence", _negative_sequence()),
        ("duplicate_sequence", _duplicate_sequence()),
    ])
    clean = clean.drop("_book_reason", "yes_bids", "no_bids")
    bad = bad.drop("_book_reason", *parsed.keys())
    return clean, bad


INFINITE_TIME = "infinite_time"


def check_markets(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Market rows; a frame read by the extract carries `infinite_time` (a time of the row was PostgreSQL's
    'infinity' or '-infinity', which no timestamp column of the lake can hold; the extract reads it as null)."""
    infinite = pl.col(INFINITE_TIME).fill_null(False) if INFINITE_TIME in frame.columns else pl.lit(False)
    clean, bad = _split(frame, [
        ("null_ticker", _null_ticker("ticker")),
        ("invalid_timestamp", infinite),
        ("unknown_result", (pl.col("result").is_not_null() & ~pl.col("result").is_in(["yes", "no"])).fill_null(False)),
        ("close_before_open", (pl.col("close_ts") < pl.col("open_ts")).fill_null(False)),
    ])
    return clean.drop(INFINITE_TIME, strict=False), bad.drop(INFINITE_TIME, strict=False)
