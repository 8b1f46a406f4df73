"""Training and validation on the small universe (the `published` fixture: the shared nightly run's candidate)."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest

from training.evaluation.validation import SPLITS
from training.pipeline import STAGES, smoke_config

STRATEGIES = ["policy", "best_rule", "known_answer", "known_answer_depth_lean", "known_answer_taker_run",
              "known_answer_quiet_queue", "forecast_trader", "imbalance_rule", "random", "always_hold",
              "buy_and_hold_yes"]


def test_training_runs_every_stage_and_writes_a_summary(published):
    lake, _, summary, _, _ = published
    stages = summary["stages"]
    assert stages["forecaster"]["held_out_markets"] >= 1 and "r2" in stages["forecaster"]["held_out"]
    assert stages["forecast_trader"]["candidates"] > 1 and stages["forecast_trader"]["markets"] >= 1
    assert stages["warm_start"]["rounds"] == 2 and stages["warm_start"]["held_out"] is not None
    assert summary["steps"] == smoke_config().ppo_steps and summary["steps_per_second"] > 0
    assert stages["cut_short_by_time_limit"] == []
    selection = stages["selection"]
    assert selection["kept"] in STAGES and set(selection["scores"]) == set(STAGES)
    assert set(selection["adds"]) == {"warm_start_minus_forecast_trader", "ppo_minus_warm_start",
                                      "ppo_minus_forecast_trader"}
    # every choice on the select markets: training markets held out of every fit, never validation
    assert selection["split"] == "select" and selection["markets"] >= 1
    assert set(selection["orders"]) == {"forecast_trader", "warm_start", "ppo"}
    assert stages["forecaster"]["held_out_markets"] == selection["markets"]
    if selection["kept"] == "forecast_trader":   # the tiers are sizes of the policy network, not published then
        assert "skipped" in stages["complexity_tiers"] and "large_warm_start" not in stages
    else:
        assert stages["complexity_tiers"]["base"]["select_orders"] >= 0
    assert (lake.candidate() / "learning_curves.png").stat().st_size > 1000
    assert summary["partitions"] and summary["device"] == "cpu"


def test_validation_reports_every_strategy_with_intervals(published):
    _, _, _, validation, _ = published
    names = [row["strategy"] for row in validation["table"]]
    assert names == STRATEGIES
    for row in validation["table"]:
        assert row["ci_low"] <= row["mean_return_dollars"] <= row["ci_high"]
        assert {"pct_profitable", "cross_market_sharpe", "max_drawdown_dollars"} <= set(row)
    hold = next(r for r in validation["table"] if r["strategy"] == "always_hold")
    assert hold["mean_return_dollars"] == 0 and hold["orders"] == 0
    assert set(validation["comparison"]) == set(STRATEGIES[1:])
    assert set(validation["non_inferiority"]) == {"best_rule", "forecast_trader"}
    assert set(validation["recovery"]) == {"ratio", "ci_low", "ci_high"}
    report = Path(validation["report"]).read_text()
    assert "| policy minus |" in report and "Recovery of the planted edge" in report
    assert "What each training stage adds" in report
    assert report.count("data:image/png;base64,") == 3  # learning curves, equity, returns: inline for the UI


def _imports(path: Path) -> set[str]:
    """Modules `path` imports (a `from package import module` counts as the module)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


REPO = Path(__file__).resolve().parents[2]
# What training reaches: a new module here is a decision to make, not an accident.
TRAINING_MODULES = {
    "training.pipeline", "training.learners.forecast", "training.learners.forecast_trader",
    "training.learners.warm_start", "training.learners.ppo", "training.learners.policy", "training.learners.limits",
    "training.learners.tiers", "training.environment.batched_env", "training.environment.episodes",
    "training.environment.spaces", "training.data.market_data", "training.data.cache", "training.data.mapped_pages",
    "training.data.roles",
    "training.evaluation.baselines", "training.evaluation.scoring", "training.evaluation.report",
    "training.release.publish", "training.release.signing", "training.profiles",
}


def test_training_never_reaches_a_known_answer_rule():
    """The known-answer rules know the planted effects: no module that trains, warm-starts or selects may
    import them, directly or through another training module."""
    seen, stack = set(), ["training.pipeline"]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for module in _imports(REPO / (name.replace(".", "/") + ".py")):
            if module.startswith("training.") and (REPO / (module.replace(".", "/") + ".py")).exists():
                assert module != "training.evaluation.known_answers", f"{name} imports the known-answer rules"
                stack.append(module)
    assert seen <= TRAINING_MODULES, seen - TRAINING_MODULES


def test_unknown_split_is_a_clear_error(published):
    from training.evaluation.validation import score

    _, data, _, _, _ = published
    with pytest.raises(ValueError, match="unknown split"):
        score(data, "train", None, None)
    assert SPLITS == ("validation", "test")


def test_the_same_seed_gives_the_same_weights_bit_for_bit(published):
    """Every stage is a fixed amount of work with seeded generators and a fixed thread count: two runs give
    equal parameters (every tensor, exactly) and equal learning curves; another seed gives other weights."""
    import torch

    from training.pipeline import train_policy

    _, data, _, _, _ = published
    config = replace(smoke_config(), select_stage=False, large_hidden=None)
    first, second = train_policy(data, config), train_policy(data, config)
    weights = first.policy.state_dict()
    assert weights.keys() == second.policy.state_dict().keys()
    differing = [name for name, tensor in second.policy.state_dict().items() if not torch.equal(tensor, weights[name])]
    assert differing == []
    timeless = lambda curves: json.dumps([{k: v for k, v in c.items() if "second" not in k} for c in curves])  # noqa: E731
    assert timeless(first.ppo.curves) == timeless(second.ppo.curves)  # as text: an iteration without episodes is NaN
    other = train_policy(data, replace(config, seed=config.seed + 1)).policy.state_dict()
    assert any(not torch.equal(other[name], tensor) for name, tensor in weights.items())


def _stage_row(mean: float, low: float, high: float) -> dict:
    return {"mean_return_dollars": mean, "ci_low": low, "ci_high": high}


@pytest.mark.parametrize("trader, warm, ppo, agreement, kept, unusable", [
    ((1.0, 0.2, 2.0), (0.8, 0.1, 1.5), (0.9, 0.1, 1.7), 0.99, "forecast_trader", []),
    ((1.0, 0.2, 2.0), (1.2, 0.1, 2.5), (0.9, 0.1, 1.7), 0.99, "warm_start", []),
    ((1.0, 0.2, 2.0), (1.2, 0.1, 2.5), (0.9, 0.1, 1.7), 0.90, "forecast_trader", ["warm_start"]),  # not a copy
    ((1.0, 0.2, 2.0), (0.8, 0.1, 1.5), (1.1, 0.1, 2.2), None, "ppo", []),
    ((-2.0, -3.0, -1.0), (-1.0, -2.0, -0.5), (-0.5, -1.0, -0.1), 0.99, "ppo",
     ["forecast_trader", "ppo", "warm_start"]),                                                   # none usable
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 1.0, "forecast_trader", []),             # ties: simplest
])
def test_the_stage_kept_is_the_best_usable_one_on_the_select_markets(trader, warm, ppo, agreement, kept, unusable):
    from training.pipeline import keep_stage

    scores = {"forecast_trader": _stage_row(*trader), "warm_start": _stage_row(*warm), "ppo": _stage_row(*ppo)}
    chosen, reasons = keep_stage(scores, agreement)
    assert chosen == kept and sorted(reasons) == unusable, reasons
