"""Training data: the memory-mapped cache equals one read of every event, is built once per feature-store
version, and the forecaster reads rows from it without concatenating markets."""

import json
import mmap
import os

import numpy as np
import pytest

from tests.training.synthetic import synthetic_market


def _mapped(array: np.ndarray) -> bool:
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, mmap.mmap) or (isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap))


def test_the_cache_gives_the_arrays_and_statistics_of_one_read(built_store):
    from features import store
    from training.data.cache import load_market_data
    from training.data.market_data import market_data_from_events
    _, lake, _ = built_store
    new = load_market_data(lake)
    markets = store.load_markets(lake)
    old = market_data_from_events(store.load_events(lake=lake).collect(), markets, 50)
    assert list(new.markets) == list(old.markets)
    for k in new.markets:
        a, b = new.markets[k], old.markets[k]
        for f in ("features", "time_ms", "bid", "ask", "bid_size", "ask_size"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), f
            assert _mapped(getattr(a, f)), f"{f} of {k} is not memory-mapped"
            assert not getattr(a, f).flags.writeable, f"{f} of {k} can be written: its pages could not be given back"
        assert a.features.dtype == np.float32 and (a.settled_ms, a.outcome_yes, a.split) == (b.settled_ms, b.outcome_yes, b.split)
    assert np.array_equal(new.mean, old.mean) and np.array_equal(new.std, old.std) and new.partitions
    # The features as Polars converts them, independently of how the arrays are filled.
    import polars as pl

    from features.schema import MODEL_FEATURES
    ticker = next(iter(new.markets))
    rows = store.load_events(lake=lake).filter(pl.col("market_ticker") == ticker).sort("event_time_ms", maintain_order=True)
    assert np.array_equal(new.markets[ticker].features, rows.select(MODEL_FEATURES).collect().to_numpy().astype(np.float32))
    # The statistics agree with NumPy's over the concatenated training rows to float32 precision.
    train = np.concatenate([m.features for m in old.of_split("train")]).astype(np.float64)
    assert np.allclose(new.mean, train.mean(0), rtol=1e-6, atol=1e-6)
    assert np.allclose(new.std, np.maximum(train.std(0), 1e-3), rtol=1e-5, atol=1e-6)


def test_the_cache_is_built_once_per_feature_store_version(built_store, tmp_path):
    import shutil

    from core.catalog import Lake
    from core.settings import environment_overrides
    from training.data.cache import load_market_data

    _, source, _ = built_store
    lake = Lake(tmp_path / "lake")
    shutil.copytree(source.root, lake.root)
    with environment_overrides(KFS_CACHE=str(tmp_path / "cache")):
        first = load_market_data(lake)
        (version,) = [p for p in lake.local_cache("training_arrays").iterdir()]
        built = (version / "index.json").stat().st_mtime_ns
        again = load_market_data(lake)
        assert [p for p in lake.local_cache("training_arrays").iterdir()] == [version]
        assert (version / "index.json").stat().st_mtime_ns == built, "an unchanged store rebuilt its cache"
        assert np.array_equal(again.mean, first.mean)
        # A partition rewritten (here: the same bytes, a new time) is a new version; the old one is removed.
        day = lake.partition_files("features_events")[0]
        os.utime(day, ns=(day.stat().st_atime_ns, day.stat().st_mtime_ns + 10**9))
        load_market_data(lake)
        (newer,) = [p for p in lake.local_cache("training_arrays").iterdir()]
        assert newer != version
        manifest = json.loads((newer / "index.json").read_text())
        assert sum(m["rows"] for m in manifest["markets"]) * 4 * len(manifest["feature_names"]) == \
            (newer / "features.bin").stat().st_size


def test_a_killed_build_leaves_no_version_behind(built_store, tmp_path, monkeypatch):
    import shutil

    from core.catalog import Lake
    from core.settings import environment_overrides
    from training.data import cache

    _, source, _ = built_store
    lake = Lake(tmp_path / "lake")
    shutil.copytree(source.root, lake.root)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with environment_overrides(KFS_CACHE=str(tmp_path / "cache")):
        # Killed after the column files are written, as the index is written.
        monkeypatch.setattr(cache, "write_bytes_atomic", interrupted)
        with pytest.raises(KeyboardInterrupt):
            cache.load_market_data(lake)
        assert not list(lake.local_cache("training_arrays").iterdir())
        monkeypatch.undo()
        assert cache.load_market_data(lake).markets


def test_rows_placed_out_of_time_order_are_sorted_in_the_files(tmp_path):
    from training.data.cache import ColumnFiles, _sort_by_event_time
    from training.data.market_data import ARRAY_TYPES

    rng = np.random.default_rng(3)
    rows, width = 1000, 5
    times = rng.integers(0, 50, rows)   # many ties: the sort must keep the placed order among them
    arrays = {"time_ms": times, "features": rng.normal(size=(rows, width)), "bid": rng.integers(1, 99, rows),
              "ask": rng.integers(1, 99, rows), "bid_size": rng.integers(0, 9, rows), "ask_size": rng.integers(0, 9, rows)}
    with ColumnFiles(tmp_path, rows + 10, width) as columns:
        for start in range(0, rows, 300):     # placed in pieces, after ten rows of another market
            for name, values in arrays.items():
                columns.write(name, 10 + start, values[start:start + 300])
        _sort_by_event_time(columns, 10, rows)
        order = np.argsort(times, kind="stable")
        for name, values in arrays.items():
            assert np.array_equal(columns.read(name, 10, rows), values[order].astype(ARRAY_TYPES[name])), name
            assert not columns.read(name, 0, 10).any(), f"{name}: the other market's rows were touched"
    assert (tmp_path / "features.bin").stat().st_size == (rows + 10) * width * 4


def _read_through(array: np.ndarray) -> tuple[int, int]:
    """(sum of the array, most mapped bytes it added to the process), read 4 MiB at a time with pauses (as
    training reads)."""
    import time

    from training.data import mapped_pages

    start, grown, total = mapped_pages.resident_file_bytes(), 0, 0
    for first in range(0, len(array), (4 << 20) // 8):
        total += int(array[first:first + (4 << 20) // 8].sum())
        grown = max(grown, mapped_pages.resident_file_bytes() - start)
        time.sleep(2 * mapped_pages.CHECK_SECONDS)
    return total, grown


def test_mapped_pages_stay_under_the_budget_and_read_the_same(tmp_path):
    from core.settings import environment_overrides
    from training.data import mapped_pages

    path, size = tmp_path / "column.bin", 96 << 20
    expected = np.arange(size // 8, dtype=np.int64)
    expected.tofile(path)
    with environment_overrides(KFS_MAPPED_MIB="16"):
        array = mapped_pages.mapped_array(path, np.int64, None)
        assert not array.flags.writeable
        total, grown = _read_through(array)
    assert total == int(expected.sum())
    # Without the trimmer the process would hold all 96 MiB; with it, the budget and a few reads' worth.
    assert grown < 48 << 20, f"{grown >> 20} MiB of mapped pages resident with a 16 MiB budget"
    mapped_pages.release_mapped_pages()
    assert np.array_equal(array[::4096], expected[::4096]), "pages given back read differently"


def test_a_forked_child_holds_its_mapped_pages_under_the_budget(tmp_path):
    """Threads do not survive a fork: the child reading maps it inherited gets a trimmer of its own."""
    from core.settings import environment_overrides
    from training.data import mapped_pages

    path = tmp_path / "column.bin"
    np.arange((96 << 20) // 8, dtype=np.int64).tofile(path)
    with environment_overrides(KFS_MAPPED_MIB="16"):
        array = mapped_pages.mapped_array(path, np.int64, None)
        reader, writer = os.pipe()
        child = os.fork()
        if child == 0:   # the child reports what it held and leaves, whatever happens, without pytest's cleanup
            try:
                os.write(writer, str(_read_through(array)[1]).encode())
            finally:
                os._exit(0)
        os.close(writer)
        grown = int(os.read(reader, 64) or b"-1")
        os.waitpid(child, 0)
    assert 0 <= grown < 48 << 20, f"{grown >> 20} MiB of mapped pages resident in the child with a 16 MiB budget"


@pytest.mark.parametrize("window_rows", [1 << 20, 1000])
def test_market_rows_read_what_concatenated_markets_hold(built_store, monkeypatch, window_rows):
    from training.data.cache import load_market_data
    from training.learners import forecast
    from training.learners.forecast import MarketRows, forward_mid_moves
    monkeypatch.setattr(forecast, "WINDOW_ROWS", window_rows)   # 1000: positions read in many windows
    _, lake, _ = built_store
    data = load_market_data(lake)
    chosen = data.of_split("train")[::2]
    features = np.concatenate([m.features for m in chosen])
    targets = np.concatenate([forward_mid_moves(m) for m in chosen])
    positions = np.random.default_rng(0).integers(0, len(features), 5000)
    for rows in (MarketRows(chosen, data.arrays), MarketRows(chosen)):   # the cache's arrays, and one by one
        assert len(rows) == len(features)
        got_features, got_targets = rows.take(positions)
        assert np.array_equal(got_features.numpy(), features[positions])
        assert np.array_equal(got_targets.numpy(), targets[positions])


def test_forward_moves_at_any_row_match_the_definition():
    from training.learners.forecast import HORIZONS, MarketRows

    market = synthetic_market("S", 300, settled_ms=299_000, outcome=False)
    market.bid[:] = np.arange(300) % 90 + 1
    market.ask[:] = market.bid + 2
    mid = (market.bid.astype(np.float64) + market.ask) / 200.0
    _, targets = MarketRows([market]).take(np.array([0, 5, 150, 299]))
    for k, h in enumerate(HORIZONS):
        expected = [(mid[r + h] if r + h < 300 else 0.0) - mid[r] for r in (0, 5, 150, 299)]
        assert np.allclose(targets[:, k].numpy(), expected, atol=1e-7)


def test_statistics_do_not_depend_on_how_rows_are_cut():
    from training.data.market_data import FeatureMoments

    def feature_statistics(blocks, width):
        moments = FeatureMoments(width)
        for block in blocks:
            moments.add(block)
        return moments.statistics()

    rng = np.random.default_rng(1)
    rows = (rng.standard_normal((20_000, 6)) * [1, 10, 1e3, 1e-4, 0, 5] + [0, 3, 1e4, 0, 7, -2]).astype(np.float32)
    whole = feature_statistics([rows], 6)
    cut = feature_statistics(np.array_split(rows, 37), 6)
    assert np.allclose(whole[0], cut[0], rtol=1e-7, atol=0) and np.allclose(whole[1], cut[1], rtol=1e-7, atol=0)
    assert np.allclose(whole[0], rows.astype(np.float64).mean(0), rtol=1e-6, atol=1e-9)
    assert whole[1][4] == np.float32(1e-3)            # a constant feature gets the floor
    assert np.array_equal(feature_statistics([], 3)[0], np.zeros(3, np.float32))
    assert np.allclose(whole[1], np.maximum(rows.astype(np.float64).std(0), 1e-3), rtol=1e-6, atol=0)


def test_placement_finds_the_markets_whose_rows_come_out_of_time_order():
    from training.data.market_data import Placement

    def run(times, value):
        return {"time_ms": np.array(times, np.int64), "features": np.full((len(times), 2), value, np.float32)}

    placement = Placement({"train", "test"}, 2)
    for ticker, runs in {"IN-ORDER": [(1, 2, 2), (2, 5)], "BACK-IN-TIME": [(1, 9), (8, 10)],
                         "DESCENDING": [(3, 1)], "LATER-RUN-DESCENDING": [(1,), (5, 4)]}.items():
        for times in runs:
            split = "train" if ticker == "IN-ORDER" else "test"
            placement.saw(ticker, split, run(times, 1.0 if split == "train" else 3.0))
    assert placement.unsorted == {"BACK-IN-TIME", "DESCENDING", "LATER-RUN-DESCENDING"}
    assert placement.moments["train"].rows == 5 and placement.moments["test"].rows == 9
    # Normalisation comes from the training markets' rows alone.
    assert placement.normalisation()[0].tolist() == [1.0, 1.0]
