"""The feature engine: one definition for every feature, and the same rows however the records are fed."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from features.engine import (
    ENGINE_FEATURES,
    KIND_TRADE,
    EngineState,
    Records,
    ResolutionIndex,
    markets_from_frame,
    run,
)
from features.events import book_and_trade_records, load_markets, load_raw
from features.resolution import build_resolution_history
from features.schema import MODEL_FEATURES
from tests.conftest import SMALL_CONFIG

FIRST, LAST = SMALL_CONFIG.start, SMALL_CONFIG.start + timedelta(days=SMALL_CONFIG.days - 1)


def test_every_model_feature_is_computed_by_the_one_engine_in_schema_order():
    """Offline and online share the engine, so a feature is either computed for both or for neither: a column
    added to features/schema.py without its computation in features/engine.py fails here."""
    assert ENGINE_FEATURES == tuple(MODEL_FEATURES)


@pytest.fixture(scope="module")
def small_records(small_lake):
    raw = [load_raw(small_lake, stream, FIRST, LAST) for stream in ("snapshots", "deltas", "trades")]

    def fresh(shared_slot: bool = False):
        markets = markets_from_frame(load_markets(small_lake), shared_slot=shared_slot)
        batch = book_and_trade_records(*raw, markets)
        return batch.records, markets, ResolutionIndex.build(build_resolution_history(small_lake), markets)

    return fresh


def _slice(records: Records, start: int, stop: int) -> Records:
    """Records [start, stop) with the snapshot levels they point to (offsets made relative)."""
    first_level = records.level_offset[start:stop]
    counts = records.level_count[start:stop]
    snapshot = (records.kind[start:stop] == 0) & (counts > 0)
    lo = int(first_level[snapshot].min()) if snapshot.any() else 0
    hi = int((first_level + counts)[snapshot].max()) if snapshot.any() else 0
    return Records(records.kind[start:stop], records.market[start:stop], records.session[start:stop],
                   records.sequence[start:stop], records.time_ms[start:stop], records.side[start:stop],
                   records.price[start:stop], records.size[start:stop], np.where(snapshot, first_level - lo, 0),
                   counts, records.level_side[lo:hi], records.level_price[lo:hi], records.level_size[lo:hi])


def test_rings_that_start_small_and_grow_give_the_same_rows(small_records):
    records, markets, resolution = small_records()
    roomy = run(records, EngineState(ring_events=1 << 16, ring_trades=1 << 14), markets, resolution)
    tight_state = EngineState(ring_events=64, ring_trades=2)
    tight = run(records, tight_state, markets, resolution)
    assert tight_state.ring_events > 64 and tight_state.ring_trades > 2  # it had to grow, mid-stream
    np.testing.assert_array_equal(roomy.book, tight.book)
    np.testing.assert_array_equal(roomy.features, tight.features)


def test_records_fed_in_small_batches_give_the_rows_of_one_batch(small_records):
    """The online pattern: the same state carried from batch to batch."""
    records, markets, resolution = small_records()
    whole = run(records, EngineState(), markets, resolution)
    state = EngineState()
    rows, books = [], []
    bounds = [0, *sorted(np.random.default_rng(3).choice(len(records), 40, replace=False)), len(records)]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        part = run(_slice(records, start, stop), state, markets, resolution)
        rows.append(part.features)
        books.append(part.book)
    np.testing.assert_array_equal(np.concatenate(books), whole.book)
    np.testing.assert_array_equal(np.concatenate(rows), whole.features)


def test_one_shared_slot_in_market_order_equals_one_slot_per_market(small_records):
    records, markets, resolution = small_records()
    per_market = run(records, EngineState(), markets, resolution)
    shared_records, shared_markets, shared_resolution = small_records(shared_slot=True)
    state = EngineState()
    shared = run(shared_records, state, shared_markets, shared_resolution)
    assert state.slots == 1
    np.testing.assert_array_equal(per_market.features, shared.features)
    assert int((records.kind == KIND_TRADE).sum()) > 1000
