"""Validate the candidate, publish it through the gate, and score published versions (`kfs evaluate`).

The candidate is scored as it will be served: its int8 TorchScript artifact (what `publish` writes and the
live path runs), and the forecast trader on the forecaster of its fp32 artifact. A published version is
scored from those very files, loaded through the verified loader, against the baselines its manifest saved
(the best single-feature rule and the imbalance threshold, tuned on fit and chosen on select markets):
evaluating a version on validation markets gives its published validation, figure for figure, on any machine.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import polars as pl
import torch

from core.catalog import Lake, json_bytes, json_safe, write_bytes_atomic, write_json_atomic
from training.data.cache import load_market_data
from training.data.market_data import MarketData
from training.environment.batched_env import BatchedMarketEnv
from training.environment.episodes import market_windows
from training.evaluation.report import report_markdown, save_learning_curves, save_validation_plots
from training.evaluation.validation import (
    Baselines,
    ScoreProgress,
    artifact_actor,
    score,
    tune_baselines,
)
from training.learners.forecast_trader import ForecastTrader
from training.pipeline import load_candidate
from training.release.publish import (
    LATENCY_BUDGET_P99_US,
    PRODUCTION,
    publish,
    read_registry,
    script_fp32,
    script_int8,
    twin_forecaster,
)
from training.release.serving import PolicyLoadError, PolicyServer


def _plots(result: dict, folder: Path, data: MarketData) -> list[Path]:
    per_market = {name: pl.DataFrame(rows) for name, rows in result["per_market"].items()}
    last_event = {m.ticker: int(m.time_ms[-1]) for m in data.of_role(result["split"]) if len(m.time_ms)}
    return save_validation_plots(per_market, folder, result["split"], last_event)


def run_validation(lake: Lake, split: str = "validation", data: MarketData | None = None,
                   progress: ScoreProgress | None = None) -> dict:
    """Score the candidate against every baseline; write `<split>.json` and a markdown report with inline plots."""
    data = data or load_market_data(lake)
    policy, trader = load_candidate(lake, data)
    served, twin = script_int8(policy), script_fp32(policy)
    tuned = tune_baselines(data)
    result = score(data, split, artifact_actor(served), tuned, (trader, twin_forecaster(twin)), progress=progress)
    candidate = lake.candidate()
    with lake.local_folder(candidate, last=(f"{split}.json",)) as folder:
        training = json.loads((folder / "training.json").read_text())
        plots = _plots(result, folder, data)
        curves = pl.read_csv(folder / "learning_curves.csv").to_dicts() if (folder / "learning_curves.csv").exists() else []
        if curves:
            plots.insert(0, save_learning_curves(curves, folder / "learning_curves.png"))
        markdown = report_markdown(result, plots, training.get("stages"))
        write_bytes_atomic(folder / f"{split}.md", markdown.encode())
        result.update({"baselines": tuned.as_dict(), "report": str(candidate / f"{split}.md"),
                       "plots": [str(candidate / p.name) for p in plots]})
        write_json_atomic(folder / f"{split}.json", result)
    return json_safe(result)


def validation_observations(data: MarketData, split: str = "validation", max_steps: int = 400
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Observations the policy meets on `split` markets, for the int8-versus-float agreement check."""
    windows = list(itertools.islice((w for m in sorted(data.of_split(split), key=lambda m: m.ticker)
                                     for w in market_windows(m)), 32))
    queue = iter(windows)
    env = BatchedMarketEnv(data, lambda _: next(queue), len(windows), auto_reset=False)
    observations, lives = [], []
    for _ in range(max_steps):
        obs, live = env.observe()
        observations.append(obs)
        lives.append(live)
        env.step(torch.zeros_like(live, dtype=torch.long))
    return torch.cat(observations), torch.cat(lives)


def run_publish(lake: Lake, data: MarketData | None = None) -> dict:
    data = data or load_market_data(lake)
    policy, _ = load_candidate(lake, data)
    folder = lake.candidate()
    training = lake.read_json(folder / "training.json")
    validation = lake.read_json(folder / "validation.json")
    return publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions, training, validation,
                   validation_observations(data))


def resolve_version(lake: Lake, version: str | None) -> str:
    """`version`, else the production alias's, else the latest published one."""
    registry = read_registry(lake)
    known = [entry["version"] for entry in registry["versions"]]
    if version is not None:
        if version not in known:
            raise ValueError(f"no published version {version!r}; known: {', '.join(known[-5:]) or 'none'}")
        return version
    if registry["aliases"].get(PRODUCTION):
        return registry["aliases"][PRODUCTION]
    if not known:
        raise ValueError("no published version yet: run `kfs train` (or `make demo`) first")
    return known[-1]


def run_evaluate(lake: Lake, split: str, version: str | None = None, json_path: Path | None = None,
                 data: MarketData | None = None, latency_budget_p99_us: float = LATENCY_BUDGET_P99_US,
                 progress: ScoreProgress | None = None) -> dict:
    """Score a published version's int8 artifact on `split` against every baseline (`kfs evaluate`), with the
    forecast trader on its fp32 twin's forecaster and the baselines its manifest saved. Its latency is measured
    and returned, not written to `json_path`, whose figures are the version's (the same on every evaluation);
    `latency_budget_p99_us` (infinite: no check) refuses a version over it."""
    version = resolve_version(lake, version)
    server = PolicyServer(lake, alias=PRODUCTION, latency_budget_p99_us=latency_budget_p99_us)
    try:
        model, manifest = server.load_version(version)
        twin = server.load_twin(version, manifest)
    except PolicyLoadError as error:
        raise ValueError(str(error)) from None
    data = data or load_market_data(lake)
    saved = manifest.get("baselines")
    tuned = Baselines.from_dict(saved) if saved else tune_baselines(data)
    trader = ForecastTrader.from_dict(manifest["training"]["trader"])
    result = score(data, split, artifact_actor(model), tuned, (trader, twin_forecaster(twin)), progress=progress)
    output = json_safe({"split": split, "version": version, "best_rule": result["best_rule"], "table": result["table"],
                        "comparison": result["comparison"], "recovery": result["recovery"]})
    if json_path is not None:   # the figures only: the same for every evaluation of the version, anywhere
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(json_path, json_bytes(output))
    return {**output, "latency_us": server.measured_latency_us}
