"""Training data loaded a few markets at a time equals one read of every event."""

import numpy as np


def test_loading_in_batches_of_markets_gives_the_arrays_of_one_read(built_store):
    from features import store
    from training.market_data import load_market_data, market_data_from_events
    _, lake, _ = built_store
    new = load_market_data(lake, batch_markets=5)
    markets = store.load_markets(lake)
    old = market_data_from_events(store.load_events(lake=lake).collect(), markets, 50)
    assert list(new.markets) == list(old.markets)
    for k in new.markets:
        a, b = new.markets[k], old.markets[k]
        for f in ("features", "time_ms", "bid", "ask", "bid_size", "ask_size"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), f
        assert a.features.dtype == np.float32 and (a.settled_ms, a.outcome_yes, a.split) == (b.settled_ms, b.outcome_yes, b.split)
    assert np.array_equal(new.mean, old.mean) and np.array_equal(new.std, old.std) and new.partitions
