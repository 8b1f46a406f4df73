"""The feature store end to end through Dagster (replay, features, dbt build with its tests, GE checks,
split registry), and the researcher API on its output."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import polars as pl
import pytest

from features import store
from features.schema import EVENT_COLUMNS
from tests.conftest import REPO, SMALL_CONFIG

FIRST, LAST = SMALL_CONFIG.start, SMALL_CONFIG.start + timedelta(days=SMALL_CONFIG.days - 1)


@pytest.fixture(scope="module", params=["local", "s3"])
def store_built(request, built_store, small_lake, nightly_days, tmp_path_factory):
    """The feature store as the nightly run built it on a local lake, and on a bucket of a real S3 server
    (SeaweedFS): the raw lake copied there, then feature_store_job with KFS_LAKE=s3://... (dbt included)."""
    if request.param == "local":
        yield built_store
        return
    from core.catalog import Lake
    from kfs.universe import build_feature_store
    from tests.conftest import lake_backend

    with lake_backend("s3", request, tmp_path_factory) as lake:
        lake.fs.put(f"{small_lake.root}/raw", f"{lake.root.path}/raw", recursive=True)
        warehouse = tmp_path_factory.mktemp("s3_store") / "warehouse.duckdb"
        yield build_feature_store(Lake(str(lake.root)), warehouse, nightly_days), Lake(str(lake.root)), warehouse


def _warehouse(lake, warehouse):
    """The dbt warehouse, read-only; its views over an s3:// lake read through s3fs, as a researcher's would."""
    conn = duckdb.connect(str(warehouse), read_only=True)
    if lake.remote:
        from core.object_store import s3_filesystem

        conn.register_filesystem(s3_filesystem())
    return conn


def test_feature_store_job_succeeds_with_every_check_passing(store_built):
    run, lake, _ = store_built
    assert run.success
    # The universe lies in the past: the raw lake's freshness checks fail by design (tests/ingest/test_freshness.py).
    assert [check for check in run.failed_checks() if check[1] != "fresh_and_not_collapsed"] == []
    names = {check.name for check in run.checks}
    assert "great_expectations_suite" in names and "no_market_in_two_splits" in names
    assert any("one_split_per_market" in n for n in names) and any("rows_match_distinct" in n for n in names)
    assert len(run.checks) >= 40  # dbt tests arrive as asset checks
    assert {"features_events", "market_categories", "split_registry", "markets", "events",
            "int_market_day_trades", "resolution_history"} <= set(run.materialized)


def test_markets_mart_has_categories_and_disjoint_splits(store_built):
    _, lake, _ = store_built
    markets = store.load_markets(lake)
    assert markets["market_ticker"].is_unique().all()
    assert set(markets["split"]) <= {"train", "validation", "test"} and markets["split"].null_count() == 0
    assert set(markets["volatility_class"]) <= {"stable", "moderate", "volatile"}
    events_markets = store.load_events(lake=lake).select("market_ticker").unique().collect()
    assert markets.height == events_markets.height


def test_duckdb_view_and_polars_agree(store_built):
    _, lake, warehouse = store_built
    with _warehouse(lake, warehouse) as conn:
        by_split = dict(conn.execute("select split, count(*) from events group by 1").fetchall())
    polars_counts = {split: store.load_events(split=split, lake=lake).select(pl.len()).collect().item()
                     for split in ("train", "validation", "test")}
    assert {k: v for k, v in polars_counts.items() if v} == by_split


def test_load_events_filters_and_validates_its_arguments(store_built):
    _, lake, _ = store_built
    one_day = store.load_events(start=FIRST, end=FIRST, columns=["ob_yes_mid_prob"], lake=lake).collect()
    assert one_day.columns == ["market_ticker", "timestamp_ms", "ob_yes_mid_prob"]
    assert pl.from_epoch(one_day["timestamp_ms"], time_unit="ms").dt.date().unique().to_list() == [FIRST]
    ticker = one_day["market_ticker"][0]
    assert store.load_events(markets=[ticker], lake=lake).collect()["market_ticker"].unique().to_list() == [ticker]
    with pytest.raises(ValueError, match="unknown columns"):
        store.load_events(columns=["no_such_feature"], lake=lake)
    with pytest.raises(ValueError, match="split must be one of"):
        store.load_events(split="holdout", lake=lake)
    with pytest.raises(ValueError, match="before start"):
        store.load_events(start="2026-03-03", end="2026-03-01", lake=lake)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        store.load_events(start="yesterday", lake=lake)


def test_data_dictionary_is_generated_and_current():
    written = (REPO / "docs" / "data_dictionary.md").read_text()
    stale = "docs/data_dictionary.md is stale: python -m features.store > docs/data_dictionary.md"
    assert written == store.data_dictionary_markdown(), stale
    dictionary = store.data_dictionary()
    assert dictionary["column"].to_list() == [c.name for c in EVENT_COLUMNS]
    assert dictionary["doc"].str.len_chars().min() > 10
