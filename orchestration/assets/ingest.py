"""Raw ingest assets: thin wrappers around `ingest.extract`."""


import os
from datetime import date, datetime, timezone

import dagster as dg

from ingest.extract import PartitionReport, ingest_markets, ingest_partition
from ingest.streams import PARTITIONED_STREAMS
from orchestration.partitions import daily_partitions
from orchestration.resources import LakeResource, SourceDatabase

RAW_GROUP = "raw"
RECONCILED = "rows_reconcile"
QUARANTINE_SHARE = "quarantine_share_below_threshold"


def max_quarantine_share() -> float:
    return float(os.environ.get("KFS_QUARANTINE_MAX_SHARE", "0.01"))


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


def report_metadata(report: PartitionReport) -> dict:
    return {
        "rows_source": report.rows_source,
        "rows_read": report.rows_read,
        "rows_written": report.rows_written,
        "rows_quarantined": report.rows_quarantined,
        "bytes_written": report.bytes_written,
        "min_timestamp": _iso(report.min_timestamp_ms),
        "max_timestamp": _iso(report.max_timestamp_ms),
        "quarantine_reasons": report.quarantine_reasons,
        "seconds": round(report.seconds, 3),
    }


def report_checks(report: PartitionReport) -> list[dg.AssetCheckResult]:
    share = report.rows_quarantined / report.rows_read if report.rows_read else 0.0
    limit = max_quarantine_share()
    return [
        dg.AssetCheckResult(
            check_name=RECONCILED,
            passed=report.reconciled,
            metadata={"rows_source": report.rows_source, "rows_read": report.rows_read,
                      "rows_written_plus_quarantined": report.rows_written + report.rows_quarantined},
        ),
        dg.AssetCheckResult(
            check_name=QUARANTINE_SHARE,
            passed=share <= limit,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"quarantine_share": share, "threshold": limit},
        ),
    ]


def _combined(reports: list[PartitionReport]) -> PartitionReport:
    """One report for a range run (a nightly run re-ingests several days in one go)."""
    if len(reports) == 1:
        return reports[0]
    total = PartitionReport(stream=reports[0].stream, partition=f"{reports[0].partition}..{reports[-1].partition}")
    for r in reports:
        total.rows_source += r.rows_source
        total.rows_read += r.rows_read
        total.rows_written += r.rows_written
        total.rows_quarantined += r.rows_quarantined
        total.bytes_written += r.bytes_written
        total.seconds += r.seconds
        for reason, count in r.quarantine_reasons.items():
            total.quarantine_reasons[reason] = total.quarantine_reasons.get(reason, 0) + count
    stamps = [r for r in reports if r.min_timestamp_ms is not None]
    total.min_timestamp_ms = min((r.min_timestamp_ms for r in stamps), default=None)
    total.max_timestamp_ms = max((r.max_timestamp_ms for r in stamps), default=None)
    return total


def _raw_stream_asset(stream_name: str) -> dg.AssetsDefinition:
    key = dg.AssetKey(f"raw_{stream_name}")

    @dg.asset(
        name=key.path[0],
        group_name=RAW_GROUP,
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool="postgres_read",
        kinds={"postgres", "parquet"},
        description=f"One UTC day of `{stream_name}` from PostgreSQL as parquet under raw/{stream_name}/date=YYYY-MM-DD/; "
        f"rows failing the raw checks go to raw/_quarantine/{stream_name}/ with a reason.",
        check_specs=[
            dg.AssetCheckSpec(RECONCILED, asset=key, description="rows in source = rows written + rows quarantined"),
            dg.AssetCheckSpec(QUARANTINE_SHARE, asset=key, description="quarantined share at most KFS_QUARANTINE_MAX_SHARE"),
        ],
    )
    def raw_stream(context: dg.AssetExecutionContext, source_db: SourceDatabase, lake: LakeResource):
        reports = [ingest_partition(source_db.dsn(), stream_name, date.fromisoformat(key_), lake.lake(), source_db.tables())
                   for key_ in context.partition_keys]
        report = _combined(reports)
        metadata = report_metadata(report)
        if len(reports) > 1:
            metadata["rows_by_day"] = {r.partition: r.rows_written for r in reports}
        checks = report_checks(report)
        checks[0] = dg.AssetCheckResult(check_name=RECONCILED, passed=all(r.reconciled for r in reports),
                                        metadata=checks[0].metadata)
        return dg.MaterializeResult(metadata=metadata, check_results=checks)

    return raw_stream


raw_partitioned_assets = [_raw_stream_asset(name) for name in PARTITIONED_STREAMS]


@dg.asset(
    group_name=RAW_GROUP,
    kinds={"postgres", "parquet"},
    description="All market metadata and resolutions as raw/markets/markets.parquet (re-read whole each time).",
    check_specs=[
        dg.AssetCheckSpec(RECONCILED, asset="raw_markets", description="rows in source = rows written + rows quarantined"),
    ],
)
def raw_markets(source_db: SourceDatabase, lake: LakeResource):
    report = ingest_markets(source_db.dsn(), lake.lake(), source_db.tables())
    return dg.MaterializeResult(metadata=report_metadata(report), check_results=report_checks(report)[:1])
