"""The forecast trader as a servable policy: the same decisions as the tuned rule, scripted, quantized, published."""

from __future__ import annotations

import torch

from tests.training.synthetic import synthetic_data, synthetic_market
from training.environment.spaces import BUY_NO, BUY_YES, HOLD, POSITION_FEATURES, SELL_NO, SELL_YES
from training.learners.forecast import HORIZONS, Forecaster
from training.learners.forecast_trader import ForecastTrader, trader_policy
from training.release.publish import script_fp32, script_int8, twin_forecaster


class _ConstantForecaster(Forecaster):
    """Forecasts a fixed move at every horizon: the test sets what the trader sees."""

    def __init__(self, n_features: int, move: float):
        super().__init__(torch.zeros(n_features), torch.ones(n_features), hidden=4)
        self.move = move

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.full(features.shape[:-1] + (len(HORIZONS),), self.move)


def _observations(names: list[str], yes: float, no: float, mid: float = 0.5, spread: float = 0.01) -> torch.Tensor:
    obs = torch.zeros((1, 2, len(names) + POSITION_FEATURES))
    obs[..., names.index("ob_yes_mid_prob")] = mid
    obs[..., names.index("ob_yes_spread_prob")] = spread
    obs[..., len(names)], obs[..., len(names) + 1] = yes, no
    return obs


def test_the_trader_policy_acts_as_its_signals_say():
    """Enter past the round trip's cost and the margin, with room under the limit and no opposite position;
    leave once the forecast turns; hold otherwise."""
    data = synthetic_data(synthetic_market("S", 10))
    names = data.feature_names
    trader = ForecastTrader(horizon=0, entry_margin=0.01, exit_margin=0.0)
    live = torch.tensor([[True, False]])
    for move, yes, no, expected in [(0.2, 0.0, 0.0, BUY_YES), (-0.2, 0.0, 0.0, BUY_NO), (0.0, 0.0, 0.0, HOLD),
                                    (-0.001, 0.5, 0.0, SELL_YES), (0.2, 1.0, 0.0, HOLD), (0.2, 0.0, 0.5, SELL_NO),
                                    (0.2, 0.0, 1.0, SELL_NO), (-0.2, 0.0, 0.5, BUY_NO), (0.005, 0.0, 0.0, HOLD)]:
        obs = _observations(names, yes, no)
        policy = trader_policy(trader, _ConstantForecaster(len(names), move), names)
        with torch.no_grad():
            actions = policy(obs, live)
        assert actions.tolist() == [[expected, HOLD]], (move, yes, no)   # the slot that is not live holds


def test_the_trader_policy_scripts_and_quantizes_around_a_fitted_forecaster(published):
    """Scripted fp32 gives the trader's own actions on observations the policy meets; int8 agrees on nearly all;
    the forecaster the evaluation reads is found in the artifact."""
    from training.pipeline import load_candidate
    from training.release.runs import validation_observations

    source, data, _, _, _ = published
    policy, trader = load_candidate(source, data)
    forecaster = policy.forecaster
    served = trader_policy(trader, forecaster, data.feature_names)
    obs, live = validation_observations(data, max_steps=200)
    fp32, int8 = script_fp32(served), script_int8(served)
    with torch.no_grad():
        expected = served(obs, live)
        assert torch.equal(fp32(obs, live), expected)
        agreement = float(((int8(obs, live) == expected) & live).sum() / live.sum())
        assert torch.equal(twin_forecaster(fp32)(obs[..., :len(data.feature_names)]),
                           forecaster(obs[..., :len(data.feature_names)]))
    assert agreement >= 0.99, agreement


def test_a_candidate_that_keeps_the_trader_publishes_and_serves_it(published, tmp_path):
    """When the stage choice keeps the forecast trader, the candidate is the trader: published through the
    gate as an int8 artifact, served by the verified loader, scored by `kfs evaluate` with the trader row
    acting on the artifact's own forecaster."""
    import json
    import shutil

    from core.catalog import Lake
    from tests.training.test_publish import _validation
    from training.learners.forecast_trader import TraderPolicy
    from training.pipeline import load_candidate
    from training.release.publish import publish
    from training.release.runs import run_evaluate, validation_observations
    from training.release.serving import PolicyServer

    source, data, summary, _, _ = published
    lake = Lake(tmp_path)
    shutil.copytree(source.candidate(), lake.candidate())
    training = {**summary, "stages": {**summary["stages"], "selection": {
        "kept": "forecast_trader", "markets": 2, "usable": True}}}
    (lake.candidate() / "training.json").write_text(json.dumps(training))
    served, trader = load_candidate(lake, data)
    assert isinstance(served, TraderPolicy) and served.horizon == trader.horizon

    obs = validation_observations(data, max_steps=50)
    manifest = publish(lake, served, data.feature_names, data.mean, data.std, data.partitions, training,
                       _validation(0.5, 0.5), obs, latency_budget_p99_us=float("inf"))
    assert manifest["stage"] == "forecast_trader" and manifest["promotion"]["promoted"]
    assert "published stage: forecast_trader" in manifest["promotion"]["comparisons"][0]
    server = PolicyServer(lake, latency_budget_p99_us=float("inf"))
    assert server.refresh()
    with torch.no_grad():
        expected = served(*obs)
    assert float(((server.act(*obs) == expected) & obs[1]).sum() / obs[1].sum()) >= 0.99

    evaluated = run_evaluate(lake, "validation", manifest["version"], data=data, latency_budget_p99_us=float("inf"))
    rows = {row["strategy"]: row for row in evaluated["table"]}
    assert abs(rows["policy"]["mean_return_dollars"] - rows["forecast_trader"]["mean_return_dollars"]) < 0.5
