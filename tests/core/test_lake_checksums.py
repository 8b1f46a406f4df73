"""Reads verify: every parquet file the lake writes has a checksum manifest, and the readers of the raw lake
and the feature store refuse a damaged file, a file without its manifest and a day missing inside a range,
with the file (or the days) and the command that rewrites it."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from core.catalog import MANIFEST_SUFFIX, DamagedLakeFile, Lake
from features import store

DAYS = [date(2026, 4, 1) + timedelta(days=k) for k in range(3)]


def _lake_with_days(root) -> Lake:
    lake = Lake(root)
    for k, day in enumerate(DAYS):
        frame = pl.DataFrame({"market_ticker": ["KXA"] * 500, "timestamp_ms": list(range(k * 500, (k + 1) * 500)),
                              "tm_log_seconds_since_prev": [0.5 + 0.001 * i for i in range(500)]})
        lake.write_parquet(frame, lake.event_partition(day))
    return lake


def _flip_bytes(path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


def test_a_clean_lake_reads_whole_and_every_file_has_its_manifest(tmp_path):
    lake = _lake_with_days(tmp_path)
    assert store.load_events(lake=lake).collect().height == 1500
    manifest = lake.read_json(lake.event_partition(DAYS[0]).with_name(f"part-00000.parquet{MANIFEST_SUFFIX}"))
    assert manifest["rows"] == 500 and manifest["bytes"] == lake.size(lake.event_partition(DAYS[0]))


def test_flipped_bytes_are_an_error_naming_the_file_and_the_fix(tmp_path):
    lake = _lake_with_days(tmp_path)
    damaged = lake.event_partition(DAYS[1])
    _flip_bytes(damaged)
    with pytest.raises(DamagedLakeFile, match=rf"{damaged}.*kfs materialize --start {DAYS[1]} --end {DAYS[1]}"):
        store.load_events(lake=lake, start=DAYS[0], end=DAYS[2])
    assert store.load_events(lake=lake, start=DAYS[2], end=DAYS[2]).collect().height == 500  # the others still read


def test_a_missing_day_inside_the_range_is_named(tmp_path):
    lake = _lake_with_days(tmp_path)
    lake.event_partition(DAYS[1]).unlink()
    with pytest.raises(DamagedLakeFile, match=rf"no partition for {DAYS[1]} inside {DAYS[0]} .. {DAYS[2]}"):
        store.load_events(lake=lake, start=DAYS[0], end=DAYS[2])


def test_a_file_without_its_manifest_or_with_a_garbled_one_is_refused(tmp_path):
    lake = _lake_with_days(tmp_path)
    first, second = (lake.event_partition(day) for day in DAYS[:2])
    first.with_name(first.name + MANIFEST_SUFFIX).unlink()
    second.with_name(second.name + MANIFEST_SUFFIX).write_text("[1, 2]")
    with pytest.raises(DamagedLakeFile, match="has no checksum manifest"):
        store.load_events(lake=lake, start=DAYS[0], end=DAYS[0])
    with pytest.raises(DamagedLakeFile, match="is not a checksum manifest"):
        store.load_events(lake=lake, start=DAYS[1], end=DAYS[1])


def test_a_rewritten_partition_verifies_again(tmp_path):
    lake = _lake_with_days(tmp_path)
    store.load_events(lake=lake).collect()
    lake.write_parquet(pl.DataFrame({"market_ticker": ["KXB"], "timestamp_ms": [1], "tm_log_seconds_since_prev": [0.1]}),
                       lake.event_partition(DAYS[0]))
    assert store.load_events(lake=lake, start=DAYS[0], end=DAYS[0]).collect()["market_ticker"].to_list() == ["KXB"]


def test_a_replaced_object_on_s3_is_refused(s3_lake):
    lake = _lake_with_days(s3_lake)
    assert store.load_events(lake=lake).collect().height == 1500
    damaged = lake.event_partition(DAYS[2])
    lake.fs.pipe_file(damaged.path, lake.read_bytes(lake.event_partition(DAYS[0]))[:-7] + b"garbage")
    with pytest.raises(DamagedLakeFile, match="does not match its checksum manifest"):
        store.load_events(lake=lake, start=DAYS[2], end=DAYS[2])


def test_the_cli_prints_a_damaged_file_as_one_line_with_exit_1():
    from kfs.cli import describe_error

    assert describe_error(DamagedLakeFile("x.parquet does not match its checksum manifest")) == (
        1, "x.parquet does not match its checksum manifest")
