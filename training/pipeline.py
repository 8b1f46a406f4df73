"""Train a candidate policy, as plain functions over the lake (the Dagster assets wrap these).

Stages, in order, each a fixed amount of work (the same seeds give the same policy, bit for bit on CPU):
1. forecaster (training/learners/forecast.py): supervised forward mid moves on training markets, early-stopped
   on held-out whole training markets;
2. forecast trader (training/learners/forecast_trader.py): horizon and margins tuned on a stratified sample of
   training markets;
3. warm start (training/learners/warm_start.py): the trader distilled into the policy network (DAgger);
4. PPO (training/learners/ppo.py), the last stage, with the forecaster frozen; its curriculum follows the
   share of PPO's steps done.
A run may carry a time limit (`TrainingConfig.time_limit_s`, a safety net of the nightly job): a stage that
reaches it stops, and the summary says which stages it cut short.
Nothing here knows the simulator's planted effects: no known-answer rule is imported (a test checks the
import graph). Markets have four roles (training/data/roles.py): the stages fit on the fit markets, and
every choice is made on the select markets, held out of every fit: the forecaster's early stopping, the
learner stage that is kept (each stage's greedy strategy scored there, paired by market, so the report
shows what each stage adds and how many orders it placed) and the complexity tier. Validation markets are
never read here (they give the promotion gate its figures, training/release/runs.py), nor is the test split.

Profiles (`PROFILES`) name the configurations the entry points use: `nightly` (the nightly job, `kfs train`
and the quality runs), `demo` (`make demo`: the same stages, smaller) and `smoke` (tests on small universes).
"""

from __future__ import annotations

import copy
import io
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import polars as pl
import torch

from core.catalog import Lake, write_bytes_atomic, write_json_atomic
from core.exchange import TradingRules
from core.settings import settings
from training.data.cache import load_market_data
from training.data.market_data import MarketData
from training.environment.batched_env import BatchedMarketEnv
from training.environment.episodes import build_episode, curriculum_stage
from training.evaluation import scoring
from training.evaluation.baselines import tuning_sample
from training.evaluation.report import save_learning_curves
from training.learners.forecast import ForecastConfig, Forecaster, fit_forecaster
from training.learners.forecast_trader import ForecastTrader, TraderPolicy, trader_actor, trader_policy, tune_trader
from training.learners.limits import TimeLimit
from training.learners.policy import GreedyPolicy, MarketPolicy, build_policy
from training.learners.ppo import Budget, PPOConfig, PPOResult, run_ppo
from training.learners.tiers import choose_tier, measure_tier
from training.learners.warm_start import DistillConfig, distill_trader
from training.profiles import PROFILE_NAMES
from training.release.publish import published_stage

STAGES = ("forecast_trader", "warm_start", "ppo")


@dataclass
class TrainingConfig:
    seed: int = 7
    ppo_steps: int = 600_000            # PPO environment steps (one event of one episode each)
    time_limit_s: float | None = None   # a safety net: stages stop when this much time passed (not reproducible)
    hidden: int = 64
    large_hidden: int | None = 128      # the larger complexity tier (None: train the base size only)
    tuning_markets: int = 100           # stratified sample of fit markets for tuning the trader
    select_stage: bool = True           # choose the learner stage and the tier on the select markets
    threads: int = 1                    # torch threads: results are bit-for-bit the same for the same count
    device: str = "cpu"                 # "cpu" or "cuda" (see resolve_device)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    rules: TradingRules = field(default_factory=TradingRules)


def nightly_config() -> TrainingConfig:
    """The nightly job's configuration (and the quality runs'): every stage at full size."""
    return TrainingConfig(time_limit_s=NIGHTLY_TIME_LIMIT_S)


def demo_config() -> TrainingConfig:
    """`make demo`: the nightly stages, smaller, for a first look in a few minutes."""
    return TrainingConfig(ppo_steps=64 * 128 * 12, tuning_markets=40,
                          forecast=ForecastConfig(max_epochs=1, max_rows=1_000_000, checks_per_epoch=4),
                          distill=DistillConfig(rollouts_per_round=12, epochs=4))


def smoke_config() -> TrainingConfig:
    """Tests on small universes: the same stages, small pieces."""
    return quick_config(ppo_steps=32 * 32 * 6)


NIGHTLY_TIME_LIMIT_S = 3600.0   # the nightly job's safety net; its stages take a few minutes on two cores
PROFILES = {"nightly": nightly_config, "demo": demo_config, "smoke": smoke_config}
assert tuple(PROFILES) == PROFILE_NAMES, "training/profiles.py names the profiles for the command line and Dagster"


def describe_profiles() -> str:
    """What each profile trains, for `kfs train --help` and the docs."""
    lines = ["training profiles (the same stages, a fixed amount of work each):"]
    for name, make in PROFILES.items():
        config = make()
        limit = f"{config.time_limit_s:.0f} s" if config.time_limit_s else "none"
        lines.append(f"  {name:<8} forecaster {config.forecast.max_epochs} epoch(s) of up to {config.forecast.max_rows:,} "
                     f"rows; warm start {config.distill.rounds} x {config.distill.rollouts_per_round} rollouts; "
                     f"PPO {config.ppo_steps:,} steps; time limit {limit}")
    return "\n".join(lines)


@dataclass
class TrainResult:
    policy: MarketPolicy
    config: TrainingConfig
    stages: dict                      # per stage: its report
    ppo: PPOResult
    trader: ForecastTrader
    forecaster: Forecaster


def resolve_device(choice: str) -> torch.device:
    """`auto`: CUDA when available, else CPU; `cuda` refuses to fall back silently."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("KFS_TRAIN_DEVICE=cuda but no CUDA device is available (torch.cuda.is_available() is False)")
    if choice not in ("cpu", "cuda"):
        raise ValueError(f"unknown training device {choice!r}; choose auto, cpu or cuda")
    return torch.device(choice)


def config_from_settings(profile: str = "nightly", seconds: float | None = None, steps: int | None = None
                         ) -> TrainingConfig:
    """A profile's configuration with the run's overrides: PPO steps from `steps`, else KFS_TRAIN_STEPS; the
    time limit from `seconds`, else KFS_TRAIN_SECONDS, else the profile's; seed (KFS_TRAIN_SEED) and device
    (KFS_TRAIN_DEVICE)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown training profile {profile!r}; choose {', '.join(PROFILES)}")
    current = settings()
    config = PROFILES[profile]()
    return replace(config, ppo_steps=steps or current.train_steps or config.ppo_steps,
                   time_limit_s=seconds or current.train_seconds or config.time_limit_s, seed=current.train_seed,
                   device=resolve_device(current.train_device).type)


def seed_everything(seed: int, threads: int) -> None:
    """The same seed and thread count give the same weights: torch's and NumPy's generators seeded, a fixed
    thread count (a reduction split over another number of threads sums in another order) and deterministic
    algorithms where torch has a choice."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def train_policy(data: MarketData, config: TrainingConfig,
                 progress: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Forecaster, forecast trader, warm start and PPO, in that order, each its configured amount of work."""
    started = time.perf_counter()
    seed_everything(config.seed, config.threads)
    limit = TimeLimit.after(config.time_limit_s)
    device = torch.device(config.device)
    stages: dict = {}

    forecaster, stages["forecaster"] = fit_forecaster(data, config.forecast, config.seed, limit, device)
    trader, stages["forecast_trader"] = tune_trader(forecaster, data, tuning_sample(data, config.tuning_markets, config.seed),
                                                    config.rules)
    stages["forecast_trader"]["trader"] = trader.as_dict()

    policy = build_policy(data.feature_names, data.mean, data.std, config.hidden, forecaster=forecaster)
    policy.forecaster.requires_grad_(False)  # learned from data once; PPO works on the decisions
    policy.to(device)
    stages["warm_start"] = distill_trader(policy, data, trader, config.distill, config.seed, config.rules, limit, device)
    warm_state = copy.deepcopy(policy.state_dict())

    rng = np.random.default_rng(config.seed)
    share = {"value": 0.0}
    env = BatchedMarketEnv(data, lambda _: build_episode(data, rng, curriculum_stage(share["value"]), split="fit"),
                           config.ppo.n_envs, rules=config.rules, device=device)
    result = run_ppo(policy, env, config.ppo, Budget(config.ppo_steps), on_share=lambda s: share.update(value=s),
                     progress=progress, time_limit=limit)
    stages["ppo"] = {"steps": result.steps, "seconds": result.seconds, "steps_per_second": result.steps_per_second,
                     "episodes": result.episodes, "cut_short": result.cut_short,
                     "final": result.curves[-1] if result.curves else {}, "final_curriculum_share": share["value"]}
    policy.cpu()
    if config.select_stage and data.of_role("select"):
        stages["selection"] = choose_stage(policy, warm_state, trader, forecaster, data, config, stages["warm_start"])
        if config.large_hidden is not None and stages["selection"]["kept"] == "forecast_trader":
            stages["complexity_tiers"] = {"kept": "base", "skipped": "the forecast trader was kept: the tiers are "
                                                                      "sizes of the policy network, which is not published"}
        elif config.large_hidden is not None:
            kept = stages["selection"]["scores"][stages["selection"]["kept"]]
            policy, stages["large_warm_start"], stages["complexity_tiers"] = train_large_tier(
                policy, kept, forecaster, trader, data, config, device, limit)
    stages["cut_short_by_time_limit"] = cut_short_stages(stages)
    stages["seconds"] = time.perf_counter() - started
    return TrainResult(policy=policy.eval(), config=config, stages=stages, ppo=result, trader=trader,
                       forecaster=forecaster)


def cut_short_stages(stages: dict) -> list[str]:
    """The stages the run's time limit stopped before their work was done."""
    return [name for name in ("forecaster", "warm_start", "ppo", "large_warm_start")
            if (stages.get(name) or {}).get("cut_short")]


def train_large_tier(base: MarketPolicy, base_score: dict, forecaster: Forecaster, trader: ForecastTrader,
                     data: MarketData, config: TrainingConfig, device: torch.device, limit: TimeLimit
                     ) -> tuple[MarketPolicy, dict, dict]:
    """The larger tier, warm-started from the same trader around the same forecaster; returns the policy to
    keep (see training/learners/tiers.py), the larger tier's warm-start report and the comparison. The base
    tier's figures on the select markets are the kept stage's (`base_score`), measured once."""
    large = build_policy(data.feature_names, data.mean, data.std, config.large_hidden, forecaster=forecaster)
    large.forecaster.requires_grad_(False)
    large.to(device)
    report = distill_trader(large, data, trader, config.distill, config.seed + 1, config.rules, limit, device)
    comparison = choose_tier(measure_tier(base, config.hidden, data, config.rules, base_score),
                             measure_tier(large.cpu(), config.large_hidden, data, config.rules))
    return (large if comparison["kept"] == "large" else base), report, comparison


def stage_strategies(policy: MarketPolicy, warm_state: dict, trader: ForecastTrader, forecaster: Forecaster,
                     feature_names: list[str]) -> dict:
    """The greedy strategy of each stage: the forecast trader, the distilled policy, the PPO policy."""
    warm = copy.deepcopy(policy)
    warm.load_state_dict(warm_state)
    return {"forecast_trader": trader_actor(trader, forecaster, feature_names),
            "warm_start": scoring.actor_of(GreedyPolicy(warm.cpu()).eval()),
            "ppo": scoring.actor_of(GreedyPolicy(copy.deepcopy(policy).cpu()).eval())}


# A warm start is a faithful copy of the trader or nothing: below this share of the trader's actions on held-out
# episodes it is not kept (issue 24).
MIN_WARM_START_AGREEMENT = 0.95


def choose_stage(policy: MarketPolicy, warm_state: dict, trader: ForecastTrader, forecaster: Forecaster,
                 data: MarketData, config: TrainingConfig, warm_report: dict | None = None) -> dict:
    """Score every stage on the select markets, report what each adds (paired by market) and its orders, and
    keep the stage that makes the most there among the usable ones: a stage whose interval lies wholly below
    always-hold's zero lost money for sure, and a warm start that shares fewer than MIN_WARM_START_AGREEMENT of
    the trader's actions on held-out episodes (`warm_report`, distill_trader's) is not a copy of it; neither is
    kept. `policy` is set to the kept learner's weights (the warm start's when it is kept; PPO's otherwise,
    also when the trader is kept: it is published around the same forecaster). When no stage is usable the one
    that lost least is named, `usable` says so and the gate refuses it."""
    started = time.perf_counter()
    strategies = stage_strategies(policy, warm_state, trader, forecaster, data.feature_names)
    per_market = {name: scoring.market_metrics(scoring.play(data, "select", act, config.rules))
                  for name, act in strategies.items()}
    scores = {name: scoring.summarize(name, frame) for name, frame in per_market.items()}
    adds = {"warm_start_minus_forecast_trader": scoring.paired_difference(per_market["warm_start"],
                                                                           per_market["forecast_trader"]),
            "ppo_minus_warm_start": scoring.paired_difference(per_market["ppo"], per_market["warm_start"]),
            "ppo_minus_forecast_trader": scoring.paired_difference(per_market["ppo"], per_market["forecast_trader"])}
    agreement = ((warm_report or {}).get("held_out") or {}).get("action_agreement")
    kept, reasons = keep_stage(scores, agreement)
    if kept == "warm_start":
        policy.load_state_dict(warm_state)
    return {"split": "select", "markets": len(data.of_role("select")), "scores": scores, "adds": adds,
            "orders": {name: scores[name]["orders"] for name in STAGES}, "kept": kept,
            "usable": len(reasons) < len(STAGES),
            "unusable": sorted(reasons), "why_unusable": reasons, "warm_start_action_agreement": agreement,
            "best_stage_on_select": max(STAGES, key=lambda name: scores[name]["mean_return_dollars"]),
            "seconds": time.perf_counter() - started}


def keep_stage(scores: dict, warm_start_agreement: float | None) -> tuple[str, dict[str, str]]:
    """The stage to publish from each stage's select-market row (scoring.summarize's), and why each stage that
    cannot be kept is not usable (see choose_stage). With none usable, the one that lost least is named."""
    reasons = {name: "its 95% CI on the select markets lies below zero" for name in STAGES if scores[name]["ci_high"] < 0}
    if warm_start_agreement is not None and warm_start_agreement < MIN_WARM_START_AGREEMENT:
        reasons.setdefault("warm_start", f"it shares {warm_start_agreement:.1%} of the trader's held-out actions "
                                         f"(< {MIN_WARM_START_AGREEMENT:.0%})")
    usable = [name for name in STAGES if name not in reasons]
    # Ties (stages that never trade) go to the simplest stage: the trader, then the warm start.
    return max(usable or STAGES, key=lambda name: (scores[name]["mean_return_dollars"], -STAGES.index(name))), reasons


def run_training(lake: Lake, config: TrainingConfig, data: MarketData | None = None, progress=None) -> dict:
    """Train and write the candidate: policy weights (forecaster included), learning curves, the summary."""
    data = data or load_market_data(lake)
    result = train_policy(data, config, progress=progress)
    weights = io.BytesIO()
    torch.save(result.policy.state_dict(), weights)
    curves = result.ppo.curves
    summary = {"steps": result.ppo.steps, "seconds": result.stages["seconds"], "device": config.device,
               "steps_per_second": result.ppo.steps_per_second, "episodes": result.ppo.episodes,
               "config": asdict(result.config), "stages": result.stages, "trader": result.trader.as_dict(),
               "train_markets": len(data.of_split("train")), "partitions": data.partitions,
               "final": curves[-1] if curves else {}, "learning_curves": str(lake.candidate() / "learning_curves.png")}
    with lake.local_folder(lake.candidate(), last=("training.json",)) as folder:
        write_bytes_atomic(folder / "policy_state.pt", weights.getvalue())
        save_learning_curves(curves, folder / "learning_curves.png")
        pl.DataFrame(curves).write_csv(folder / "learning_curves.csv")
        write_json_atomic(folder / "training.json", summary)
    return summary


def load_candidate(lake: Lake, data: MarketData) -> tuple[MarketPolicy | TraderPolicy, ForecastTrader]:
    """The candidate's published stage (the policy network, or the forecast trader around its forecaster when
    the stage choice kept the trader) and the forecast trader."""
    training = lake.read_json(lake.candidate() / "training.json")
    config = training["config"]
    tiers = training["stages"].get("complexity_tiers") or {}
    hidden = config["large_hidden"] if tiers.get("kept") == "large" else config["hidden"]
    policy = build_policy(data.feature_names, data.mean, data.std, hidden, forecast_hidden=config["forecast"]["hidden"])
    policy.load_state_dict(torch.load(io.BytesIO(lake.read_bytes(lake.candidate() / "policy_state.pt"))))
    trader = ForecastTrader.from_dict(training["trader"])
    if published_stage(training) == "forecast_trader":
        return trader_policy(trader, policy.forecaster, data.feature_names), trader
    return policy.eval(), trader


def quick_config(ppo_steps: int, **overrides) -> TrainingConfig:
    """A configuration for tests on small universes: the same stages, smaller pieces."""
    config = TrainingConfig(ppo_steps=ppo_steps, tuning_markets=40,
                            forecast=ForecastConfig(max_epochs=2, checks_per_epoch=4),
                            distill=DistillConfig(rollouts_per_round=8, epochs=4, n_envs=32),
                            ppo=PPOConfig(n_envs=32, rollout_steps=32))
    return replace(config, **overrides)
