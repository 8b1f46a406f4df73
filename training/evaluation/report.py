"""Reports of training and validation: learning curves, equity curves, markdown tables (with the images
inline, so the Dagster UI shows them), and the printed rows of the CLI."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import polars as pl


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


DPI = 150


def save_learning_curves(curves: list[dict], path: Path) -> Path:
    """PPO's curves, one quantity (and one unit) per panel; approx KL on a log scale, where its small values
    (1e-6..1e-2) are readable."""
    plt = _pyplot()
    steps = [c["steps"] for c in curves]
    panels = [("episode P&L, finished episodes", "$ per episode", [c["episode_pnl_cents"] / 100 for c in curves], False),
              ("policy entropy", "nats", [c["entropy"] for c in curves], False),
              ("orders placed", "orders per step", [c["orders_per_step"] for c in curves], False),
              ("value loss", "mean squared error (reward units²)", [c["value_loss"] for c in curves], False),
              ("approx KL per update", "nats (log scale)", [max(c["approx_kl"], 1e-12) for c in curves], True)]
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 3.8))
    for ax, (title, unit, values, log) in zip(axes, panels):
        ax.plot(steps, values, marker="." if len(steps) < 30 else None)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        ax.set_xlabel("environment steps")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle("PPO learning curves", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


EQUITY_STRATEGIES = ("policy", "best_rule", "known_answer", "forecast_trader", "random", "buy_and_hold_yes")
DOT_STRATEGIES = ("policy", "best_rule", "forecast_trader")


def save_validation_plots(per_market: dict[str, pl.DataFrame], folder: Path, split: str,
                          booked_ms: dict[str, int] | None = None) -> list[Path]:
    """Two plots of a split: the pooled equity curve over time (each market's P&L booked at `booked_ms`, its
    last event; markets in ticker order where no time is given) and each market's P&L, sorted, with the mean
    and its 95% BCa interval per strategy."""
    folder.mkdir(parents=True, exist_ok=True)
    return [_equity_plot(per_market, folder / f"{split}_equity.png", split, booked_ms),
            _per_market_plot(per_market, folder / f"{split}_returns.png", split)]


def _equity_plot(per_market: dict[str, pl.DataFrame], path: Path, split: str, booked_ms: dict[str, int] | None) -> Path:
    from datetime import datetime, timezone

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for name in EQUITY_STRATEGIES:
        if name not in per_market:
            continue
        frame = per_market[name]
        if booked_ms:
            frame = frame.with_columns(pl.col("market_ticker").replace_strict(booked_ms, default=None,
                                                                              return_dtype=pl.Int64).alias("booked"))
            frame = frame.drop_nulls("booked").sort("booked", "market_ticker")
            x = [datetime.fromtimestamp(ms / 1000, tz=timezone.utc) for ms in frame["booked"].to_list()]
        else:
            frame = frame.sort("market_ticker")
            x = list(range(1, frame.height + 1))
        ax.step(x, np.cumsum(frame["return_dollars"].to_numpy()), where="post", label=name,
                linewidth=2.2 if name == "policy" else 1.2)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_title(f"{split}: cumulative P&L of all markets, net of spread and fees", fontsize=11)
    ax.set_xlabel("time each market's P&L is booked (its last event, UTC)" if booked_ms else "market (ticker order)")
    ax.set_ylabel("cumulative P&L ($)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    if booked_ms:
        fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _per_market_plot(per_market: dict[str, pl.DataFrame], path: Path, split: str) -> Path:
    from training.evaluation.scoring import bca_interval

    plt = _pyplot()
    names = [name for name in DOT_STRATEGIES if name in per_market]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for offset, name in enumerate(names):
        returns = np.sort(per_market[name]["return_dollars"].to_numpy())
        rank = np.arange(1, len(returns) + 1)
        dots = ax.plot(rank, returns, "o", markersize=4, alpha=0.8, label=name)[0]
        mean, low, high = bca_interval(returns)
        edge = len(returns) + 1.5 + offset * 1.2
        ax.errorbar([edge], [mean], yerr=[[mean - low], [high - mean]], fmt="D", color=dots.get_color(), capsize=4)
        dots.set_label(f"{name}: mean {mean:+.2f} [{low:+.2f}, {high:+.2f}]")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_title(f"{split}: P&L of each market, sorted; diamonds: the mean and its 95% BCa interval", fontsize=11)
    ax.set_xlabel("market rank (sorted by its P&L, per strategy)")
    ax.set_ylabel("P&L per market ($)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


TABLE_HEADER = ("strategy", "markets", "mean $", "95% CI (BCa)", "% profitable", "cross-market Sharpe",
                "max drawdown $", "orders")


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def table_cells(row: dict) -> list[str]:
    return [row["strategy"], str(row["markets"]), _money(row["mean_return_dollars"]),
            f"[{_money(row['ci_low'])}, {_money(row['ci_high'])}]", f"{row['pct_profitable']:.0f}%",
            f"{row['cross_market_sharpe']:+.2f}", f"{row['max_drawdown_dollars']:.2f}", str(row["orders"])]


def validation_table_rows(result: dict) -> tuple[tuple[str, ...], list[list[str]]]:
    """The results table as printable cells (the CLI's and the markdown report's)."""
    return TABLE_HEADER, [table_cells(row) for row in result["table"]]


def recovery_rows(result: dict) -> tuple[tuple[str, ...], list[list[str]]]:
    """How much of the planted edge is recovered: each known-answer rule's P&L, the policy's and the best
    single-feature rule's, and the policy's share of the known-answer rule's P&L."""
    rows = {row["strategy"]: row for row in result["table"]}
    cells = []
    for name in [n for n in rows if n.startswith("known_answer")] + ["policy", "best_rule"]:
        if name in rows:
            row = rows[name]
            cells.append([name, _money(row["mean_return_dollars"]),
                          f"[{_money(row['ci_low'])}, {_money(row['ci_high'])}]"])
    recovery = result.get("recovery") or {}
    if recovery.get("ratio") is not None:
        cells.append(["policy / known_answer", f"{recovery['ratio']:.2f}",
                      f"[{recovery['ci_low']:.2f}, {recovery['ci_high']:.2f}]"])
    return ("recovery", "$/market or ratio", "95% CI (BCa)"), cells


def _markdown_table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def inline_image(path: Path, title: str) -> str:
    """A markdown image with the PNG inline (data URI): Dagster's UI renders it without file access."""
    return inline_png(Path(path).read_bytes(), title)


def inline_png(png: bytes, title: str) -> str:
    """`inline_image` of PNG bytes (read through the lake: a bucket's files are no local paths)."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"


def stage_rows(stages: dict) -> tuple[tuple[str, ...], list[list[str]]]:
    """What each training stage scores on the select markets, its orders, and what it adds over the one before
    (paired)."""
    selection = stages.get("selection") or {}
    scores, adds = selection.get("scores", {}), selection.get("adds", {})
    added = {"forecast_trader": None, "warm_start": adds.get("warm_start_minus_forecast_trader"),
             "ppo": adds.get("ppo_minus_warm_start")}
    rows = []
    for name in ("forecast_trader", "warm_start", "ppo"):
        if name in scores:
            row, diff = scores[name], added[name]
            kept = " (kept)" if selection.get("kept") == name else ""
            rows.append([name + kept, _money(row["mean_return_dollars"]),
                         f"[{_money(row['ci_low'])}, {_money(row['ci_high'])}]", f"{row.get('orders', 0):,}",
                         "" if diff is None else f"{_money(diff['mean'])} [{_money(diff['ci_low'])}, {_money(diff['ci_high'])}]"])
    return ("stage", "select $/market", "95% CI", "orders", "adds over the previous stage (paired)"), rows


def report_markdown(result: dict, plots: list[Path], stages: dict | None = None) -> str:
    split = result["split"]
    lines = [f"# Policy on {split} markets", "",
             "Per-market P&L in dollars, net of spread and Kalshi taker fees per fill level; open positions valued "
             "net of the exit fee. 95% BCa bootstrap intervals resample markets; differences are paired by market.", ""]
    lines += _markdown_table(*validation_table_rows(result))
    lines += ["", "| policy minus | mean $ | 95% CI |", "| --- | --- | --- |"]
    for name, diff in result["comparison"].items():
        lines.append(f"| {name} | {_money(diff['mean'])} | [{_money(diff['ci_low'])}, {_money(diff['ci_high'])}] |")
    lines += ["", "## Recovery of the planted edge", ""] + _markdown_table(*recovery_rows(result))
    lines += ["", f"best_rule: {result['best_rule']['rule']}"]
    if stages:
        lines += ["", "## What each training stage adds (on the select markets, held out of every fit)", ""]
        lines += _markdown_table(*stage_rows(stages))
    lines += [""] + [inline_image(p, p.stem) for p in plots]
    return "\n".join(lines) + "\n"
