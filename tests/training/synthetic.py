"""Hand-made markets for simulator and episode tests: constant books on a one-second event clock."""

from __future__ import annotations

import numpy as np

from features.schema import MODEL_FEATURES
from training.data.market_data import MarketData, MarketSeries


def synthetic_market(ticker, n, bid=40, ask=42, size=5, split="train", klass="stable", settled_ms=None, outcome=None,
                     start=0) -> MarketSeries:
    features = np.zeros((n, len(MODEL_FEATURES)), np.float32)
    return MarketSeries(ticker=ticker, split=split, volatility_class=klass,
                        time_ms=np.arange(start, start + n, dtype=np.int64) * 1000, features=features,
                        bid=np.full(n, bid, np.int16), ask=np.full(n, ask, np.int16),
                        bid_size=np.full(n, size, np.int64), ask_size=np.full(n, size, np.int64),
                        settled_ms=settled_ms, outcome_yes=outcome)


def synthetic_data(*markets) -> MarketData:
    names = list(MODEL_FEATURES)
    return MarketData({m.ticker: m for m in markets}, names, np.zeros(len(names), np.float32),
                      np.ones(len(names), np.float32))
