"""Strategies the policy is compared with, in the same simulator: always-hold, random (fillable orders at the
policy's rate), buy-and-hold YES, the top-5 imbalance rule, and the best single-feature rule.

The best single-feature rule is the strongest simple baseline: for every model feature, threshold rules in
both orientations (enter YES when the oriented feature is high, NO when it is low, each side alone or both,
a lot per event while the entry holds, a lot out per event once it fades below the exit) are tuned on a
stratified sample of training markets, and the best of all of them is reported as `best_rule`. Tuning
plays hundreds of rules over many markets, so it runs in a compiled backtester with the simulator's own
mechanics (fills at the book after the latency, fees per fill level, positions valued net of the exit fee,
settlement), in single-market windows as the evaluation plays them; a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numba
import numpy as np
import torch

from core.exchange import (
    NO_ASK,
    NO_BID,
    PAYOUT_CENTS,
    TradingRules,
    liquidation_value_kernel,
    one_cent_worse_to_buy_kernel,
    one_cent_worse_to_sell_kernel,
    taker_fill_kernel,
)
from training.data.market_data import MarketData, MarketSeries
from training.environment.batched_env import BatchedMarketEnv
from training.environment.episodes import MAX_STEPS
from training.environment.spaces import BUY_NO, BUY_YES, HOLD, SELL_NO, SELL_YES

ActionFn = Callable[[torch.Tensor, torch.Tensor, BatchedMarketEnv], torch.Tensor]
RULE_SIDES = ("both", "yes_only", "no_only")
ENTRY_TAILS = (0.1, 0.03, 0.01, 0.003)  # share of training events beyond the entry threshold, per side
EXIT_WIDTHS = (3.0, 10.0)               # the exit threshold sits at this many times the entry tail


# -- simple baselines ----------------------------------------------------------------------------

def always_hold(obs, live, env) -> torch.Tensor:
    return torch.zeros_like(live, dtype=torch.long)


def random_fillable(trade_rate: float, seed: int) -> ActionFn:
    """Orders at `trade_rate` per decision, drawn among the ones that would fill (a sell only with something
    to sell, a buy only under the limit): random but not wasteful."""
    generator = torch.Generator().manual_seed(seed)

    def act(obs, live, env):
        lot, limit = env.rules.contracts, env.rules.position_limit
        t = env.t
        bid, ask = env.fill_bid[env._rows, t], env.fill_ask[env._rows, t]
        possible = torch.stack([env.yes + lot <= limit, env.yes >= lot, env.no + lot <= limit, env.no >= lot], -1)
        possible &= torch.stack([ask < NO_ASK, bid > NO_BID, bid > NO_BID, ask < NO_ASK], -1)
        weights = possible.float() + 1e-9
        choice = torch.multinomial(weights.reshape(-1, 4), 1, generator=generator).reshape(live.shape) + 1
        trade = (torch.rand(live.shape, generator=generator) < trade_rate) & possible.any(-1) & live
        return torch.where(trade, choice, torch.zeros_like(choice))
    return act


def buy_and_hold_yes(obs, live, env) -> torch.Tensor:
    """Buy one lot of YES the first time each market can be bought, then hold to the end."""
    first = (env.yes == 0) & (env.t[:, None] == 0) & live
    return torch.where(first, torch.full_like(env.yes, BUY_YES), torch.zeros_like(env.yes))


def imbalance_rule(feature_names: list[str], threshold: float) -> ActionFn:
    """Top-5 depth imbalance: long YES above +threshold, long NO below -threshold, away from certainty; hold."""
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


# -- single-feature threshold rules -------------------------------------------------------------

@dataclass(frozen=True)
class ThresholdRule:
    """On x = orientation * feature: YES while x >= yes_enter, out of YES once x < yes_exit; NO while
    x <= no_enter, out of NO once x > no_exit. A side is off when its entry is infinite."""

    feature: str
    orientation: int
    yes_enter: float
    yes_exit: float
    no_enter: float
    no_exit: float

    def describe(self) -> str:
        parts = []
        if np.isfinite(self.yes_enter):
            parts.append(f"YES while {self._x()} >= {self.yes_enter:.4g} (out below {self.yes_exit:.4g})")
        if np.isfinite(self.no_enter):
            parts.append(f"NO while {self._x()} <= {self.no_enter:.4g} (out above {self.no_exit:.4g})")
        return "; ".join(parts)

    def _x(self) -> str:
        return self.feature if self.orientation > 0 else f"-{self.feature}"

    def as_dict(self) -> dict:
        return {**asdict(self), "rule": self.describe()}


def threshold_actions(x: torch.Tensor, yes: torch.Tensor, no: torch.Tensor, rule: ThresholdRule) -> torch.Tensor:
    """The rule's action for oriented feature values x [B, S] and holdings."""
    actions = torch.full(x.shape, HOLD, dtype=torch.long, device=x.device)
    actions = torch.where((no == 0) & (x >= rule.yes_enter), BUY_YES, actions)
    actions = torch.where((yes == 0) & (x <= rule.no_enter), BUY_NO, actions)
    actions = torch.where((yes > 0) & (x < rule.yes_exit), SELL_YES, actions)
    actions = torch.where((no > 0) & (x > rule.no_exit), SELL_NO, actions)
    return actions


def threshold_actor(feature_names: list[str], rule: ThresholdRule) -> ActionFn:
    index = feature_names.index(rule.feature)

    def act(obs, live, env):
        return threshold_actions(rule.orientation * obs[..., index], env.yes, env.no, rule)
    return act


def candidate_rules(data: MarketData, markets: list[MarketSeries]) -> list[ThresholdRule]:
    """The grid: every feature, both orientations, entries at the tails of the feature's values on `markets`
    (training markets only), exits at wider tails, each side alone or both."""
    stacked = np.concatenate([m.features for m in markets])
    rules = []
    for j, name in enumerate(data.feature_names):
        values = stacked[:, j].astype(np.float64)
        for orientation in (1, -1):
            x = orientation * values
            for tail in ENTRY_TAILS:
                high, low = _f32(np.quantile(x, 1 - tail)), _f32(np.quantile(x, tail))
                if high <= low:
                    continue
                for width in EXIT_WIDTHS:
                    exit_high = min(_f32(np.quantile(x, 1 - min(width * tail, 0.5))), high)
                    exit_low = max(_f32(np.quantile(x, min(width * tail, 0.5))), low)
                    for side in RULE_SIDES:
                        rules.append(ThresholdRule(
                            name, orientation,
                            high if side != "no_only" else np.inf, exit_high,
                            low if side != "yes_only" else -np.inf, exit_low))
    return list(dict.fromkeys(rules))


def _f32(value: float) -> float:
    """A threshold that float32 features compare with exactly as the float64 backtest does: observations are
    float32, and torch compares them with a Python float cast to float32."""
    return float(np.float32(value))


def rule_signals(rule: ThresholdRule, values: np.ndarray) -> np.ndarray:
    """bool [n, 4]: (enter YES, leave YES, enter NO, leave NO) at each row, for the raw feature values."""
    x = (rule.orientation * values.astype(np.float32)).astype(np.float64)  # float32 values, as observed
    return np.stack([x >= rule.yes_enter, x < rule.yes_exit, x <= rule.no_enter, x > rule.no_exit], axis=1)


@numba.njit(cache=True)
def backtest_market(signals, bid, ask, bid_size, ask_size, fill, settle_row, outcome_yes, lot, limit, window):
    """Cents made on one market by a strategy that, at each row, wants to (enter YES, leave YES, enter NO,
    leave NO) as `signals` say: a lot in per row while an entry holds (the other side flat), a lot out per row
    while a leave holds. Played in consecutive windows that start flat, as the evaluation plays them, with
    the simulator's fills (the book after the latency, the rest one cent worse), fees per fill level,
    valuation net of the exit fee and settlement."""
    n = signals.shape[0]
    total = 0
    for start in range(0, n, window):
        stop = min(start + window, n)
        cash = 0
        yes = 0
        no = 0
        for t in range(start, stop):
            action = 0
            if no == 0 and signals[t, 0]:
                action = 1
            if yes == 0 and signals[t, 2]:
                action = 3
            if yes > 0 and signals[t, 1]:
                action = 2
            if no > 0 and signals[t, 3]:
                action = 4
            f = fill[t]
            b, a = bid[f], ask[f]
            if action == 1 and a < NO_ASK and yes + lot <= limit:
                paid, fee = taker_fill_kernel(lot, a, ask_size[f], one_cent_worse_to_buy_kernel(a))
                cash -= paid + fee
                yes += lot
            elif action == 2 and b > NO_BID and yes >= lot:
                got, fee = taker_fill_kernel(lot, b, bid_size[f], one_cent_worse_to_sell_kernel(b))
                cash += got - fee
                yes -= lot
            elif action == 3 and b > NO_BID and no + lot <= limit:
                no_ask = PAYOUT_CENTS - b
                paid, fee = taker_fill_kernel(lot, no_ask, bid_size[f], one_cent_worse_to_buy_kernel(no_ask))
                cash -= paid + fee
                no += lot
            elif action == 4 and a < NO_ASK and no >= lot:
                no_bid = PAYOUT_CENTS - a
                got, fee = taker_fill_kernel(lot, no_bid, ask_size[f], one_cent_worse_to_sell_kernel(no_bid))
                cash += got - fee
                no -= lot
            if t == settle_row:
                cash += PAYOUT_CENTS * (yes if outcome_yes else no)
                yes = 0
                no = 0
        last = stop - 1
        no_bid = PAYOUT_CENTS - ask[last] if ask[last] < NO_ASK else NO_BID
        total += cash + liquidation_value_kernel(yes, bid[last]) + liquidation_value_kernel(no, no_bid)
    return total


def backtest_signals(market: MarketSeries, signals: np.ndarray, rules: TradingRules) -> int:
    """Cents a strategy with these per-row signals makes on `market`, played alone as the evaluation plays it."""
    settle_row = len(market.time_ms) - 1 if market.settled_ms is not None else -1
    return int(backtest_market(np.ascontiguousarray(signals, dtype=np.bool_), market.bid.astype(np.int64),
                               market.ask.astype(np.int64), market.bid_size, market.ask_size,
                               market.fill_rows(rules.latency_ms), settle_row, bool(market.outcome_yes),
                               rules.contracts, rules.position_limit, MAX_STEPS))


def backtest(rule: ThresholdRule, markets: list[MarketSeries], feature_names: list[str], rules: TradingRules) -> int:
    """Cents the rule makes over `markets` (each played alone, as the evaluation plays it)."""
    j = feature_names.index(rule.feature)
    return sum(backtest_signals(m, rule_signals(rule, m.features[:, j]), rules) for m in markets)


def tune_best_rule(data: MarketData, markets: list[MarketSeries], rules: TradingRules = TradingRules()
                   ) -> tuple[ThresholdRule, dict]:
    """The single-feature rule that makes the most on `markets` (training markets only), and the scores."""
    candidates = candidate_rules(data, markets)
    scores = {rule: backtest(rule, markets, data.feature_names, rules) for rule in candidates}
    best = max(scores, key=lambda r: (scores[r], r.feature, r.orientation))
    per_feature: dict[str, int] = {}
    for rule, cents in scores.items():
        per_feature[rule.feature] = max(per_feature.get(rule.feature, -10**12), cents)
    return best, {"rules_tried": len(candidates), "markets": len(markets), "best_cents": scores[best],
                  "best_per_feature_cents": dict(sorted(per_feature.items(), key=lambda kv: -kv[1]))}


def tuning_sample(data: MarketData, size: int, seed: int = 0) -> list[MarketSeries]:
    """Training markets for tuning and selection, stratified by category (every category in proportion),
    a fixed draw for a seed."""
    from core.markets import CATEGORIES

    train = sorted(data.of_split("train"), key=lambda m: m.ticker)
    if len(train) <= size:
        return train
    names = data.feature_names
    category_of = [max(CATEGORIES, key=lambda c: m.features[0, names.index(f"md_category_{c}")]) for m in train]
    rng = np.random.default_rng(seed)
    chosen = []
    for category in CATEGORIES:
        members = [m for m, c in zip(train, category_of) if c == category]
        take = round(size * len(members) / len(train))
        chosen += [members[i] for i in sorted(rng.choice(len(members), min(take, len(members)), replace=False))]
    return sorted(chosen, key=lambda m: m.ticker)
