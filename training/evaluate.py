"""Validation: the policy and the baselines on markets they never trained on, in the same simulator.

Each market is played alone over its whole recorded life, in consecutive windows of up to 2000
events; its P&L (cents, net of spread and fees, positions valued at the bid at the end or paid at
settlement) is the unit of everything: per-market return, Sharpe over windows, consistency (share of
profitable windows), share of profitable markets, and bootstrap confidence intervals that resample
markets, because markets are the independent unit.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import polars as pl
import torch

from training.env import BatchedMarketEnv, TradingRules
from training.episodes import Episode, market_windows
from training.market_data import MarketData
from training.spaces import BUY_NO, BUY_YES, HOLD

ActionFn = Callable[[torch.Tensor, torch.Tensor, BatchedMarketEnv], torch.Tensor]
BOOTSTRAP_SAMPLES = 2000


def play(data: MarketData, split: str, act: ActionFn, rules: TradingRules = TradingRules(),
         batch: int = 128, markets: list[str] | None = None) -> pl.DataFrame:
    """P&L per (market, window) of `act` on every market of `split` (or the given ones)."""
    chosen = [m for m in sorted(data.of_split(split), key=lambda m: m.ticker) if markets is None or m.ticker in markets]
    windows: list[Episode] = [w for m in chosen for w in market_windows(m)]
    rows = []
    for start in range(0, len(windows), batch):
        chunk = windows[start:start + batch]
        queue = iter(chunk)
        env = BatchedMarketEnv(data, lambda _: next(queue), len(chunk), rules=rules, auto_reset=False)
        finished = torch.zeros(len(chunk), dtype=torch.bool)
        pnl = torch.zeros(len(chunk), dtype=torch.int64)
        orders = torch.zeros(len(chunk), dtype=torch.int64)
        while not finished.all():
            obs, live = env.observe()
            actable = env.actable() & ~finished[:, None]
            with torch.no_grad():
                actions = torch.where(actable, act(obs, live, env), torch.zeros_like(live, dtype=torch.long))
            _, done, info = env.step(actions)
            orders += info["orders"] * ~finished
            pnl += info["episode_pnl_cents"] * (done & ~finished)
            finished |= done
        for k, episode in enumerate(chunk):
            rows.append({"market_ticker": episode.tickers[0], "window": start + k, "pnl_cents": int(pnl[k]),
                         "orders": int(orders[k]), "steps": episode.steps})
    return pl.DataFrame(rows)


def market_metrics(windows: pl.DataFrame) -> pl.DataFrame:
    return windows.group_by("market_ticker").agg(
        pl.col("pnl_cents").sum().alias("pnl_cents"),
        (pl.col("pnl_cents").sum() / 100.0).alias("return_dollars"),
        pl.col("orders").sum().alias("orders"),
        pl.len().alias("windows"),
        (pl.col("pnl_cents") > 0).mean().alias("consistency"),
        pl.when(pl.col("pnl_cents").std() > 0)
        .then(pl.col("pnl_cents").mean() / pl.col("pnl_cents").std() * pl.len().sqrt()).otherwise(0.0).alias("sharpe"),
    ).sort("market_ticker")


def bootstrap_mean(values: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile interval of the mean, resampling markets."""
    if len(values) == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(BOOTSTRAP_SAMPLES, len(values)), replace=True).mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarize(name: str, per_market: pl.DataFrame, seed: int = 0) -> dict:
    returns = per_market["return_dollars"].to_numpy()
    mean, low, high = bootstrap_mean(returns, seed)
    return {"strategy": name, "markets": per_market.height, "mean_return_dollars": mean, "ci_low": low, "ci_high": high,
            "pct_profitable": float((returns > 0).mean() * 100) if len(returns) else 0.0,
            "mean_sharpe": float(per_market["sharpe"].mean() or 0.0),
            "mean_consistency": float(per_market["consistency"].mean() or 0.0),
            "orders": int(per_market["orders"].sum())}


def paired_difference(candidate: pl.DataFrame, baseline: pl.DataFrame, seed: int = 0) -> tuple[float, float, float]:
    joined = candidate.join(baseline, on="market_ticker", suffix="_base")
    return bootstrap_mean((joined["return_dollars"] - joined["return_dollars_base"]).to_numpy(), seed)


# -- baselines --------------------------------------------------------------------------------

def always_hold(obs, live, env) -> torch.Tensor:
    return torch.zeros_like(live, dtype=torch.long)


def random_policy(trade_rate: float, seed: int) -> ActionFn:
    generator = torch.Generator().manual_seed(seed)

    def act(obs, live, env):
        trade = torch.rand(live.shape, generator=generator) < trade_rate
        choice = torch.randint(1, 5, live.shape, generator=generator)
        return torch.where(trade & live, choice, torch.zeros_like(choice))
    return act


def buy_and_hold_yes(obs, live, env) -> torch.Tensor:
    """Buy one lot of YES the first time each market can be bought, then hold to the end."""
    first = (env.yes == 0) & (env.t[:, None] == 0) & live
    return torch.where(first, torch.full_like(env.yes, BUY_YES), torch.zeros_like(env.yes))


def imbalance_rule(feature_names: list[str], threshold: float) -> ActionFn:
    """Top-5 depth imbalance: long YES above +threshold, long NO below -threshold, away from 1/99; hold."""
    imbalance = feature_names.index("ob_yes_depth_imbalance")
    certainty = feature_names.index("ob_distance_from_certainty")

    def act(obs, live, env):
        signal = obs[..., imbalance]
        tradable = live & (obs[..., certainty] > 0.05)
        buy_yes = tradable & (signal > threshold) & (env.yes == 0) & (env.no == 0)
        buy_no = tradable & (signal < -threshold) & (env.yes == 0) & (env.no == 0)
        actions = torch.full_like(env.yes, HOLD)
        return torch.where(buy_yes, BUY_YES, torch.where(buy_no, BUY_NO, actions))
    return act


def tune_imbalance_threshold(data: MarketData, rules: TradingRules, grid=(0.3, 0.5, 0.7, 0.85),
                             max_markets: int = 60) -> float:
    """The rule's threshold, chosen on (a fixed sample of) training markets only."""
    sample = sorted(m.ticker for m in data.of_split("train"))[:max_markets]
    scores = {t: play(data, "train", imbalance_rule(data.feature_names, t), rules, markets=sample)["pnl_cents"].sum()
              for t in grid}
    return max(scores, key=scores.get)


def policy_actor(greedy_policy: torch.nn.Module) -> ActionFn:
    def act(obs, live, env):
        return greedy_policy(obs, live)
    return act
