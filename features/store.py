"""The researcher's API to the feature store.

    from features import store
    events = store.load_events(split="train", start="2026-11-15", end="2026-11-17",
                               columns=["ob_yes_mid_prob", "tm_burst"])   # a Polars LazyFrame
    markets = store.load_markets()                                        # a Polars DataFrame
    store.lake_days()                                                     # the days it holds
    store.data_dictionary()                                               # every column, documented
    store.historical_features(labels, features=["ob_yes_mid_prob"], max_age=timedelta(hours=1))
                                   # each (market_ticker, timestamp_ms) row with the features as of that time

`start` and `end` are UTC days, both inclusive; partitions outside them are never read.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import polars as pl

from core.catalog import DATASETS, Lake
from features.schema import EVENT_COLUMNS, EVENTS_SCHEMA_VERSION
from features.splits import SPLITS, read_registry

_IDENTITY_ALWAYS = ("market_ticker", "timestamp_ms")


def _as_day(value: str | date | None, name: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be a date or 'YYYY-MM-DD', got {value!r}") from None


def load_events(split: str | None = None, start: str | date | None = None, end: str | date | None = None,
                columns: list[str] | None = None, markets: list[str] | None = None,
                lake: Lake | None = None) -> pl.LazyFrame:
    """Event feature rows as a LazyFrame, filtered by split, day range, columns and markets."""
    lake = lake or Lake()
    start, end = _as_day(start, "start"), _as_day(end, "end")
    if start and end and end < start:
        raise ValueError(f"end {end} is before start {start}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    known = [c.name for c in EVENT_COLUMNS]
    if columns is not None:
        unknown = sorted(set(columns) - set(known))
        if unknown:
            raise ValueError(f"unknown columns {unknown}; see features.store.data_dictionary()")
    files = lake.verified_partition_files("features_events", start, end)
    if not files:
        raise FileNotFoundError(f"no event features under {lake.location('features_events')} for {start or '...'}"
                                f" .. {end or '...'}: run `kfs materialize` first")
    frame = lake.scan_parquet(files)
    if markets is not None:
        frame = frame.filter(pl.col("market_ticker").is_in(list(markets)))
    if split is not None:
        registry = read_registry(lake)
        if registry.is_empty():
            raise FileNotFoundError("the split registry is empty: materialize split_registry first")
        chosen = registry.filter(pl.col("split") == split).select("market_ticker")
        frame = frame.join(chosen.lazy(), on="market_ticker", how="semi")
    if columns is not None:
        keep = list(dict.fromkeys([*_IDENTITY_ALWAYS, *columns]))
        frame = frame.select(keep)
    return frame


AS_OF_TIME = "feature_event_time_ms"   # added to every entity row: the event time of the feature row it got
_ENTITY_KEYS = ("market_ticker", "timestamp_ms")
_ROW, _AS_OF = "__entity_row", "__as_of"


def historical_features(entities, features: list[str] | None = None, max_age: timedelta | int | None = None,
                        lake: Lake | None = None) -> pl.DataFrame:
    """The features as of each entity's time: a point-in-time join (Feast's `get_historical_features`).

    `entities` (a Polars or pandas frame) holds `market_ticker`, `timestamp_ms` (epoch ms) and any label
    columns; each row gets the latest feature row of its market known at or before `timestamp_ms`, never a
    later one. A feature row is known from its `event_time_ms` (the running maximum of the recorded times, so
    a row whose recorded time stepped back is not known before the rows received ahead of it); of rows known
    at the same time, the last one: the book after all of them. `max_age` (a timedelta, or milliseconds)
    leaves older rows out. A row with nothing in reach (or a null time) gets nulls; `feature_event_time_ms`
    says which row each one got. Rows keep their order and every column they came with. `features` default:
    every column of the data dictionary outside the identity group."""
    lake = lake or Lake()
    frame = _entity_frame(entities)
    chosen = _feature_columns(features, frame.columns)
    reach_ms = _max_age_ms(max_age)
    keyed = frame.filter(pl.col("timestamp_ms").is_not_null())
    rows = _known_rows(lake, keyed, chosen, reach_ms)
    joined = (keyed.with_columns(pl.col("timestamp_ms").alias(_AS_OF)).sort(_AS_OF)
              .join_asof(rows, left_on=_AS_OF, right_on="__known_from", by="market_ticker", strategy="backward",
                         tolerance=reach_ms, check_sortedness=False))
    columns = [*frame.columns, AS_OF_TIME, *chosen]
    nulls = frame.filter(pl.col("timestamp_ms").is_null()).with_columns(
        pl.lit(None, rows.schema[name]).alias(name) for name in (AS_OF_TIME, *chosen))
    return pl.concat([joined.select(columns), nulls.select(columns)]).sort(_ROW).drop(_ROW)


def _entity_frame(entities) -> pl.DataFrame:
    """`entities` as a Polars frame with its keys checked and typed, and its row order as a column."""
    if not isinstance(entities, pl.DataFrame):
        try:
            entities = pl.from_pandas(entities) if type(entities).__module__.startswith("pandas") \
                else pl.DataFrame(entities)
        except (TypeError, ValueError) as error:
            raise ValueError(f"entities must be a Polars or pandas frame: {str(error).splitlines()[0]}") from None
    missing = [key for key in _ENTITY_KEYS if key not in entities.columns]
    if missing:
        raise ValueError(f"entities lack {missing}: give each row a market_ticker and a timestamp_ms (epoch ms)")
    reserved = sorted({_ROW, _AS_OF, AS_OF_TIME, "__known_from"} & set(entities.columns))
    if reserved:
        raise ValueError(f"entities may not have columns named {reserved}")
    time_type = entities.schema["timestamp_ms"]
    if isinstance(time_type, pl.Datetime):
        raise ValueError("timestamp_ms is a datetime column; give epoch milliseconds (pl.col(...).dt.epoch('ms'))")
    if not time_type.is_integer():
        raise ValueError(f"timestamp_ms must hold integers (epoch ms), got {time_type}")
    if entities.schema["market_ticker"] != pl.String:
        raise ValueError(f"market_ticker must hold strings, got {entities.schema['market_ticker']}")
    return entities.with_columns(pl.col("timestamp_ms").cast(pl.Int64)).with_row_index(_ROW)


def _feature_columns(features: list[str] | None, entity_columns: list[str]) -> list[str]:
    """The feature columns asked for (default all), checked against the data dictionary and the entities."""
    identity = {c.name for c in EVENT_COLUMNS if c.group == "identity"}
    known = [c.name for c in EVENT_COLUMNS if c.name not in identity]
    if isinstance(features, str):
        raise ValueError("features must be a list of column names, not one string")
    chosen = known if features is None else list(dict.fromkeys(features))
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        named = sorted(set(unknown) & identity)
        why = f" ({named}: identity columns, not features)" if named else ""
        raise ValueError(f"unknown features {unknown}{why}; see features.store.data_dictionary()")
    clash = sorted(set(chosen) & set(entity_columns))
    if clash:
        raise ValueError(f"entities already have columns named like features {clash}: rename them or leave them out "
                         "of `features`")
    return chosen


def _max_age_ms(max_age: timedelta | int | None) -> int | None:
    if max_age is None:
        return None
    if isinstance(max_age, timedelta):
        max_age = round(max_age.total_seconds() * 1000)
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0:
        raise ValueError(f"max_age must be a timedelta or milliseconds, at least 0; got {max_age!r}")
    return max_age


def _utc_day(epoch_ms: int) -> date:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).date()


def _known_rows(lake: Lake, keyed: pl.DataFrame, chosen: list[str], reach_ms: int | None) -> pl.DataFrame:
    """The feature rows the join can reach: the entities' markets, known by the latest entity time."""
    every_day = lake.partitions("features_events")
    if not every_day:
        raise FileNotFoundError(f"no event features under {lake.location('features_events')}: "
                                "run `kfs materialize` first")
    files = []
    if not keyed.is_empty():
        earliest, latest = keyed["timestamp_ms"].min(), keyed["timestamp_ms"].max()
        # A row lies in the day of its recorded time, which is at most its event time: nothing known by
        # `latest` lies after that day. A day of slack before the reach keeps rows whose recorded time stepped back.
        first_day = None if reach_ms is None else _utc_day(earliest - reach_ms) - timedelta(days=1)
        files = lake.verified_partition_files("features_events", first_day, _utc_day(latest))
    scan = lake.scan_parquet(files or [lake.event_partition(every_day[0])])
    if files:
        reach = pl.col("event_time_ms") <= latest
        if reach_ms is not None:
            reach &= pl.col("event_time_ms") >= earliest - reach_ms
        scan = scan.filter(pl.col("market_ticker").is_in(keyed["market_ticker"].unique().to_list()) & reach)
    else:
        scan = scan.head(0)   # the schema only: no day in reach
    rows = scan.select("market_ticker", pl.col("event_time_ms").alias("__known_from"),
                       pl.col("event_time_ms").alias(AS_OF_TIME), *chosen).collect()
    # Files hold each market's rows in book order, in which event time never decreases (across days too): the
    # rows are sorted within each market, as join_asof needs, and of equal times it takes the last, the book
    # after all of them. Checked, since a lake written otherwise would give wrong rows without a word.
    stepped_back = rows.select((pl.col("__known_from").diff().over("market_ticker") < 0).any()).item()
    return rows.sort("market_ticker", "__known_from", maintain_order=True) if stepped_back else rows


# What the markets mart knows of a market at a time: its listing from the start, its result once settled.
# Its other columns are statistics over the market's whole recorded history, true of no earlier time.
MARKET_LISTING = ("series_ticker", "event_ticker", "category", "open_ts", "close_ts")
MARKET_SETTLEMENT = ("result", "settled_ts")


def historical_markets(entities, columns: list[str] | None = None, lake: Lake | None = None) -> pl.DataFrame:
    """The markets mart as of each entity's time: `entities` as for `historical_features`; each row gets its
    market's listing (`MARKET_LISTING`) and, only once `settled_ts` is at or before its `timestamp_ms`, the
    result (`MARKET_SETTLEMENT`); nulls before, and for a market the mart does not have. The mart's statistics
    describe the whole recorded history, so asking for one is an error, not a leak."""
    frame = _entity_frame(entities)
    known = (*MARKET_LISTING, *MARKET_SETTLEMENT)
    chosen = list(known) if columns is None else list(dict.fromkeys(columns))
    mart = load_markets(lake)
    leaky = sorted(set(chosen) & (set(mart.columns) - set(known) - {"market_ticker"}))
    if leaky:
        raise ValueError(f"{leaky} describe each market's whole recorded history, not a point in time; "
                         f"point-in-time columns: {list(known)}")
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ValueError(f"unknown market columns {unknown}; point-in-time columns: {list(known)}")
    clash = sorted(set(chosen) & set(frame.columns))
    if clash:
        raise ValueError(f"entities already have columns named {clash}")
    joined = frame.join(mart.select("market_ticker", *known), on="market_ticker", how="left")
    as_of = pl.from_epoch(pl.col("timestamp_ms"), time_unit="ms").dt.replace_time_zone("UTC")
    settled = pl.col("settled_ts").is_not_null() & (pl.col("settled_ts") <= as_of)
    joined = joined.with_columns(pl.when(settled).then(pl.col(name)).otherwise(None).alias(name)
                                 for name in MARKET_SETTLEMENT)
    return joined.sort(_ROW).select(*[c for c in frame.columns if c != _ROW], *chosen)


def lake_days(lake: Lake | None = None) -> list[date]:
    """The days the feature store holds, in order (what `start` and `end` of `load_events` can name)."""
    return (lake or Lake()).partitions("features_events")


def load_markets(lake: Lake | None = None) -> pl.DataFrame:
    """One row per market: metadata, statistics, volatility class, split (the dbt mart `markets`)."""
    lake = lake or Lake()
    path = lake.location("markets_mart")
    if not lake.exists(path):
        raise FileNotFoundError(f"{path} is missing: run `kfs materialize` first")
    return lake.read_parquet(path)


def data_dictionary() -> pl.DataFrame:
    """Every event column: name, type, group, valid range and meaning."""
    return pl.DataFrame(
        [{"column": c.name, "dtype": c.dtype, "group": c.group, "low": c.low, "high": c.high, "doc": c.doc}
         for c in EVENT_COLUMNS],
        schema={"column": pl.String, "dtype": pl.String, "group": pl.String, "low": pl.Float64, "high": pl.Float64,
                "doc": pl.String},
    )


def data_dictionary_markdown() -> str:
    """docs/data_dictionary.md, generated from features/schema.py (`python -m features.store > docs/...`)."""
    lines = [
        "# Data dictionary: features/events",
        "",
        f"Generated from `features/schema.py` (schema version {EVENTS_SCHEMA_VERSION}); do not edit by hand,",
        "run `python -m features.store > docs/data_dictionary.md`. One row per (market, book event);",
        f"files: `<lake>/{DATASETS['features_events'].glob()}`. Prices in cents, probabilities = cents / 100.",
        "",
    ]
    for group in ("identity", "book", "orderbook", "temporal", "trade_flow", "metadata", "resolution"):
        rows = [c for c in EVENT_COLUMNS if c.group == group]
        lines += [f"## {group} ({len(rows)})", "", "| column | type | range | meaning |", "| --- | --- | --- | --- |"]
        for c in rows:
            low = "" if c.low is None else f"{c.low:g}"
            high = "" if c.high is None else f"{c.high:g}"
            valid = f"[{low}, {high}]" if (low or high) else ""
            lines.append(f"| `{c.name}` | {c.dtype} | {valid} | {c.doc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(data_dictionary_markdown(), end="")
