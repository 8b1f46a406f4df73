"""A day's features computed, written and validated a batch of markets at a time: the feature stage's memory
follows the batch, and the rows and the verdicts are those of the whole day at once."""

from __future__ import annotations

import shutil
from datetime import timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from core.catalog import Lake
from features.events import (
    build_event_features,
    market_ranges,
    materialize_event_features,
)
from features.quality import validate_event_file, validate_events
from tests.conftest import SMALL_CONFIG

FIRST, LAST = SMALL_CONFIG.start, SMALL_CONFIG.start + timedelta(days=SMALL_CONFIG.days - 1)
SMALL_BATCH = 2_000
ORDER = ("market_ticker", "session_id", "sequence_number", "event_id")


@pytest.fixture(scope="module")
def whole_days(small_lake):
    features, _ = build_event_features(small_lake, FIRST, LAST, batch_rows=10**12)
    return features.sort(*ORDER)


@pytest.fixture(scope="module")
def batched_lake(small_lake, tmp_path_factory):
    lake = Lake(tmp_path_factory.mktemp("batched") / "lake")
    shutil.copytree(small_lake.root, lake.root)
    materialize_event_features(lake, FIRST, LAST, batch_rows=SMALL_BATCH)
    return lake


def test_markets_in_batches_give_the_rows_of_whole_days(small_lake, whole_days):
    ranges = market_ranges(small_lake, FIRST, SMALL_BATCH)
    assert len(ranges) >= 3, "the batch size does not cut the day: the test would not exercise batches"
    assert all(low <= high for low, high in ranges) and \
        all(previous[1] < following[0] for previous, following in zip(ranges, ranges[1:]))
    batched, _ = build_event_features(small_lake, FIRST, LAST, batch_rows=SMALL_BATCH)
    assert_frame_equal(batched.sort(*ORDER), whole_days)


def test_a_day_written_in_batches_is_the_sorted_day(batched_lake, whole_days):
    import pyarrow.parquet as pq

    for day in (FIRST, LAST):
        path = batched_lake.event_partition(day)
        written = batched_lake.read_parquet(path)
        assert written.height and pq.ParquetFile(path).metadata.num_row_groups >= 3
        assert pq.ParquetFile(path).schema_arrow.metadata[b"kfs_schema_version"]
        expected = whole_days.filter(pl.col("timestamp_ms").is_between(*_day_ms(day), closed="left"))
        assert_frame_equal(written, expected)       # in file order: sorted by market, session and sequence


def test_validation_in_batches_of_whole_markets_gives_the_verdict_of_the_whole_day(batched_lake, tmp_path):
    day = batched_lake.read_parquet(batched_lake.event_partition(FIRST))
    ticker = day["market_ticker"].unique().sort()[1]
    rows = day.with_row_index("row").filter(pl.col("market_ticker") == ticker)["row"]
    middle = int(rows[len(rows) // 2])
    # Time goes backwards in the middle of one market, at the edge of a record batch: only a check that sees
    # both sides of the edge together finds it.
    broken = day.with_columns(pl.when(pl.int_range(pl.len()) == middle).then(pl.col("event_time_ms") - 10**9)
                              .otherwise(pl.col("event_time_ms")).alias("event_time_ms"))
    lake = Lake(tmp_path / "lake")
    path = lake.event_partition(FIRST)
    lake.write_parquet_frames([broken.slice(0, middle), broken.slice(middle, 1), broken.slice(middle + 1)], path)
    whole = validate_events(broken)
    batched = validate_event_file(lake, path, batch_rows=max(1, middle // 3))
    assert not whole.success and not batched.success
    assert sorted(map(str, batched.failed)) == sorted(map(str, whole.failed))
    assert (batched.rows, batched.evaluated) == (whole.rows, whole.evaluated)
    clean = validate_event_file(batched_lake, batched_lake.event_partition(FIRST), batch_rows=SMALL_BATCH)
    assert clean.success and clean.rows == day.height


def _day_ms(day) -> tuple[int, int]:
    from features.events import day_start_ms

    return day_start_ms(day), day_start_ms(day + timedelta(days=1))


def test_the_range_checks_decide_on_the_narrow_columns_as_written(batched_lake):
    """The suite reads numbers widened to 64 bits (GX's vectorized path); on a cent column (int16 in the
    file) a value at its bound passes and one beyond it fails."""
    from features.quality import checked_frame
    from features.schema import EVENT_COLUMNS

    day = batched_lake.read_parquet(batched_lake.event_partition(FIRST)).head(3_000)
    assert {str(t) for t in checked_frame(day).schema.dtypes()} <= {"Int64", "Float64", "Boolean", "String"}
    column = next(c for c in EVENT_COLUMNS if c.high is not None and day.schema[c.name] == pl.Int16)

    def with_value(value):
        return day.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.lit(value, pl.Int16))
                                .otherwise(pl.col(column.name)).alias(column.name))

    def range_failures(frame):  # the derived flags may object to the edited book too; only the range matters
        return [f for f in validate_events(frame).failed
                if f["expectation"] == "expect_column_values_to_be_between"]

    assert range_failures(with_value(column.high)) == []
    assert range_failures(with_value(column.high + 1)) == [
        {"expectation": "expect_column_values_to_be_between", "column": column.name, "unexpected": 1}]
