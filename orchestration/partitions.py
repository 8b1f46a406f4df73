import warnings

import dagster as dg

from core.settings import settings

# Single-run backfill policies are the point of our partitioned assets (DuckDB has one writer); the
# parameter is marked beta in Dagster 1.13. Silence exactly that notice, nothing else.
warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy` .* is currently in beta")

# end_offset=1: today is a partition too (Dagster's default stops at yesterday), so today's rows can be ingested
# now and again tomorrow, when the nightly run's late-data window re-ingests them whole.
daily_partitions = dg.DailyPartitionsDefinition(start_date=settings().partitions_start.isoformat(), timezone="UTC",
                                                end_offset=1)

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def partition_range_tags(first, last) -> dict[str, str]:
    """The run tags that ask Dagster for one run over the daily partitions `first` .. `last` (dates or
    YYYY-MM-DD strings), as a backfill of our single-run assets does."""
    return {RANGE_START_TAG: str(first), RANGE_END_TAG: str(last)}
