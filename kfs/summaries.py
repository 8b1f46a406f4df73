"""Tables the commands print: the raw lake, the feature store, the validated and published policy."""

from __future__ import annotations

import polars as pl
from rich.console import Console
from rich.table import Table

from core.catalog import RAW_STREAMS, Lake
from features import store
from training.evaluation.report import recovery_rows, stage_rows, validation_table_rows
from training.release.publish import PRODUCTION, read_registry


def lake_summary(lake: Lake) -> dict:
    """Rows, bytes, partitions and quarantined rows per raw dataset."""
    def rows_and_bytes(paths) -> tuple[int, int]:
        return sum(lake.parquet_rows(p) for p in paths), sum(lake.size(p) for p in paths)

    summary = {}
    for stream in (*RAW_STREAMS, "markets"):
        files = lake.partition_files(f"raw_{stream}") if stream != "markets" else \
            [p for p in [lake.raw_markets()] if lake.exists(p)]
        rows, size = rows_and_bytes(files)
        quarantined, _ = rows_and_bytes(lake.quarantine_files(stream))
        summary[stream] = {"rows": rows, "bytes": size, "quarantined": quarantined,
                           "partitions": len(files) if stream != "markets" else 1}
    return summary


def raw_lake_table(summary: dict) -> Table:
    table = Table(title="kalshi-feature-store demo: raw lake")
    for column in ("dataset", "rows", "partitions", "bytes", "quarantined"):
        table.add_column(column, justify="right" if column != "dataset" else "left")
    for name, info in summary.items():
        table.add_row(name, f"{info['rows']:,}", str(info["partitions"]), f"{info['bytes']:,}", f"{info['quarantined']:,}")
    book_events = summary["snapshots"]["rows"] + summary["deltas"]["rows"]
    table.add_row("[bold]book events[/]", f"{book_events:,}", "", "", "")
    return table


def feature_summary(lake: Lake) -> Table:
    """Feature rows per day, and markets per volatility class and split."""
    table = Table(title="feature store")
    table.add_column("what")
    table.add_column("value", justify="right")
    events = store.load_events(lake=lake).group_by(pl.from_epoch("timestamp_ms", time_unit="ms").dt.date().alias("day")) \
        .agg(pl.len()).sort("day").collect()
    for day, rows in events.iter_rows():
        table.add_row(f"event feature rows {day}", f"{rows:,}")
    table.add_row("event feature rows, all days", f"{events['len'].sum():,}")
    markets = store.load_markets(lake)
    for (klass,), group in sorted(markets.group_by(["volatility_class"])):
        table.add_row(f"markets {klass}", str(group.height))
    for (split,), group in sorted(markets.group_by(["split"])):
        table.add_row(f"markets in {split}", str(group.height))
    return table


def _rich_table(title: str, header, rows) -> Table:
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="left" if column in ("strategy", "recovery", "stage") else "right")
    for row in rows:
        table.add_row(*row)
    return table


def print_results(target: Console, result: dict, title: str) -> None:
    """The results table, the recovery of the planted edge, and the paired comparisons of a scoring run."""
    target.print(_rich_table(title, *validation_table_rows(result)))
    target.print(_rich_table("recovery of the planted edge ($/market; ratio of means)", *recovery_rows(result)))
    rows = [[name, f"{d['mean']:+.2f}", f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"]
            for name, d in result["comparison"].items()]
    target.print(_rich_table("policy minus each strategy, paired by market", ("strategy", "mean $", "95% CI (BCa)"), rows))
    target.print(f"best_rule: {result['best_rule']['rule']}", highlight=False, markup=False)


def print_policy_summary(target: Console, lake: Lake | None = None) -> None:
    lake = lake or Lake()
    validation = lake.read_json(lake.candidate() / "validation.json")
    training = lake.read_json(lake.candidate() / "training.json")
    print_results(target, validation, "validation markets: per-market P&L ($, net of spread and fees)")
    header, rows = stage_rows(training.get("stages", {}))
    if rows:
        target.print(_rich_table("what each training stage adds (select markets, paired)", header, rows))
    tiers = training.get("stages", {}).get("complexity_tiers")
    if tiers and "skipped" in tiers:
        target.print(f"complexity tiers skipped: {tiers['skipped']}", highlight=False, markup=False)
    elif tiers:
        rows = [[name, str(tiers[name]["hidden"]), f"{tiers[name]['select_mean_dollars']:+.2f}",
                 f"{tiers[name]['select_sharpe']:.3f}", f"{tiers[name]['batched_latency_us']['p99_us']:.0f}"]
                for name in ("base", "large")]
        target.print(_rich_table(f"complexity tiers (kept: {tiers['kept']}; {tiers['rule']})",
                                 ("stage", "hidden", "select $/market", "cross-market Sharpe", "p99 us, 100 markets"),
                                 rows))
    registry = read_registry(lake)
    latest = registry["versions"][-1]
    production = registry["aliases"].get(PRODUCTION)
    manifest = lake.read_json(lake.model_version(latest["version"]) / "manifest.json")
    target.print(f"published {latest['version']} -> {lake.model_version(latest['version']) / 'policy_int8.pt'}")
    verdict = "promoted" if latest["promoted"] else "not promoted: " + "; ".join(latest["reasons"])
    target.print(f"alias production -> {production or 'none yet'}; this version {verdict}", highlight=False, markup=False)
    for line in manifest["promotion"].get("comparisons", []):
        target.print(f"  gate: {line}", highlight=False, markup=False)
