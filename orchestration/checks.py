"""Asset checks that are not produced by an asset's own run: freshness of the raw lake."""

from datetime import datetime, timezone

import dagster as dg

from ingest.freshness import freshness
from orchestration.resources import LakeResource


def _freshness_check(stream: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=f"raw_{stream}", name="fresh_and_not_collapsed",
                    description="newest partition at most KFS_MAX_STALENESS_DAYS old, and its rows at least "
                                "KFS_MIN_ROW_SHARE of the median of the 7 partitions before")
    def check(lake: LakeResource) -> dg.AssetCheckResult:
        report = freshness(lake.lake(), stream, datetime.now(timezone.utc).date())
        return dg.AssetCheckResult(
            passed=not (report.stale or report.row_drop),
            severity=dg.AssetCheckSeverity.ERROR if report.stale else dg.AssetCheckSeverity.WARN,
            description=report.message,
            metadata={"newest_partition": str(report.newest), "age_days": report.age_days,
                      "newest_rows": report.newest_rows, "recent_median_rows": report.recent_median_rows,
                      "stale": report.stale, "row_drop": report.row_drop},
        )

    return check


freshness_checks = [_freshness_check(stream) for stream in ("snapshots", "deltas", "trades")]
