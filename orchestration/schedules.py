"""The nightly schedule: yesterday plus the late-data window, then features, training, publishing."""

from datetime import timedelta

import dagster as dg

from core.settings import settings
from orchestration.partitions import partition_range_tags

NIGHTLY_CRON = "0 2 * * *"  # 02:00 UTC


nightly_job = dg.define_asset_job(
    "nightly_job",
    selection=dg.AssetSelection.all(),
    description="Ingest yesterday and the late-data window, rebuild features and marts for it, then train, "
                "validate and publish (the promotion gate still decides the production alias).",
)


def nightly_range(scheduled_day) -> tuple[str, str]:
    """Yesterday and the KFS_LATE_DAYS days before it (re-materialized to absorb late rows)."""
    current = settings()
    yesterday = scheduled_day - timedelta(days=1)
    first = max(yesterday - timedelta(days=current.late_days), current.partitions_start)
    return first.isoformat(), yesterday.isoformat()


@dg.schedule(job=nightly_job, cron_schedule=NIGHTLY_CRON, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="02:00 UTC: yesterday plus KFS_LATE_DAYS earlier days, one run, in asset order.")
def nightly_schedule(context: dg.ScheduleEvaluationContext):
    first, last = nightly_range(context.scheduled_execution_time.date())
    return dg.RunRequest(
        run_key=f"nightly-{last}",
        tags=partition_range_tags(first, last),
    )
