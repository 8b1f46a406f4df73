"""Freshness of the raw lake: is the newest partition recent, and did its row count collapse?"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date

from core.catalog import Lake
from core.settings import settings


@dataclass
class FreshnessReport:
    stream: str
    newest: date | None
    age_days: int | None
    newest_rows: int
    recent_median_rows: float | None
    stale: bool
    row_drop: bool

    @property
    def message(self) -> str:
        if self.newest is None:
            return f"no {self.stream} partition has been ingested"
        parts = [f"newest {self.stream} partition {self.newest} is {self.age_days} day(s) old"]
        if self.recent_median_rows:
            parts.append(f"{self.newest_rows:,} rows against a median of {self.recent_median_rows:,.0f} in the 7 before")
        return "; ".join(parts)


def freshness(lake: Lake, stream: str, today: date, history: int = 7) -> FreshnessReport:
    days = lake.partitions(stream)
    if not days:
        return FreshnessReport(stream, None, None, 0, None, stale=True, row_drop=False)
    newest = days[-1]
    rows = {d: lake.parquet_rows(lake.raw_partition(stream, d)) for d in days[-(history + 1):]}
    earlier = [rows[d] for d in days[-(history + 1):-1]]
    median = statistics.median(earlier) if earlier else None
    age = (today - newest).days
    limits = settings()
    return FreshnessReport(stream, newest, age, rows[newest], median, stale=age > limits.max_staleness_days,
                           row_drop=bool(median) and rows[newest] < limits.min_row_share * median)
