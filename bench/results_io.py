"""Benchmark results: a JSON list of {name, value, unit, baseline_name, baseline_value, ratio, target}."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Result:
    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    device: str = "cpu"       # where it was measured ("cuda: <name>" on a GPU)


def write_results(file_name: str, results: list[Result]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / file_name
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    tmp.replace(path)
    return path


def _format_baseline(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.3f}"


def print_results(title: str, results: list[Result], console: Console | None = None) -> None:
    table = Table(title=title)
    for column in ("name", "value", "unit", "baseline", "baseline value", "ratio", "target"):
        table.add_column(column, justify="left" if column in ("name", "unit", "baseline", "target") else "right")
    for r in results:
        table.add_row(r.name, f"{r.value:,.3f}" if r.value < 100 else f"{r.value:,.0f}", r.unit, r.baseline_name or "-",
                      _format_baseline(r.baseline_value),
                      "-" if r.ratio is None else f"{r.ratio:.2f}", r.target or "-")
    (console or Console(width=max(Console().width, 140))).print(table)
