"""The nightly schedule: yesterday plus the late-data window, then features, training, publishing."""

import os
from datetime import date, timedelta

import dagster as dg

from kfs.config import partitions_start

NIGHTLY_CRON = "0 2 * * *"  # 02:00 UTC


def late_days() -> int:
    """Days before yesterday that every nightly run re-materializes to absorb late rows (KFS_LATE_DAYS)."""
    return int(os.environ.get("KFS_LATE_DAYS", "2"))


nightly_job = dg.define_asset_job(
    "nightly_job",
    selection=dg.AssetSelection.all(),
    description="Ingest yesterday and the late-data window, rebuild features and marts for it, then train, "
                "validate and publish (the promotion gate still decides the production alias).",
)


def nightly_range(scheduled_day) -> tuple[str, str]:
    yesterday = scheduled_day - timedelta(days=1)
    first = max(yesterday - timedelta(days=late_days()), date.fromisoformat(partitions_start()))
    return first.isoformat(), yesterday.isoformat()


@dg.schedule(job=nightly_job, cron_schedule=NIGHTLY_CRON, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="02:00 UTC: yesterday plus KFS_LATE_DAYS earlier days, one run, in asset order.")
def nightly_schedule(context: dg.ScheduleEvaluationContext):
    first, last = nightly_range(context.scheduled_execution_time.date())
    return dg.RunRequest(
        run_key=f"nightly-{last}",
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )
