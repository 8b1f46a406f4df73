"""Ground truth a recording carries about itself: the recorder's own top of book after every event."""

from __future__ import annotations

import csv
from pathlib import Path

from source.recordings import cents_from_dollars


def recorded_top_of_book(path: Path) -> list[tuple[int, int]]:
    """(best YES bid, best YES ask) in cents after every book/delta event, as the recorder wrote them."""
    tops = []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    i = 0
    while i < len(rows):
        row = rows[i]
        if row["event_type"] == "book":
            tops.append((cents_from_dollars(row["best_bid"]), cents_from_dollars(row["best_ask"])))
            i += 2
            continue
        if row["event_type"] == "price_change":
            tops.append((cents_from_dollars(row["best_bid"]), cents_from_dollars(row["best_ask"])))
        i += 1
    return tops
