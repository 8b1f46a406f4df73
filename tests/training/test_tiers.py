"""Progressive complexity: the larger tier is kept only when it pays, and the decision is recorded."""

from __future__ import annotations

import pytest

from training.learners.tiers import BATCH_BUDGET_P99_US, SHARPE_GAIN, choose_tier


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


def test_both_tiers_are_trained_measured_and_recorded_in_the_manifest(published):
    lake, _, summary, _, manifest = published
    tiers = summary["stages"]["complexity_tiers"]
    assert {tiers["base"]["hidden"], tiers["large"]["hidden"]} == {64, 128}
    for tier in ("base", "large"):
        assert tiers[tier]["batched_latency_us"]["p99_us"] > 0 and "select_sharpe" in tiers[tier]
    assert manifest["complexity_tiers"] == tiers
