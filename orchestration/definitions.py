"""The one Dagster `Definitions` of the project (`dagster dev`, `dg check defs`)."""

from __future__ import annotations

import dagster as dg

from core.settings import settings
from orchestration.assets.dbt import dbt_models, dbt_resource, dbt_split_marts
from orchestration.assets.features import (
    features_events,
    resolution_history,
    split_registry,
)
from orchestration.assets.ingest import (
    raw_invalid_timestamps,
    raw_markets,
    raw_partitioned_assets,
)
from orchestration.assets.training import (
    policy_validation,
    published_policy,
    trained_policy,
)
from orchestration.checks import freshness_checks
from orchestration.executors import executor_definition
from orchestration.recovery import dead_run_reclaimer
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
    selection=dg.AssetSelection.assets(raw_markets, raw_invalid_timestamps),
    description="Re-read market metadata and resolutions, and quarantine the rows whose time fits no partition.",
)

feature_store_job = dg.define_asset_job(
    "feature_store_job",
    selection=dg.AssetSelection.assets(resolution_history, features_events, dbt_models, split_registry,
                                       dbt_split_marts),
    description="Resolution history and per-event features for a range of days, then the dbt models, the split "
                "and the marts.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets(trained_policy, policy_validation, published_policy),
    description="Train the policy on training markets, validate it against baselines, publish it through the gate.",
)

defs = dg.Definitions(
    assets=[*raw_partitioned_assets, raw_markets, raw_invalid_timestamps, resolution_history, features_events, dbt_models,
            split_registry, dbt_split_marts, trained_policy, policy_validation, published_policy],
    jobs=[ingest_job, markets_job, feature_store_job, training_job, nightly_job],
    schedules=[nightly_schedule],
    sensors=[dead_run_reclaimer],
    asset_checks=freshness_checks,
    resources={**resources_for(settings().env), "dbt": dbt_resource()},
    executor=executor_definition(settings().executor),
)
