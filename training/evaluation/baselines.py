"""Strategies the policy is compared with, in the same simulator: always-hold, random (fillable orders at the
policy's rate), buy-and-hold YES, the top-5 imbalance rule, and the best single-feature rule.

The best single-feature rule is the fair simple baseline: for every model feature, threshold rules in both
orientations (enter YES when the oriented feature is high, NO when it is low, each side alone or both, a lot
per event while the entry holds and the book is more than `TRADABLE_DISTANCE` from certainty, a lot out per
event once it fades below the exit, at a wider tail or the feature's median) are tuned on a stratified
sample of fit markets, where a rule counts only if it trades on at least `MIN_TRADED_SHARE` of them (the
argmax of a grid over rules that trade on a handful of markets is a winner's curse, not a baseline). Each
feature's best rule is then scored on the select markets (training/data/roles.py), which choose `best_rule`
among them; the five best are reported. Tuning
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
from core.markets import CATEGORIES
from training.data.market_data import MarketData, MarketSeries
from training.data.roles import category_of
from training.environment.batched_env import BatchedMarketEnv
from training.environment.episodes import MAX_STEPS
from training.environment.spaces import BUY_NO, BUY_YES, HOLD, SELL_NO, SELL_YES

CERTAINTY_FEATURE = "ob_distance_from_certainty"   # min(mid, 1 - mid): how far the book is from 0 or 1

ActionFn = Callable[[torch.Tensor, torch.Tensor, BatchedMarketEnv], torch.Tensor]
RULE_SIDES = ("both", "yes_only", "no_only")
ENTRY_TAILS = (0.1, 0.03, 0.01, 0.003)  # share of training events beyond the entry threshold, per side
EXIT_WIDTHS = (3.0, 10.0, np.inf)       # the exit threshold sits at this many times the entry tail (inf: the median)
TRADABLE_DISTANCE = 0.05                # entries skip books within this distance of certainty (probability)
MIN_TRADED_SHARE = 0.2                  # a rule of the grid trades on at least this share of the tuning markets
TOP_RULES = 5                           # rules reported with their figures on fit and select markets


# -- simple baselines ----------------------------------------------------------------------------

def always_hold(obs, live, env) -> torch.Tensor:
    return torch.zeros_like(live, dtype=torch.long)


def random_fillable(trade_rate: float, seed: int) -> ActionFn:
    """Orders at `trade_rate` per decision, drawn among the ones that would fill (a sell only with something
    to sell, a buy only under the limit): random but not wasteful."""
    generator = torch.Generator().manual_seed(seed)

    def act(obs, live, env):
        lot, limit = env.rules.contracts, env.rules.position_limit
        bid, ask = env.fill_book()
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
    """Top-5 depth imbalance: one lot of YES above +threshold, of NO below -threshold, away from certainty; out
    once the imbalance turns to the other side."""
    imbalance = feature_names.index("ob_yes_depth_imbalance")
    certainty = feature_names.index("ob_distance_from_certainty")

    def act(obs, live, env):
        signal = obs[..., imbalance]
        tradable = live & (obs[..., certainty] > TRADABLE_DISTANCE)
        flat = (env.yes == 0) & (env.no == 0)
        actions = torch.full_like(env.yes, HOLD)
        actions = torch.where(tradable & flat & (signal > threshold), BUY_YES, actions)
        actions = torch.where(tradable & flat & (signal < -threshold), BUY_NO, actions)
        actions = torch.where((env.yes > 0) & (signal < 0), SELL_YES, actions)
        return torch.where((env.no > 0) & (signal > 0), SELL_NO, actions)
    return act


# -- single-feature threshold rules -------------------------------------------------------------

@dataclass(frozen=True)
class ThresholdRule:
    """On x = orientation * feature: YES while x >= yes_enter, out of YES once x < yes_exit; NO while
    x <= no_enter, out of NO once x > no_exit. A side is off when its entry is infinite. Entries only where
    the book is more than `min_distance` from certainty (0: everywhere; rules saved before it existed)."""

    feature: str
    orientation: int
    yes_enter: float
    yes_exit: float
    no_enter: float
    no_exit: float
    min_distance: float = 0.0

    def describe(self) -> str:
        parts = []
        if np.isfinite(self.yes_enter):
            parts.append(f"YES while {self._x()} >= {self.yes_enter:.4g} (out below {self.yes_exit:.4g})")
        if np.isfinite(self.no_enter):
            parts.append(f"NO while {self._x()} <= {self.no_enter:.4g} (out above {self.no_exit:.4g})")
        if parts and self.min_distance > 0:
            parts.append(f"entries only more than {self.min_distance:.2f} from certainty")
        return "; ".join(parts) or "never trades"

    def _x(self) -> str:
        return self.feature if self.orientation > 0 else f"-{self.feature}"

    def as_dict(self) -> dict:
        """The rule as saved (a side that is off has an infinite entry: null in JSON) and in words."""
        return {**asdict(self), "rule": self.describe()}

    @classmethod
    def from_dict(cls, saved: dict) -> "ThresholdRule":
        """The rule `as_dict` saved, read back from JSON (where an entry that is off became null)."""
        off = {"yes_enter": np.inf, "no_enter": -np.inf}   # the entry no value reaches
        entries = {name: value if saved[name] is None else float(saved[name]) for name, value in off.items()}
        return cls(saved["feature"], int(saved["orientation"]), entries["yes_enter"], float(saved["yes_exit"]),
                   entries["no_enter"], float(saved["no_exit"]), float(saved.get("min_distance", 0.0)))


def threshold_actions(x: torch.Tensor, yes: torch.Tensor, no: torch.Tensor, rule: ThresholdRule,
                      distance: torch.Tensor) -> torch.Tensor:
    """The rule's action for oriented feature values x [B, S], the books' distances from certainty and holdings."""
    tradable = distance > rule.min_distance if rule.min_distance > 0 else torch.ones_like(x, dtype=torch.bool)
    actions = torch.full(x.shape, HOLD, dtype=torch.long, device=x.device)
    actions = torch.where(tradable & (no == 0) & (x >= rule.yes_enter), BUY_YES, actions)
    actions = torch.where(tradable & (yes == 0) & (x <= rule.no_enter), BUY_NO, actions)
    actions = torch.where((yes > 0) & (x < rule.yes_exit), SELL_YES, actions)
    actions = torch.where((no > 0) & (x > rule.no_exit), SELL_NO, actions)
    return actions


def threshold_actor(feature_names: list[str], rule: ThresholdRule) -> ActionFn:
    index = feature_names.index(rule.feature)
    certainty = feature_names.index(CERTAINTY_FEATURE)

    def act(obs, live, env):
        return threshold_actions(rule.orientation * obs[..., index], env.yes, env.no, rule, obs[..., certainty])
    return act


def candidate_rules(data: MarketData, markets: list[MarketSeries]) -> list[ThresholdRule]:
    """The grid: every feature, both orientations, entries at the tails of the feature's values on `markets`
    (fit markets only), exits at wider tails or the median, each side alone or both; entries only on tradable
    books."""
    stacked = np.concatenate([m.features for m in markets])
    rules = []
    for j, name in enumerate(data.feature_names):
        values = stacked[:, j].astype(np.float64)
        for orientation in (1, -1):
            quantile = _quantiles(orientation * values, GRID_QUANTILES)
            for tail in ENTRY_TAILS:
                high, low = quantile[1 - tail], quantile[tail]
                if high <= low:
                    continue
                for width in EXIT_WIDTHS:
                    exit_high = min(quantile[1 - min(width * tail, 0.5)], high)
                    exit_low = max(quantile[min(width * tail, 0.5)], low)
                    for side in RULE_SIDES:
                        rules.append(ThresholdRule(
                            name, orientation,
                            high if side != "no_only" else np.inf, exit_high,
                            low if side != "yes_only" else -np.inf, exit_low, _f32(TRADABLE_DISTANCE)))
    return list(dict.fromkeys(rules))


# Every quantile the grid reads, so that each feature's values are partitioned once, not once per threshold.
GRID_QUANTILES = tuple(sorted({q for tail in ENTRY_TAILS for q in (tail, 1 - tail)}
                              | {q for tail in ENTRY_TAILS for width in EXIT_WIDTHS
                                 for q in (min(width * tail, 0.5), 1 - min(width * tail, 0.5))}))


def _quantiles(x: np.ndarray, levels: tuple[float, ...]) -> dict[float, float]:
    """float32-exact thresholds (`_f32`) at each level: numpy's quantile of many levels in one call computes
    each one as its call of one level does."""
    return {level: _f32(value) for level, value in zip(levels, np.quantile(x, levels))}


def _f32(value: float) -> float:
    """A threshold that float32 features compare with exactly as the float64 backtest does: observations are
    float32, and torch compares them with a Python float cast to float32."""
    return float(np.float32(value))


def rule_signals(rule: ThresholdRule, values: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """bool [n, 4]: (enter YES, leave YES, enter NO, leave NO) at each row, for the raw feature values and the
    books' distances from certainty."""
    x = (rule.orientation * values.astype(np.float32)).astype(np.float64)  # float32 values, as observed
    tradable = (distance.astype(np.float32).astype(np.float64) > rule.min_distance) if rule.min_distance > 0 \
        else np.ones(len(x), dtype=bool)
    return np.stack([tradable & (x >= rule.yes_enter), x < rule.yes_exit, tradable & (x <= rule.no_enter),
                     x > rule.no_exit], axis=1)


@numba.njit(cache=True)
def _wanted_action(enter_yes, leave_yes, enter_no, leave_no, yes, no):
    """The action a (enter YES, leave YES, enter NO, leave NO) signal asks for, given the holdings."""
    action = 0
    if no == 0 and enter_yes:
        action = 1
    if yes == 0 and enter_no:
        action = 3
    if yes > 0 and leave_yes:
        action = 2
    if no > 0 and leave_no:
        action = 4
    return action


@numba.njit(cache=True)
def _trade(action, t, cash, yes, no, bid, ask, bid_size, ask_size, fill, settle_row, outcome_yes, lot, limit):
    """One row of the simulator's mechanics: `action` filled against the book after the latency (the rest of
    the lot a cent worse, fees per fill level), then settlement if the market settles at this row."""
    cash, yes, no = _fill(action, t, cash, yes, no, bid, ask, bid_size, ask_size, fill, lot, limit)
    return _settle(t, cash, yes, no, settle_row, outcome_yes)


@numba.njit(cache=True)
def _settle(t, cash, yes, no, settle_row, outcome_yes):
    """Settlement pays the winning side and closes both when the market settles at row t."""
    if t == settle_row:
        cash += PAYOUT_CENTS * (yes if outcome_yes else no)
        yes = 0
        no = 0
    return cash, yes, no


@numba.njit(cache=True)
def _fill(action, t, cash, yes, no, bid, ask, bid_size, ask_size, fill, lot, limit):
    """`action` filled against the book after the latency (the rest of the lot a cent worse, fees per fill
    level), if it can fill."""
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
    return cash, yes, no


@numba.njit(cache=True)
def _window_close(cash, yes, no, bid, ask, last):
    """A window's P&L: its cash and what its positions sell for at its last row, net of fees."""
    no_bid = PAYOUT_CENTS - ask[last] if ask[last] < NO_ASK else NO_BID
    return cash + liquidation_value_kernel(yes, bid[last]) + liquidation_value_kernel(no, no_bid)


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
        cash = yes = no = 0
        for t in range(start, stop):
            action = _wanted_action(signals[t, 0], signals[t, 1], signals[t, 2], signals[t, 3], yes, no)
            if action != 0 or t == settle_row:
                cash, yes, no = _trade(action, t, cash, yes, no, bid, ask, bid_size, ask_size, fill, settle_row,
                                       outcome_yes, lot, limit)
        total += _window_close(cash, yes, no, bid, ask, stop - 1)
    return total


@numba.njit(cache=True)
def backtest_rule_grid(values, distance, orientation, yes_enter, yes_exit, no_enter, no_exit, min_distance, bid, ask,
                       bid_size, ask_size, fill, settle_row, outcome_yes, lot, limit, window):
    """`backtest_market` for every threshold rule of one feature at once: int64 [rules] twice, the cents each
    rule makes on this market and the orders it fills, its signals computed row by row as `rule_signals`
    computes them (the float32 feature value times the orientation, compared in float64 with the thresholds;
    entries only where the float32 distance from certainty passes the rule's)."""
    n = values.shape[0]
    totals = np.zeros(orientation.shape[0], np.int64)
    orders = np.zeros(orientation.shape[0], np.int64)
    for r in range(orientation.shape[0]):
        sign = np.float32(orientation[r])
        total = 0
        for start in range(0, n, window):
            stop = min(start + window, n)
            cash = yes = no = 0
            for t in range(start, stop):
                x = np.float64(sign * values[t])
                tradable = min_distance[r] <= 0.0 or np.float64(distance[t]) > min_distance[r]
                action = _wanted_action(tradable and x >= yes_enter[r], x < yes_exit[r], tradable and x <= no_enter[r],
                                        x > no_exit[r], yes, no)
                if action != 0:
                    held_yes, held_no = yes, no
                    cash, yes, no = _fill(action, t, cash, yes, no, bid, ask, bid_size, ask_size, fill, lot, limit)
                    if yes != held_yes or no != held_no:
                        orders[r] += 1
                cash, yes, no = _settle(t, cash, yes, no, settle_row, outcome_yes)
            total += _window_close(cash, yes, no, bid, ask, stop - 1)
        totals[r] = total
    return totals, orders


def _book_arrays(market: MarketSeries, rules: TradingRules) -> tuple:
    """What the compiled backtester reads of a market besides the signals, in its types."""
    settle_row = len(market.time_ms) - 1 if market.settled_ms is not None else -1
    return (market.bid.astype(np.int64), market.ask.astype(np.int64), market.bid_size, market.ask_size,
            market.fill_rows(rules.latency_ms), settle_row, bool(market.outcome_yes), rules.contracts,
            rules.position_limit, MAX_STEPS)


def backtest_signals(market: MarketSeries, signals: np.ndarray, rules: TradingRules) -> int:
    """Cents a strategy with these per-row signals makes on `market`, played alone as the evaluation plays it."""
    return int(backtest_market(np.ascontiguousarray(signals, dtype=np.bool_), *_book_arrays(market, rules)))


def backtest(rule: ThresholdRule, markets: list[MarketSeries], feature_names: list[str], rules: TradingRules) -> int:
    """Cents the rule makes over `markets` (each played alone, as the evaluation plays it)."""
    j, certainty = feature_names.index(rule.feature), feature_names.index(CERTAINTY_FEATURE)
    return sum(backtest_signals(m, rule_signals(rule, m.features[:, j], m.features[:, certainty]), rules)
               for m in markets)


@dataclass
class GridScores:
    """Per rule: the cents it makes over some markets and on how many of them it fills an order."""

    cents: dict[ThresholdRule, int]
    markets_traded: dict[ThresholdRule, int]
    markets: int


def backtest_rules(candidates: list[ThresholdRule], markets: list[MarketSeries], feature_names: list[str],
                   rules: TradingRules) -> GridScores:
    """`backtest` of every candidate, all of one feature's rules in one compiled pass per market."""
    by_feature: dict[str, list[ThresholdRule]] = {}
    for rule in candidates:
        by_feature.setdefault(rule.feature, []).append(rule)
    grids = {feature: (np.array([r.orientation for r in group], np.int64),
                       *(np.array([getattr(r, name) for r in group], np.float64)
                         for name in ("yes_enter", "yes_exit", "no_enter", "no_exit", "min_distance")))
             for feature, group in by_feature.items()}
    certainty = feature_names.index(CERTAINTY_FEATURE)
    scores = GridScores(dict.fromkeys(candidates, 0), dict.fromkeys(candidates, 0), len(markets))
    for market in markets:
        book = _book_arrays(market, rules)
        distance = np.ascontiguousarray(market.features[:, certainty], np.float32)
        for feature, group in by_feature.items():
            values = np.ascontiguousarray(market.features[:, feature_names.index(feature)], np.float32)
            orientation, yes_enter, yes_exit, no_enter, no_exit, min_distance = grids[feature]
            totals, orders = backtest_rule_grid(values, distance, orientation, yes_enter, yes_exit, no_enter, no_exit,
                                                min_distance, *book)
            for rule, cents, filled in zip(group, totals.tolist(), orders.tolist()):
                scores.cents[rule] += cents
                scores.markets_traded[rule] += filled > 0
    return scores


def tune_best_rule(data: MarketData, fit: list[MarketSeries], select: list[MarketSeries],
                   rules: TradingRules = TradingRules()) -> tuple[ThresholdRule, dict]:
    """Each feature's best rule on the `fit` markets among those that trade on at least `MIN_TRADED_SHARE` of
    them, then the best of these on the `select` markets (on `fit` where there are none); the figures of the
    `TOP_RULES` best."""
    candidates = candidate_rules(data, fit)
    on_fit = backtest_rules(candidates, fit, data.feature_names, rules)
    needed = int(np.ceil(MIN_TRADED_SHARE * len(fit)))
    trading = [r for r in candidates if on_fit.markets_traded[r] >= needed]
    qualified = trading or candidates   # a universe too small for any rule to trade that often: every rule
    per_feature: dict[str, ThresholdRule] = {}
    for rule in qualified:
        held = per_feature.get(rule.feature)
        if held is None or on_fit.cents[rule] > on_fit.cents[held]:
            per_feature[rule.feature] = rule
    finalists = list(per_feature.values())
    on_select = backtest_rules(finalists, select, data.feature_names, rules) if select else on_fit
    ranked = sorted(finalists, key=lambda r: (-on_select.cents[r], -on_fit.cents[r], r.feature, r.orientation))

    def figures(rule: ThresholdRule) -> dict:
        return {"rule": rule.describe(), "feature": rule.feature,
                "fit_dollars_per_market": on_fit.cents[rule] / 100 / max(len(fit), 1),
                "fit_markets_traded": on_fit.markets_traded[rule],
                "select_dollars_per_market": on_select.cents[rule] / 100 / max(on_select.markets, 1),
                "select_markets_traded": on_select.markets_traded[rule]}
    best = ranked[0]
    return best, {"rules_tried": len(candidates), "fit_markets": len(fit), "select_markets": len(select),
                  "min_markets_traded": needed, "rules_qualified": len(trading),
                  "best_fit_cents": on_fit.cents[best], "best_select_cents": on_select.cents[best],
                  "chosen_on": "select" if select else "fit", "top_rules": [figures(r) for r in ranked[:TOP_RULES]]}


def tuning_sample(data: MarketData, size: int, seed: int = 0) -> list[MarketSeries]:
    """Fit markets for tuning thresholds and margins, stratified by category (every category in proportion),
    a fixed draw for a seed."""
    fit = sorted(data.of_role("fit"), key=lambda m: m.ticker)
    if len(fit) <= size:
        return fit
    category = [category_of(m.features, data.feature_names) for m in fit]
    rng = np.random.default_rng(seed)
    chosen = []
    for name in CATEGORIES:
        members = [m for m, c in zip(fit, category) if c == name]
        take = round(size * len(members) / len(fit))
        chosen += [members[i] for i in sorted(rng.choice(len(members), min(take, len(members)), replace=False))]
    return sorted(chosen, key=lambda m: m.ticker)
