"""Progressive model complexity: a larger policy is kept only when it pays for itself.

Two sizes are trained every night: the base policy (training/pipeline.py's stages) and a larger one (wider
encoders around the same forecaster, warm-started from the same forecast trader). Both are scored on the
select markets (training/data/roles.py: held out of every fit, never validation); the larger one replaces
the base only if its cross-market Sharpe is at least `SHARPE_GAIN` higher and one forward pass over
`BATCH_MARKETS` markets (what the live path sends) stays within `BATCH_BUDGET_P99_US` at the 99th percentile.
The decision and both measurements go into the training summary and the manifest.
"""

from __future__ import annotations

from core.exchange import TradingRules
from training.data.market_data import MarketData
from training.evaluation import scoring
from training.learners.policy import GreedyPolicy, MarketPolicy
from training.release.publish import latency_us, script_int8

SHARPE_GAIN = 0.1
BATCH_MARKETS = 100
# A tenth of the design's 50 ms decision budget for one batched pass over every active market.
BATCH_BUDGET_P99_US = 5_000.0


def batched_latency(policy: MarketPolicy, n_features: int, calls: int = 200) -> dict[str, float]:
    """p50/p99 of one int8 forward pass over BATCH_MARKETS markets, one thread."""
    return latency_us(script_int8(policy.eval()), n_features, calls=calls, batch=BATCH_MARKETS)


def measure_tier(policy: MarketPolicy, hidden: int, data: MarketData, rules: TradingRules,
                 score: dict | None = None) -> dict:
    """The tier's figures on the select markets (`score`, a row of scoring.summarize, when they were measured
    already) and its batched latency."""
    if score is None:
        act = scoring.actor_of(GreedyPolicy(policy.cpu().eval()).eval())
        score = scoring.summarize("policy", scoring.market_metrics(scoring.play(data, "select", act, rules)))
    return {"hidden": hidden, "select_mean_dollars": score["mean_return_dollars"], "select_orders": score["orders"],
            "select_ci": [score["ci_low"], score["ci_high"]], "select_sharpe": score["cross_market_sharpe"],
            "batched_latency_us": batched_latency(policy, len(data.feature_names))}


def choose_tier(base: dict, large: dict) -> dict:
    """Keep the larger tier only when it is SHARPE_GAIN better and within the batched latency budget."""
    gain = large["select_sharpe"] - base["select_sharpe"]
    reasons = []
    if gain < SHARPE_GAIN:
        reasons.append(f"Sharpe gain on the select markets {gain:+.3f} is below {SHARPE_GAIN}")
    if large["batched_latency_us"]["p99_us"] > BATCH_BUDGET_P99_US:
        reasons.append(f"batched p99 {large['batched_latency_us']['p99_us']:.0f} us exceeds {BATCH_BUDGET_P99_US:.0f} us")
    return {"base": base, "large": large, "kept": "base" if reasons else "large", "why_not_large": reasons,
            "rule": f"large only if Sharpe gain >= {SHARPE_GAIN} and p99 over {BATCH_MARKETS} markets <= "
                    f"{BATCH_BUDGET_P99_US:.0f} us"}
