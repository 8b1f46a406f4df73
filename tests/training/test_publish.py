"""Published artifacts: plain-torch loading, int8/fp32 agreement, the promotion gate and hot reload."""

from __future__ import annotations

import pytest
import torch


def _validation(policy_low: float, best_rule_low: float, trader_low: float | None = None) -> dict:
    """A validation result whose policy CI starts at policy_low and whose Holm-adjusted paired differences to
    the best single-feature rule and the forecast trader start at best_rule_low and trader_low (the same
    unless given)."""
    from training.release.publish import NON_INFERIORITY_MARGIN

    table = [{"strategy": "policy", "markets": 25, "mean_return_dollars": policy_low + 1, "ci_low": policy_low,
              "ci_high": policy_low + 2}]
    lows = {"best_rule": best_rule_low, "forecast_trader": best_rule_low if trader_low is None else trader_low}
    comparison = {name: {"mean": low + 1, "ci_low": low, "ci_high": low + 2} for name, low in lows.items()}
    comparison["random"] = {"mean": 3.0, "ci_low": 1.0, "ci_high": 5.0}
    holding = True
    non_inferiority = {}
    for name, low in lows.items():
        holding = holding and low > -NON_INFERIORITY_MARGIN
        non_inferiority[name] = {**comparison[name], "confidence": 0.975, "margin": NON_INFERIORITY_MARGIN,
                                 "non_inferior": holding}
    return {"table": table, "comparison": comparison, "non_inferiority": non_inferiority}


def _with_usable_stage(summary: dict) -> dict:
    """The training summary with a stage choice the gate accepts: tests that need a promoted version judge
    the gate on the validation figures they give it, whatever the smoke policy's own stage choice was."""
    return {**summary, "stages": {**summary["stages"], "selection": {"kept": "ppo", "markets": 2, "usable": True}}}


def test_published_artifact_loads_with_plain_torch_and_agrees_with_fp32(published):
    lake, data, _, validation, manifest = published
    from training.release.runs import validation_observations

    folder = lake.model_version(manifest["version"])
    int8 = torch.jit.load(str(folder / "policy_int8.pt"))
    fp32 = torch.jit.load(str(folder / "policy_fp32.pt"))
    obs, live = validation_observations(data)
    with torch.no_grad():
        same = ((int8(obs, live) == fp32(obs, live)) & live).sum() / live.sum()
    assert float(same) >= 0.99
    assert manifest["int8_fp32_action_agreement"] >= 0.99
    assert manifest["latency_us"]["int8"]["p99_us"] > 0 and manifest["feature_schema_hash"]
    assert manifest["normalization"]["mean"] and manifest["training_partitions"]
    assert set(manifest["baseline_comparison"]) == set(validation["comparison"])
    assert manifest["best_rule"]["rule"] and manifest["baselines"]["imbalance_threshold"] > 0
    comparisons = manifest["promotion"]["comparisons"]
    assert any(line.startswith("policy - best_rule") for line in comparisons)  # the gate says what it compared


@pytest.mark.parametrize("policy_low, best_rule_low, trader_low, usable, p99, promoted, reason", [
    (0.5, -0.4, None, True, 100, True, None),
    (-0.1, 2.0, None, True, 100, False, "CI is not above zero"),
    (0.5, -0.6, 0.5, True, 100, False, "not non-inferior to best_rule"),
    (0.5, 0.5, -0.6, True, 100, False, "not non-inferior to forecast_trader"),
    (0.5, 0.5, None, False, 100, False, "no stage was usable"),
    (0.5, 0.5, None, True, 5000, False, "latency"),
])
def test_promotion_gate(policy_low, best_rule_low, trader_low, usable, p99, promoted, reason):
    from training.release.publish import NON_INFERIORITY_MARGIN, promotion_gate

    assert NON_INFERIORITY_MARGIN == 0.5
    validation = _validation(policy_low, best_rule_low, trader_low)
    selection = {"kept": "ppo", "markets": 50, "usable": usable, "unusable": [] if usable else ["warm_start", "ppo"]}
    decision = promotion_gate(validation, {"p99_us": p99}, 1000.0, selection)
    assert decision.promote is promoted
    assert promoted or any(reason in r for r in decision.reasons), decision.reasons
    # the stage, the policy, three comparisons, two non-inferiority verdicts and the latency, whatever the outcome
    assert len(decision.comparisons) == 8 and decision.comparisons[0].startswith("published stage: ppo")


def test_holm_non_inferiority_steps_down():
    import numpy as np
    import polars as pl

    from training.evaluation.scoring import holm_non_inferiority

    rng = np.random.default_rng(0)
    policy = pl.DataFrame({"market_ticker": [f"M{i}" for i in range(40)], "return_dollars": rng.normal(1.0, 1.0, 40)})

    def shifted(by, noise=0.3):
        return policy.with_columns(pl.col("return_dollars") + by + pl.Series(rng.normal(0.0, noise, 40)))
    # far below the policy: clearly non-inferior, judged first at the stricter level; then one about equal
    result = holm_non_inferiority(policy, {"weak": shifted(-2.0), "equal": shifted(0.0)}, margin=0.5)
    assert result["weak"]["confidence"] == pytest.approx(0.975) and result["equal"]["confidence"] == pytest.approx(0.95)
    assert result["weak"]["non_inferior"] and result["equal"]["non_inferior"], result
    # a baseline far above the policy fails, judged last
    result = holm_non_inferiority(policy, {"strong": shifted(3.0), "weak": shifted(-2.0)}, margin=0.5)
    assert result["weak"]["non_inferior"] and not result["strong"]["non_inferior"]
    assert result["strong"]["confidence"] == pytest.approx(0.95) and result["strong"]["ci_high"] < -2


def test_promotion_and_hot_reload(published, tmp_path):
    from core.catalog import Lake
    from training.pipeline import load_candidate
    from training.release.publish import PRODUCTION, publish, read_registry
    from training.release.runs import validation_observations
    from training.release.serving import PolicyLoadError, PolicyServer

    source, data, trained, _, _ = published
    summary = _with_usable_stage(trained)
    lake = Lake(tmp_path)
    no_budget = float("inf")  # the latency budget is exercised above; a loaded CI machine must not decide here
    policy, _ = load_candidate(source, data)
    obs = validation_observations(data, max_steps=50)
    losing, winning = _validation(-1.0, -3.0), _validation(0.5, 0.5)

    first = publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions, summary, losing, obs,
                    latency_budget_p99_us=no_budget)
    assert not first["promotion"]["promoted"] and PRODUCTION not in read_registry(lake)["aliases"]
    server = PolicyServer(lake, latency_budget_p99_us=no_budget)
    with pytest.raises(PolicyLoadError, match="points at no version"):
        server.refresh()

    second = publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions, summary, winning, obs,
                     latency_budget_p99_us=no_budget)
    assert read_registry(lake)["aliases"][PRODUCTION] == second["version"]
    assert server.refresh() and server.version == second["version"]
    assert server.act(obs[0][:1], obs[1][:1]).shape == (1, 5)

    third = publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions, summary, winning, obs,
                    latency_budget_p99_us=no_budget)
    (lake.model_version(third["version"]) / "policy_int8.pt").write_bytes(b"not a model")
    assert server.refresh() is False  # the broken version is refused...
    assert server.version == second["version"] and "sha256" in server.last_error  # ...the old one keeps serving
    assert server.act(obs[0][:1], obs[1][:1]).shape == (1, 5)
    assert len(read_registry(lake)["versions"]) == 3 and all(lake.model_version(v["version"]).exists()
                                                             for v in read_registry(lake)["versions"])


def test_evaluating_a_version_gives_its_published_validation(published, tmp_path):
    """`kfs evaluate` scores the published files themselves: strict JSON (no NaN or Infinity) with the figures
    of the version's own validation, computed by another process before publishing: every strategy (the
    forecast trader too), the comparisons, the recovery and the best rule."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    lake, _, _, validation, manifest = published
    path = tmp_path / "evaluated.json"
    done = subprocess.run([sys.executable, "-m", "kfs.cli", "evaluate", "--split", "validation", "--version",
                           manifest["version"], "--json", str(path), "--no-latency-check"],
                          env={**os.environ, "KFS_LAKE": str(lake.root), "KFS_HOME": str(tmp_path / "home")},
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "int8 latency on this machine: p50" in done.stdout and "scored forecast_trader" in done.stderr

    def strict(constant):
        raise AssertionError(f"{constant} in the JSON")

    evaluated = json.loads(path.read_text(), parse_constant=strict)
    assert evaluated["table"] == validation["table"] and "forecast_trader" in {r["strategy"] for r in evaluated["table"]}
    assert evaluated["comparison"] == validation["comparison"] == manifest["baseline_comparison"]
    assert evaluated["recovery"] == validation["recovery"] and evaluated["best_rule"] == validation["best_rule"]
