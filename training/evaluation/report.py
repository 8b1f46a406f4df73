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


def save_learning_curves(curves: list[dict], path: Path) -> Path:
    plt = _pyplot()
    steps = [c["steps"] for c in curves]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(steps, [c["episode_pnl_cents"] for c in curves])
    axes[0].set_title("PPO: episode P&L (cents, finished episodes)")
    axes[1].plot(steps, [c["entropy"] for c in curves], label="entropy")
    axes[1].plot(steps, [c["orders_per_step"] for c in curves], label="orders / step")
    axes[1].legend()
    axes[1].set_title("exploration")
    axes[2].plot(steps, [c["value_loss"] for c in curves], label="value loss")
    axes[2].plot(steps, [c["approx_kl"] * 100 for c in curves], label="approx KL x100")
    axes[2].legend()
    axes[2].set_title("optimisation")
    for ax in axes:
        ax.set_xlabel("environment steps")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


EQUITY_STRATEGIES = ("policy", "best_rule", "known_answer", "forecast_trader", "random", "buy_and_hold_yes")


def save_validation_plots(per_market: dict[str, pl.DataFrame], folder: Path, split: str) -> list[Path]:
    plt = _pyplot()
    equity, ax = plt.subplots(figsize=(7, 3.6))
    for name, frame in per_market.items():
        if name in EQUITY_STRATEGIES:
            ax.plot(np.cumsum(frame.sort("market_ticker")["return_dollars"].to_numpy()), label=name)
    ax.set_title(f"cumulative P&L over {split} markets ($, net of spread and fees)")
    ax.set_xlabel("market")
    ax.legend(fontsize=7)
    equity.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    equity_path = folder / f"{split}_equity.png"
    equity.savefig(equity_path, dpi=80)
    histogram, ax = plt.subplots(figsize=(7, 3.6))
    for name in ("policy", "best_rule", "known_answer"):
        if name in per_market:
            ax.hist(per_market[name]["return_dollars"].to_numpy(), bins=20, alpha=0.5, label=name)
    ax.set_title(f"per-market return distribution, {split} ($)")
    ax.legend(fontsize=7)
    histogram.tight_layout()
    histogram_path = folder / f"{split}_returns.png"
    histogram.savefig(histogram_path, dpi=80)
    plt.close("all")
    return [equity_path, histogram_path]


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
