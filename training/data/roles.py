"""The four roles of markets in training, never mixed.

- `fit`: training markets the learners fit on (the forecaster, the trader's margins, the warm start, PPO,
  the rule grids' thresholds);
- `select`: training markets held out of every fit, for every choice (the forecaster's early stopping, the
  learner stage that is kept, the complexity tier, which single-feature rule is `best_rule`);
- `validation`: the promotion gate only, untouched by any choice;
- `test`: reports only.

The split registry (features/splits.py) keeps 250/25/25 of every 300 markets; the selection markets come out
of its training markets: `SELECT_SHARE` of them, by market, stratified by category and volatility class and
dealt out in a seeded hash order, so a run's roles are a fixed function of its training markets.
"""

from __future__ import annotations

import hashlib

import numpy as np

from core.markets import CATEGORIES

ROLES = ("fit", "select", "validation", "test")
SELECT_SHARE = 0.2        # of the training markets: 50 of the design's 250
SELECT_SEED = 20261202    # the hash order the selection markets are dealt in


def category_of(features: np.ndarray, feature_names: list[str]) -> str:
    """A market's category, read from its one-hot metadata features (the first row: they never change)."""
    return max(CATEGORIES, key=lambda c: features[0, feature_names.index(f"md_category_{c}")])


def selection_tickers(train: list, feature_names: list[str], share: float = SELECT_SHARE,
                      seed: int = SELECT_SEED) -> frozenset[str]:
    """The training markets (MarketSeries) that select: ordered by (category, volatility class, seeded hash of
    the ticker) and dealt out so that the running count follows `share` (every stratum in proportion, the
    total exact; at least one). With fewer than two training markets none is held out: nothing would be left to fit."""
    if len(train) < 2:
        return frozenset()
    order = sorted(train, key=lambda m: (category_of(m.features, feature_names), m.volatility_class,
                                         hashlib.sha256(f"{seed}:{m.ticker}".encode()).hexdigest()))
    chosen = [m.ticker for position, m in enumerate(order, start=1)
              if int(position * share) > int((position - 1) * share)] or [order[0].ticker]
    return frozenset(chosen[: len(train) - 1])
