"""Load real recordings into the source tables.

Formats (detected from the file):
- Kalshi websocket JSONL frames: `orderbook_snapshot`, `orderbook_delta`, `trade`, `market_lifecycle_v2`,
  in the legacy integer-cent fields (`yes`/`no` level arrays, `price`, `delta`, `count`) and the newer
  fixed-point strings (`yes_dollars_fp`, `price_dollars`, `delta_fp`, `yes_price_dollars`, `count_fp`).
  Other frame types (ticker, Polymarket) are counted as skipped.
- SagnikBhadra delta CSVs (`timestamp,event_type,price,side,size,best_bid,best_ask`) and the top-of-book
  snapshot CSV (`timestamp,ticker,best_bid_price,...`); their README documents the quirks handled here.

Sequence numbers are made contiguous per (session, market) in arrival order. Kalshi's `seq` is a
per-subscription counter; when it jumps (frames lost) or restarts, the loader opens a new session, so
deltas after the hole have no snapshot and replay marks the book invalid until the next snapshot.
Deltas carry signed sizes on the wire; like the upstream recorder, the loader keeps each level's size
and stores new_size = max(0, old + delta), counting the clamps.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import psycopg
import pyarrow as pa
from psycopg import sql

from core.exchange import is_valid_price
from core.postgres import table_identifier
from core.settings import SourceTables
from source.ddl import next_session_id

_DELTA_CSV_HEADER = ["timestamp", "event_type", "price", "side", "size", "best_bid", "best_ask"]
_TOP_OF_BOOK_CSV_HEADER = ["timestamp", "ticker", "best_bid_price", "best_bid_size", "best_ask_price",
                           "best_ask_size", "bid_levels", "ask_levels", "spread"]
_SNAPSHOT_COLUMNS = ("session_id", "market_ticker", "timestamp_ms", "sequence_number", "yes_bids", "yes_asks",
                     "no_bids", "no_asks", "total_volume")
_DELTA_COLUMNS = ("session_id", "market_ticker", "timestamp_ms", "sequence_number", "side", "action", "price",
                  "old_size", "new_size")
_TRADE_COLUMNS = ("trade_id", "market_ticker", "yes_price", "no_price", "count", "taker_side", "ts", "received_at")


MAX_CONTRACTS = 2**31 - 1  # the recorder's INTEGER count column


class RecordingFormatError(ValueError):
    pass


@dataclass
class LoadReport:
    path: Path
    format: str
    markets: set[str] = field(default_factory=set)
    snapshots: int = 0
    deltas: int = 0
    trades: int = 0
    lifecycle: int = 0
    sessions: int = 0
    clamped_negative: int = 0
    skipped: Counter = field(default_factory=Counter)


# -- value parsing ------------------------------------------------------------------------------

def cents_from_dollars(text: str | float) -> int:
    """'0.45999999999999996' -> 46: recorded dollar prices carry float artefacts."""
    return int(round(float(text) * 100))


def contracts(value: str | int | float) -> int:
    return int(round(float(value)))


LATEST_MS = 253_402_300_800_000  # 10000-01-01: a time past this is garbage, not a timestamp


def epoch_ms(value, naive_tz: timezone | ZoneInfo = timezone.utc) -> int:
    """Seconds, milliseconds or ISO-8601 (with or without a zone) to epoch milliseconds."""
    if isinstance(value, (int, float)) or (isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?(e\d+)?", value.strip())):
        number = float(value)
        ms = int(round(number * 1000)) if number < 1e11 else int(number)
    else:
        parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=naive_tz)
        ms = int(round(parsed.timestamp() * 1000))
    if not 0 <= ms < LATEST_MS:
        raise ValueError(f"time {value!r} is outside 1970..9999")
    return ms


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _book_json(levels: dict[int, int]) -> str:
    return json.dumps({str(p): s for p, s in sorted(levels.items()) if s > 0})


# -- a recording session being written --------------------------------------------------------

class _Recorder:
    """Book state and sequence numbering of one loaded file, plus the rows it produces."""

    def __init__(self, first_session_id: int, report: LoadReport):
        self.next_session = first_session_id
        self.report = report
        self.session_by_stream: dict[object, int] = {}
        self.seq: Counter = Counter()
        self.books: dict[tuple[int, str], dict[str, dict[int, int]]] = {}
        self.snapshots: list[tuple] = []
        self.deltas: list[tuple] = []
        self.trades: list[tuple] = []
        self.markets: dict[str, dict] = {}

    def session(self, stream_key: object, restart: bool = False) -> int:
        if restart or stream_key not in self.session_by_stream:
            self.session_by_stream[stream_key] = self.next_session
            self.next_session += 1
            self.report.sessions += 1
        return self.session_by_stream[stream_key]

    def _next_seq(self, session: int, ticker: str) -> int:
        self.seq[(session, ticker)] += 1
        return self.seq[(session, ticker)]

    def snapshot(self, session: int, ticker: str, ts_ms: int, yes_bids: dict[int, int], no_bids: dict[int, int]) -> None:
        _require(bool(ticker), "orderbook snapshot without a market_ticker")
        for price, size in (*yes_bids.items(), *no_bids.items()):
            _require(is_valid_price(price), f"book price {price} is outside 1..99 cents")
            _require(0 <= size <= MAX_CONTRACTS, f"book size {size} is negative or too large")
        self.books[(session, ticker)] = {"yes": dict(yes_bids), "no": dict(no_bids)}
        yes_asks = {100 - p: s for p, s in no_bids.items()}
        no_asks = {100 - p: s for p, s in yes_bids.items()}
        self.snapshots.append((session, ticker, ts_ms, self._next_seq(session, ticker), _book_json(yes_bids),
                               _book_json(yes_asks), _book_json(no_bids), _book_json(no_asks), 0))
        self.report.snapshots += 1
        self.report.markets.add(ticker)

    def delta(self, session: int, ticker: str, ts_ms: int, side: str, price: int, signed_delta: int) -> None:
        _require(bool(ticker), "orderbook delta without a market_ticker")
        _require(side in ("yes", "no"), f"orderbook delta side {side!r} is neither yes nor no")
        _require(is_valid_price(price), f"delta price {price} is outside 1..99 cents")
        _require(abs(signed_delta) <= MAX_CONTRACTS, f"delta size {signed_delta} is too large")
        book = self.books.setdefault((session, ticker), {"yes": {}, "no": {}})
        old = book[side].get(price, 0)
        new = old + signed_delta
        if new < 0:
            self.report.clamped_negative += 1
            new = 0
        book[side][price] = new
        action = "add" if old == 0 and new > 0 else "remove" if new == 0 else "update"
        self.deltas.append((session, ticker, ts_ms, self._next_seq(session, ticker), side, action, price, old, new))
        self.report.deltas += 1
        self.report.markets.add(ticker)

    def trade(self, trade_id: str | None, ticker: str, yes_price: int, count: int, taker_side: str, ts_ms: int,
              received_ms: int) -> None:
        _require(bool(ticker), "trade without a market_ticker")
        _require(is_valid_price(yes_price), f"trade price {yes_price} is outside 1..99 cents")
        _require(0 < count <= MAX_CONTRACTS, f"trade count {count} is not a positive number of contracts")
        _require(taker_side in ("yes", "no"), f"taker_side {taker_side!r} is neither yes nor no")
        self.trades.append((trade_id, ticker, yes_price, 100 - yes_price, count, taker_side, ts_ms, received_ms))
        self.report.trades += 1
        self.report.markets.add(ticker)

    def market(self, ticker: str, **fields) -> None:
        current = self.markets.setdefault(ticker, {})
        current.update({k: v for k, v in fields.items() if v is not None})


# -- Kalshi websocket JSONL --------------------------------------------------------------------

def _levels(msg: dict, side: str) -> dict[int, int]:
    """Bid levels of one side from a snapshot, in whichever encoding the frame uses."""
    if msg.get(f"{side}_dollars_fp") is not None:
        return {cents_from_dollars(p): contracts(q) for p, q in msg[f"{side}_dollars_fp"]}
    if msg.get(f"{side}_dollars") is not None:
        return {cents_from_dollars(p): contracts(q) for p, q in msg[f"{side}_dollars"]}
    return {int(p): contracts(q) for p, q in msg.get(side) or []}


def _frame_time_ms(frame: dict, msg: dict, naive_tz) -> int | None:
    for source, key in ((frame, "received_at_ms"), (frame, "timestamp_ms"), (frame, "received_at"),
                        (msg, "ts_ms"), (msg, "ts")):
        if source.get(key) is not None:
            return epoch_ms(source[key], naive_tz)
    return None


def _read_frames(path: Path) -> list[tuple[int, dict]]:
    """(line number, frame) of every non-empty line; a line that is not a JSON object is an error naming it."""
    frames = []
    line_no = 0
    try:
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    frame = json.loads(line)
                except ValueError as error:
                    raise RecordingFormatError(f"{path}:{line_no}: not a JSON frame ({error})") from None
                if not isinstance(frame, dict):
                    raise RecordingFormatError(f"{path}:{line_no}: a frame must be a JSON object")
                frames.append((line_no, frame))
    except UnicodeDecodeError as error:
        raise RecordingFormatError(f"{path}:{line_no + 1}: not UTF-8 text (byte 0x{error.object[error.start]:02x})") from None
    return frames


def _frame_times(path: Path, frames: list[tuple[int, dict]], naive_tz) -> list[int | None]:
    """Each frame's time; frames without any time (snapshots usually) take the next known time."""
    times: list[int | None] = []
    for line_no, frame in frames:
        msg = frame.get("msg") if isinstance(frame.get("msg"), dict) else {}
        try:
            times.append(_frame_time_ms(frame, msg, naive_tz))
        except (TypeError, ValueError) as error:
            raise RecordingFormatError(f"{path}:{line_no}: {error}") from None
    following: int | None = None
    for i in range(len(times) - 1, -1, -1):
        if times[i] is None:
            times[i] = following
        else:
            following = times[i]
    return times


_BOOK_FRAMES = ("orderbook_snapshot", "orderbook_delta")
_FRAMES = (*_BOOK_FRAMES, "trade", "market_lifecycle_v2")


def _load_jsonl(path: Path, recorder: _Recorder, naive_tz) -> None:
    report = recorder.report
    last_ms: int | None = None
    last_seq_by_sid: dict[object, int] = {}
    frames = _read_frames(path)
    times = _frame_times(path, frames, naive_tz)
    for (line_no, frame), ts_ms in zip(frames, times):
        kind = frame.get("type")
        if kind is None:
            report.skipped[f"untyped ({frame.get('event_type', 'unknown')})"] += 1
            continue
        if kind not in _FRAMES:
            report.skipped[kind] += 1
            continue
        ts_ms = ts_ms if ts_ms is not None else last_ms
        if ts_ms is None:
            raise RecordingFormatError(f"{path}:{line_no}: no timestamp anywhere in the file to place this {kind} frame")
        last_ms = ts_ms
        try:
            _apply_frame(recorder, kind, frame, ts_ms, last_seq_by_sid)
        except (KeyError, TypeError, ValueError) as error:
            detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
            raise RecordingFormatError(f"{path}:{line_no}: {kind} frame: {detail}") from None


def _apply_frame(recorder: _Recorder, kind: str, frame: dict, ts_ms: int, last_seq_by_sid: dict) -> None:
    msg = frame.get("msg") if isinstance(frame.get("msg"), dict) else {}
    ticker = msg.get("market_ticker")
    if kind == "trade":
        yes_price = (cents_from_dollars(msg["yes_price_dollars"]) if msg.get("yes_price_dollars") is not None
                     else int(msg["yes_price"]))
        count = contracts(msg["count_fp"]) if msg.get("count_fp") is not None else int(msg["count"])
        trade_ms = epoch_ms(msg["ts"]) if msg.get("ts") is not None else ts_ms
        recorder.trade(msg.get("trade_id"), ticker, yes_price, count, msg.get("taker_side"), trade_ms,
                       max(ts_ms, trade_ms))
        recorder.market(ticker)
        return
    if kind == "market_lifecycle_v2":
        extra = msg.get("additional_metadata") or {}
        status = {"determined": "determined", "settled": "settled", "deactivated": "closed"}.get(
            msg.get("event_type"), "active")
        recorder.market(
            ticker, title=extra.get("title"), event_ticker=extra.get("event_ticker"),
            open_ts=msg.get("open_ts"), close_ts=msg.get("close_ts"), status=status, result=msg.get("result"),
            settled_ts=msg.get("settled_ts") or (msg.get("ts") if msg.get("event_type") == "settled" else None),
        )
        recorder.report.lifecycle += 1
        return
    # Order book frames: a jump or restart of the subscription's seq opens a new session.
    sid = frame.get("sid", 0)
    seq = frame.get("seq")
    previous = last_seq_by_sid.get(sid)
    restart = kind == "orderbook_delta" and previous is not None and seq is not None and seq != previous + 1
    if seq is not None:
        last_seq_by_sid[sid] = seq
    session = recorder.session(sid, restart=restart)
    if kind == "orderbook_snapshot":
        recorder.snapshot(session, ticker, ts_ms, _levels(msg, "yes"), _levels(msg, "no"))
    else:
        price = cents_from_dollars(msg["price_dollars"]) if msg.get("price_dollars") is not None else int(msg["price"])
        signed = contracts(msg["delta_fp"]) if msg.get("delta_fp") is not None else int(msg["delta"])
        recorder.delta(session, ticker, ts_ms, msg.get("side"), price, signed)
    recorder.market(ticker)


# -- SagnikBhadra CSVs --------------------------------------------------------------------------

def _ticker_for_csv(path: Path) -> str:
    """`Kalshi_TOR_JAN07_WIN.csv` -> the ticker that statics.json beside it maps to `TOR_JAN07_WIN`."""
    name = path.stem.removeprefix("Kalshi_")
    statics = path.with_name("statics.json")
    if statics.exists():
        mapping = json.loads(statics.read_text()).get("ASSET_ID_MAPPING", {}).get("Kalshi", {})
        for ticker, label in mapping.items():
            if label == name:
                return ticker
    return name


def _load_delta_csv(path: Path, recorder: _Recorder, naive_tz) -> None:
    ticker = _ticker_for_csv(path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    # `book` rows have no timestamp: they take the next delta's time (the snapshot arrived just before it).
    times: list[int | None] = []
    for row in rows:
        stamp = row["timestamp"].strip()
        times.append(epoch_ms(stamp, naive_tz) if stamp and row["event_type"] == "price_change" else None)
    following = None
    for i in range(len(times) - 1, -1, -1):
        if times[i] is None and rows[i]["event_type"] == "book":
            times[i] = following
        elif times[i] is not None:
            following = times[i]
    last_ms = None
    session = recorder.session(("csv", ticker))
    i = 0
    while i < len(rows):
        row = rows[i]
        kind = row["event_type"]
        if kind == "book":
            pair = rows[i:i + 2]
            if len(pair) < 2 or pair[1]["event_type"] != "book":
                raise RecordingFormatError(f"{path}: line {i + 2}: a book row must be followed by its SELL row")
            bid_row, ask_row = sorted(pair, key=lambda r: r["side"])  # BUY before SELL
            ts_ms = times[i] if times[i] is not None else last_ms
            if ts_ms is None:
                raise RecordingFormatError(f"{path}: no timestamp to place the book at line {i + 2}")
            yes_bids = {cents_from_dollars(bid_row["price"]): contracts(bid_row["size"])}
            no_bids = {100 - cents_from_dollars(ask_row["price"]): contracts(ask_row["size"])}
            recorder.snapshot(session, ticker, ts_ms, yes_bids, no_bids)
            last_ms = ts_ms
            i += 2
            continue
        if kind == "price_change":
            ts_ms = times[i]
            yes_frame_price = cents_from_dollars(row["price"])
            if row["side"] == "BUY":
                recorder.delta(session, ticker, ts_ms, "yes", yes_frame_price, contracts(row["size"]))
            else:  # SELL rows are NO bids written in the YES frame
                recorder.delta(session, ticker, ts_ms, "no", 100 - yes_frame_price, contracts(row["size"]))
            last_ms = ts_ms
        elif kind == "last_trade_price":
            ts_ms = epoch_ms(row["timestamp"], naive_tz)
            price = cents_from_dollars(row["price"])
            taker_yes = row["side"] == "BUY"
            recorder.trade(None, ticker, price if taker_yes else 100 - price, contracts(row["size"]),
                           "yes" if taker_yes else "no", ts_ms, max(ts_ms, last_ms or ts_ms))
        else:
            recorder.report.skipped[kind or "empty"] += 1
        i += 1
    series, event = ticker.split("-")[0], ticker.rsplit("-", 1)[0]
    recorder.market(ticker, series_ticker=series, event_ticker=event, category="sports", status="active")


def _load_top_of_book_csv(path: Path, recorder: _Recorder, naive_tz) -> None:
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            ticker = row["ticker"]
            session = recorder.session(("top", ticker))
            yes_bids = ({cents_from_dollars(row["best_bid_price"]): contracts(row["best_bid_size"])}
                        if row["best_bid_price"] else {})
            no_bids = ({100 - cents_from_dollars(row["best_ask_price"]): contracts(row["best_ask_size"])}
                       if row["best_ask_price"] else {})
            recorder.snapshot(session, ticker, epoch_ms(row["timestamp"], naive_tz), yes_bids, no_bids)
            recorder.market(ticker, series_ticker=ticker.split("-")[0], event_ticker=ticker.rsplit("-", 1)[0],
                            category="sports", status="active")


# -- entry point ----------------------------------------------------------------------------------

def detect_format(path: Path) -> str:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            first = handle.readline().strip()
    except UnicodeDecodeError as error:
        raise RecordingFormatError(f"{path}:1: not UTF-8 text (byte 0x{error.object[error.start]:02x})") from None
    except IsADirectoryError:
        raise RecordingFormatError(f"{path}: is a directory, not a recording file") from None
    if first.startswith("{"):
        return "kalshi-jsonl"
    header = [h.strip() for h in first.split(",")]
    if header == _DELTA_CSV_HEADER:
        return "delta-csv"
    if header == _TOP_OF_BOOK_CSV_HEADER:
        return "top-of-book-csv"
    raise RecordingFormatError(
        f"{path}: unknown recording format (expected Kalshi websocket JSONL, or a CSV with header "
        f"{','.join(_DELTA_CSV_HEADER)} or {','.join(_TOP_OF_BOOK_CSV_HEADER)})"
    )


_LOADERS = {"kalshi-jsonl": _load_jsonl, "delta-csv": _load_delta_csv, "top-of-book-csv": _load_top_of_book_csv}


def _copy_rows(conn: psycopg.Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    if not rows:
        return
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        table_identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _upsert_markets(conn: psycopg.Connection, table: str, markets: dict[str, dict]) -> None:
    """Insert unseen markets; fill in fields a lifecycle frame supplies, keeping what is already known."""
    statement = sql.SQL(
        "INSERT INTO {t} (ticker, event_ticker, series_ticker, title, category, open_ts, close_ts, status, result, settled_ts) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (ticker) DO UPDATE SET "
        "event_ticker = coalesce(EXCLUDED.event_ticker, {t}.event_ticker), "
        "series_ticker = coalesce(EXCLUDED.series_ticker, {t}.series_ticker), "
        "title = coalesce(EXCLUDED.title, {t}.title), category = coalesce(EXCLUDED.category, {t}.category), "
        "open_ts = coalesce(EXCLUDED.open_ts, {t}.open_ts), close_ts = coalesce(EXCLUDED.close_ts, {t}.close_ts), "
        "status = coalesce(EXCLUDED.status, {t}.status), result = coalesce(EXCLUDED.result, {t}.result), "
        "settled_ts = coalesce(EXCLUDED.settled_ts, {t}.settled_ts)"
    ).format(t=table_identifier(table))
    with conn.cursor() as cur:
        cur.executemany(statement, market_rows(markets))


def market_rows(markets: dict[str, dict]) -> list[tuple]:
    """Rows for the markets table (MARKET_COLUMNS) from what a recording says about its markets; the event and
    series default to the ticker's prefixes."""
    def ts(value):
        return None if value is None else datetime.fromtimestamp(epoch_ms(value) / 1000, tz=timezone.utc)

    return [(ticker, m.get("event_ticker") or ticker.rsplit("-", 1)[0], m.get("series_ticker") or ticker.split("-")[0],
             m.get("title"), m.get("category"), ts(m.get("open_ts")), ts(m.get("close_ts")), m.get("status"),
             m.get("result"), ts(m.get("settled_ts")))
            for ticker, m in sorted(markets.items()) if ticker]


MARKET_COLUMNS = ("ticker", "event_ticker", "series_ticker", "title", "category", "open_ts", "close_ts", "status",
                  "result", "settled_ts")


def _time_zone(timezone_name: str):
    try:
        return ZoneInfo(timezone_name)
    except (KeyError, ValueError):
        raise RecordingFormatError(f"unknown time zone {timezone_name!r} (expected an IANA name like UTC or "
                                   "America/New_York)") from None


@dataclass
class Recording:
    """One file's rows in the source tables' columns (no ids yet), and what loading it found."""

    report: LoadReport
    snapshots: list[tuple]
    deltas: list[tuple]
    trades: list[tuple]
    markets: dict[str, dict]


def read_recording(path: Path, first_session_id: int = 1, timezone_name: str = "UTC") -> Recording:
    """Parse one recording file in memory; its sessions are numbered from `first_session_id`."""
    naive_tz = _time_zone(timezone_name)
    fmt = detect_format(path)
    report = LoadReport(path=path, format=fmt)
    recorder = _Recorder(first_session_id, report)
    try:
        _LOADERS[fmt](path, recorder, naive_tz)
    except RecordingFormatError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise RecordingFormatError(f"{path}: cannot parse ({type(error).__name__}: {error})") from None
    return Recording(report, recorder.snapshots, recorder.deltas, recorder.trades, recorder.markets)


def read_recordings(paths: list[Path], timezone_name: str = "UTC", first_session_id: int = 1) -> list[Recording]:
    """Several files in memory, sessions numbered on from one file to the next (as loading them would)."""
    recordings = []
    for path in paths:
        recording = read_recording(path, first_session_id, timezone_name)
        first_session_id += recording.report.sessions
        recordings.append(recording)
    return recordings


SNAPSHOT_COLUMNS, DELTA_COLUMNS, TRADE_COLUMNS = _SNAPSHOT_COLUMNS, _DELTA_COLUMNS, _TRADE_COLUMNS


def rows_table(rows: list[tuple], columns: tuple[str, ...]) -> pa.Table:
    """Rows of one source table with the ids loading them would give (1, 2, ... in load order)."""
    frame = pl.DataFrame(rows, schema=list(columns), orient="row")
    if not frame.height:
        return pa.table({"id": pa.array([], pa.int64()), **{c: pa.array([]) for c in columns}})
    return frame.with_row_index("id", offset=1).with_columns(pl.col("id").cast(pl.Int64)).to_arrow()


def recording_tables(recordings: list[Recording]) -> dict[str, pa.Table]:
    """What loading `recordings` writes, held in memory: snapshots, deltas, trades and markets, each with the
    source tables' columns (the live path and the calibration read recordings this way)."""
    markets: dict[str, dict] = {}
    for recording in recordings:
        for ticker, fields in recording.markets.items():
            markets.setdefault(ticker, {}).update(fields)
    market_frame = pl.DataFrame(market_rows(markets), schema={
        "ticker": pl.String, "event_ticker": pl.String, "series_ticker": pl.String, "title": pl.String,
        "category": pl.String, "open_ts": pl.Datetime("ms", "UTC"), "close_ts": pl.Datetime("ms", "UTC"),
        "status": pl.String, "result": pl.String, "settled_ts": pl.Datetime("ms", "UTC")}, orient="row")
    return {
        "snapshots": rows_table([r for x in recordings for r in x.snapshots], SNAPSHOT_COLUMNS),
        "deltas": rows_table([r for x in recordings for r in x.deltas], DELTA_COLUMNS),
        "trades": rows_table([r for x in recordings for r in x.trades], TRADE_COLUMNS),
        "markets": market_frame.with_columns(pl.lit(None, pl.Datetime("ms", "UTC")).alias("expected_expiration_ts")).to_arrow(),
    }


def load_files(conn: psycopg.Connection, tables: SourceTables, paths: list[Path],
               timezone_name: str = "UTC") -> list[LoadReport]:
    """Load each file in one transaction per file; a file that fails leaves nothing behind."""
    _time_zone(timezone_name)
    reports = []
    for path in paths:
        try:
            recording = read_recording(path, next_session_id(conn, tables), timezone_name)
        except RecordingFormatError:
            conn.rollback()
            raise
        _copy_rows(conn, tables.snapshots, _SNAPSHOT_COLUMNS, recording.snapshots)
        _copy_rows(conn, tables.deltas, _DELTA_COLUMNS, recording.deltas)
        _copy_rows(conn, tables.trades, _TRADE_COLUMNS, recording.trades)
        _upsert_markets(conn, tables.markets, recording.markets)
        conn.commit()
        reports.append(recording.report)
    return reports
