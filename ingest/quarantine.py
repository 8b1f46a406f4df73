"""Raw-stage checks of DESIGN.md section 8: each bad row leaves with a reason, nothing is dropped.

Every function returns (clean, quarantined); `quarantined` has the input columns plus `reason`.
The first failing rule names the reason, in the order the rules are listed.
"""

from __future__ import annotations

import json

import polars as pl

REASONS = (
    "null_ticker", "null_field", "unknown_side", "unknown_action", "unknown_taker_side",
    "price_out_of_range", "price_sum_not_100", "negative_size", "non_positive_count",
    "malformed_book", "duplicate_sequence", "unknown_result", "close_before_open",
)

_BOOK_LIST = pl.List(pl.Int64)


def _split(frame: pl.DataFrame, rules: list[tuple[str, pl.Expr]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    reason = pl.lit(None, dtype=pl.String)
    for name, failed in reversed(rules):
        reason = pl.when(failed.fill_null(True)).then(pl.lit(name)).otherwise(reason)
    tagged = frame.with_columns(reason.alias("reason"))
    clean = tagged.filter(pl.col("reason").is_null()).drop("reason")
    bad = tagged.filter(pl.col("reason").is_not_null())
    return clean, bad


def _null_ticker(column: str = "market_ticker") -> pl.Expr:
    return pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")


def _nulls(*columns: str) -> pl.Expr:
    return pl.any_horizontal([pl.col(c).is_null() for c in columns])


def _price_out_of_range(column: str) -> pl.Expr:
    return ~pl.col(column).is_between(1, 99)


def _duplicate_sequence() -> pl.Expr:
    """Rows arrive sorted by (session, market, sequence, id): a row equal to the one before on all three
    keys is a later copy and is quarantined; the first copy keeps its place."""
    keys = ("session_id", "market_ticker", "sequence_number")
    return pl.all_horizontal([pl.col(k).eq_missing(pl.col(k).shift(1)) for k in keys]).fill_null(False)


def check_deltas(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    return _split(frame, [
        ("null_ticker", _null_ticker()),
        ("null_field", _nulls("session_id", "timestamp_ms", "sequence_number", "new_size")),
        ("unknown_side", ~pl.col("side").is_in(["yes", "no"])),
        ("unknown_action", ~pl.col("action").is_in(["add", "remove", "update"])),
        ("price_out_of_range", _price_out_of_range("price")),
        ("negative_size", (pl.col("new_size") < 0) | (pl.col("old_size").fill_null(0) < 0)),
        ("duplicate_sequence", _duplicate_sequence()),
    ])


def check_trades(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    return _split(frame, [
        ("null_ticker", _null_ticker()),
        ("null_field", _nulls("ts", "yes_price", "no_price", "count")),
        ("unknown_taker_side", ~pl.col("taker_side").is_in(["yes", "no"])),
        ("price_out_of_range", _price_out_of_range("yes_price") | _price_out_of_range("no_price")),
        ("price_sum_not_100", (pl.col("yes_price") + pl.col("no_price")) != 100),
        ("non_positive_count", pl.col("count") <= 0),
    ])


def parse_book(text: str | None) -> tuple[list[int], list[int], str | None]:
    """A snapshot's `{"price_cents": size}` map as (prices, sizes) sorted by price, or the reason it is bad."""
    if text is None:
        return [], [], "null_field"
    try:
        book = json.loads(text)
    except ValueError:
        return [], [], "malformed_book"
    if not isinstance(book, dict):
        return [], [], "malformed_book"
    levels = []
    for key, size in book.items():
        try:
            price = int(key)
        except ValueError:
            return [], [], "malformed_book"
        if isinstance(size, bool) or not isinstance(size, (int, float)) or size != int(size):
            return [], [], "malformed_book"
        if not 1 <= price <= 99:
            return [], [], "price_out_of_range"
        if size < 0:
            return [], [], "negative_size"
        levels.append((price, int(size)))
    levels.sort()
    return [p for p, _ in levels], [s for _, s in levels], None


def check_snapshots(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse both bid maps into typed lists; ask maps are never read (DESIGN.md section 1)."""
    parsed: dict[str, list] = {k: [] for k in ("yes_bid_prices", "yes_bid_sizes", "no_bid_prices", "no_bid_sizes")}
    book_reason = []
    for yes_text, no_text in zip(frame["yes_bids"].to_list(), frame["no_bids"].to_list()):
        yes_prices, yes_sizes, yes_reason = parse_book(yes_text)
        no_prices, no_sizes, no_reason = parse_book(no_text)
        parsed["yes_bid_prices"].append(yes_prices)
        parsed["yes_bid_sizes"].append(yes_sizes)
        parsed["no_bid_prices"].append(no_prices)
        parsed["no_bid_sizes"].append(no_sizes)
        book_reason.append(yes_reason or no_reason)
    frame = frame.with_columns(
        *[pl.Series(name, values, dtype=_BOOK_LIST) for name, values in parsed.items()],
        pl.Series("_book_reason", book_reason, dtype=pl.String),
    )
    clean, bad = _split(frame, [
        ("null_ticker", _null_ticker()),
        ("null_field", _nulls("session_id", "timestamp_ms", "sequence_number")),
        ("malformed_book", pl.col("_book_reason").eq_missing("malformed_book")),
        ("price_out_of_range", pl.col("_book_reason").eq_missing("price_out_of_range")),
        ("negative_size", pl.col("_book_reason").eq_missing("negative_size")),
        ("null_field", pl.col("_book_reason").eq_missing("null_field")),
        ("duplicate_sequence", _duplicate_sequence()),
    ])
    clean = clean.drop("_book_reason", "yes_bids", "no_bids")
    bad = bad.drop("_book_reason", *parsed.keys())
    return clean, bad


def check_markets(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    return _split(frame, [
        ("null_ticker", _null_ticker("ticker")),
        ("unknown_result", (pl.col("result").is_not_null() & ~pl.col("result").is_in(["yes", "no"])).fill_null(False)),
        ("close_before_open", (pl.col("close_ts") < pl.col("open_ts")).fill_null(False)),
    ])
