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
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from features.events import FeatureBuilder
from features.resolution import resolution_history
from features.schema import MODEL_FEATURES
from ingest.extract import check_rows
from ingest.quarantine import check_markets
from ingest.streams import MARKETS
from live.decisions import PaperPositions, action_names, decide, invalid_reason
from live.sources import Arrival
from training.serving import PolicyLoadError, PolicyServer

IDENTITY = ("market_ticker", "session_id", "sequence_number", "timestamp_ms")
_VALIDITY = ("book_valid", "sequence_gap", "delta_before_snapshot", "crossed", "yes_side_empty", "no_side_empty")
DECISION_SCHEMA = pa.schema([
    ("market_ticker", pa.string()), ("session_id", pa.int64()), ("sequence_number", pa.int64()),
    ("timestamp_ms", pa.int64()), ("action", pa.string()), ("model_version", pa.string()),
    ("refused_reason", pa.string()), ("batch_markets", pa.int64()), ("arrival_events", pa.int64()),
    ("latency_us", pa.float64()),
])
FEATURE_SCHEMA = pa.schema([("market_ticker", pa.string()), ("session_id", pa.int64()), ("sequence_number", pa.int64()),
                            ("timestamp_ms", pa.int64()), *[(name, pa.float64()) for name in MODEL_FEATURES]])


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
    """DIR/features.parquet and DIR/decisions.parquet, written a row group per arrival batch into partial
    files that are renamed into place when the run ends (also when it is interrupted)."""

    def __init__(self, folder: Path, flush_rows: int = 65_536):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.flush_rows = folder, flush_rows
        self._writers = {name: pq.ParquetWriter(folder / f".{name}.parquet.partial", schema)
                         for name, schema in (("features", FEATURE_SCHEMA), ("decisions", DECISION_SCHEMA))}
        self._pending: dict[str, list[pa.Table]] = {"features": [], "decisions": []}

    def add(self, name: str, table: pa.Table) -> None:
        self._pending[name].append(table)
        if sum(t.num_rows for t in self._pending[name]) >= self.flush_rows:
            self._flush(name)

    def _flush(self, name: str) -> None:
        if self._pending[name]:
            self._writers[name].write_table(pa.concat_tables(self._pending[name]))
            self._pending[name] = []

    def close(self) -> None:
        for name, writer in self._writers.items():
            self._flush(name)
            writer.close()
            (self.folder / f".{name}.parquet.partial").replace(self.folder / f"{name}.parquet")


class LiveFeatures:
    """The offline feature code, fed arrival by arrival: rows checked as the ingest checks them, markets and
    settlements updated as they change, engine state carried."""

    def __init__(self):
        self.builder: FeatureBuilder | None = None
        self.trades = pl.DataFrame(schema={"market_ticker": pl.String, "ts": pl.Int64, "id": pl.Int64,
                                           "yes_price": pl.Int64})
        self.markets = pl.DataFrame(schema={c.name: pl.from_arrow(pa.array([], c.source_type)).dtype
                                            for c in MARKETS.columns})
        self.quarantined = 0

    def update(self, arrival: Arrival) -> pl.DataFrame:
        clean = {}
        for name, table in arrival.rows.items():
            clean[name], bad = check_rows(name, table)
            self.quarantined += bad.height
        if clean["trades"].height:
            self.trades = pl.concat([self.trades, clean["trades"].select(self.trades.columns)])
        if arrival.markets is not None:
            conformed = pl.from_arrow(arrival.markets.select(MARKETS.column_names).cast(MARKETS.arrow_schema))
            self.markets, bad = check_markets(conformed.sort("ticker", nulls_last=False))
            self.quarantined += bad.height
            history = resolution_history(self.markets, self.trades.lazy())
            if self.builder is None:
                self.builder = FeatureBuilder(self.markets, history)
            else:
                self.builder.update_markets(self.markets, history)
        if self.builder is None:
            self.builder = FeatureBuilder(self.markets, resolution_history(self.markets, self.trades.lazy()))
        return self.builder.batch(clean["snapshots"], clean["deltas"], clean["trades"])


def _latest_per_market(rows: pl.DataFrame) -> pl.DataFrame:
    """The last row of each market in this arrival (rows come in record order: by market, then sequence)."""
    return rows.group_by("market_ticker", maintain_order=True).agg(pl.all().last(), pl.len().alias("_events"))


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
    rows = features.update(arrival)
    report.events += arrival.events
    report.book_events += rows.height
    if not rows.height:
        return
    latest = _latest_per_market(rows)
    tickers = latest["market_ticker"].to_list()
    for ticker, events in zip(tickers, latest["_events"].to_list()):
        positions.events[ticker] = positions.events.get(ticker, 0) + events
    reasons = [invalid_reason(*flags) for flags in latest.select(_VALIDITY).iter_rows()]
    valid = np.array([r is None for r in reasons])
    actions = np.full(len(tickers), -1, np.int64)
    model, version = server.current()
    if valid.any():
        bid = latest["best_yes_bid_cents"].to_numpy()[valid]
        ask = latest["best_yes_ask_cents"].to_numpy()[valid]
        chosen = [t for t, ok in zip(tickers, valid) if ok]
        batch = decide(model, version, latest.select(MODEL_FEATURES).to_numpy()[valid],
                       positions.features(chosen, bid, ask))
        actions[valid] = batch.actions
        for ticker, action, b, a in zip(chosen, batch.actions, bid, ask):
            positions.fill(ticker, int(action), int(b), int(a))
    latency_us = (time.perf_counter() - arrived) * 1e6
    if not report.versions or report.versions[-1] != version:
        report.versions.append(version)
    report.decisions += int(valid.sum())
    report.refused_books += int((~valid).sum())
    if output is not None:
        output.add("features", rows.select(*IDENTITY, *MODEL_FEATURES).to_arrow().cast(FEATURE_SCHEMA))
        names = action_names(actions[valid])
        action_column = [None] * len(tickers)
        for k, name in zip(np.flatnonzero(valid), names):
            action_column[k] = name
        output.add("decisions", pa.table({
            "market_ticker": tickers, "session_id": latest["session_id"].to_numpy(),
            "sequence_number": latest["sequence_number"].to_numpy(), "timestamp_ms": latest["timestamp_ms"].to_numpy(),
            "action": action_column, "model_version": [version if ok else None for ok in valid],
            "refused_reason": reasons, "batch_markets": np.full(len(tickers), int(valid.sum())),
            "arrival_events": np.full(len(tickers), arrival.events),
            "latency_us": np.full(len(tickers), latency_us)}, schema=DECISION_SCHEMA))
