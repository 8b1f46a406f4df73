"""Training and validation on the small universe (the `published` fixture runs the whole chain)."""

from __future__ import annotations


def test_training_writes_curves_and_a_summary(published):
    lake, _, summary, _, _ = published

    assert summary["steps"] == 8 * 64 * 12 and summary["steps_per_second"] > 0
    assert (lake.candidate() / "learning_curves.png").stat().st_size > 1000
    assert summary["partitions"]


def test_validation_reports_every_baseline_with_intervals(published):
    _, _, _, validation, _ = published
    names = [row["strategy"] for row in validation["table"]]
    assert names == ["policy", "always_hold", "random", "imbalance_rule", "buy_and_hold_yes", "warm_start_teacher"]
    for row in validation["table"]:
        assert row["ci_low"] <= row["mean_return_dollars"] <= row["ci_high"]
    hold = next(r for r in validation["table"] if r["strategy"] == "always_hold")
    assert hold["mean_return_dollars"] == 0 and hold["orders"] == 0
    report = open(validation["report"]).read()
    assert "| policy minus |" in report and "equity" in report
