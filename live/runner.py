"""The loop behind `kfs live`: arrivals in, features and decisions out.

For each arrival (the rows that came together, see live.sources): the ingest's row checks, the offline
store's feature code over the new rows with the state carried from earlier arrivals, then one forward pass
of the served model for every market whose book changed, on its latest row. A market whose book is not
known to be valid gets a decision row that says why and no action. The served model is hot-reloaded (the
`production` alias is checked every `reload_every_s`); a version that fails its checks is refused and the
previous one keeps deciding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from live.decisions import PaperPositions, decide
from live.features import FEATURE_SCHEMA, EventRows, LiveFeatures
from live.sources import Arrival
from training.environment.spaces import ACTIONS
from training.release.serving import PolicyLoadError, PolicyServer

IDENTITY = ("market_ticker", "session_id", "sequence_number", "timestamp_ms")
DECISION_SCHEMA = pa.schema([
    ("market_ticker", pa.string()), ("session_id", pa.int64()), ("sequence_number", pa.int64()),
    ("timestamp_ms", pa.int64()), ("action", pa.string()), ("model_version", pa.string()),
    ("refused_reason", pa.string()), ("batch_markets", pa.int64()), ("arrival_events", pa.int64()),
    ("latency_us", pa.float64()),
])
@dataclass
class LiveReport:
    events: int = 0
    book_events: int = 0
    quarantined: int = 0
    decisions: int = 0
    refused_books: int = 0
    arrivals: int = 0
    seconds: float = 0.0
    versions: list[str] = field(default_factory=list)       # every version that decided, in order
    refused_versions: list[str] = field(default_factory=list)  # why a version was not loaded
    interrupted: bool = False

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


class LiveOutput:
    """DIR/features.parquet and DIR/decisions.parquet, written a row group at a time into partial files that
    are renamed into place when the run ends (also when it is interrupted). Rows are buffered as arrays and
    turned into tables only when a row group is written: an arrival costs no table construction."""

    def __init__(self, folder: Path, flush_rows: int = 65_536):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.flush_rows = folder, flush_rows
        self._writers = {name: pq.ParquetWriter(folder / f".{name}.parquet.partial", schema)
                         for name, schema in (("features", FEATURE_SCHEMA), ("decisions", DECISION_SCHEMA))}
        self._features: list[EventRows] = []
        self._decisions: list[dict] = []
        self._buffered = {"features": 0, "decisions": 0}

    def add_features(self, rows: EventRows) -> None:
        self._features.append(rows)
        self._count("features", len(rows))

    def add_decisions(self, columns: dict) -> None:
        self._decisions.append(columns)
        self._count("decisions", len(columns["market_ticker"]))

    def _count(self, name: str, rows: int) -> None:
        self._buffered[name] += rows
        if self._buffered[name] >= self.flush_rows:
            self._flush(name)

    def _flush(self, name: str) -> None:
        if name == "features" and self._features:
            self._writers[name].write_table(EventRows.concat(self._features).feature_table())
            self._features = []
        if name == "decisions" and self._decisions:
            columns = {key: [v for part in self._decisions for v in part[key]] for key in DECISION_SCHEMA.names}
            self._writers[name].write_table(pa.table(columns, schema=DECISION_SCHEMA))
            self._decisions = []
        self._buffered[name] = 0

    def close(self) -> None:
        for name, writer in self._writers.items():
            self._flush(name)
            writer.close()
            (self.folder / f".{name}.parquet.partial").replace(self.folder / f"{name}.parquet")


def run_live(arrivals: Iterator[Arrival], server: PolicyServer, out: Path | None = None,
             reload_every_s: float = 1.0, on_arrival: Callable[[int, LiveReport], None] | None = None,
             progress: Callable[[LiveReport], None] | None = None, progress_every_s: float = 5.0) -> LiveReport:
    """Features and decisions for every arrival until the source ends or the run is interrupted (Ctrl-C or
    SIGTERM end it cleanly: the outputs are closed and renamed into place)."""
    server.refresh()                     # raises PolicyLoadError when there is no model to serve at all
    features, positions, report = LiveFeatures(), PaperPositions(), LiveReport()
    output = LiveOutput(out) if out is not None else None
    started = last_reload = last_progress = time.perf_counter()
    try:
        for arrival in arrivals:
            now = time.perf_counter()
            if now - last_reload >= reload_every_s:
                _reload(server, report)
                last_reload = now
            _process(arrival, features, positions, server, output, report)
            report.arrivals += 1
            if on_arrival is not None:
                on_arrival(report.arrivals, report)
            if progress is not None and time.perf_counter() - last_progress >= progress_every_s:
                report.seconds = time.perf_counter() - started
                progress(report)
                last_progress = time.perf_counter()
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        report.seconds = time.perf_counter() - started
        report.quarantined = features.quarantined
        if output is not None:
            output.close()
    return report


def _reload(server: PolicyServer, report: LiveReport) -> None:
    try:
        server.refresh()
    except PolicyLoadError:
        pass
    if server.last_error and (not report.refused_versions or report.refused_versions[-1] != server.last_error):
        report.refused_versions.append(server.last_error)


def _process(arrival: Arrival, features: LiveFeatures, positions: PaperPositions, server: PolicyServer,
             output: LiveOutput | None, report: LiveReport) -> None:
    arrived = time.perf_counter()
    rows = features.fast_lane(arrival)
    if rows is None:
        rows = features.update(arrival)
    report.events += arrival.events
    report.book_events += len(rows)
    if not len(rows):
        return
    latest, counts = rows.latest_per_market()
    tickers = rows.tickers[latest].tolist()
    for ticker, events in zip(tickers, counts.tolist()):
        positions.events[ticker] = positions.events.get(ticker, 0) + events
    reasons = rows.refusals(latest)
    valid = np.array([r is None for r in reasons])
    actions = np.full(len(tickers), -1, np.int64)
    model, version = server.current()
    if valid.any():
        chosen_rows = latest[valid]
        bid, ask = rows.bid[chosen_rows], rows.ask[chosen_rows]
        chosen = rows.tickers[chosen_rows].tolist()
        batch = decide(model, version, rows.features[chosen_rows], positions.features(chosen, bid, ask))
        actions[valid] = batch.actions
        for ticker, action, b, a, b_size, a_size in zip(chosen, batch.actions.tolist(), bid.tolist(), ask.tolist(),
                                                        rows.bid_size[chosen_rows].tolist(),
                                                        rows.no_bid_size[chosen_rows].tolist()):
            positions.fill(ticker, action, b, a, b_size, a_size)
    latency_us = (time.perf_counter() - arrived) * 1e6
    if not report.versions or report.versions[-1] != version:
        report.versions.append(version)
    report.decisions += int(valid.sum())
    report.refused_books += int((~valid).sum())
    if output is not None:
        output.add_features(rows)
        output.add_decisions({
            "market_ticker": tickers, "session_id": rows.session[latest].tolist(),
            "sequence_number": rows.sequence[latest].tolist(), "timestamp_ms": rows.timestamp[latest].tolist(),
            "action": [ACTIONS[a] if ok else None for a, ok in zip(actions.tolist(), valid.tolist())],
            "model_version": [version if ok else None for ok in valid.tolist()], "refused_reason": reasons,
            "batch_markets": [int(valid.sum())] * len(tickers), "arrival_events": [arrival.events] * len(tickers),
            "latency_us": [latency_us] * len(tickers)})
