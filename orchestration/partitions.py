import warnings

import dagster as dg

from core.settings import settings

# Single-run backfill policies are the point of our partitioned assets (DuckDB has one writer); the
# parameter is marked beta in Dagster 1.13. Silence exactly that notice, nothing else.
warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy` .* is currently in beta")

daily_partitions = dg.DailyPartitionsDefinition(start_date=settings().partitions_start.isoformat(), timezone="UTC")
