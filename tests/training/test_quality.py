"""The quality bar of the trained policy, measured on simulated markets it never saw.

- Leakage guard: on martingale data (--signal 0) a trained policy must not make significant money on
  held-out markets. A profit there would mean look-ahead somewhere between the simulator and the policy.
- Edge: on the default universe (default planted signal) the policy trained by the default pipeline
  beats always-hold, random and buy-and-hold YES on the test markets net of spread and fees, with the
  lower bound of its mean per-market return above zero; the imbalance rule is reported next to it.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest

from core.catalog import Lake
from ingest.extract import ingest_markets, ingest_partition
from ingest.streams import PARTITIONED_STREAMS
from source.ddl import create_source_tables
from source.simulator import SimulationConfig, simulate
from tests.conftest import SMALL_START, schema_tables, temporary_env

MARTINGALE = SimulationConfig(markets=60, days=2, seed=23, signal=0.0, start=SMALL_START)
DEFAULT_UNIVERSE = SimulationConfig(start=date(2026, 5, 4))  # default markets, days, seed and signal


def build_store(pg_dsn: str, root, schema: str, config: SimulationConfig) -> Lake:
    """Simulate `config` into its own schema, ingest every day and build the feature store."""
    tables = schema_tables(schema)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        create_source_tables(conn, tables)
        simulate(conn, tables, config, first_session_id=1)
    lake = Lake(root / "lake")
    days = [config.start + timedelta(days=i) for i in range(config.days + 1)]  # the last markets spill over
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


@pytest.fixture(scope="module")
def martingale_store(pg_dsn, tmp_path_factory):
    return build_store(pg_dsn, tmp_path_factory.mktemp("martingale"), "martingale", MARTINGALE)


@pytest.fixture(scope="module")
def default_store(pg_dsn, tmp_path_factory):
    return build_store(pg_dsn, tmp_path_factory.mktemp("default_universe"), "default_universe", DEFAULT_UNIVERSE)


def test_no_significant_profit_on_martingale_data(martingale_store):
    from training import evaluate
    from training.market_data import load_market_data
    from training.pipeline import TrainingConfig, load_candidate, run_training
    from training.policy import GreedyPolicy
    from training.ppo import PPOConfig

    data = load_market_data(martingale_store)
    run_training(martingale_store, TrainingConfig(seed=5, total_steps=32 * 64 * 30, warm_start_batches=60,
                                                  ppo=PPOConfig(n_envs=32, rollout_steps=64)), data=data)
    greedy = GreedyPolicy(load_candidate(martingale_store, data)).eval()
    held_out = [evaluate.market_metrics(evaluate.play(data, split, evaluate.policy_actor(greedy)))
                for split in ("validation", "test")]
    per_market = pl.concat(held_out)
    mean, low, high = evaluate.bootstrap_mean(per_market["return_dollars"].to_numpy())
    assert per_market.height >= 8
    assert low <= 0.0, f"the policy made money on martingale data: mean {mean:+.2f} $, 95% CI [{low:+.2f}, {high:+.2f}]"


@pytest.mark.slow
@pytest.mark.quality
def test_trained_policy_beats_the_baselines_on_test_markets(default_store):
    from training.market_data import load_market_data
    from training.pipeline import TrainingConfig, run_training, run_validation

    data = load_market_data(default_store)
    # A step budget, not a time budget, so the result does not depend on the machine's speed.
    summary = run_training(default_store, TrainingConfig(seed=7, total_steps=128 * 64 * 40, warm_start_batches=400),
                           data=data)
    report = run_validation(default_store, "test", data=data)
    table = {row["strategy"]: row for row in report["table"]}
    print(Path(report["report"]).read_text(), summary["warm_start"], summary["selection"])  # shown with -s / on failure
    policy = table["policy"]
    assert table["imbalance_rule"]["markets"] == policy["markets"] == 25  # reported side by side
    assert policy["ci_low"] > 0, f"policy {policy} (training: {summary['selection']})"
    for baseline in ("always_hold", "random", "buy_and_hold_yes"):
        difference = report["comparison"][baseline]
        assert difference["ci_low"] > 0, f"does not beat {baseline}: {difference} (training: {summary['selection']})"
