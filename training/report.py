"""Reports of training and validation: learning curves, equity curves, markdown tables, printed rows."""

from __future__ import annotations

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
    axes[0].set_title("episode P&L (cents, finished episodes)")
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
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save_validation_plots(per_market: dict[str, pl.DataFrame], folder: Path, split: str) -> list[Path]:
    plt = _pyplot()
    equity, ax = plt.subplots(figsize=(7, 3.6))
    for name, frame in per_market.items():
        ax.plot(np.cumsum(frame.sort("market_ticker")["return_dollars"].to_numpy()), label=name)
    ax.set_title(f"cumulative P&L over {split} markets ($, net of spread and fees)")
    ax.set_xlabel("market")
    ax.legend(fontsize=7)
    equity.tight_layout()
    equity_path = folder / f"{split}_equity.png"
    equity.savefig(equity_path, dpi=90)
    histogram, ax = plt.subplots(figsize=(7, 3.6))
    for name in ("policy", "imbalance_rule", "buy_and_hold_yes"):
        if name in per_market:
            ax.hist(per_market[name]["return_dollars"].to_numpy(), bins=20, alpha=0.5, label=name)
    ax.set_title(f"per-market return distribution, {split} ($)")
    ax.legend(fontsize=7)
    histogram.tight_layout()
    histogram_path = folder / f"{split}_returns.png"
    histogram.savefig(histogram_path, dpi=90)
    plt.close("all")
    return [equity_path, histogram_path]


TABLE_HEADER = ("strategy", "markets", "mean $", "95% CI", "% profitable", "Sharpe", "consistency", "orders")


def table_cells(row: dict) -> list[str]:
    return [row["strategy"], str(row["markets"]), f"{row['mean_return_dollars']:+.2f}",
            f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]", f"{row['pct_profitable']:.0f}%",
            f"{row['mean_sharpe']:+.2f}", f"{row['mean_consistency']:.2f}", str(row["orders"])]


def validation_table_rows(validation: dict) -> tuple[tuple[str, ...], list[list[str]]]:
    """The validation table as printable cells (the CLI's and the markdown report's)."""
    return TABLE_HEADER, [table_cells(row) for row in validation["table"]]


def report_markdown(table: list[dict], comparison: dict, split: str, plots: list[Path]) -> str:
    lines = [f"# Policy validation on {split} markets", "",
             "Per-market P&L in dollars, net of spread and Kalshi taker fees; 95% bootstrap intervals resample markets.", "",
             "| " + " | ".join(TABLE_HEADER) + " |", "|" + " --- |" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(table_cells(row)) + " |" for row in table]
    lines += ["", "| policy minus | mean $ | 95% CI |", "| --- | --- | --- |"]
    for name, diff in comparison.items():
        lines.append(f"| {name} | {diff['mean']:+.2f} | [{diff['ci_low']:+.2f}, {diff['ci_high']:+.2f}] |")
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"
