"""The quality bar of the learning pipeline, on simulated markets with known answers it never saw.

One seed, `QUALITY_SEED`, chosen before any run on it. No default of the pipeline was chosen by its figures
on this seed, but it is not untouched: earlier versions of this test were run on it, and the null criterion
was changed once after its first run (disclosed in that issue's note); PPO's hyperparameters were tuned on
the default universe's (seed 7) validation markets. On the default universe (300 markets x 7 days, every
planted effect mixed across markets), trained with the nightly profile (a fixed amount of work per stage, so
the figures are the same on every machine; every choice made on the select markets, none on validation or
test), the 25 test markets must show:
- the policy's mean per-market P&L with its 95% BCa interval above zero;
- the paired difference to `best_rule` (the fair best single-feature rule: tuned on fit markets with a
  tradability filter and a minimum of markets traded, chosen on the select markets) above zero;
- the published stage no more than $0.50 a market below its own forecast trader (paired interval low above
  -0.50), unless the published stage is the trader itself (then the difference is what int8 costs it, printed);
- at least half of the known-answer rule's P&L recovered (the rule written with knowledge of the effects,
  used only here and in reports);
and the same pipeline on the same universe at `--signal 0` (nothing planted) must not find an edge: the
policy's and `best_rule`'s 90% BCa intervals lie within +-$0.50 a market (an equivalence test, TOST at 5% per
side: a wide interval around zero fails it, where "the interval includes zero" passes by low power); and the
null battery (training/evaluation/null_battery.py) on its 200+ settled markets finds nothing: the favourite in
the final hour, the fair best rule, each known-answer rule and a random one show no profit net of costs, and
the signal rules no drift gross at the mid. The equivalence test was printed, not asserted, until the
simulator's null was fixed (a book clamped at 97/98 paid the favourite); it is asserted since.
Cross-market Sharpe and the share of profitable markets are printed, not asserted. The replication over
five other seeds is `make quality` (bench/quality_bench.py).

This bar is `make quality-test`, not part of `make test`: two full universes trained with the nightly profile
take about 35 minutes of two cores' time, more than the whole suite's budget (25 minutes on two cores).
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
from training.data.cache import load_market_data
from training.evaluation.null_battery import battery_lines, run_battery, settled_markets
from training.evaluation.scoring import bca_interval
from training.evaluation.validation import Baselines
from training.release.publish import published_stage

QUALITY_SEED = 20261126  # the date it was chosen; never tuned on
QUALITY_UNIVERSE = SimulationConfig(seed=QUALITY_SEED, start=date(2026, 5, 4))  # default size, signal and effects
NULL_UNIVERSE = replace(QUALITY_UNIVERSE, signal=0.0)
MIN_RECOVERY = 0.5
TRADER_MARGIN = 0.50           # the policy may trail its forecast trader by less than this
EQUIVALENCE_MARGIN = 0.50      # dollars a market: the null's 90% intervals lie within +-this
EQUIVALENCE_CONFIDENCE = 0.90  # two one-sided tests at 5% each


def build_store(pg_dsn: str, root: Path, schema: str, config: SimulationConfig) -> Lake:
    """Simulate `config` into its own schema, ingest every day and build the feature store through Dagster."""
    lake, run = build_universe(pg_dsn, schema, config, root)
    assert run.success, run.failed_checks()
    return lake


def train_and_score(lake: Lake, strategies_needed: str) -> tuple[dict, dict]:
    """The nightly pipeline (the nightly profile) on `lake`, then the test split scored."""
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
    summary, report = train_and_score(planted, "signal 1: every planted effect")
    table = {row["strategy"]: row for row in report["table"]}
    policy = table["policy"]
    # every test market is scored (25 of 300; markets the recorder found already halted are in no split)
    test_markets = read_registry(planted).filter(pl.col("split") == "test").height
    assert policy["markets"] == table["best_rule"]["markets"] == test_markets >= 24, (policy, test_markets)
    assert policy["ci_low"] > 0, f"policy {policy}"
    versus_best = report["comparison"]["best_rule"]
    assert versus_best["ci_low"] > 0, f"not beyond the best single-feature rule: {versus_best}"
    versus_trader, stage = report["comparison"]["forecast_trader"], published_stage(summary)
    # When the trader itself is published, this difference is what int8 quantization costs it: printed, and
    # the bar holds by the issue's own terms (the published policy is the trader).
    print(f"published stage {stage}; policy (int8) - forecast_trader (fp32) {versus_trader['mean']:+.2f} "
          f"[{versus_trader['ci_low']:+.2f}, {versus_trader['ci_high']:+.2f}]")
    assert stage == "forecast_trader" or versus_trader["ci_low"] > -TRADER_MARGIN, \
        f"the published {stage} trails its forecast trader: {versus_trader}"
    recovery = report["recovery"]
    assert recovery["ratio"] is not None and recovery["ratio"] >= MIN_RECOVERY, f"recovered {recovery}"


@pytest.mark.slow
@pytest.mark.quality
@pytest.mark.xdist_group("quality_null")
def test_the_pipeline_finds_nothing_where_there_is_none(pg_dsn, tmp_path_factory):
    null = build_store(pg_dsn, tmp_path_factory.mktemp("quality_null"), "quality_null", NULL_UNIVERSE)
    _, null_report = train_and_score(null, "signal 0: nothing planted")
    equivalent = {}
    for name in ("policy", "best_rule"):
        returns = [row["return_dollars"] for row in null_report["per_market"][name]]
        mean, low, high = bca_interval(returns, confidence=EQUIVALENCE_CONFIDENCE)
        equivalent[name] = -EQUIVALENCE_MARGIN < low and high < EQUIVALENCE_MARGIN
        print(f"null {name} {mean:+.2f} $/market, 90% BCa [{low:+.2f}, {high:+.2f}] on {len(returns)} markets "
              f"within +-{EQUIVALENCE_MARGIN:.2f}: {'holds' if equivalent[name] else 'FAILS'}")
    data = load_market_data(null)
    assert len(settled_markets(data)) >= 200
    battery = run_battery(data, Baselines.from_dict(null_report["baselines"]))
    print("null battery (issue 24):\n" + "\n".join(battery_lines(battery)))
    assert all(row["null"] for row in battery.values()), [name for name, row in battery.items() if not row["null"]]
    assert all(equivalent.values()), f"not equivalent to nothing at signal 0 (90% within +-{EQUIVALENCE_MARGIN}): {equivalent}"
