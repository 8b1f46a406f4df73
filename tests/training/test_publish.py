"""Published artifacts: plain-torch loading, int8/fp32 agreement, the promotion gate and hot reload."""

from __future__ import annotations

import pytest
import torch


def test_published_artifact_loads_with_plain_torch_and_agrees_with_fp32(published):
    lake, data, _, _, manifest = published
    from training.pipeline import validation_observations
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
    assert set(manifest["baseline_comparison"]) == {"always_hold", "random", "imbalance_rule", "buy_and_hold_yes",
                                                     "warm_start_teacher"}


def test_promotion_gate_and_hot_reload(published, tmp_path):
    from core.catalog import Lake
    from training.pipeline import load_candidate, validation_observations
    from training.publish import PRODUCTION, promotion_gate, publish, read_registry
    from training.serving import PolicyLoadError, PolicyServer

    source, data, summary, validation, _ = published
    lake = Lake(tmp_path)
    # The latency budget is exercised above with given numbers; here a loaded CI machine must not decide.
    no_budget = float("inf")
    policy = load_candidate(source, data)
    losing = {name: {"mean": -1.0, "ci_low": -2.0, "ci_high": 0.5} for name in ("always_hold", "random", "buy_and_hold_yes")}
    winning = {name: {"mean": 2.0, "ci_low": 0.5, "ci_high": 3.0} for name in losing}
    assert not promotion_gate(losing, {"p99_us": 100}).promote
    assert not promotion_gate(winning, {"p99_us": 5000}).promote
    assert promotion_gate(winning, {"p99_us": 100}).promote
    obs = validation_observations(data, max_steps=50)

    first = publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions, summary, {}, losing, obs,
                    latency_budget_p99_us=no_budget)
    assert not first["promotion"]["promoted"] and PRODUCTION not in read_registry(lake)["aliases"]
    server = PolicyServer(lake, latency_budget_p99_us=no_budget)
    with pytest.raises(PolicyLoadError, match="points at no version"):
        server.refresh()

    second = publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions, summary, {}, winning, obs,
                     latency_budget_p99_us=no_budget)
    assert read_registry(lake)["aliases"][PRODUCTION] == second["version"]
    assert server.refresh() and server.version == second["version"]
    actions = server.act(obs[0][:1], obs[1][:1])
    assert actions.shape == (1, 5)

    third = publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions, summary, {}, winning, obs,
                    latency_budget_p99_us=no_budget)
    (lake.model_version(third["version"]) / "policy_int8.pt").write_bytes(b"not a model")
    assert server.refresh() is False  # the broken version is refused...
    assert server.version == second["version"] and "sha256" in server.last_error  # ...the old one keeps serving
    assert server.act(obs[0][:1], obs[1][:1]).shape == (1, 5)
    assert len(read_registry(lake)["versions"]) == 3 and all(lake.model_version(v["version"]).exists()
                                                             for v in read_registry(lake)["versions"])
    assert lake.read_json(lake.model_version(third["version"]) / "manifest.json")["version"] == third["version"]
