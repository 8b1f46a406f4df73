"""Leakage guard: on martingale data (--signal 0) a trained policy must not make significant money on
markets it never saw. A profit here would mean look-ahead somewhere between the simulator and the policy."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import polars as pl
import psycopg
import pytest

from ingest.extract import ingest_markets, ingest_partition
from ingest.schema import create_source_tables
from ingest.simulator import SimulationConfig, simulate
from ingest.streams import PARTITIONED_STREAMS
from kfs.lake import Lake
from tests.conftest import SMALL_START, schema_tables, temporary_env

MARTINGALE = SimulationConfig(markets=60, days=2, seed=23, signal=0.0, start=SMALL_START)


@pytest.fixture(scope="module")
def martingale_store(pg_dsn, tmp_path_factory):
    root = tmp_path_factory.mktemp("martingale")
    tables = schema_tables("martingale")
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS martingale")
        create_source_tables(conn, tables)
        simulate(conn, tables, MARTINGALE, first_session_id=1)
    lake = Lake(root / "lake")
    days = [MARTINGALE.start + timedelta(days=i) for i in range(MARTINGALE.days)]
    for day in days:
        for stream in PARTITIONED_STREAMS:
            ingest_partition(pg_dsn, stream, day, lake, tables)
    ingest_markets(pg_dsn, lake, tables)
    with temporary_env(KFS_LAKE=str(lake.root), KFS_WAREHOUSE=str(root / "warehouse.duckdb")):
        from orchestration.definitions import defs

        result = defs.resolve_job_def("feature_store_job").execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            tags={"dagster/asset_partition_range_start": days[0].isoformat(),
                  "dagster/asset_partition_range_end": days[-1].isoformat()})
    assert result.success
    return lake


def test_no_significant_profit_on_martingale_data(martingale_store):
    from training import evaluate
    from training.market_data import load_market_data
    from training.pipeline import load_candidate, run_training
    from training.policy import GreedyPolicy
    from training.ppo import PPOConfig

    data = load_market_data(martingale_store)
    run_training(martingale_store, PPOConfig(n_envs=32, rollout_steps=64, total_steps=32 * 64 * 30, seed=5,
                                                  warm_start_batches=60), data=data)
    greedy = GreedyPolicy(load_candidate(martingale_store, data)).eval()
    held_out = [evaluate.market_metrics(evaluate.play(data, split, evaluate.policy_actor(greedy)))
                for split in ("validation", "test")]
    per_market = pl.concat(held_out)
    mean, low, high = evaluate.bootstrap_mean(per_market["return_dollars"].to_numpy())
    assert per_market.height >= 8
    assert low <= 0.0, f"the policy made money on martingale data: mean {mean:+.2f} $, 95% CI [{low:+.2f}, {high:+.2f}]"
