"""Train, validate and publish, as plain functions over the lake (the Dagster assets wrap these).

Training runs its stages in order: a warm start (behaviour cloning, training/imitation.py), PPO
(training/ppo.py) and a do-no-harm selection between the two on training markets. A run writes the
candidate (`Lake.candidate()`): policy weights, learning curves and a training summary; validation
adds the report; publishing turns the candidate into a version.
"""

from __future__ import annotations

import copy
import io
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import polars as pl
import torch

from core.catalog import Lake, write_bytes_atomic
from core.settings import settings
from training import evaluate
from training.env import BatchedMarketEnv, TradingRules
from training.episodes import build_episode, curriculum_stage, market_windows
from training.imitation import (
    TeacherRule,
    clone_rule,
    imitation_loss,
    teacher_actions,
    teacher_actor,
)
from training.market_data import MarketData, load_market_data
from training.policy import GreedyPolicy, MarketPolicy, build_policy
from training.ppo import Budget, PPOConfig, PPOResult, run_ppo
from training.publish import publish
from training.report import report_markdown, save_learning_curves, save_validation_plots

STRATEGIES = ("policy", "always_hold", "random", "imbalance_rule", "buy_and_hold_yes", "warm_start_teacher")
NIGHTLY_TRAIN_SECONDS = 240.0


@dataclass
class TrainingConfig:
    seed: int = 7
    total_steps: int = 400_000          # environment steps of PPO (one event of one episode each)
    time_budget_s: float | None = None  # the whole run (warm start included) stops when this much time passed
    hidden: int = 64
    initial_trade_probability: float = 0.05
    warm_start_batches: int = 200       # behaviour cloning of `teacher` before PPO (0: start from scratch)
    teacher: TeacherRule = field(default_factory=TeacherRule)
    # Weight of the teacher's cross-entropy in the PPO loss after a warm start, decaying linearly to
    # imitation_final_coef: without it PPO's noisy advantages erase the rare entries in a few updates.
    imitation_coef: float = 1.0
    imitation_final_coef: float = 0.1
    # After PPO, keep the fine-tuned policy only if it beats the clone on this many training markets
    # (whole recorded lives, greedy actions); 0 keeps the fine-tuned policy unconditionally.
    selection_markets: int = 60
    threads: int = 2
    ppo: PPOConfig = field(default_factory=PPOConfig)
    rules: TradingRules = field(default_factory=TradingRules)


@dataclass
class TrainResult:
    policy: MarketPolicy
    config: TrainingConfig
    warm_start: dict | None
    ppo: PPOResult
    selection: dict | None


def config_from_settings(seconds: float | None = None) -> TrainingConfig:
    """The nightly configuration: budget from `seconds`, else KFS_TRAIN_SECONDS (default 240 s), steps and seed."""
    current = settings()
    return TrainingConfig(time_budget_s=seconds or current.train_seconds or NIGHTLY_TRAIN_SECONDS,
                          total_steps=current.train_steps, seed=current.train_seed)


def train_policy(data: MarketData, config: TrainingConfig,
                 progress: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Warm start, PPO and selection, in that order, within the configured budget."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    share = {"value": 0.0}
    env = BatchedMarketEnv(data, lambda _: build_episode(data, rng, curriculum_stage(share["value"]), split="train"),
                           config.ppo.n_envs, rules=config.rules)
    policy = build_policy(data.feature_names, data.mean, data.std, config.hidden)
    policy.start_cautious(config.initial_trade_probability)
    warm_start = clone_rule(policy, data, config.teacher, config.warm_start_batches, config.seed, config.rules,
                            seconds=None if config.time_budget_s is None else config.time_budget_s / 2) \
        if config.warm_start_batches > 0 else None
    warm_start_seconds = warm_start["seconds"] if warm_start else 0.0  # the time budget covers both
    clone_state = copy.deepcopy(policy.state_dict()) if warm_start else None
    budget = Budget(config.total_steps, None if config.time_budget_s is None
                    else max(config.time_budget_s - warm_start_seconds, 1e-3))

    def imitation(logits, obs, live, actable, budget_share):
        weight = config.imitation_coef + (config.imitation_final_coef - config.imitation_coef) * budget_share
        return weight * imitation_loss(logits, teacher_actions(config.teacher, data.feature_names, obs, live), actable)

    result = run_ppo(policy, env, config.ppo, budget, on_share=lambda s: share.update(value=s), progress=progress,
                     auxiliary=imitation if warm_start else None)
    selection = None
    if clone_state is not None and config.selection_markets > 0:
        selection = keep_better_of_clone_and_fine_tuned(policy, clone_state, data, config)
    return TrainResult(policy=policy, config=config, warm_start=warm_start, ppo=result, selection=selection)


def keep_better_of_clone_and_fine_tuned(policy: MarketPolicy, clone_state: dict, data: MarketData,
                                        config: TrainingConfig) -> dict:
    """Do no harm: PPO fine-tuning is kept only if its greedy policy makes more money than the clone's on
    a fixed sample of training markets (validation and test markets stay untouched for what comes
    after). Otherwise `policy` is set back to the clone. Returns both scores and the choice."""
    sample = sorted(m.ticker for m in data.of_split("train"))[: config.selection_markets]

    def score() -> int:
        greedy = GreedyPolicy(policy).eval()
        return int(evaluate.play(data, "train", lambda obs, live, env: greedy(obs, live), config.rules,
                                 markets=sample)["pnl_cents"].sum())

    started = time.perf_counter()
    fine_tuned_cents = score()
    fine_tuned_state = copy.deepcopy(policy.state_dict())
    policy.load_state_dict(clone_state)
    clone_cents = score()
    kept = "fine_tuned" if fine_tuned_cents > clone_cents else "clone"
    if kept == "fine_tuned":
        policy.load_state_dict(fine_tuned_state)
    return {"markets": len(sample), "clone_cents": clone_cents, "fine_tuned_cents": fine_tuned_cents, "kept": kept,
            "seconds": time.perf_counter() - started}


def run_training(lake: Lake, config: TrainingConfig, data: MarketData | None = None, progress=None) -> dict:
    data = data or load_market_data(lake)
    result = train_policy(data, config, progress=progress)
    folder = lake.candidate()
    folder.mkdir(parents=True, exist_ok=True)
    weights = io.BytesIO()
    torch.save(result.policy.state_dict(), weights)
    write_bytes_atomic(folder / "policy_state.pt", weights.getvalue())
    curves = result.ppo.curves
    curves_png = save_learning_curves(curves, folder / "learning_curves.png")
    summary = {"steps": result.ppo.steps, "seconds": result.ppo.seconds, "steps_per_second": result.ppo.steps_per_second,
               "episodes": result.ppo.episodes, "config": asdict(result.config), "warm_start": result.warm_start,
               "selection": result.selection,
               "train_markets": len(data.of_split("train")), "partitions": data.partitions,
               "final": curves[-1] if curves else {}, "learning_curves": str(curves_png)}
    lake.write_json(folder / "training.json", summary)
    pl.DataFrame(curves).write_csv(folder / "learning_curves.csv")
    return summary


def load_candidate(lake: Lake, data: MarketData) -> MarketPolicy:
    training = lake.read_json(lake.candidate() / "training.json")
    policy = build_policy(data.feature_names, data.mean, data.std, training["config"]["hidden"])
    policy.load_state_dict(torch.load(lake.candidate() / "policy_state.pt"))
    return policy.eval()


def evaluate_all(data: MarketData, policy, split: str, rules: TradingRules = TradingRules(), seed: int = 0,
                 teacher: TeacherRule = TeacherRule()) -> dict[str, pl.DataFrame]:
    """Per-market results of the policy and every baseline on `split`, in the same simulator."""
    greedy = GreedyPolicy(policy).eval()
    policy_windows = evaluate.play(data, split, evaluate.policy_actor(greedy), rules)
    live_steps = max(int(policy_windows["steps"].sum()), 1)
    trade_rate = max(float(policy_windows["orders"].sum()) / live_steps, 1e-3)
    threshold = evaluate.tune_imbalance_threshold(data, rules)
    windows = {
        "policy": policy_windows,
        "always_hold": evaluate.play(data, split, evaluate.always_hold, rules),
        "random": evaluate.play(data, split, evaluate.random_policy(trade_rate, seed), rules),
        "imbalance_rule": evaluate.play(data, split, evaluate.imbalance_rule(data.feature_names, threshold), rules),
        "buy_and_hold_yes": evaluate.play(data, split, evaluate.buy_and_hold_yes, rules),
        # The rule the policy was cloned from before PPO, so the report shows what RL added or lost.
        "warm_start_teacher": evaluate.play(data, split, teacher_actor(teacher, data.feature_names), rules),
    }
    return {name: evaluate.market_metrics(w) for name, w in windows.items()}


def compare(per_market: dict[str, pl.DataFrame], seed: int = 0) -> tuple[list[dict], dict]:
    table = [evaluate.summarize(name, frame, seed) for name, frame in per_market.items()]
    comparison = {}
    for name in STRATEGIES[1:]:
        mean, low, high = evaluate.paired_difference(per_market["policy"], per_market[name], seed)
        comparison[name] = {"mean": mean, "ci_low": low, "ci_high": high}
    return table, comparison


def run_validation(lake: Lake, split: str = "validation", data: MarketData | None = None) -> dict:
    data = data or load_market_data(lake)
    policy = load_candidate(lake, data)
    per_market = evaluate_all(data, policy, split)
    table, comparison = compare(per_market)
    folder = lake.candidate()
    plots = save_validation_plots(per_market, folder, split)
    markdown = report_markdown(table, comparison, split, plots)
    write_bytes_atomic(folder / f"{split}.md", markdown.encode())
    result = {"split": split, "table": table, "comparison": comparison, "report": str(folder / f"{split}.md"),
              "plots": [str(p) for p in plots]}
    lake.write_json(folder / f"{split}.json", result)
    return result


def validation_observations(data: MarketData, split: str = "validation", max_steps: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    """Observations the policy meets on `split` markets, for the int8-versus-float agreement check."""
    windows = [w for m in sorted(data.of_split(split), key=lambda m: m.ticker) for w in market_windows(m)][:32]
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
    policy = load_candidate(lake, data)
    folder = lake.candidate()
    training = lake.read_json(folder / "training.json")
    validation = lake.read_json(folder / "validation.json")
    return publish(lake, policy, data.feature_names, data.mean, data.std, data.partitions, training,
                   {row["strategy"]: row for row in validation["table"]}, validation["comparison"],
                   validation_observations(data))
