"""Feature assets (Python): the resolution history, the per-event table and the frozen split registry."""

from datetime import date, timedelta

import dagster as dg
import polars as pl

from features.events import materialize_event_features
from features.quality import validate_event_file
from features.resolution import materialize_resolution_history
from features.splits import read_market_categories, update_registry
from orchestration.assets.ingest import covers, rows_by_day_table
from orchestration.partitions import daily_partitions
from orchestration.resources import LakeResource

FEATURES_GROUP = "features"
QUALITY_CHECK = "great_expectations_suite"
DISJOINT_CHECK = "no_market_in_two_splits"


def partition_days(context: dg.AssetExecutionContext) -> tuple[date, date]:
    window = context.partition_time_window
    return window.start.date(), (window.end - timedelta(days=1)).date()


@dg.asset(
    group_name=FEATURES_GROUP,
    deps=["raw_markets", "raw_trades"],
    kinds={"polars", "parquet"},
    description="Settled markets with their outcome, last traded price before close and Brier contribution "
                "(the catalog's resolution_history): the resolution features and dbt's markets mart read it.",
)
def resolution_history(lake: LakeResource):
    history = materialize_resolution_history(lake.lake())
    return dg.MaterializeResult(metadata={"settled_markets": history.height,
                                          "priced_markets": int(history["last_price_prob"].is_not_null().sum())})


@dg.asset(
    group_name=FEATURES_GROUP,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["raw_snapshots", "raw_deltas", "raw_trades", "raw_markets", resolution_history],
    kinds={"polars", "numba", "parquet"},
    check_specs=[dg.AssetCheckSpec(QUALITY_CHECK, asset="features_events", blocking=True,
                                   description="Great Expectations: ranges, nulls, monotone time per market, "
                                               "flag consistency")],
    description="Book after every event and every feature group, one parquet file per UTC day (the "
                "catalog's features_events; reads a few earlier raw days so that books and windows are "
                "complete at the first event).",
)
def features_events(context: dg.AssetExecutionContext, lake: LakeResource):
    first, last = partition_days(context)
    report = materialize_event_features(lake.lake(), first, last)
    failures, evaluated = [], 0
    for day, rows in report.rows_by_day.items():
        if rows == 0:
            continue
        quality = validate_event_file(lake.lake(), lake.lake().event_partition(day))
        evaluated += quality.evaluated
        failures.extend({"day": day, **failure} for failure in quality.failed)
    return dg.MaterializeResult(
        metadata={"covers": covers(context.partition_keys), **report.as_metadata(),
                  "rows_by_day": rows_by_day_table(report.rows_by_day)},
        check_results=[dg.AssetCheckResult(check_name=QUALITY_CHECK, passed=not failures,
                                           metadata={"expectations_evaluated": evaluated, "failed": failures[:20]})],
    )


@dg.asset(
    group_name=FEATURES_GROUP,
    deps=["market_categories"],
    kinds={"polars", "parquet"},
    check_specs=[dg.AssetCheckSpec(DISJOINT_CHECK, asset="split_registry", blocking=True,
                                   description="every market is in exactly one split")],
    description="Frozen market-level train/validation/test registry (the catalog's split_registry): markets keep "
                "their split forever; new markets are assigned, stratified by volatility class, as they arrive.",
)
def split_registry(context: dg.AssetExecutionContext, lake: LakeResource):
    registry = update_registry(lake.lake(), read_market_categories(lake.lake()), assigned_on=date.today())
    counts = dict(registry.group_by("split").len().iter_rows())
    duplicated = registry.filter(pl.col("market_ticker").is_duplicated()).height
    return dg.MaterializeResult(
        metadata={"markets": registry.height, **{f"markets_{k}": v for k, v in sorted(counts.items())},
                  "assigned_now": int((registry["assigned_on"] == date.today()).sum())},
        check_results=[dg.AssetCheckResult(check_name=DISJOINT_CHECK, passed=duplicated == 0,
                                           metadata={"duplicated_markets": duplicated})],
    )
