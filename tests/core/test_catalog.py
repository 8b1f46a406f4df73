"""The lake catalog: every dataset's location, partition listing, atomic writes."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from core.catalog import DATASETS, Lake


def test_every_location_is_under_the_root_and_daily_datasets_are_hive_partitions(tmp_path):
    lake = Lake(tmp_path)
    for name, dataset in DATASETS.items():
        assert lake.location(name).is_relative_to(tmp_path)
        if dataset.daily:
            assert lake.partition(name, date(2026, 3, 2)).parent.name == "date=2026-03-02"
    assert lake.model_version("v1").parent == lake.model_root() and lake.candidate().is_relative_to(lake.model_root())


def test_partitions_lists_only_written_days_in_order(tmp_path):
    lake = Lake(tmp_path)
    for day in (date(2026, 3, 3), date(2026, 3, 1)):
        lake.write_parquet(pl.DataFrame({"x": [1]}), lake.raw_partition("trades", day))
    lake.raw_partition("trades", date(2026, 3, 2)).parent.mkdir(parents=True)  # a folder without its file
    assert lake.partitions("trades") == [date(2026, 3, 1), date(2026, 3, 3)]
    assert lake.partition_files("raw_trades", start=date(2026, 3, 2)) == [lake.raw_partition("trades", date(2026, 3, 3))]


def test_writes_are_deterministic_and_leave_no_temporaries(tmp_path):
    lake = Lake(tmp_path)
    target = lake.location("split_registry")
    frame = pl.DataFrame({"market_ticker": ["A", "B"], "split": ["train", "test"]})
    lake.write_parquet(frame, target)
    first = target.read_bytes()
    lake.write_parquet(frame, target)
    assert target.read_bytes() == first
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name, f"{target.name}.manifest.json"]
    lake.verify(target)   # the manifest describes the file that is there


@pytest.mark.parametrize("version", ["", "../etc", ".hidden", "a/b"])
def test_model_versions_cannot_escape_the_model_folder(tmp_path, version):
    with pytest.raises(ValueError, match="bad model version"):
        Lake(tmp_path).model_version(version)


def test_an_s3_lake_lists_reads_and_writes_like_a_local_one(tmp_path, s3_lake):
    """The same calls on a bucket of a real S3 server (SeaweedFS): the same listing, the same bytes."""
    local, remote = Lake(tmp_path), Lake(s3_lake)
    frame = pl.DataFrame({"market_ticker": ["A", "B", "C"], "price": [10, 50, 90]})
    for lake in (local, remote):
        for day in (date(2026, 3, 3), date(2026, 3, 1)):
            lake.write_parquet(frame, lake.raw_partition("trades", day), metadata={"kfs": "1"})
        lake.write_json(lake.model_registry(), {"versions": [], "aliases": {}})
    assert remote.partitions("trades") == local.partitions("trades") == [date(2026, 3, 1), date(2026, 3, 3)]
    day = date(2026, 3, 3)
    assert remote.raw_partition("trades", day).read_bytes() == local.raw_partition("trades", day).read_bytes()
    assert remote.read_parquet(remote.raw_partition("trades", day)).equals(frame)
    assert remote.scan_parquet(remote.partition_files("raw_trades")).select(pl.len()).collect().item() == 6
    assert remote.parquet_rows(remote.raw_partition("trades", day)) == 3
    assert remote.size(remote.raw_partition("trades", day)) == local.size(local.raw_partition("trades", day))
    assert remote.read_json(remote.model_registry()) == {"versions": [], "aliases": {}}
    assert not remote.exists(remote.raw_partition("trades", date(2026, 3, 2))) and remote.dbt_output_folders() == []
    remote.remove_dataset("raw_trades")
    assert remote.partitions("trades") == []


def test_a_lake_url_of_another_scheme_is_refused():
    with pytest.raises(ValueError, match="a local path or s3://bucket/prefix"):
        Lake("gs://bucket/lake")
