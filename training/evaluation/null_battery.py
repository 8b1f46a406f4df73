"""The null battery: on a universe simulated at `--signal 0`, no strategy may have an edge (issue 24).

A null that is null needs more than a martingale latent: a book clamped below the value it pays, a settlement
that disagrees with the last prices, or a drift near close would each pay a strategy that needs no signal. The
battery plays strategies that would collect such an edge, each on the settled markets it was not tuned on, with
the evaluation's mechanics (latency, fills a cent worse beyond the touch, fees, windows that start flat,
settlement):
- `favourite_late`: buy the favourite (mid at or beyond `FAVOURITE_LEVEL`) in the final hour and hold it to
  settlement, up to the position limit: what a clamped or drifting book near close pays;
- `best_rule`: the fair best single-feature rule as tuned (scored off its tuning and select markets);
- each known-answer rule: the footprints point at random at signal 0;
- `random`: entries and exits at random.
Each must have a 95% interval that includes zero and a mean below `MAX_NULL_MEAN_DOLLARS` in absolute value.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import polars as pl

from core.exchange import TradingRules
from source.simulator_defaults import EFFECTS
from training.data.market_data import MarketData, MarketSeries
from training.evaluation import baselines, scoring
from training.evaluation.known_answers import known_answer_actor
from training.evaluation.validation import Baselines, tuning_markets

FAVOURITE_LEVEL = 0.90          # the favourite: YES mid at or above this, or at or below 1 - this
FINAL_HOURS = 1.0               # ... bought in the market's final hour
RANDOM_RATE = 0.002             # the random strategy's chance of an entry (and of an exit) per event
MAX_NULL_MEAN_DOLLARS = 0.10    # |mean| a market every strategy of the battery must stay below
ROLES = ("fit", "select", "validation", "test")


def settled_markets(data: MarketData) -> list[MarketSeries]:
    """Every settled market with events, in every role, by ticker."""
    return sorted((m for role in ROLES for m in data.of_role(role) if m.settled_ms is not None),
                  key=lambda m: m.ticker)


def favourite_late_signals(market: MarketSeries, feature_names: list[str], level: float = FAVOURITE_LEVEL,
                           hours: float = FINAL_HOURS) -> np.ndarray:
    """(enter YES, leave YES, enter NO, leave NO) per row: the favourite in the final `hours`, never left."""
    mid = market.features[:, feature_names.index("ob_yes_mid_prob")].astype(np.float64)
    log_hours = market.features[:, feature_names.index("tm_log_hours_to_close")].astype(np.float64)
    late = log_hours <= math.log1p(hours)
    never = np.zeros(len(mid), dtype=bool)
    return np.stack([late & (mid >= level), never, late & (mid <= 1.0 - level), never], axis=1)


def random_signals(market: MarketSeries, rate: float = RANDOM_RATE, seed: int = 0) -> np.ndarray:
    """Entries and exits at random, `rate` of the rows each, the same for a market on every run."""
    rng = np.random.default_rng([seed, int.from_bytes(market.ticker.encode()[:8], "little")])
    return rng.random((len(market.time_ms), 4)) < rate


def best_rule_signals(market: MarketSeries, feature_names: list[str], rule: baselines.ThresholdRule) -> np.ndarray:
    values = market.features[:, feature_names.index(rule.feature)]
    distance = market.features[:, feature_names.index(baselines.CERTAINTY_FEATURE)]
    return baselines.rule_signals(rule, values, distance)


@numba.njit(cache=True)
def gross_at_mid(signals, bid, ask, fill, outcome_yes, lot, limit):
    """Cents a signal strategy makes on one settled market if every fill were at the mid and free: entries and
    exits at the mid of the book the order meets (both sides quoted), held to settlement otherwise. On a book
    whose mid is a martingale towards the settlement this is zero on average for every strategy (optional
    stopping); a drift or a quote off its value shows here, net of no cost that could hide it."""
    cash = 0.0
    yes = no = 0
    for t in range(signals.shape[0]):
        f = fill[t]
        if bid[f] <= 0 or ask[f] >= 100:
            continue
        mid = (bid[f] + ask[f]) / 2.0
        if no == 0 and signals[t, 0] and yes + lot <= limit:
            cash -= lot * mid
            yes += lot
        elif yes == 0 and signals[t, 2] and no + lot <= limit:
            cash -= lot * (100.0 - mid)
            no += lot
        elif yes > 0 and signals[t, 1]:
            cash += yes * mid
            yes = 0
        elif no > 0 and signals[t, 3]:
            cash += no * (100.0 - mid)
            no = 0
    return cash + 100.0 * (yes if outcome_yes else no)


def _gross_per_market(markets: list[MarketSeries], signals_of, rules: TradingRules) -> pl.DataFrame:
    dollars = [gross_at_mid(np.ascontiguousarray(signals_of(m), dtype=np.bool_), m.bid.astype(np.int64),
                            m.ask.astype(np.int64), m.fill_rows(rules.latency_ms), bool(m.outcome_yes),
                            rules.contracts, rules.position_limit) / 100 for m in markets]
    return pl.DataFrame({"market_ticker": [m.ticker for m in markets], "return_dollars": dollars})


def _per_market(markets: list[MarketSeries], signals_of, rules: TradingRules) -> pl.DataFrame:
    return pl.DataFrame({"market_ticker": [m.ticker for m in markets],
                         "return_dollars": [baselines.backtest_signals(m, signals_of(m), rules) / 100 for m in markets]})


def _played(data: MarketData, markets: list[MarketSeries], act, rules: TradingRules) -> pl.DataFrame:
    """Per-market dollars of a torch actor, played by the evaluation's environment on `markets`."""
    windows = scoring.play(data, ROLES, act, rules, markets=[m.ticker for m in markets])
    return scoring.market_metrics(windows).select("market_ticker", "return_dollars")


def run_battery(data: MarketData, tuned: Baselines, rules: TradingRules = TradingRules(), seed: int = 0) -> dict:
    """Every strategy of the battery on the settled markets (`best_rule` on those it was neither tuned nor
    chosen on): net of costs as the evaluation plays it, and, for the signal strategies, gross at the mid;
    each with its mean, 95% BCa interval, markets and verdict (`null_verdict`)."""
    names = data.feature_names
    settled = settled_markets(data)
    tuned_on = {m.ticker for part in tuning_markets(data) for m in part}
    untuned = [m for m in settled if m.ticker not in tuned_on]
    signal_strategies = {
        "favourite_late": (settled, lambda m: favourite_late_signals(m, names)),
        "best_rule": (untuned, lambda m: best_rule_signals(m, names, tuned.best_rule)),
        "random": (settled, lambda m: random_signals(m, seed=seed)),
    }
    battery = {name: null_verdict(_per_market(markets, signals_of, rules), _gross_per_market(markets, signals_of, rules),
                                  seed)
               for name, (markets, signals_of) in signal_strategies.items()}
    actors = {"known_answer": known_answer_actor(names)}
    actors.update({f"known_answer_{effect}": known_answer_actor(names, (effect,)) for effect in EFFECTS})
    battery.update({name: null_verdict(_played(data, settled, act, rules), None, seed) for name, act in actors.items()})
    return battery


def _interval(frame: pl.DataFrame, seed: int) -> dict:
    dollars = frame["return_dollars"].to_numpy()
    mean, low, high = scoring.bca_interval(dollars, seed=seed)
    return {"mean": float(mean), "ci_low": float(low), "ci_high": float(high), "markets": int(len(dollars)),
            "share_traded": float(np.mean(dollars != 0)) if len(dollars) else 0.0}


def null_verdict(net: pl.DataFrame, gross: pl.DataFrame | None, seed: int = 0) -> dict:
    """A strategy finds nothing when, net of costs, it cannot show a profit (its interval reaches zero and its
    mean is below MAX_NULL_MEAN_DOLLARS: a taker pays spread and fees, so losing is what a null predicts) and,
    gross at the mid, its interval includes zero (no drift either way). The issue's stricter reading, the net
    interval including zero with |mean| below MAX_NULL_MEAN_DOLLARS, is reported as `within_margin`: a strategy
    that pays costs on a fair book fails it by losing."""
    row = {"net": _interval(net, seed), "gross": _interval(gross, seed) if gross is not None else None}
    net_row, gross_row = row["net"], row["gross"]
    row["edge"] = bool(net_row["ci_low"] > 0 or net_row["mean"] >= MAX_NULL_MEAN_DOLLARS)
    row["drift"] = bool(gross_row is not None and not gross_row["ci_low"] <= 0.0 <= gross_row["ci_high"])
    row["within_margin"] = bool(net_row["ci_low"] <= 0.0 <= net_row["ci_high"]
                                and abs(net_row["mean"]) < MAX_NULL_MEAN_DOLLARS)
    row["null"] = not row["edge"] and not row["drift"]
    return row


def battery_lines(battery: dict) -> list[str]:
    def interval(row: dict) -> str:
        return f"{row['mean']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"

    lines = []
    for name, row in battery.items():
        gross = f"gross at mid {interval(row['gross'])}" if row["gross"] else "gross at mid: not a signal rule"
        verdict = "null" if row["null"] else ("AN EDGE" if row["edge"] else "A DRIFT")
        lines.append(f"{name:<25} net {interval(row['net'])} $/market on {row['net']['markets']} settled markets "
                     f"({row['net']['share_traded']:.0%} traded), {gross}: {verdict}; "
                     f"within +-{MAX_NULL_MEAN_DOLLARS:.2f}: {'yes' if row['within_margin'] else 'no'}")
    return lines
