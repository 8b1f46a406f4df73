"""The one Dagster `Definitions` of the project (`dagster dev`, `dg check defs`)."""

from __future__ import annotations

import os

import dagster as dg

from orchestration.assets.dbt import dbt_core_models, dbt_daily_trade_flow, dbt_resource, dbt_split_marts
from orchestration.assets.features import features_events, split_registry
from orchestration.assets.ingest import raw_markets, raw_partitioned_assets
from orchestration.assets.training import policy_validation, published_policy, trained_policy
from orchestration.checks import freshness_checks
from orchestration.resources import resources_for
from orchestration.schedules import nightly_job, nightly_schedule

ingest_job = dg.define_asset_job(
    "ingest_job",
    # Freshness compares the lake with today: meaningful nightly and in the UI, not for a backfill of old days.
    selection=dg.AssetSelection.assets(*raw_partitioned_assets) - dg.AssetSelection.checks(*freshness_checks),
    description="Ingest one day of snapshots, deltas and trades.",
)

markets_job = dg.define_asset_job(
    "markets_job",
    selection=dg.AssetSelection.assets(raw_markets),
    description="Re-read market metadata and resolutions.",
)

feature_store_job = dg.define_asset_job(
    "feature_store_job",
    selection=dg.AssetSelection.assets(features_events, dbt_daily_trade_flow, dbt_core_models, split_registry,
                                       dbt_split_marts),
    description="Per-event features for a range of days, then the dbt models, categories and the split.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets(trained_policy, policy_validation, published_policy),
    description="Train the policy on training markets, validate it against baselines, publish it through the gate.",
)

defs = dg.Definitions(
    assets=[*raw_partitioned_assets, raw_markets, features_events, dbt_daily_trade_flow, dbt_core_models,
            split_registry, dbt_split_marts, trained_policy, policy_validation, published_policy],
    jobs=[ingest_job, markets_job, feature_store_job, training_job, nightly_job],
    schedules=[nightly_schedule],
    asset_checks=freshness_checks,
    resources={**resources_for(os.environ.get("KFS_ENV", "local")), "dbt": dbt_resource()},
)
