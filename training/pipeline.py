"""Train, validate and publish, as plain functions over the lake (the Dagster assets wrap these).

A training run writes `models/candidates/latest/`: the policy weights, its learning curves and a
training summary; validation adds the report; publishing turns the candidate into a version.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl
import torch

from kfs.lake import Lake
from training import evaluate
from training.env import BatchedMarketEnv, TradingRules
from training.episodes import market_windows
from training.imitation import TeacherRule, teacher_actor
from training.market_data import MarketData, load_market_data
from training.policy import GreedyPolicy
from training.ppo import PPOConfig, make_policy, save_learning_curves, train
from training.publish import models_root, publish

STRATEGIES = ("policy", "always_hold", "random", "imbalance_rule", "buy_and_hold_yes", "warm_start_teacher")


def candidate_dir(lake: Lake) -> Path:
    return models_root(lake) / "candidates" / "latest"


def config_from_env() -> PPOConfig:
    """Training budget from the environment: KFS_TRAIN_SECONDS (default 240), KFS_TRAIN_STEPS."""
    return PPOConfig(time_budget_s=float(os.environ.get("KFS_TRAIN_SECONDS", "240")),
                     total_steps=int(os.environ.get("KFS_TRAIN_STEPS", "5000000")),
                     seed=int(os.environ.get("KFS_TRAIN_SEED", "7")))


def run_training(lake: Lake, config: PPOConfig, data: MarketData | None = None, progress=None) -> dict:
    data = data or load_market_data(lake)
    result = train(data, config, progress=progress)
    folder = candidate_dir(lake)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(result.policy.state_dict(), folder / "policy_state.pt")
    curves_png = save_learning_curves(result.curves, folder / "learning_curves.png")
    summary = {"steps": result.steps, "seconds": result.seconds, "steps_per_second": result.steps_per_second,
               "episodes": result.episodes, "config": asdict(result.config), "warm_start": result.warm_start,
               "selection": result.selection,
               "train_markets": len(data.of_split("train")), "partitions": data.partitions,
               "final": result.curves[-1] if result.curves else {}, "learning_curves": str(curves_png)}
    (folder / "training.json").write_text(json.dumps(summary, indent=2, default=float))
    pl.DataFrame(result.curves).write_csv(folder / "learning_curves.csv")
    return summary


def load_candidate(lake: Lake, data: MarketData) -> torch.nn.Module:
    training = json.loads((candidate_dir(lake) / "training.json").read_text())
    policy = make_policy(data, training["config"]["hidden"])
    policy.load_state_dict(torch.load(candidate_dir(lake) / "policy_state.pt"))
    return policy.eval()


def evaluate_all(data: MarketData, policy, split: str, rules: TradingRules = TradingRules(), seed: int = 0,
                 teacher: TeacherRule = TeacherRule()) -> dict[str, pl.DataFrame]:
    """Per-market results of the policy and every baseline on `split`, in the same simulator."""
    greedy = GreedyPolicy(policy).eval()
    policy_windows = evaluate.play(data, split, evaluate.policy_actor(greedy), rules)
    live_steps = max(int(policy_windows["steps"].sum()), 1)
    trade_rate = max(float(policy_windows["orders"].sum()) / live_steps, 1e-3)
    threshold = evaluate.tune_imbalance_threshold(data, rules)
    windows = {
        "policy": policy_windows,
        "always_hold": evaluate.play(data, split, evaluate.always_hold, rules),
        "random": evaluate.play(data, split, evaluate.random_policy(trade_rate, seed), rules),
        "imbalance_rule": evaluate.play(data, split, evaluate.imbalance_rule(data.feature_names, threshold), rules),
        "buy_and_hold_yes": evaluate.play(data, split, evaluate.buy_and_hold_yes, rules),
        # The rule the policy was cloned from before PPO, so the report shows what RL added or lost.
        "warm_start_teacher": evaluate.play(data, split, teacher_actor(teacher, data.feature_names), rules),
    }
    return {name: evaluate.market_metrics(w) for name, w in windows.items()}


def compare(per_market: dict[str, pl.DataFrame], seed: int = 0) -> tuple[list[dict], dict]:
    table = [evaluate.summarize(name, frame, seed) for name, frame in per_market.items()]
    comparison = {}
    for name in STRATEGIES[1:]:
        mean, low, high = evaluate.paired_difference(per_market["policy"], per_market[name], seed)
        comparison[name] = {"mean": mean, "ci_low": low, "ci_high": high}
    return table, comparison


def _plots(per_market: dict[str, pl.DataFrame], folder: Path, split: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        ax.hist(per_market[name]["return_dollars"].to_numpy(), bins=20, alpha=0.5, label=name)
    ax.set_title(f"per-market return distribution, {split} ($)")
    ax.legend(fontsize=7)
    histogram.tight_layout()
    histogram_path = folder / f"{split}_returns.png"
    histogram.savefig(histogram_path, dpi=90)
    plt.close("all")
    return [equity_path, histogram_path]


def report_markdown(table: list[dict], comparison: dict, split: str, plots: list[Path]) -> str:
    lines = [f"# Policy validation on {split} markets", "",
             "Per-market P&L in dollars, net of spread and Kalshi taker fees; 95% bootstrap intervals resample markets.", "",
             "| strategy | markets | mean $ | 95% CI | % profitable | mean Sharpe | consistency | orders |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in table:
        lines.append(f"| {row['strategy']} | {row['markets']} | {row['mean_return_dollars']:+.2f} | "
                     f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}] | {row['pct_profitable']:.0f}% | "
                     f"{row['mean_sharpe']:+.2f} | {row['mean_consistency']:.2f} | {row['orders']} |")
    lines += ["", "| policy minus | mean $ | 95% CI |", "| --- | --- | --- |"]
    for name, diff in comparison.items():
        lines.append(f"| {name} | {diff['mean']:+.2f} | [{diff['ci_low']:+.2f}, {diff['ci_high']:+.2f}] |")
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def run_validation(lake: Lake, split: str = "validation", data: MarketData | None = None) -> dict:
    data = data or load_market_data(lake)
    policy = load_candidate(lake, data)
    per_market = evaluate_all(data, policy, split)
    table, comparison = compare(per_market)
    folder = candidate_dir(lake)
    plots = _plots(per_market, folder, split)
    markdown = report_markdown(table, comparison, split, plots)
    (folder / f"{split}.md").write_text(markdown)
    result = {"split": split, "table": table, "comparison": comparison, "report": str(folder / f"{split}.md"),
              "plots": [str(p) for p in plots]}
    (folder / f"{split}.json").write_text(json.dumps(result, indent=2))
    return result


def validation_observations(data: MarketData, split: str = "validation", max_steps: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    """Observations the policy meets on `split` markets, for the int8-versus-float agreement check."""
    windows = [w for m in sorted(data.of_split(split), key=lambda m: m.ticker) for w in market_windows(m)][:32]
    queue = iter(windows)
    env = BatchedMarketEnv(data, lambda _: next(queue), len(windows), auto_reset=False)
    observations, lives = [], []
    for _ in range(max_steps):
        obs, live = env.observe()
        observations.append(obs)
        lives.append(live)
        env.step(torch.zeros_like(live, dtype=torch.long))
    return torch.cat(observations), torch.cat(lives)


def run_publish(lake: Lake, data: MarketData | None = None) -> dict:
    data = data or load_market_data(lake)
    policy = load_candidate(lake, data)
    folder = candidate_dir(lake)
    training = json.loads((folder / "training.json").read_text())
    validation = json.loads((folder / "validation.json").read_text())
    return publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions, training,
                   {row["strategy"]: row for row in validation["table"]}, validation["comparison"],
                   validation_observations(data))
