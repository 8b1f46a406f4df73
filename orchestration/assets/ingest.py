"""Raw ingest assets: thin wrappers around `ingest.extract`."""


from datetime import date, datetime, timezone

import dagster as dg

from core.settings import settings
from ingest.extract import (
    PartitionReport,
    ingest_invalid_timestamps,
    ingest_markets,
    ingest_partition,
    valid_time_range_ms,
)
from ingest.streams import PARTITIONED_STREAMS
from orchestration.metadata import pairs_table
from orchestration.partitions import daily_partitions
from orchestration.resources import LakeResource, SourceDatabase

RAW_GROUP = "raw"
RECONCILED = "rows_reconcile"
QUARANTINE_SHARE = "quarantine_share_below_threshold"


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


def covers(partition_keys) -> str:
    """What a materialization's figures are of. Dagster gives every partition of a range run the run's one
    metadata (no per-partition metadata in a single run: dagster-io/dagster#18123), so a range says so."""
    keys = list(partition_keys)
    return keys[0] if len(keys) == 1 else f"the whole range {keys[0]} .. {keys[-1]} ({len(keys)} days): totals"


def rows_by_day_table(rows: dict[str, int]) -> dg.MetadataValue:
    return pairs_table(rows, ("day", "string"), ("rows", "int"))


def report_checks(report: PartitionReport) -> list[dg.AssetCheckResult]:
    share = report.rows_quarantined / report.rows_read if report.rows_read else 0.0
    limit = settings().quarantine_max_share
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
        metadata = {"covers": covers(context.partition_keys), **report_metadata(report)}
        if len(reports) > 1:
            metadata["rows_by_day"] = rows_by_day_table({r.partition: r.rows_written for r in reports})
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


@dg.asset(
    group_name=RAW_GROUP,
    kinds={"postgres", "parquet"},
    description="Rows of every stream whose time is NULL, before KFS_PARTITIONS_START or past tomorrow: they "
                "belong to no daily partition, so they are quarantined whole with reason invalid_timestamp "
                "(one file per stream, rewritten each run) instead of vanishing.",
    check_specs=[dg.AssetCheckSpec(RECONCILED, asset="raw_invalid_timestamps",
                                   description="rows with an invalid time in source = rows quarantined")],
)
def raw_invalid_timestamps(source_db: SourceDatabase, lake: LakeResource):
    current = settings()
    valid_from, valid_until = valid_time_range_ms(current.partitions_start, datetime.now(timezone.utc).date())
    reports = ingest_invalid_timestamps(source_db.dsn(), lake.lake(), source_db.tables(), valid_from, valid_until)
    return dg.MaterializeResult(
        metadata={f"{r.stream}_invalid_timestamp_rows": r.rows_quarantined for r in reports},
        check_results=[dg.AssetCheckResult(check_name=RECONCILED, passed=all(r.reconciled for r in reports),
                                           metadata={r.stream: f"source {r.rows_source}, quarantined {r.rows_quarantined}"
                                                     for r in reports})])
