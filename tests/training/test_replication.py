"""The replication summary (bench/quality_bench.py) on runs whose answers are known: pooling keys markets by seed,
the paired differences pair by market, a losing seed is listed, and the null is judged by equivalence."""

from __future__ import annotations

import numpy as np
import pytest

from bench.quality_bench import EQUIVALENCE_MARGIN, plot, summarize_replication, table_lines


def _run(seed: int, signal: float, policy: list[float], best: list[float], trader: list[float] | None = None,
         stage: str = "forecast_trader") -> dict:
    tickers = [f"M{i:02d}" for i in range(len(policy))]  # the same tickers in every seed: pooled, they stay apart
    columns = {"policy": policy, "best_rule": best, "forecast_trader": trader or policy, "known_answer": best}
    return {"seed": seed, "signal": signal, "stage": stage, "device": "cpu", "cut_short": [], "best_rule": {},
            "per_market": {name: dict(zip(tickers, values)) for name, values in columns.items()},
            "seconds": {"build": 0.0, "total": 0.0}}


def _noise(seed: int, n: int = 25, scale: float = 1.0) -> list[float]:
    return list(np.random.default_rng(seed).normal(0.0, scale, n))


def test_a_replicated_edge_holds_and_pools_every_test_market():
    runs = []
    for seed in range(5):
        edge = [2.0 + x for x in _noise(seed)]
        runs += [_run(seed, 1.0, edge, _noise(seed + 100, scale=0.5)),
                 _run(seed, 0.0, _noise(seed + 200, scale=0.1), _noise(seed + 300, scale=0.1))]
    summary = summarize_replication(runs)
    pooled = summary["pooled"]["planted"]
    assert pooled["strategies"]["policy"]["markets"] == 125
    assert pooled["strategies"]["policy"]["ci_low"] > 1.5
    assert pooled["policy_minus_best_rule"]["ci_low"] > 1.0
    assert pooled["policy_minus_forecast_trader"]["mean"] == pytest.approx(0.0)
    assert summary["verdict"]["holds"] and summary["verdict"]["seeds_losing"] == []
    assert summary["verdict"]["null_equivalent"]
    assert [row["seed"] for row in summary["per_seed"]] == list(range(5))
    lines = table_lines(summary)
    assert len(lines) == 1 + 5 + 1 + 2 + 1 and lines[-1].startswith("verdict: holds")  # + the sweep at 0 and 1


def test_a_seed_that_loses_is_listed_and_fails_the_verdict():
    runs = [_run(seed, 1.0, [3.0 + x for x in _noise(seed)], _noise(seed + 100)) for seed in range(4)]
    runs.append(_run(9, 1.0, [-3.0 + x for x in _noise(9)], _noise(109)))
    summary = summarize_replication(runs)
    assert summary["verdict"]["seeds_losing"] == [9]
    assert not summary["verdict"]["holds"]
    assert "seeds whose policy loses: [9]" in table_lines(summary)[-1]


def test_a_wide_null_is_not_equivalent_although_its_interval_includes_zero():
    runs = [_run(0, 1.0, [1.0] * 25, [0.0] * 25),
            _run(0, 0.0, _noise(1, scale=5.0), _noise(2, scale=0.01))]
    null = summarize_replication(runs)["pooled"]["null"]
    assert null["policy"]["ci_low"] < 0 < null["policy"]["ci_high"]
    assert not null["policy"]["equivalent"]
    assert null["best_rule"]["equivalent"] and abs(null["best_rule"]["ci_high"]) < EQUIVALENCE_MARGIN


def test_the_plot_is_written(tmp_path):
    runs = [_run(0, 1.0, _noise(0), _noise(1)), _run(1, 1.0, _noise(2), _noise(3))]
    path = plot(summarize_replication(runs), tmp_path / "quality.png")
    assert path.stat().st_size > 1000


def test_the_sweep_orders_signals_and_leaves_recovery_undefined_where_nothing_is_known():
    runs = [_run(0, 1.0, [2.0] * 20 + [1.0] * 5, [4.0] * 25), _run(0, 0.0, [0.0] * 25, [-1.0] * 25),
            _run(0, 0.5, [1.0] * 25, [2.0] * 25)]
    sweep = summarize_replication(runs)["sweep"]
    assert [row["signal"] for row in sweep] == [0.0, 0.5, 1.0]
    assert sweep[0]["recovery"]["ratio"] is None          # the known-answer rules make nothing at signal 0
    assert sweep[1]["recovery"]["ratio"] == pytest.approx(0.5)
    assert sweep[2]["recovery"]["ratio"] == pytest.approx(45 / 100)
    assert any(line.startswith("sweep seed 0 signal 0.5") for line in table_lines(summarize_replication(runs)))
