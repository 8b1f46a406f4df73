"""The one Dagster `Definitions` of the project (`dagster dev`, `dg check defs`)."""

from __future__ import annotations

import os

import dagster as dg

from orchestration.assets.ingest import raw_markets, raw_partitioned_assets
from orchestration.resources import resources_for

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(*raw_partitioned_assets),
    description="Ingest one day of snapshots, deltas and trades.",
)

markets_job = dg.define_asset_job(
    "markets_job",
    selection=dg.AssetSelection.assets(raw_markets),
    description="Re-read market metadata and resolutions.",
)

defs = dg.Definitions(
    assets=[*raw_partitioned_assets, raw_markets],
    jobs=[ingest_job, markets_job],
    resources=resources_for(os.environ.get("KFS_ENV", "local")),
)
