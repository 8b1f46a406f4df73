"""Scoring strategies on markets they never trained on, in the same simulator, with intervals that hold.

Each market is played alone over its whole recorded life, in consecutive windows of up to 2000 events
(each starts flat); its P&L in dollars (net of spread and fees per fill level; a position open at the end
of a window valued at what it sells for net of the exit fee, or paid at settlement) is the unit of
everything, because markets are the independent unit:
- mean per-market return with a BCa bootstrap interval (25 heavy-tailed markets: percentile intervals
  undercover), and paired BCa intervals of differences between two strategies on the same markets;
- cross-market Sharpe = mean / standard deviation of per-market P&L (what DESIGN.md's "Sharpe > 0.5" means);
- share of markets profitable; max drawdown (peak-to-trough of a market's P&L over its life, the worst market);
- the share of another strategy's P&L a strategy captures (ratio of means, paired BCa interval).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Callable

import numpy as np
import polars as pl
import torch
from scipy import stats

from core.exchange import TradingRules
from training.data.market_data import MarketData
from training.environment.batched_env import BatchedMarketEnv
from training.environment.episodes import market_windows

ActionFn = Callable[[torch.Tensor, torch.Tensor, BatchedMarketEnv], torch.Tensor]
BOOTSTRAP_SAMPLES = 4000
CONFIDENCE = 0.95


def play(data: MarketData, split: str | tuple[str, ...], act: ActionFn, rules: TradingRules = TradingRules(),
         batch: int = 512, markets: list[str] | None = None, device: torch.device | str = "cpu") -> pl.DataFrame:
    """P&L per (market, window) of `act` on every market of `split` (a role, or several: their markets in one
    pass) or the given ones of it, with each window's path extremes (for drawdowns). Windows are stepped
    `batch` at a time, each one market in one slot (the environment keeps one slot of per-step arrays: about
    0.5 MB a window); a window's figures do not depend on the windows beside it."""
    roles = (split,) if isinstance(split, str) else split
    pool = [m for role in roles for m in data.of_role(role)]
    chosen = [m for m in sorted(pool, key=lambda m: m.ticker) if markets is None or m.ticker in markets]
    # Windows are cut a batch at a time: their index arrays, made all at once, would grow with the history.
    windows = (w for m in chosen for w in market_windows(m))
    rows = []
    start = 0
    while chunk := list(itertools.islice(windows, batch)):
        queue = iter(chunk)
        env = BatchedMarketEnv(data, lambda _, queue=queue: next(queue), len(chunk), rules=rules, auto_reset=False,
                               device=device, slots=1)
        n = len(chunk)
        finished = torch.zeros(n, dtype=torch.bool, device=env.device)
        pnl = torch.zeros(n, dtype=torch.int64, device=env.device)
        orders = torch.zeros(n, dtype=torch.int64, device=env.device)
        peak = torch.zeros(n, dtype=torch.int64, device=env.device)     # running maximum of the P&L path
        drawdown = torch.zeros(n, dtype=torch.int64, device=env.device)  # largest fall from a running maximum
        low = torch.zeros(n, dtype=torch.int64, device=env.device)
        while not finished.all():
            obs, live = env.observe()
            actable = env.actable() & ~finished[:, None]
            with torch.no_grad():
                actions = torch.where(actable, act(obs, live, env), torch.zeros_like(live, dtype=torch.long))
            reward, done, info = env.step(actions)
            running = pnl + torch.where(finished, 0, (reward * 100).round().long())
            pnl = torch.where(finished, pnl, running)
            peak = torch.maximum(peak, pnl)
            low = torch.minimum(low, pnl)
            drawdown = torch.maximum(drawdown, peak - pnl)
            orders += info["orders"] * ~finished
            finished |= done
        for k, episode in enumerate(chunk):
            rows.append({"market_ticker": episode.tickers[0], "window": start + k, "pnl_cents": int(pnl[k]),
                         "orders": int(orders[k]), "steps": episode.steps, "peak_cents": int(peak[k]),
                         "low_cents": int(low[k]), "drawdown_cents": int(drawdown[k])})
        start += len(chunk)
    return pl.DataFrame(rows, schema={"market_ticker": pl.String, "window": pl.Int64, "pnl_cents": pl.Int64,
                                      "orders": pl.Int64, "steps": pl.Int64, "peak_cents": pl.Int64,
                                      "low_cents": pl.Int64, "drawdown_cents": pl.Int64})


def _market_drawdown(windows: pl.DataFrame) -> int:
    """Largest peak-to-trough fall of a market's P&L over its consecutive windows (each window's path is
    summarised by its final value, running extremes and internal drawdown)."""
    offset = best = worst = 0
    for row in windows.sort("window").iter_rows(named=True):
        worst = max(worst, row["drawdown_cents"], best - (offset + row["low_cents"]))
        best = max(best, offset + row["peak_cents"])
        offset += row["pnl_cents"]
    return worst


def market_metrics(windows: pl.DataFrame) -> pl.DataFrame:
    """One row per market: P&L, orders, windows and max drawdown."""
    per_market = windows.group_by("market_ticker").agg(
        pl.col("pnl_cents").sum().alias("pnl_cents"),
        (pl.col("pnl_cents").sum() / 100.0).alias("return_dollars"),
        pl.col("orders").sum().alias("orders"),
        pl.len().alias("windows"),
    ).sort("market_ticker")
    drawdowns = {ticker: _market_drawdown(part) for (ticker,), part in windows.group_by(["market_ticker"])}
    return per_market.with_columns(
        pl.col("market_ticker").replace_strict(drawdowns, default=0, return_dtype=pl.Int64)
        .truediv(100.0).alias("max_drawdown_dollars"))


def bca_interval(values: np.ndarray, statistic: Callable | None = None, seed: int = 0,
                 confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(statistic, low, high): a BCa bootstrap interval (95% unless told) resampling markets; the statistic is
    the mean unless given (a function of one resampled array). Degenerate samples (all equal, or fewer than 3)
    get the point value as both ends: there is no spread to resample."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return 0.0, 0.0, 0.0
    point = float(np.mean(values) if statistic is None else statistic(values))
    if len(values) < 3 or np.ptp(values) == 0:
        return point, point, point
    options = dict(n_resamples=BOOTSTRAP_SAMPLES, confidence_level=confidence, random_state=np.random.default_rng(seed))
    if statistic is None:
        options.update(statistic=np.mean, vectorized=True, axis=-1)
    else:
        options.update(statistic=statistic, vectorized=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns when BCa's acceleration is degenerate; checked below
        interval = stats.bootstrap((values,), method="BCa", **options).confidence_interval
        low, high = float(interval.low), float(interval.high)
        if not (np.isfinite(low) and np.isfinite(high)):
            options["random_state"] = np.random.default_rng(seed)
            interval = stats.bootstrap((values,), method="percentile", **options).confidence_interval
            low, high = float(interval.low), float(interval.high)
    return point, low, high


def _aligned(candidate: pl.DataFrame, baseline: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    joined = candidate.select("market_ticker", "return_dollars").join(
        baseline.select("market_ticker", "return_dollars"), on="market_ticker", suffix="_base")
    return joined["return_dollars"].to_numpy(), joined["return_dollars_base"].to_numpy()


def paired_difference(candidate: pl.DataFrame, baseline: pl.DataFrame, seed: int = 0) -> dict:
    """Mean per-market difference candidate - baseline on the same markets, with a paired BCa interval."""
    a, b = _aligned(candidate, baseline)
    mean, low, high = bca_interval(a - b, seed=seed)
    return {"mean": mean, "ci_low": low, "ci_high": high}


def holm_non_inferiority(candidate: pl.DataFrame, baselines: dict[str, pl.DataFrame], margin: float,
                         seed: int = 0) -> dict:
    """Is `candidate` no worse than each baseline by more than `margin` dollars a market, all at once? Holm's
    step-down over the paired differences: the most significant comparison first (largest standardised
    (mean + margin)), the k-th of m judged on its two-sided interval at 1 - (1 - CONFIDENCE) / (m - k), and
    once one fails every later one fails too. Per baseline: the mean, the adjusted interval, its level and the
    verdict."""
    differences = {}
    for name, frame in baselines.items():
        a, b = _aligned(candidate, frame)
        differences[name] = a - b
    order = sorted(differences, key=lambda name: (-_standardised(differences[name] + margin), name))
    results, holding = {}, True
    for k, name in enumerate(order):
        level = 1 - (1 - CONFIDENCE) / (len(order) - k)
        mean, low, high = bca_interval(differences[name], seed=seed, confidence=level)
        holding = holding and low > -margin
        results[name] = {"mean": mean, "ci_low": low, "ci_high": high, "confidence": level, "margin": margin,
                         "non_inferior": holding}
    return results


def _standardised(values: np.ndarray) -> float:
    """The mean over its standard error (infinite for a sure positive, e.g. every value alike and above zero)."""
    if len(values) == 0:
        return 0.0
    error = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    mean = float(np.mean(values))
    return mean / error if error > 0 else float(np.sign(mean)) * np.inf


def capture_ratio(candidate: pl.DataFrame, reference: pl.DataFrame, seed: int = 0) -> dict:
    """Share of `reference`'s total P&L that `candidate` makes on the same markets (ratio of means), with a
    paired BCa interval (markets resampled together). Undefined (None) when the reference makes nothing."""
    a, b = _aligned(candidate, reference)
    if len(a) == 0 or b.mean() <= 0:
        return {"ratio": None, "ci_low": None, "ci_high": None}
    pairs = np.stack([a, b], axis=1)
    index = np.arange(len(a))

    def ratio(rows):
        chosen = pairs[rows.astype(int)]
        reference_total = chosen[:, 1].sum()
        return chosen[:, 0].sum() / reference_total if reference_total > 0 else 0.0
    point, low, high = bca_interval(index.astype(np.float64), ratio, seed)
    return {"ratio": point, "ci_low": low, "ci_high": high}


def summarize(name: str, per_market: pl.DataFrame, seed: int = 0) -> dict:
    """A row of the results table."""
    returns = per_market["return_dollars"].to_numpy()
    mean, low, high = bca_interval(returns, seed=seed)
    spread = float(returns.std(ddof=1)) if len(returns) > 1 else 0.0
    return {"strategy": name, "markets": per_market.height, "mean_return_dollars": mean, "ci_low": low, "ci_high": high,
            "pct_profitable": float((returns > 0).mean() * 100) if len(returns) else 0.0,
            "cross_market_sharpe": mean / spread if spread > 0 else 0.0,
            "max_drawdown_dollars": float(per_market["max_drawdown_dollars"].max() or 0.0),
            "orders": int(per_market["orders"].sum())}


def actor_of(greedy: torch.nn.Module) -> ActionFn:
    """A module mapping (obs, live) to actions, as a strategy."""
    def act(obs, live, env):
        return greedy(obs, live)
    return act
