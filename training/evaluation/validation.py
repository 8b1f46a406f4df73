"""Scoring a candidate or a published version against every baseline, on validation or test markets.

Strategies, all in the same simulator on the same markets (training/evaluation/scoring.py plays and scores them):
- `policy`: the int8 TorchScript artifact (the candidate scripted as it will be published, or a published
  version's file);
- `best_rule`: the best single-feature threshold rule, tuned on fit markets and chosen on select markets
  (training/evaluation/baselines.py);
- `known_answer` and one known-answer rule per planted effect (evaluation only: training/evaluation/known_answers.py);
- `forecast_trader`: the rule the policy was warm-started from (so the report shows what RL added or lost);
- `imbalance_rule` (threshold chosen on select markets), `random` (fillable orders at the policy's rate),
  `always_hold`, `buy_and_hold_yes`.
`comparison` holds policy minus each other strategy, paired by market with BCa intervals; `non_inferiority`
the gate's comparisons (policy minus `GATE_BASELINES`, Holm-adjusted intervals); `recovery` the
share of the known-answer rule's P&L the policy captures. Validation markets serve the gate; the test split
is scored only here, for a published version or by the quality test, and never chooses anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import polars as pl
import torch

from core.exchange import TradingRules
from source.simulator_defaults import EFFECTS
from training.data.market_data import MarketData, MarketSeries
from training.evaluation import baselines, scoring
from training.evaluation.baselines import ThresholdRule
from training.evaluation.known_answers import known_answer_actor
from training.learners.forecast_trader import ForecastTrader, trader_actor
from training.release.publish import GATE_BASELINES, NON_INFERIORITY_MARGIN

SPLITS = ("validation", "test")

TUNING_MARKETS = 100
IMBALANCE_THRESHOLDS = (0.3, 0.5, 0.7, 0.85, 0.95)


@dataclass
class Baselines:
    """What is tuned on fit markets and chosen on select markets before scoring: the best single-feature rule
    and the imbalance rule's threshold."""

    best_rule: ThresholdRule
    best_rule_tuning: dict
    imbalance_threshold: float

    def as_dict(self) -> dict:
        return {"best_rule": self.best_rule.as_dict(), "best_rule_tuning": self.best_rule_tuning,
                "imbalance_threshold": self.imbalance_threshold}

    @staticmethod
    def from_dict(saved: dict) -> "Baselines":
        return Baselines(ThresholdRule.from_dict(saved["best_rule"]), saved.get("best_rule_tuning", {}),
                         saved["imbalance_threshold"])


def tune_baselines(data: MarketData, rules: TradingRules = TradingRules(), markets: int = TUNING_MARKETS,
                   seed: int = 0) -> Baselines:
    """The best single-feature rule (tuned on a stratified sample of fit markets, chosen on the select markets)
    and the imbalance threshold (chosen on the select markets; on the sample where there are none)."""
    started = time.perf_counter()
    sample, select = tuning_markets(data, markets, seed)
    best, tuning = baselines.tune_best_rule(data, sample, select, rules)
    index = data.feature_names.index("ob_yes_depth_imbalance")
    certainty = data.feature_names.index(baselines.CERTAINTY_FEATURE)
    scores = {}
    for threshold in IMBALANCE_THRESHOLDS:
        scores[threshold] = sum(baselines.backtest_signals(m, _imbalance_signals(m.features, index, certainty, threshold),
                                                           rules) for m in select or sample)
    tuning["seconds"] = time.perf_counter() - started
    return Baselines(best, tuning, max(scores, key=lambda t: (scores[t], t)))


def tuning_markets(data: MarketData, markets: int = TUNING_MARKETS, seed: int = 0
                   ) -> tuple[list[MarketSeries], list[MarketSeries]]:
    """The markets `tune_baselines` tunes on (a stratified sample of fit markets) and chooses on (select)."""
    return baselines.tuning_sample(data, markets, seed), sorted(data.of_role("select"), key=lambda m: m.ticker)


def _imbalance_signals(features: np.ndarray, index: int, certainty: int, threshold: float) -> np.ndarray:
    """The imbalance rule's signals: in when the lean passes the threshold away from certainty, out once it turns
    to the other side. (The backtester adds a lot per row while an entry holds; the rule as played holds one
    lot: the threshold is chosen on the first, the second is scored.)"""
    lean = features[:, index].astype(np.float32)
    tradable = features[:, certainty] > np.float32(baselines.TRADABLE_DISTANCE)
    return np.stack([tradable & (lean > np.float32(threshold)), lean < 0, tradable & (lean < -np.float32(threshold)),
                     lean > 0], axis=1)


def strategies(data: MarketData, policy_actor, tuned: Baselines, trader: tuple[ForecastTrader, torch.nn.Module] | None,
               trade_rate: float, seed: int = 0) -> dict:
    """Every strategy of the table, by name (the policy first)."""
    names = data.feature_names
    chosen = {"policy": policy_actor, "best_rule": baselines.threshold_actor(names, tuned.best_rule),
              "known_answer": known_answer_actor(names)}
    chosen.update({f"known_answer_{effect}": known_answer_actor(names, (effect,)) for effect in EFFECTS})
    if trader is not None:
        chosen["forecast_trader"] = trader_actor(trader[0], trader[1], names)
    chosen.update({
        "imbalance_rule": baselines.imbalance_rule(names, tuned.imbalance_threshold),
        "random": baselines.random_fillable(trade_rate, seed),
        "always_hold": baselines.always_hold,
        "buy_and_hold_yes": baselines.buy_and_hold_yes,
    })
    return chosen


ScoreProgress = Callable[[str, int, int], None]   # (strategy just scored, strategies done, strategies in all)


def score(data: MarketData, split: str, policy_actor, tuned: Baselines,
          trader: tuple[ForecastTrader, torch.nn.Module] | None = None, rules: TradingRules = TradingRules(),
          seed: int = 0, progress: ScoreProgress | None = None) -> dict:
    """The table, the paired comparisons and the recovery of the known-answer edge on `split`; `progress` hears
    each strategy as it is done."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose {' or '.join(SPLITS)}")
    if not data.of_split(split):
        raise ValueError(f"no {split} markets with events in the feature store")
    policy_windows = scoring.play(data, split, policy_actor, rules)
    trade_rate = max(float(policy_windows["orders"].sum()) / max(int(policy_windows["steps"].sum()), 1), 1e-3)
    chosen = strategies(data, policy_actor, tuned, trader, trade_rate, seed)
    per_market = {"policy": scoring.market_metrics(policy_windows)}
    if progress:
        progress("policy", 1, len(chosen))
    for name, act in chosen.items():
        if name != "policy":
            per_market[name] = scoring.market_metrics(scoring.play(data, split, act, rules))
            if progress:
                progress(name, len(per_market), len(chosen))
    table = [scoring.summarize(name, frame, seed) for name, frame in per_market.items()]
    comparison = {name: scoring.paired_difference(per_market["policy"], frame, seed)
                  for name, frame in per_market.items() if name != "policy"}
    recovery = scoring.capture_ratio(per_market["policy"], per_market["known_answer"], seed)
    gate_baselines = {name: per_market[name] for name in GATE_BASELINES if name in per_market}
    non_inferiority = scoring.holm_non_inferiority(per_market["policy"], gate_baselines, NON_INFERIORITY_MARGIN, seed)
    return {"split": split, "best_rule": tuned.best_rule.as_dict(), "table": table, "comparison": comparison,
            "non_inferiority": non_inferiority, "recovery": recovery,
            "per_market": {name: frame.to_dicts() for name, frame in per_market.items()}}


def artifact_actor(module: torch.jit.ScriptModule):
    """A published artifact (int8 TorchScript: (obs, live) -> actions) as a strategy."""
    return scoring.actor_of(module)


def beats(comparison: dict) -> list[str]:
    """Strategies the policy beats (paired CI above zero): what a message may claim, and nothing more."""
    return [name for name, diff in comparison.items() if diff["ci_low"] > 0]


def per_market_frame(result: dict, strategy: str) -> pl.DataFrame:
    return pl.DataFrame(result["per_market"][strategy])
