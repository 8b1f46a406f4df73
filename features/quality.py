"""Data-quality suite of the event feature table, in Great Expectations 1.x.

Ranges and nulls come from features/schema.py (one declaration per column); monotone time per market
and flag consistency are derived columns that must be all true. GX validates pandas frames, so the
derived columns are computed in Polars first and only the checked columns are converted.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Iterable, Iterator

import polars as pl
import polars.selectors as cs
import pyarrow as pa

from core.catalog import Lake
from features.schema import EVENT_COLUMNS

VALIDATION_BATCH_ROWS = 262_144  # Great Expectations works on pandas: about 2.3 KB a row at peak (measured)

_DERIVED = {
    "time_monotone_in_market": (pl.col("event_time_ms") >= pl.col("event_time_ms").shift(1).over("market_ticker"))
    .fill_null(True),
    "yes_empty_flag_consistent": (pl.col("yes_side_empty") == (pl.col("best_yes_bid_cents") == 0)),
    "no_empty_flag_consistent": (pl.col("no_side_empty") == (pl.col("best_no_bid_cents") == 0)),
    "ask_mirrors_no_bid": (pl.col("best_yes_ask_cents") == pl.when(pl.col("best_no_bid_cents") > 0)
                           .then(100 - pl.col("best_no_bid_cents")).otherwise(100)),
    "crossed_flag_consistent": (pl.col("crossed") == ((pl.col("best_yes_bid_cents") > 0) & (pl.col("best_no_bid_cents") > 0)
                                                      & (pl.col("best_yes_bid_cents") >= pl.col("best_yes_ask_cents")))),
    "burst_implies_active": (pl.col("tm_burst") <= pl.col("tm_active")),
    "final_hour_implies_final_day": (pl.col("tm_final_hour") <= pl.col("tm_final_6h"))
    & (pl.col("tm_final_6h") <= pl.col("tm_final_day")),
    "one_category": (pl.sum_horizontal(pl.col("^md_category_.*$")) == 1.0),
}


@dataclass
class QualityResult:
    success: bool
    evaluated: int
    failed: list[dict]
    rows: int


CHECKED_COLUMNS = [column.name for column in EVENT_COLUMNS] + list(_DERIVED)


@functools.cache
def build_suite():
    """The suite, made once per process: GX compares each new expectation with every one already added, so
    building it costs seconds, and it is the same for every batch."""
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="event_features")
    for column in EVENT_COLUMNS:
        suite.add_expectation(gx.expectations.ExpectColumnValuesToNotBeNull(column=column.name))
        if column.low is not None or column.high is not None:
            suite.add_expectation(gx.expectations.ExpectColumnValuesToBeBetween(
                column=column.name, min_value=column.low, max_value=column.high))
    for name in _DERIVED:
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeInSet(column=name, value_set=[True]))
    return suite


def validate_event_file(lake: Lake, path, batch_rows: int = VALIDATION_BATCH_ROWS) -> QualityResult:
    """The suite over a day's file as written, read back in batches of whole markets (the per-market
    expectations see every row of a market together) of about `batch_rows` rows: memory follows the batch,
    not the day. Failures of the same expectation add up over the batches."""
    record_batches = lake.parquet_batches(path, batch_size=min(65_536, batch_rows))
    results = [validate_events(batch) for batch in whole_market_batches(record_batches, batch_rows)]
    if not results:
        return QualityResult(success=True, evaluated=0, failed=[], rows=0)
    unexpected: dict[tuple, int] = {}
    for result in results:
        for failure in result.failed:
            key = (failure["expectation"], failure["column"])
            unexpected[key] = unexpected.get(key, 0) + (failure["unexpected"] or 0)
    return QualityResult(success=all(r.success for r in results), evaluated=max(r.evaluated for r in results),
                         failed=[{"expectation": e, "column": c, "unexpected": n} for (e, c), n in unexpected.items()],
                         rows=sum(r.rows for r in results))


def whole_market_batches(record_batches: Iterable[pa.RecordBatch], batch_rows: int) -> Iterator[pl.DataFrame]:
    """Frames of at least `batch_rows` rows (the last may be smaller) that never cut a market's rows in two,
    from record batches of a file sorted by market: the rows of the last market seen wait for the next frame."""
    pending: list[pl.DataFrame] = []
    held = 0
    for record_batch in record_batches:
        pending.append(pl.from_arrow(record_batch))
        held += record_batch.num_rows
        if held < batch_rows:
            continue
        frame = pl.concat(pending)
        tickers = frame["market_ticker"]
        last_start = int((tickers == tickers[-1]).arg_max())   # sorted: the last market's rows end the frame
        if last_start > 0:
            yield frame.slice(0, last_start)
        pending, held = [frame.slice(last_start)], frame.height - last_start
    if held:
        yield pl.concat(pending)


def checked_frame(events: pl.DataFrame) -> pl.DataFrame:
    """The columns the suite reads, numbers widened to 64 bits: GX's pandas range check is vectorized only
    for int64 and float64 (the cent columns, int16, went through a Python call per value). Widening is exact,
    so each comparison decides as it did on the narrow value."""
    return (events.with_columns(**_DERIVED).select(CHECKED_COLUMNS)
            .with_columns(cs.integer().cast(pl.Int64), cs.float().cast(pl.Float64)))


def validate_events(events: pl.DataFrame) -> QualityResult:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    frame = checked_frame(events).to_pandas()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (context.data_sources.add_pandas(name="events").add_dataframe_asset(name="event_features")
             .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame}))
    result = batch.validate(build_suite())
    failed = [{"expectation": r.expectation_config.type, "column": r.expectation_config.kwargs.get("column"),
               "unexpected": r.result.get("unexpected_count")} for r in result.results if not r.success]
    return QualityResult(success=bool(result.success), evaluated=len(result.results), failed=failed, rows=events.height)
