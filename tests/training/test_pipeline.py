"""Training and validation on the small universe (the `published` fixture runs the whole chain)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from training.evaluation.validation import SPLITS

STRATEGIES = ["policy", "best_rule", "known_answer", "known_answer_depth_lean", "known_answer_taker_run",
              "known_answer_quiet_queue", "forecast_trader", "imbalance_rule", "random", "always_hold",
              "buy_and_hold_yes"]


def test_training_runs_every_stage_and_writes_a_summary(published):
    lake, _, summary, _, _ = published
    stages = summary["stages"]
    assert stages["forecaster"]["held_out_markets"] >= 1 and "r2" in stages["forecaster"]["held_out"]
    assert stages["forecast_trader"]["candidates"] > 1 and stages["forecast_trader"]["markets"] >= 1
    assert stages["warm_start"]["rounds"] == 2 and stages["warm_start"]["held_out"] is not None
    assert summary["steps"] == 32 * 32 * 6 and summary["steps_per_second"] > 0
    selection = stages["selection"]
    assert selection["kept"] in ("ppo", "warm_start") and set(selection["scores"]) == {"forecast_trader", "warm_start", "ppo"}
    assert set(selection["adds"]) == {"warm_start_minus_forecast_trader", "ppo_minus_warm_start"}
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
    assert set(validation["recovery"]) == {"ratio", "ci_low", "ci_high"}
    report = Path(validation["report"]).read_text()
    assert "| policy minus |" in report and "Recovery of the planted edge" in report
    assert "What each training stage adds" in report
    assert report.count("data:image/png;base64,") == 3  # learning curves, equity, returns: inline for the UI


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_training_never_reaches_a_known_answer_rule():
    """The known-answer rules know the planted effects: no module that trains, warm-starts or selects may
    import them, directly or through another training module."""
    root = Path(__file__).resolve().parents[2] / "training"
    training_modules = {"pipeline", "forecast", "forecast_trader", "warm_start", "ppo", "policy", "env", "episodes",
                        "market_data", "mapped_pages", "baselines", "evaluate", "spaces", "tiers", "publish"}
    seen, stack = set(), ["pipeline"]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for module in _imports(root / f"{name}.py"):
            if module.startswith("training."):
                child = module.split(".")[1]
                assert child != "known_answers", f"training/{name}.py imports the known-answer rules"
                stack.append(child)
    assert seen <= training_modules | {"report"}, seen - training_modules


def test_unknown_split_is_a_clear_error(published):
    from training.evaluation.validation import score

    _, data, _, _, _ = published
    with pytest.raises(ValueError, match="unknown split"):
        score(data, "train", None, None)
    assert SPLITS == ("validation", "test")
