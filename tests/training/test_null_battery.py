"""The null battery flags a sure edge where the book offers one and passes a book that offers none."""

from __future__ import annotations

import math

import numpy as np

from core.exchange import TradingRules
from features.schema import MODEL_FEATURES
from tests.training.synthetic import synthetic_market
from training.evaluation.null_battery import (
    _gross_per_market,
    _per_market,
    favourite_late_signals,
    null_verdict,
    random_signals,
)

NAMES = list(MODEL_FEATURES)


def _late_market(ticker: str, bid: int, ask: int, outcome: bool, hours_left: float = 0.5):
    market = synthetic_market(ticker, 600, bid=bid, ask=ask, size=50, settled_ms=600_000, outcome=outcome)
    market.features[:, NAMES.index("ob_yes_mid_prob")] = (bid + ask) / 200
    market.features[:, NAMES.index("tm_log_hours_to_close")] = math.log1p(hours_left)
    return market


def _battery_row(markets):
    signals_of = lambda m: favourite_late_signals(m, NAMES)  # noqa: E731
    return null_verdict(_per_market(markets, signals_of, TradingRules()), _gross_per_market(markets, signals_of, TradingRules()))


def test_a_favourite_offered_below_its_value_is_an_edge_the_battery_reports():
    # the clamped book of old: a known YES outcome at 97/98 pays two cents a contract for certain
    row = _battery_row([_late_market(f"M{k}", 97, 98, outcome=True) for k in range(40)])
    assert row["net"]["mean"] > 0.10 and row["net"]["ci_low"] > 0 and row["edge"] and not row["null"]
    assert row["drift"] and row["gross"]["ci_low"] > 0


def test_a_book_whose_favourite_side_is_empty_pays_nothing():
    honest = [_late_market(f"M{k}", 99, 100, outcome=True) for k in range(20)] + \
             [_late_market(f"N{k}", 0, 1, outcome=False) for k in range(20)]
    row = _battery_row(honest)
    assert row["net"]["mean"] == row["gross"]["mean"] == 0.0 and row["null"] and row["within_margin"]


def test_the_favourite_is_bought_only_in_the_final_hour():
    early = _late_market("E", 97, 98, outcome=True, hours_left=3.0)
    assert not favourite_late_signals(early, NAMES).any()


def test_random_signals_are_the_same_for_a_market_on_every_run():
    market = synthetic_market("R", 5000)
    first, again = random_signals(market, seed=1), random_signals(market, seed=1)
    assert np.array_equal(first, again) and 0 < first.mean() < 0.01
