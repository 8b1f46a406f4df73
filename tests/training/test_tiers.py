"""Progressive complexity: the larger tier is kept only when it pays, and the decision is recorded."""

from __future__ import annotations

import io

import pytest
import torch

from training.learners.forecast_trader import ForecastTrader
from training.learners.limits import NO_LIMIT
from training.learners.policy import build_policy
from training.learners.tiers import BATCH_BUDGET_P99_US, SHARPE_GAIN, choose_tier
from training.pipeline import smoke_config, train_large_tier


def _tier(hidden: int, sharpe: float, p99_us: float) -> dict:
    return {"hidden": hidden, "select_mean_dollars": sharpe * 10, "select_ci": [0.0, 1.0],
            "select_sharpe": sharpe, "batched_latency_us": {"p50_us": p99_us / 2, "p99_us": p99_us}}


@pytest.mark.parametrize("gain, p99_us, kept", [
    (SHARPE_GAIN + 0.01, BATCH_BUDGET_P99_US / 2, "large"),
    (SHARPE_GAIN - 0.01, BATCH_BUDGET_P99_US / 2, "base"),       # better, but not by enough
    (SHARPE_GAIN + 0.5, BATCH_BUDGET_P99_US * 2, "base"),        # better, but too slow
])
def test_the_larger_tier_is_kept_only_when_it_pays(gain, p99_us, kept):
    decision = choose_tier(_tier(64, 0.5, 800.0), _tier(128, 0.5 + gain, p99_us))
    assert decision["kept"] == kept
    assert (decision["why_not_large"] == []) == (kept == "large")


def test_both_tiers_are_trained_measured_and_compared_from_the_runs_own_pieces(published):
    lake, data, summary, _, _ = published
    config = smoke_config()
    base, trader = _base_tier(lake, data, summary)
    kept_score = summary["stages"]["selection"]["scores"][summary["stages"]["selection"]["kept"]]
    policy, report, tiers = train_large_tier(base, kept_score, base.forecaster, trader, data, config,
                                             torch.device("cpu"), NO_LIMIT)
    assert {tiers["base"]["hidden"], tiers["large"]["hidden"]} == {config.hidden, config.large_hidden}
    for tier in ("base", "large"):
        assert tiers[tier]["batched_latency_us"]["p99_us"] > 0 and "select_sharpe" in tiers[tier]
    assert report["rounds"] and not report["cut_short"]
    assert policy.actor.in_features == (config.large_hidden if tiers["kept"] == "large" else config.hidden)


def test_the_manifest_records_the_tier_decision_or_why_no_tier_was_trained(published):
    _, _, summary, _, manifest = published
    tiers = summary["stages"]["complexity_tiers"]
    assert manifest["complexity_tiers"] == tiers
    if summary["stages"]["selection"]["kept"] == "forecast_trader":
        assert tiers["kept"] == "base" and "forecast trader" in tiers["skipped"]
    else:
        assert {tiers["base"]["hidden"], tiers["large"]["hidden"]} == {64, 128}


def _base_tier(lake, data, summary):
    """The run's base-tier policy (its PPO stage, with the forecaster it was trained around) and its trader."""
    config = summary["config"]
    base = build_policy(data.feature_names, data.mean, data.std, config["hidden"],
                        forecast_hidden=config["forecast"]["hidden"])
    base.load_state_dict(torch.load(io.BytesIO(lake.read_bytes(lake.candidate() / "policy_state.pt"))))
    return base.eval(), ForecastTrader.from_dict(summary["trader"])
