"""Point-in-time retrieval (`features.store.historical_features`) on the nightly build of the small universe,
against a brute-force oracle: for each entity row, every feature row of its market read from the lake, the
last one known at or before the entity's time."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from features import store
from tests.conftest import REPO

FEATURES = ["ob_yes_mid_prob", "ob_yes_depth_imbalance", "tm_log_seconds_since_prev"]


@pytest.fixture(scope="module")
def lake_rows(small_lake) -> pl.DataFrame:
    """Every event row of the lake, in file order (the order of the book)."""
    return store.load_events(lake=small_lake).collect().with_row_index("file_order")


@pytest.fixture(scope="module")
def entities(lake_rows) -> pl.DataFrame:
    """Labels at random times over the universe, at exact event times and one millisecond before them, before
    the first event, for a market the lake does not have, and with a null time."""
    rng = np.random.default_rng(5)
    markets = lake_rows["market_ticker"].unique().sort().to_list()
    low, high = lake_rows["event_time_ms"].min(), lake_rows["event_time_ms"].max()
    picked = lake_rows.sample(200, seed=3)
    rows = [
        pl.DataFrame({"market_ticker": rng.choice(markets, 400).tolist(),
                      "timestamp_ms": rng.integers(low - 3_600_000, high + 3_600_000, 400)}),
        picked.select("market_ticker", pl.col("event_time_ms").alias("timestamp_ms")),
        picked.select("market_ticker", (pl.col("event_time_ms") - 1).alias("timestamp_ms")),
        pl.DataFrame({"market_ticker": [markets[0], "NOT-A-MARKET"], "timestamp_ms": [low - 1, high]}),
        pl.DataFrame({"market_ticker": [markets[1]], "timestamp_ms": [None]}, schema={"market_ticker": pl.String,
                                                                                    "timestamp_ms": pl.Int64}),
    ]
    frame = pl.concat(rows, how="vertical_relaxed")
    return frame.with_columns(label=pl.int_range(pl.len()) * 7)


def oracle(lake_rows: pl.DataFrame, entities: pl.DataFrame, max_age_ms: int | None) -> pl.DataFrame:
    """One entity at a time: the last row in file order of its market with event time in [t - max_age, t]."""
    by_market = lake_rows.partition_by("market_ticker", as_dict=True)
    out = []
    for ticker, t in entities.select("market_ticker", "timestamp_ms").iter_rows():
        rows = by_market.get((ticker,))
        match = None
        if rows is not None and t is not None:
            known = rows.filter((pl.col("event_time_ms") <= t)
                                & (pl.col("event_time_ms") >= (t - max_age_ms if max_age_ms is not None else -2**62)))
            if known.height:
                match = known.sort("file_order").row(-1, named=True)
        out.append({"feature_event_time_ms": None if match is None else match["event_time_ms"],
                    **{name: None if match is None else match[name] for name in FEATURES}})
    return pl.DataFrame(out, schema={"feature_event_time_ms": pl.Int64, **{n: lake_rows.schema[n] for n in FEATURES}})


@pytest.mark.parametrize("max_age", [None, timedelta(minutes=10)])
def test_each_row_gets_the_last_feature_row_known_at_its_time(small_lake, lake_rows, entities, max_age):
    got = store.historical_features(entities, features=FEATURES, max_age=max_age, lake=small_lake)
    assert got.columns == [*entities.columns, "feature_event_time_ms", *FEATURES]
    assert got.select(entities.columns).equals(entities)   # the rows, their order and their labels kept
    expected = oracle(lake_rows, entities, None if max_age is None else int(max_age.total_seconds() * 1000))
    assert got.select(expected.columns).equals(expected)
    matched = got.filter(pl.col("feature_event_time_ms").is_not_null())
    assert matched.height > 500 and got.height - matched.height >= 3


def test_a_feature_row_known_after_the_time_is_never_returned(small_lake, lake_rows):
    """Asked one millisecond before each event became known, the join returns an earlier row, never that one."""
    events = lake_rows.filter(pl.col("event_time_ms") > pl.col("event_time_ms").shift(1).over("market_ticker"))
    before = events.select("market_ticker", (pl.col("event_time_ms") - 1).alias("timestamp_ms"))
    got = store.historical_features(before, features=FEATURES, lake=small_lake)
    assert (got["feature_event_time_ms"] < events["event_time_ms"]).all()
    assert (got["feature_event_time_ms"] <= got["timestamp_ms"]).all()


def test_pandas_entities_and_every_feature_by_default(small_lake, entities):
    got = store.historical_features(entities.head(20).to_pandas(), lake=small_lake)
    feature_names = [c.name for c in store.EVENT_COLUMNS if c.group != "identity"]
    assert got.columns == [*entities.columns, "feature_event_time_ms", *feature_names]


@pytest.mark.parametrize(("entities", "features", "max_age", "message"), [
    ({"ticker": ["A"], "timestamp_ms": [1]}, None, None, "entities lack ['market_ticker']"),
    ({"market_ticker": ["A"], "timestamp_ms": [1.5]}, None, None, "timestamp_ms must hold integers"),
    ({"market_ticker": ["A"], "timestamp_ms": [1]}, ["no_such_feature"], None, "unknown features ['no_such_feature']"),
    ({"market_ticker": ["A"], "timestamp_ms": [1]}, ["session_id"], None, "identity columns, not features"),
    ({"market_ticker": ["A"], "timestamp_ms": [1]}, "ob_yes_mid_prob", None, "a list of column names"),
    ({"market_ticker": ["A"], "timestamp_ms": [1], "ob_yes_mid_prob": [0.5]}, None, None, "named like features"),
    ({"market_ticker": ["A"], "timestamp_ms": [1]}, None, -5, "max_age must be"),
])
def test_bad_arguments_are_one_line(small_lake, entities, features, max_age, message):
    with pytest.raises(ValueError) as raised:
        store.historical_features(pl.DataFrame(entities), features=features, max_age=max_age, lake=small_lake)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_command_line_reads_labels_and_writes_their_features(small_lake, entities, tmp_path):
    labels = tmp_path / "labels.csv"
    entities.write_csv(labels)
    out = tmp_path / "features.parquet"
    env = {"KFS_LAKE": str(small_lake.root), "PATH": "/usr/bin:/bin", "KFS_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "kfs.cli", "features", "--entities", str(labels), "--out", str(out),
                           "--features", ",".join(FEATURES), "--max-age", "10m"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = store.historical_features(entities, features=FEATURES, max_age=timedelta(minutes=10), lake=small_lake)
    assert pl.read_parquet(out).equals(expected)
    assert f"{entities.height:,} rows" in done.stdout

    bad = subprocess.run([sys.executable, "-m", "kfs.cli", "features", "--entities", str(labels), "--out", str(out),
                          "--max-age", "ten minutes"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def researcher_blocks() -> list[str]:
    """The Python blocks of the README's feature-store section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## The feature store (for researchers)", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


def test_every_python_block_of_the_researcher_readme_runs_on_the_test_universe(small_nightly, tmp_path):
    blocks = researcher_blocks()
    assert len(blocks) >= 3
    env = {"PATH": "/usr/bin:/bin", "KFS_LAKE": str(small_nightly["root"] / "lake"), "KFS_HOME": str(tmp_path),
           "KFS_WAREHOUSE": str(small_nightly["root"] / "warehouse.duckdb")}
    for block in blocks:
        done = subprocess.run([sys.executable, "-c", block], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{block}\n{done.stderr[-3000:]}"
        assert done.stdout.strip(), block


def test_the_markets_mart_as_of_a_time_shows_a_result_only_once_settled(small_lake):
    markets = store.load_markets(lake=small_lake)
    settled = markets.filter(pl.col("settled_ts").is_not_null()).row(0, named=True)
    at = int(settled["settled_ts"].timestamp() * 1000)
    entities = pl.DataFrame({"market_ticker": [settled["market_ticker"]] * 3 + ["NOT-A-MARKET"],
                             "timestamp_ms": [at - 1, at, at + 1, at], "label": [1, 2, 3, 4]})
    got = store.historical_markets(entities, lake=small_lake)
    assert got.columns == [*entities.columns, *store.MARKET_LISTING, *store.MARKET_SETTLEMENT]
    assert got["result"].to_list() == [None, settled["result"], settled["result"], None]
    assert got["category"].to_list() == [settled["category"]] * 3 + [None]
    with pytest.raises(ValueError, match="whole recorded history"):
        store.historical_markets(entities, columns=["brier"], lake=small_lake)
