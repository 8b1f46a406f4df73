"""Book replay: the book after every event, per (session, market), in one compiled pass.

Input is one merged event stream (snapshots and deltas of every market), sorted by
(market, session, sequence). A snapshot resets the book to its bid maps; a delta sets one level to
`new_size`. A sequence gap, or a delta before any snapshot of its session, leaves the book invalid
until the next snapshot; such events are counted. YES ask = 100 - best NO bid (only bids are
authoritative). The kernel keeps two dense `int64[100]` ladders, tracks the best level
incrementally (rescanning down only when the best level empties) and scans at most five non-empty
levels for top-5 depth: about 30 ns an event (see ../shared/notes/anchors_perf.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import polars as pl

from core.ladder import best_after_update, best_price, top_depth

KIND_SNAPSHOT, KIND_DELTA = 0, 1
SIDE_YES, SIDE_NO = 0, 1


@dataclass
class ReplayCounts:
    events: int = 0
    snapshots: int = 0
    sequence_gaps: int = 0
    deltas_before_snapshot: int = 0
    invalid_events: int = 0
    crossed_events: int = 0
    out_of_order_timestamps: int = 0


@numba.njit(cache=True)
def replay_kernel(group_id, kind, sequence, side, price, new_size, level_offset, level_count,
                  level_side, level_price, level_size):
    """Arrays of one sorted event stream in; per-event book state out.

    Returns best_yes_bid, best_no_bid (0 = side empty), contracts at each of those two levels,
    yes_depth5, no_depth5, book_valid, sequence_gap (this event found a gap), delta_before_snapshot.
    """
    n = kind.shape[0]
    best_yes_bid = np.zeros(n, np.int16)
    best_no_bid = np.zeros(n, np.int16)
    best_yes_size = np.zeros(n, np.int64)
    best_no_size = np.zeros(n, np.int64)
    yes_depth5 = np.zeros(n, np.int64)
    no_depth5 = np.zeros(n, np.int64)
    book_valid = np.zeros(n, np.bool_)
    sequence_gap = np.zeros(n, np.bool_)
    before_snapshot = np.zeros(n, np.bool_)
    yes = np.zeros(100, np.int64)
    no = np.zeros(100, np.int64)
    best_yes = 0
    best_no = 0
    valid = False
    seen_snapshot = False
    current_group = -1
    last_seq = 0
    for i in range(n):
        if group_id[i] != current_group:
            current_group = group_id[i]
            yes[:] = 0
            no[:] = 0
            best_yes = 0
            best_no = 0
            valid = False
            seen_snapshot = False
            last_seq = sequence[i] - 1
        if kind[i] == KIND_SNAPSHOT:
            yes[:] = 0
            no[:] = 0
            start = level_offset[i]
            for j in range(start, start + level_count[i]):
                if level_side[j] == SIDE_YES:
                    yes[level_price[j]] = level_size[j]
                else:
                    no[level_price[j]] = level_size[j]
            best_yes = best_price(yes)
            best_no = best_price(no)
            valid = True
            seen_snapshot = True
        else:
            if sequence[i] != last_seq + 1:
                sequence_gap[i] = True
                valid = False
            if not seen_snapshot:
                before_snapshot[i] = True
            p = price[i]
            size = new_size[i]
            if side[i] == SIDE_YES:
                yes[p] = size
                best_yes = best_after_update(yes, best_yes, p, size)
            else:
                no[p] = size
                best_no = best_after_update(no, best_no, p, size)
        last_seq = sequence[i]
        best_yes_bid[i] = best_yes
        best_no_bid[i] = best_no
        best_yes_size[i] = yes[best_yes] if best_yes > 0 else 0
        best_no_size[i] = no[best_no] if best_no > 0 else 0
        yes_depth5[i] = top_depth(yes, best_yes) if best_yes > 0 else 0
        no_depth5[i] = top_depth(no, best_no) if best_no > 0 else 0
        book_valid[i] = valid
    return (best_yes_bid, best_no_bid, best_yes_size, best_no_size, yes_depth5, no_depth5, book_valid, sequence_gap,
            before_snapshot)


def merge_book_events(snapshots: pl.DataFrame, deltas: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One event stream sorted by (market, session, sequence), plus the flattened snapshot levels.

    `snapshots` has the raw lake columns (bid maps as `*_bid_prices` / `*_bid_sizes` lists).
    Returns (events, levels); events.level_offset points into levels for snapshot rows.
    """
    snaps = snapshots.with_row_index("snapshot_row").select(
        "snapshot_row", "id", "session_id", "market_ticker", "timestamp_ms", "sequence_number",
        pl.col("yes_bid_prices").list.len().cast(pl.Int64).alias("yes_levels"),
        pl.col("no_bid_prices").list.len().cast(pl.Int64).alias("no_levels"),
    )
    levels = pl.concat([
        snapshots.with_row_index("snapshot_row").select(
            "snapshot_row", pl.lit(SIDE_YES, pl.Int8).alias("side"),
            pl.col("yes_bid_prices").alias("price"), pl.col("yes_bid_sizes").alias("size")),
        snapshots.with_row_index("snapshot_row").select(
            "snapshot_row", pl.lit(SIDE_NO, pl.Int8).alias("side"),
            pl.col("no_bid_prices").alias("price"), pl.col("no_bid_sizes").alias("size")),
    ]).explode("price", "size").drop_nulls("price").sort("snapshot_row", "side", "price")
    offsets = levels.with_row_index("level_row").group_by("snapshot_row").agg(
        pl.col("level_row").min().alias("level_offset"), pl.len().alias("level_count"))
    snap_events = snaps.join(offsets, on="snapshot_row", how="left").select(
        "id", "session_id", "market_ticker", "timestamp_ms", "sequence_number",
        pl.lit(KIND_SNAPSHOT, pl.Int8).alias("kind"), pl.lit(-1, pl.Int8).alias("side"),
        pl.lit(0, pl.Int64).alias("price"), pl.lit(0, pl.Int64).alias("new_size"),
        pl.col("level_offset").fill_null(0).cast(pl.Int64), pl.col("level_count").fill_null(0).cast(pl.Int64),
    )
    delta_events = deltas.select(
        "id", "session_id", "market_ticker", "timestamp_ms", "sequence_number",
        pl.lit(KIND_DELTA, pl.Int8).alias("kind"),
        pl.when(pl.col("side") == "yes").then(SIDE_YES).otherwise(SIDE_NO).cast(pl.Int8).alias("side"),
        pl.col("price").cast(pl.Int64), pl.col("new_size").cast(pl.Int64),
        pl.lit(0, pl.Int64).alias("level_offset"), pl.lit(0, pl.Int64).alias("level_count"),
    )
    events = pl.concat([snap_events, delta_events]).sort(
        "market_ticker", "session_id", "sequence_number", "kind", "id")
    return events, levels.select("side", pl.col("price").cast(pl.Int64), pl.col("size").cast(pl.Int64))


def replay(events: pl.DataFrame, levels: pl.DataFrame) -> tuple[pl.DataFrame, ReplayCounts]:
    """Run the kernel over a merged stream; return it with the book columns and the fault counts."""
    group = events.select(
        (pl.col("market_ticker").rle_id() * 1_000_003 + pl.col("session_id").rle_id()).rle_id().alias("g")
    )["g"].to_numpy()
    outputs = replay_kernel(
        group.astype(np.int64), events["kind"].to_numpy(), events["sequence_number"].to_numpy(),
        events["side"].to_numpy(), events["price"].to_numpy(), events["new_size"].to_numpy(),
        events["level_offset"].to_numpy(), events["level_count"].to_numpy(),
        levels["side"].to_numpy(), levels["price"].to_numpy(), levels["size"].to_numpy(),
    )
    names = ("best_yes_bid_cents", "best_no_bid_cents", "best_yes_bid_size", "best_no_bid_size", "yes_depth5",
             "no_depth5", "book_valid", "sequence_gap", "delta_before_snapshot")
    book = events.with_columns(pl.Series(name, values) for name, values in zip(names, outputs))
    crossed = book.filter(
        (pl.col("best_yes_bid_cents") > 0) & (pl.col("best_no_bid_cents") > 0)
        & (pl.col("best_yes_bid_cents") + pl.col("best_no_bid_cents") >= 100)).height
    counts = ReplayCounts(
        events=book.height,
        snapshots=int((book["kind"] == KIND_SNAPSHOT).sum()),
        sequence_gaps=int(book["sequence_gap"].sum()),
        deltas_before_snapshot=int(book["delta_before_snapshot"].sum()),
        invalid_events=int((~book["book_valid"]).sum()),
        crossed_events=crossed,
    )
    return book, counts
