"""Reference book replay, one event at a time, straight from DESIGN.md section 3.

Per (session, market): a snapshot resets the book to its bid maps; a delta sets the level's size to
new_size; best YES bid is the highest YES level with size > 0; best YES ask is 100 - best NO bid.
A delta before any snapshot or after a sequence gap leaves the book invalid until the next snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BookState:
    best_yes_bid: int | None
    best_yes_ask: int | None
    valid: bool
    yes_depth5: int = 0
    no_depth5: int = 0
    best_yes_size: int = 0
    best_no_size: int = 0


def replay_events(events: list[dict]) -> list[BookState]:
    """`events` of one (session, market) in sequence order; each is a snapshot
    (`kind='snapshot'`, `yes_bids`/`no_bids` dicts price->size) or a delta (`side`, `price`, `new_size`)."""
    yes: dict[int, int] = {}
    no: dict[int, int] = {}
    valid = False
    last_seq = None
    states = []
    for event in events:
        seq = event.get("sequence_number")
        if event["kind"] == "snapshot":
            yes = {p: s for p, s in event["yes_bids"].items() if s > 0}
            no = {p: s for p, s in event["no_bids"].items() if s > 0}
            valid = True
        else:
            if last_seq is not None and seq is not None and seq != last_seq + 1:
                valid = False
            book = yes if event["side"] == "yes" else no
            if event["new_size"] > 0:
                book[event["price"]] = event["new_size"]
            else:
                book.pop(event["price"], None)
        last_seq = seq
        best_bid = max(yes) if yes else None
        best_ask = 100 - max(no) if no else None
        yes_depth5 = sum(size for _, size in sorted(yes.items(), reverse=True)[:5])
        no_depth5 = sum(size for _, size in sorted(no.items(), reverse=True)[:5])
        states.append(BookState(best_bid, best_ask, valid, yes_depth5, no_depth5,
                                yes.get(best_bid, 0) if yes else 0, no[max(no)] if no else 0))
    return states
