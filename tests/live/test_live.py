"""The live path: parity with the offline store row for row, hot reload mid-stream, invalid books, --follow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date

import numpy as np
import polars as pl
import psycopg
import pytest

from core.catalog import Lake
from features.schema import MODEL_FEATURES
from live.runner import run_live
from live.sources import follow, read_recording_tables, replay
from tests.conftest import SAGNIK, SHARED_DATA
from tests.training.test_publish import _validation, _with_usable_stage
from training.release.serving import PolicyServer

KEY = ["market_ticker", "session_id", "sequence_number"]
NO_BUDGET = float("inf")  # latency is measured by make bench; a loaded CI machine must not decide here


def _publish_winning(source_published, lake: Lake) -> dict:
    """Publish the small universe's trained policy into `lake` with a validation result that promotes it."""
    from training.pipeline import load_candidate
    from training.release.publish import publish
    from training.release.runs import validation_observations

    source, data, summary, _, _ = source_published
    policy, _ = load_candidate(source, data)
    obs = validation_observations(data, max_steps=50)
    return publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions, _with_usable_stage(summary),
                   _validation(0.5, 0.5), obs, latency_budget_p99_us=NO_BUDGET)


@pytest.fixture(scope="module")
def serving_lake(published, tmp_path_factory):
    lake = Lake(tmp_path_factory.mktemp("serving"))
    manifest = _publish_winning(published, lake)
    return lake, manifest


def assert_same_rows(live: pl.DataFrame, offline: pl.DataFrame) -> None:
    """Every offline row has its live row (same market, session, sequence) with every model feature within
    1e-6, and the other way round."""
    assert live.height == offline.height
    joined = offline.select(*KEY, *MODEL_FEATURES).join(live, on=KEY, how="inner", suffix="_live")
    assert joined.height == offline.height
    for name in MODEL_FEATURES:
        a, b = joined[name].to_numpy(), joined[f"{name}_live"].to_numpy()
        differ = ~np.isclose(a, b, rtol=0, atol=1e-6, equal_nan=True)
        first = joined.filter(pl.Series(differ)).select(*KEY, name, f"{name}_live").head(3).to_dicts()
        assert not differ.any(), f"{name}: {int(differ.sum())} rows differ, first {first}"


def _as_recorded(dsn: str, source, target) -> None:
    """Copy a simulated universe (written market by market) into `target` in arrival order, the order in
    which a recorder inserting rows as they arrive assigns ids."""
    from ingest.streams import PARTITIONED_STREAMS

    arrival = {"snapshots": "timestamp_ms, id", "deltas": "timestamp_ms, id", "trades": "greatest(received_at, ts), id"}
    with psycopg.connect(dsn) as conn:
        for name, order in arrival.items():
            columns = ", ".join(c for c in PARTITIONED_STREAMS[name].column_names if c != "id")
            conn.execute(f"INSERT INTO {getattr(target, name)} ({columns}) SELECT {columns} "
                         f"FROM {getattr(source, name)} ORDER BY {order}")
        conn.execute(f"INSERT INTO {target.markets} SELECT * FROM {source.markets}")


def test_follow_on_the_simulated_universe_matches_the_offline_store(small_universe, built_store, serving_lake,
                                                                    fresh_tables, tmp_path):
    """The small universe (all effects) as a recorder would have written it, followed by id in batches that
    cut through markets and days, against the feature store Dagster built from the universe."""
    _, store, _ = built_store
    lake, manifest = serving_lake
    tables = fresh_tables(dsn=small_universe["dsn"])
    _as_recorded(small_universe["dsn"], small_universe["tables"], tables)
    report = run_live(follow(small_universe["dsn"], tables, batch_events=997, exit_when_idle=True),
                      PolicyServer(lake, latency_budget_p99_us=NO_BUDGET), tmp_path / "out")
    offline = store.scan_parquet(store.partition_files("features_events")).collect()
    assert_same_rows(pl.read_parquet(tmp_path / "out" / "features.parquet"), offline)
    decisions = pl.read_parquet(tmp_path / "out" / "decisions.parquet")
    assert report.decisions > 0 and report.versions == [manifest["version"]]
    assert decisions.filter(pl.col("action").is_not_null())["model_version"].unique().to_list() == [manifest["version"]]
    # The universe opens every session with a snapshot, so the only refusals are the one-sided books (the
    # favourite's side empties once the outcome is known), and exactly those.
    books = decisions.join(offline.select("market_ticker", "session_id", "sequence_number",
                                          (pl.col("yes_side_empty") | pl.col("no_side_empty")).alias("one_sided")),
                           on=["market_ticker", "session_id", "sequence_number"], how="left")
    assert books["one_sided"].null_count() == 0
    expected = pl.when(pl.col("one_sided")).then(pl.lit("one-sided book")).otherwise(pl.lit(None, pl.String))
    assert books.filter(pl.col("refused_reason").ne_missing(expected)).height == 0
    assert 0 < books["one_sided"].sum() < books.height


needs_real_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data/real is not beside the checkout")
REAL_BOOK_RECORDINGS = sorted(SAGNIK.glob("Kalshi_*_JAN07_WIN.csv")) + [SAGNIK / "orderbook_snapshots_20260208.csv"]


@needs_real_data
def test_replay_of_every_real_recording_matches_the_offline_store(pg_dsn, fresh_tables, serving_lake, tmp_path):
    """Every real recording with book data, loaded and ingested as `kfs load-recording` + the daily ingest do,
    against the same files replayed live in odd-sized batches."""
    from features.events import materialize_event_features
    from features.resolution import materialize_resolution_history
    from kfs.universe import ingest_days
    from source.recordings import load_files

    tables = fresh_tables()
    with psycopg.connect(pg_dsn) as conn:
        load_files(conn, tables, REAL_BOOK_RECORDINGS)
        first_ms, last_ms = conn.execute(
            f"SELECT min(t), max(t) FROM (SELECT timestamp_ms AS t FROM {tables.deltas} UNION ALL "
            f"SELECT timestamp_ms FROM {tables.snapshots} UNION ALL SELECT ts FROM {tables.trades}) times").fetchone()
    store = Lake(tmp_path / "store")
    days = pl.date_range(date.fromtimestamp(first_ms // 1000 - 86400), date.fromtimestamp(last_ms // 1000 + 86400),
                         eager=True).to_list()
    ingest_days(pg_dsn, tables, store, days)
    materialize_resolution_history(store)
    materialize_event_features(store, days[0], days[-1])
    offline = store.scan_parquet(store.partition_files("features_events")).collect()
    assert offline.height > 90_000

    lake, _ = serving_lake
    recorded = read_recording_tables(REAL_BOOK_RECORDINGS)
    run_live(replay(recorded, batch_events=4093), PolicyServer(lake, latency_budget_p99_us=NO_BUDGET), tmp_path / "out")
    assert_same_rows(pl.read_parquet(tmp_path / "out" / "features.parquet"), offline)
    decisions = pl.read_parquet(tmp_path / "out" / "decisions.parquet")
    # Real recordings start mid-book: markets before their first snapshot are refused, and say so.
    assert decisions.filter(pl.col("action").is_null())["refused_reason"].null_count() == 0


@needs_real_data
def test_hot_reload_mid_stream_switches_at_one_arrival_and_refuses_a_broken_version(published, tmp_path):
    from training.release.publish import read_registry

    lake = Lake(tmp_path / "lake")
    first = _publish_winning(published, lake)
    recorded = read_recording_tables([SAGNIK / "Kalshi_DEN_JAN07_WIN.csv"])  # 6,004 events: 121 arrivals of 50
    state = {}

    def promote_midway(arrival: int, report) -> None:
        if arrival == 40:
            state["second"] = _publish_winning(published, lake)["version"]
        if arrival == 80:
            broken = _publish_winning(published, lake)["version"]
            (lake.model_version(broken) / "policy_int8.pt").write_bytes(b"not a model")
            state["broken"] = broken

    report = run_live(replay(recorded, batch_events=50), PolicyServer(lake, latency_budget_p99_us=NO_BUDGET),
                      tmp_path / "out", reload_every_s=0.0, on_arrival=promote_midway)
    assert read_registry(lake)["aliases"]["production"] == state["broken"]
    decisions = pl.read_parquet(tmp_path / "out" / "decisions.parquet").filter(pl.col("action").is_not_null())
    versions = decisions["model_version"].to_list()
    switch = versions.index(state["second"])
    assert set(versions[:switch]) == {first["version"]} and set(versions[switch:]) == {state["second"]}
    assert report.versions == [first["version"], state["second"]]
    assert any("sha256" in reason for reason in report.refused_versions)
    features = pl.read_parquet(tmp_path / "out" / "features.parquet")
    assert features.height == sum(recorded[name].num_rows for name in ("snapshots", "deltas"))  # none lost


def test_invalid_books_are_never_acted_on_and_say_why(serving_lake, tmp_path):
    """A delta before any snapshot, a sequence gap and a crossed book: decision rows with a reason, no action."""
    import pyarrow as pa

    lake, _ = serving_lake
    book = lambda bids: "{" + ", ".join(f'"{p}": {s}' for p, s in bids.items()) + "}"  # noqa: E731
    snapshots = pa.table({"id": [1, 2], "session_id": [1, 1], "market_ticker": ["GAP", "CROSS"],
                          "timestamp_ms": [1_767_000_000_000, 1_767_000_000_000], "sequence_number": [1, 1],
                          "yes_bids": [book({40: 10}), book({40: 10})], "no_bids": [book({55: 10}), book({55: 10})]})
    deltas = pa.table({"id": [1, 2, 3], "session_id": [1, 1, 1], "market_ticker": ["EARLY", "GAP", "CROSS"],
                       "timestamp_ms": [1_767_000_000_001, 1_767_000_000_002, 1_767_000_000_003],
                       "sequence_number": [5, 3, 2], "side": ["yes", "yes", "yes"], "action": ["add"] * 3,
                       "price": [41, 41, 70], "old_size": [0, 0, 0], "new_size": [5, 5, 5]})
    trades = pa.table({"id": pa.array([], pa.int64()), "trade_id": pa.array([], pa.string()),
                       "market_ticker": pa.array([], pa.string()), "yes_price": pa.array([], pa.int64()),
                       "no_price": pa.array([], pa.int64()), "count": pa.array([], pa.int64()),
                       "taker_side": pa.array([], pa.string()), "ts": pa.array([], pa.int64()),
                       "received_at": pa.array([], pa.int64())})
    markets = pl.DataFrame({"ticker": ["CROSS", "EARLY", "GAP"]}).to_arrow()
    run_live(replay({"snapshots": snapshots, "deltas": deltas, "trades": trades, "markets": markets}, batch_events=1),
             PolicyServer(lake, latency_budget_p99_us=NO_BUDGET), tmp_path / "out")
    decisions = pl.read_parquet(tmp_path / "out" / "decisions.parquet")
    reasons = dict(decisions.filter(pl.col("sequence_number") > 1).select("market_ticker", "refused_reason").iter_rows())
    assert reasons == {"EARLY": "before the first snapshot", "GAP": "sequence gap", "CROSS": "crossed book"}
    assert decisions.filter(pl.col("refused_reason").is_not_null())["action"].null_count() == 3


def test_follow_picks_up_new_rows_and_exits_cleanly_on_sigterm(small_universe, fresh_tables, serving_lake, tmp_path):
    """`kfs live --follow` as a process: rows inserted while it runs are decided on; SIGTERM ends it with the
    outputs complete."""
    lake, _ = serving_lake
    tables = fresh_tables(dsn=small_universe["dsn"])
    source = small_universe["tables"]
    copy = lambda table, where: (f"INSERT INTO {getattr(tables, table)} SELECT * FROM {getattr(source, table)} "  # noqa: E731
                                 f"WHERE {where}")
    with psycopg.connect(small_universe["dsn"]) as conn:
        conn.execute(copy("markets", "true"))
        conn.execute(copy("snapshots", "true"))
        conn.execute(copy("deltas", "id <= 2000"))
    env = {**os.environ, "KFS_PG_DSN": small_universe["dsn"], "KFS_LAKE": str(lake.root), "PYTHONUNBUFFERED": "1",
           **{f"KFS_TABLE_{name.upper()}": getattr(tables, name) for name in ("snapshots", "deltas", "trades", "markets")}}
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "kfs.cli", "live", "--follow", "--out", str(out), "--poll", "0.05",
                                "--no-latency-check"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = _await_line(process, "live:", timeout_s=180)   # the model is loaded and the first poll is next
        time.sleep(3)
        with psycopg.connect(small_universe["dsn"]) as conn:
            conn.execute(copy("deltas", "id > 2000 AND id <= 4000"))
        time.sleep(8)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    output = started + output
    assert process.returncode == 0, output
    features = pl.read_parquet(out / "features.parquet")
    with psycopg.connect(small_universe["dsn"]) as conn:
        book_rows = sum(conn.execute(f"SELECT count(*) FROM {getattr(tables, t)}").fetchone()[0]
                        for t in ("snapshots", "deltas"))
    assert features.height == book_rows > 2000
    assert "stopped" in output


def _await_line(process: subprocess.Popen, marker: str, timeout_s: float) -> str:
    """The process's output up to and including its first line containing `marker` (a start on a loaded
    machine takes seconds of imports and model loading, so fixed sleeps alone race it)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(_lines_until(process.stdout, marker)), daemon=True)
    reader.start()
    reader.join(timeout_s)
    assert not reader.is_alive(), f"no {marker!r} line within {timeout_s:.0f} s: {''.join(lines)}"
    return "".join(lines)


def _lines_until(stream, marker: str):
    for line in stream:
        yield line
        if marker in line:
            return


@needs_real_data
def test_replay_runs_from_the_command_line_on_a_real_recording(serving_lake, tmp_path):
    lake, _ = serving_lake
    env = {**os.environ, "KFS_LAKE": str(lake.root)}
    result = subprocess.run([sys.executable, "-m", "kfs.cli", "live", "--recording", str(SAGNIK / "Kalshi_SAS_JAN07_WIN.csv"),
                             "--out", str(tmp_path / "out"), "--no-latency-check"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "events/s" in result.stdout
    assert pl.read_parquet(tmp_path / "out" / "decisions.parquet").height > 0
    missing = subprocess.run([sys.executable, "-m", "kfs.cli", "live", "--recording", str(tmp_path / "nope.csv")],
                             env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no such file" in missing.stderr


@needs_real_data
def test_without_a_published_model_live_says_so_in_one_line(tmp_path):
    env = {**os.environ, "KFS_LAKE": str(tmp_path / "empty")}
    result = subprocess.run([sys.executable, "-m", "kfs.cli", "live", "--recording", str(SAGNIK / "Kalshi_SAS_JAN07_WIN.csv")],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no model to serve" in result.stderr
