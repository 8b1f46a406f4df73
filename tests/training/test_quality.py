"""The quality bar of the learning pipeline, on simulated markets with known answers it never saw.

One seed, `QUALITY_SEED`, chosen before any run on it and never tuned on (nothing in the pipeline or its
defaults was changed to pass on it). On the default universe (300 markets x 7 days, every planted effect
mixed across markets), trained with the nightly profile (a fixed amount of work per stage, so the figures
are the same on every machine), the 25 test markets must show:
- the policy's mean per-market P&L with its 95% BCa interval above zero;
- the paired difference to `best_rule` (the best single-feature rule, tuned on training markets) above zero:
  the policy learned more than any one feature's threshold;
- at least half of the known-answer rule's P&L recovered (the rule written with knowledge of the effects,
  used only here and in reports);
and the same pipeline on the same universe at `--signal 0` (martingale prices: nothing to find) must not
find an edge: the 95% interval of the policy's and of `best_rule`'s mean includes zero and the mean is below
$0.50 a market. (The first version asked for the interval's upper end below $0.50; that measures the noise
of a strategy, not its edge: a rule that pays the spread on most markets and wins big on a few has a wide
interval around a zero mean. Changed after the first run, which is disclosed in the issue's note.)
Cross-market Sharpe and the share of profitable markets are printed, not asserted.

The two universes are two tests, each in its own xdist group, which tests/conftest.py starts first: they run
on separate workers, side by side.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from core.catalog import Lake
from features.splits import read_registry
from kfs.universe import build_universe
from source.simulator import SimulationConfig
from tests.conftest import temporary_env

QUALITY_SEED = 20261126  # the date it was chosen; never tuned on
QUALITY_UNIVERSE = SimulationConfig(seed=QUALITY_SEED, start=date(2026, 5, 4))  # default size, signal and effects
NULL_UNIVERSE = replace(QUALITY_UNIVERSE, signal=0.0)
NULL_MEAN_MAX = 0.50
MIN_RECOVERY = 0.5


def build_store(pg_dsn: str, root: Path, schema: str, config: SimulationConfig) -> Lake:
    """Simulate `config` into its own schema, ingest every day and build the feature store through Dagster."""
    lake, run = build_universe(pg_dsn, schema, config, root)
    assert run.success, run.failed_checks()
    return lake


def train_and_score(lake: Lake, strategies_needed: str) -> tuple[dict, dict]:
    """The nightly pipeline (the nightly profile) on `lake`, then the test split scored."""
    from training.data.cache import load_market_data
    from training.pipeline import config_from_settings, run_training
    from training.release.runs import run_validation

    data = load_market_data(lake)
    with temporary_env(KFS_TRAIN_DEVICE="cpu"):
        config = config_from_settings("nightly")
    summary = run_training(lake, config, data=data)
    assert summary["stages"]["cut_short_by_time_limit"] == [], "the time limit cut training short: not the nightly figures"
    report = run_validation(lake, "test", data=data)
    print(f"\n== {strategies_needed} ==\n" + Path(report["report"]).read_text().split("![")[0])
    stages = summary["stages"]
    print(json.dumps({k: stages.get(k) for k in ("forecaster", "forecast_trader", "selection", "complexity_tiers")},
                     default=str)[:6000])
    return summary, report


@pytest.mark.slow
@pytest.mark.quality
@pytest.mark.xdist_group("quality_planted")
def test_the_pipeline_finds_the_planted_edge(pg_dsn, tmp_path_factory):
    planted = build_store(pg_dsn, tmp_path_factory.mktemp("quality"), "quality_universe", QUALITY_UNIVERSE)
    _, report = train_and_score(planted, "signal 1: every planted effect")
    table = {row["strategy"]: row for row in report["table"]}
    policy = table["policy"]
    # every test market is scored (25 of 300; markets the recorder found already halted are in no split)
    test_markets = read_registry(planted).filter(pl.col("split") == "test").height
    assert policy["markets"] == table["best_rule"]["markets"] == test_markets >= 24, (policy, test_markets)
    assert policy["ci_low"] > 0, f"policy {policy}"
    versus_best = report["comparison"]["best_rule"]
    assert versus_best["ci_low"] > 0, f"not beyond the best single-feature rule: {versus_best}"
    recovery = report["recovery"]
    assert recovery["ratio"] is not None and recovery["ratio"] >= MIN_RECOVERY, f"recovered {recovery}"


@pytest.mark.slow
@pytest.mark.quality
@pytest.mark.xdist_group("quality_null")
def test_the_pipeline_finds_nothing_where_there_is_none(pg_dsn, tmp_path_factory):
    null = build_store(pg_dsn, tmp_path_factory.mktemp("quality_null"), "quality_null", NULL_UNIVERSE)
    _, null_report = train_and_score(null, "signal 0: a martingale")
    null_table = {row["strategy"]: row for row in null_report["table"]}
    for name in ("policy", "best_rule"):
        row = null_table[name]
        assert row["ci_low"] <= 0 and row["mean_return_dollars"] < NULL_MEAN_MAX, \
            f"{name} found an edge in martingale prices: {row}"
