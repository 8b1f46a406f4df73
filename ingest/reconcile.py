"""Reconciliation over the whole source: every row is written, quarantined with a reason, or unaccounted.

Per stream and day range: rows in PostgreSQL with a time in the range, rows written to the raw lake for
those days, rows quarantined for those days (by reason); and, once per stream, the rows whose time belongs
to no partition against the `invalid_timestamp` quarantine. `unaccounted` must be 0; it is not when a
day was never ingested, or rows arrived or changed since.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date

import polars as pl
from psycopg import sql

from core.catalog import Lake
from core.postgres import connection, table_identifier
from core.settings import SourceTables
from ingest.extract import count_query, day_bounds_ms, invalid_time_queries
from ingest.streams import ALL_STREAMS, PARTITIONED_STREAMS


@dataclass
class Reconciliation:
    stream: str
    scope: str                      # "YYYY-MM-DD..YYYY-MM-DD", "invalid_timestamp" or "all"
    source: int
    written: int
    quarantined: dict[str, int] = field(default_factory=dict)

    @property
    def unaccounted(self) -> int:
        return self.source - self.written - sum(self.quarantined.values())

    def as_dict(self) -> dict:
        return {**asdict(self), "quarantined_total": sum(self.quarantined.values()), "unaccounted": self.unaccounted}


def _reasons(lake: Lake, files) -> dict[str, int]:
    files = [f for f in files if lake.exists(f)]
    if not files:
        return {}
    counts = lake.scan_parquet(files).group_by("reason").len().collect()
    return dict(sorted(counts.iter_rows()))


def _rows(lake: Lake, files) -> int:
    return sum(lake.parquet_rows(f) for f in files if lake.exists(f))


def reconcile(dsn: str, lake: Lake, tables: SourceTables, start: date, end: date,
              valid_from_ms: int, valid_until_ms: int) -> list[Reconciliation]:
    range_start, range_end = day_bounds_ms(start)[0], day_bounds_ms(end)[1]
    results = []
    with connection(dsn) as conn:
        def count(query) -> int:
            return int(conn.execute(query).fetchone()[0])

        for name, stream in PARTITIONED_STREAMS.items():
            results.append(Reconciliation(
                stream=name, scope=f"{start}..{end}",
                source=count(count_query(stream, tables, range_start, range_end)),
                written=_rows(lake, lake.partition_files(f"raw_{name}", start, end)),
                quarantined=_reasons(lake, lake.partition_files(f"quarantine_{name}", start, end))))
            invalid_count, _ = invalid_time_queries(stream, tables, valid_from_ms, valid_until_ms)
            results.append(Reconciliation(
                stream=name, scope="invalid_timestamp", source=count(invalid_count), written=0,
                quarantined=_reasons(lake, [lake.invalid_timestamp_quarantine(name)])))
        markets = ALL_STREAMS["markets"]
        results.append(Reconciliation(
            stream="markets", scope="all",
            source=count(sql.SQL("SELECT count(*) FROM {}").format(table_identifier(getattr(tables, markets.table_attr)))),
            written=_rows(lake, [lake.raw_markets()]), quarantined=_reasons(lake, [lake.quarantine_markets()])))
    return results


def as_table(results: list[Reconciliation]) -> pl.DataFrame:
    return pl.DataFrame([{**r.as_dict(), "quarantined": ", ".join(f"{k}: {v}" for k, v in r.quarantined.items())}
                         for r in results])
