"""`kfs bench quality` / `make quality`: the learning pipeline replicated over universe seeds (issue 24).

For each seed of `REPLICATION_SEEDS` (written down before any run on them, never tuned on) the default universe
(300 markets x 7 days, every planted effect) and its `--signal 0` twin are simulated, ingested and built into a
feature store, trained with the nightly profile (a fixed amount of work per stage) and scored on their 25 test
markets: the published policy, the fair `best_rule`, the forecast trader and the known-answer rules, paired by
market. Reported per seed and pooled over every test market (markets of different seeds are different markets):
- planted: each strategy's mean $/market with its 95% BCa interval, the paired policy - `best_rule` and policy -
  forecast trader, the cross-market Sharpe (mean / standard deviation of per-market P&L) and the share of
  profitable markets against the design's 0.5 and 60%, and the stage that was published;
- null: an equivalence test (TOST, 5% each side: the 90% BCa interval within +-`EQUIVALENCE_MARGIN`) for the
  policy and `best_rule`.
The verdict is issue 24's: the pooled policy's interval above zero and above `best_rule` (paired), and no seed
whose published policy loses with an interval below zero (such a seed is listed, never dropped).
The signal sweep (item 2) adds `SWEEP_SIGNALS` on the first seed: recovery (the policy's share of the
known-answer rules' P&L, paired BCa) against signal.

Each universe runs in a process of its own, two at a time; a finished one is kept under `.kfs/bench_quality/`
(keyed by seed, signal and the committed code that decides the figures, `figures_version`), so an interrupted
run resumes where it stopped. Results go to `bench/results/quality.json` and `bench/results/quality.png`.
Training uses CUDA where `KFS_TRAIN_DEVICE` says so (the device is recorded). About 12 minutes a universe,
two at a time, on two CPU cores: 12 universes, about 75 minutes.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import date
from pathlib import Path

import numpy as np

from bench.results_io import RESULTS_DIR

REPLICATION_SEEDS = (20261203, 20261204, 20261205, 20261206, 20261207)  # chosen 2026-12-03, before any run
START = date(2026, 5, 4)
STRATEGIES = ("policy", "best_rule", "forecast_trader", "known_answer")
EQUIVALENCE_MARGIN = 0.25       # dollars a market (issue 24 item 7)
EQUIVALENCE_CONFIDENCE = 0.90   # two one-sided tests at 5% each
DESIGN_SHARPE = 0.5
DESIGN_PROFITABLE = 60.0        # % of markets
SWEEP_SIGNALS = (0.0, 0.25, 0.5, 1.0)  # item 2: recovery against signal, on the first seed
CACHE = Path(__file__).resolve().parents[1] / ".kfs" / "bench_quality"
FIGURE_CODE = ("core", "source", "ingest", "features", "dbt_project", "training")
WORKERS = 2


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def code_version() -> str:
    return _git("rev-parse", "--short", "HEAD")


def figures_version() -> str:
    """A key for the committed code that decides the figures (simulator, ingest, features, dbt, training): a
    finished universe is reused while it is unchanged, whatever else changed (benchmarks, tests, documents)."""
    import hashlib

    trees = _git("ls-tree", "HEAD", "--", *FIGURE_CODE)
    return hashlib.sha256(trees.encode()).hexdigest()[:12] if trees != "unknown" else code_version()


def run_universe(dsn: str, seed: int, signal: float) -> dict:
    """One universe end to end: simulate, build, train (nightly profile), score the test markets; per-market P&L
    of every reported strategy."""
    from dataclasses import replace

    from bench.universe import feature_store_at
    from source.simulator import SimulationConfig
    from training.data.cache import load_market_data
    from training.pipeline import config_from_settings, run_training
    from training.release.publish import published_stage
    from training.release.runs import run_validation

    config = replace(SimulationConfig(seed=seed, start=START), signal=signal)
    started = time.perf_counter()
    with feature_store_at(dsn, config, f"quality_{seed}_{'null' if signal == 0 else 'planted'}") as lake:
        built = time.perf_counter()
        data = load_market_data(lake)
        summary = run_training(lake, config_from_settings("nightly"), data=data)
        report = run_validation(lake, "test", data=data)
    names = [s for s in report["per_market"] if s in STRATEGIES or s.startswith("known_answer")]
    return {
        "seed": seed, "signal": signal, "stage": published_stage(summary),
        "device": summary["device"],
        "cut_short": summary["stages"].get("cut_short_by_time_limit", []),
        "best_rule": report["best_rule"],
        "per_market": {name: {row["market_ticker"]: row["return_dollars"] for row in report["per_market"][name]}
                       for name in names},
        "seconds": {"build": built - started, "total": time.perf_counter() - started},
    }


def _cached_run(dsn: str, seed: int, signal: float, version: str) -> dict:
    path = CACHE / f"{seed}_{signal:g}_{version}.json"
    if path.exists():
        return json.loads(path.read_text())
    result = run_universe(dsn, seed, signal)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps(result))
    path.with_suffix(".tmp").replace(path)
    return result


def run_all(seeds: tuple[int, ...] = REPLICATION_SEEDS, workers: int = WORKERS) -> list[dict]:
    """Every seed and its null twin, then the signal sweep's other signals on the first seed, `workers`
    universes at a time, with a line as each one finishes."""
    from source.pg_server import source_dsn

    dsn, version = source_dsn(), figures_version()
    jobs = [(seed, signal) for seed in seeds for signal in (1.0, 0.0)]
    jobs += [(seeds[0], signal) for signal in SWEEP_SIGNALS if (seeds[0], signal) not in jobs]
    results = []
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_cached_run, dsn, seed, signal, version): (seed, signal) for seed, signal in jobs}
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            print(f"quality: seed {result['seed']} signal {result['signal']:g} done ({len(results)}/{len(jobs)}, "
                  f"{(time.perf_counter() - started) / 60:.1f} min): published {result['stage']}", flush=True)
    return sorted(results, key=lambda r: (r["seed"], -r["signal"]))


def sweep_summary(results: list[dict], seed: int) -> list[dict]:
    """Recovery (the policy's share of the known-answer rules' P&L, paired BCa) and the known-answer edge
    against signal on `seed`."""
    import polars as pl

    from training.evaluation.scoring import capture_ratio

    def frame(run: dict, name: str) -> pl.DataFrame:
        return pl.DataFrame({"market_ticker": list(run["per_market"][name]),
                             "return_dollars": list(run["per_market"][name].values())})

    rows = []
    for run in sorted((r for r in results if r["seed"] == seed), key=lambda r: r["signal"]):
        rows.append({"signal": run["signal"], "stage": run["stage"],
                     "policy": _interval(_aligned([run], "policy")),
                     "known_answer": _interval(_aligned([run], "known_answer")),
                     "recovery": capture_ratio(frame(run, "policy"), frame(run, "known_answer"))})
    return rows


def _interval(values: np.ndarray, confidence: float = 0.95) -> dict:
    from training.evaluation.scoring import bca_interval

    mean, low, high = bca_interval(values, confidence=confidence)
    return {"mean": float(mean), "ci_low": float(low), "ci_high": float(high), "markets": int(len(values))}


def _aligned(runs: list[dict], name: str, other: str | None = None) -> np.ndarray:
    """Per-market P&L of `name` (minus `other`'s on the same market) over every test market of `runs`."""
    values = []
    for run in runs:
        mine, theirs = run["per_market"][name], run["per_market"].get(other, {})
        values += [mine[t] - theirs.get(t, 0.0) for t in sorted(mine)]
    return np.asarray(values, dtype=np.float64)


def planted_summary(runs: list[dict]) -> dict:
    """Every strategy's interval, the paired differences, Sharpe and % profitable of the policy."""
    strategies = [s for s in runs[0]["per_market"] if all(s in r["per_market"] for r in runs)]
    policy = _aligned(runs, "policy")
    spread = float(policy.std(ddof=1)) if len(policy) > 1 else 0.0
    return {
        "strategies": {name: _interval(_aligned(runs, name)) for name in strategies},
        "policy_minus_best_rule": _interval(_aligned(runs, "policy", "best_rule")),
        "policy_minus_forecast_trader": _interval(_aligned(runs, "policy", "forecast_trader")),
        "sharpe": float(policy.mean() / spread) if spread > 0 else 0.0,
        "pct_profitable": float((policy > 0).mean() * 100),
        "stages": [r["stage"] for r in runs],
    }


def null_summary(runs: list[dict]) -> dict:
    """TOST for the policy and `best_rule`: the 90% interval within +-EQUIVALENCE_MARGIN."""
    out = {}
    for name in ("policy", "best_rule"):
        row = _interval(_aligned(runs, name), EQUIVALENCE_CONFIDENCE)
        row["equivalent"] = bool(-EQUIVALENCE_MARGIN < row["ci_low"] and row["ci_high"] < EQUIVALENCE_MARGIN)
        out[name] = row
    out["stages"] = [r["stage"] for r in runs]
    return out


def summarize_replication(results: list[dict]) -> dict:
    planted = [r for r in results if r["signal"] == 1.0]
    null = [r for r in results if r["signal"] == 0]
    null_of = {r["seed"]: r for r in null}
    per_seed = [{"seed": r["seed"], "planted": planted_summary([r]),
                 "null": null_summary([null_of[r["seed"]]]) if r["seed"] in null_of else None} for r in planted]
    pooled = {"planted": planted_summary(planted), "null": null_summary(null) if null else None}
    losing = [row["seed"] for row in per_seed if row["planted"]["strategies"]["policy"]["ci_high"] < 0]
    verdict = {
        "pooled_policy_above_zero": pooled["planted"]["strategies"]["policy"]["ci_low"] > 0,
        "pooled_policy_above_best_rule": pooled["planted"]["policy_minus_best_rule"]["ci_low"] > 0,
        "seeds_losing": losing,
        "null_equivalent": bool(pooled["null"] and all(pooled["null"][n]["equivalent"] for n in ("policy", "best_rule"))),
        "test_markets": pooled["planted"]["strategies"]["policy"]["markets"],
    }
    verdict["holds"] = bool(verdict["pooled_policy_above_zero"] and verdict["pooled_policy_above_best_rule"]
                            and not losing and verdict["test_markets"] >= 125)
    return {"seeds": [r["seed"] for r in planted], "per_seed": per_seed, "pooled": pooled, "verdict": verdict,
            "sweep": sweep_summary(results, planted[0]["seed"]) if planted else [],
            "design": {"sharpe": DESIGN_SHARPE, "pct_profitable": DESIGN_PROFITABLE},
            "equivalence": {"margin": EQUIVALENCE_MARGIN, "confidence": EQUIVALENCE_CONFIDENCE},
            "devices": sorted({r["device"] for r in results}), "code_version": code_version(),
            "figures_version": figures_version(),
            "runs": results}


def _fmt(row: dict) -> str:
    return f"{row['mean']:+7.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"


def table_lines(summary: dict) -> list[str]:
    """The replication table: a row per seed, then the pooled one."""
    lines = [f"{'seed':>9} {'stage':<16} {'policy':>24} {'best_rule':>24} {'policy-best_rule':>24} "
             f"{'policy-trader':>24} {'known_answer':>24} {'sharpe':>6} {'%prof':>5} {'null policy 90%':>24} "
             f"{'null best_rule 90%':>24}"]
    rows = [(str(row["seed"]), row["planted"]["stages"][0], row["planted"], row["null"]) for row in summary["per_seed"]]
    rows.append(("pooled", "", summary["pooled"]["planted"], summary["pooled"]["null"]))
    for seed, stage, planted, null in rows:
        s = planted["strategies"]
        nulls = [f"{_fmt(null[n])} {'ok' if null[n]['equivalent'] else 'NO'}" if null else "-"
                 for n in ("policy", "best_rule")]
        lines.append(f"{seed:>9} {stage:<16} {_fmt(s['policy']):>24} {_fmt(s['best_rule']):>24} "
                     f"{_fmt(planted['policy_minus_best_rule']):>24} {_fmt(planted['policy_minus_forecast_trader']):>24} "
                     f"{_fmt(s['known_answer']):>24} {planted['sharpe']:6.2f} {planted['pct_profitable']:5.0f} "
                     f"{nulls[0]:>24} {nulls[1]:>24}")
    for row in summary.get("sweep", []):
        recovery = row["recovery"]
        ratio = "undefined" if recovery["ratio"] is None else \
            f"{recovery['ratio']:.2f} [{recovery['ci_low']:.2f}, {recovery['ci_high']:.2f}]"
        lines.append(f"sweep seed {summary['seeds'][0]} signal {row['signal']:<4g} published {row['stage']:<16} "
                     f"policy {_fmt(row['policy'])} known_answer {_fmt(row['known_answer'])} recovery {ratio}")
    v = summary["verdict"]
    lines.append(f"verdict: {'holds' if v['holds'] else 'FAILS'} (pooled policy above zero {v['pooled_policy_above_zero']}, "
                 f"above best_rule {v['pooled_policy_above_best_rule']}, {v['test_markets']} test markets, seeds whose "
                 f"policy loses: {v['seeds_losing'] or 'none'}; null equivalent within +-{EQUIVALENCE_MARGIN:.2f}: "
                 f"{v['null_equivalent']}); design Sharpe {DESIGN_SHARPE}, {DESIGN_PROFITABLE:.0f}% profitable")
    return lines


def _error_bars(points: np.ndarray, rows: list[dict], low: str, high: str) -> np.ndarray:
    """Distances from each point to its interval's ends (a BCa interval need not contain its point: then 0)."""
    lows = np.array([r[low] for r in rows], dtype=np.float64)
    highs = np.array([r[high] for r in rows], dtype=np.float64)
    return np.clip(np.stack([points - lows, highs - points]), 0.0, None)


def plot(summary: dict, path: Path) -> Path:
    """Per seed and pooled: the policy, best_rule and forecast trader with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(row["seed"]) for row in summary["per_seed"]] + ["pooled"]
    planted = [row["planted"] for row in summary["per_seed"]] + [summary["pooled"]["planted"]]
    fig, (ax, sweep_ax) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [2, 1]})
    for offset, name in zip((-0.2, 0.0, 0.2), ("policy", "best_rule", "forecast_trader")):
        rows = [p["strategies"][name] for p in planted]
        x = np.arange(len(rows)) + offset
        means = np.array([r["mean"] for r in rows])
        ax.errorbar(x, means, yerr=_error_bars(means, rows, "ci_low", "ci_high"), fmt="o", capsize=3, label=name)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(np.arange(len(labels)), labels)
    ax.set_ylabel("$/test market, 95% BCa")
    ax.set_title("Replication over universe seeds (signal 1)")
    ax.legend()
    sweep = [row for row in summary.get("sweep", []) if row["recovery"]["ratio"] is not None]
    if sweep:
        x = np.array([row["signal"] for row in sweep])
        ratio = np.array([row["recovery"]["ratio"] for row in sweep])
        sweep_ax.errorbar(x, ratio, yerr=_error_bars(ratio, [r["recovery"] for r in sweep], "ci_low", "ci_high"),
                          fmt="o-", capsize=3)
    sweep_ax.axhline(0, color="grey", lw=0.8)
    sweep_ax.set_xlabel("signal")
    sweep_ax.set_ylabel("recovery: policy / known-answer P&L")
    sweep_ax.set_title(f"Signal sweep, seed {summary['seeds'][0] if summary['seeds'] else '-'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(seeds: tuple[int, ...] = REPLICATION_SEEDS) -> dict:
    summary = summarize_replication(run_all(seeds))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "quality.json"
    path.with_suffix(".json.tmp").write_text(json.dumps(summary, indent=1) + "\n")
    path.with_suffix(".json.tmp").replace(path)
    plot(summary, RESULTS_DIR / "quality.png")
    print("\n".join(table_lines(summary)))
    return summary


if __name__ == "__main__":
    main(tuple(int(s) for s in sys.argv[1:]) or REPLICATION_SEEDS)
