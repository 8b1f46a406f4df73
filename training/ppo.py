"""PPO on the batched market simulator, in one readable file (CleanRL style).

The policy starts cautious (HOLD unless exploring) and, by default, from a behaviour clone of the
order-imbalance teacher (training/imitation.py); PPO then fine-tunes it on its own returns.

Shapes: B = n_envs, T = rollout_steps, S = 5 slots, D = features + position features.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.distributions import Categorical

from features.schema import columns_of
from training.env import BatchedMarketEnv, TradingRules
from training.episodes import build_episode, curriculum_stage
from training.imitation import TeacherRule, clone_rule, imitation_loss, teacher_actions
from training.market_data import MarketData
from training.policy import MarketPolicy


@dataclass
class PPOConfig:
    seed: int = 7
    n_envs: int = 128
    rollout_steps: int = 64
    total_steps: int = 400_000          # environment steps (one event of one episode each)
    time_budget_s: float | None = None  # stop earlier when this much wall time has passed
    learning_rate: float = 3e-5         # fine-tuning after the warm start; 3e-4 erases the clone in ~20 updates
    gamma: float = 0.999                # the gain of an entry arrives tens to hundreds of steps later
    gae_lambda: float = 0.99
    update_epochs: int = 2
    minibatches: int = 4
    clip: float = 0.2
    entropy_coef: float = 0.0           # exploration comes from the warm start; a bonus only adds losing orders
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
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
    rules: TradingRules = field(default_factory=TradingRules)


@dataclass
class TrainResult:
    policy: MarketPolicy
    curves: list[dict]
    config: PPOConfig
    warm_start: dict | None
    selection: dict | None
    steps: int
    seconds: float
    episodes: int

    @property
    def steps_per_second(self) -> float:
        return self.steps / max(self.seconds, 1e-9)


def temporal_feature_index(feature_names: list[str]) -> list[int]:
    wanted = {c.name for c in columns_of("temporal")} | {c.name for c in columns_of("trade_flow")}
    return [i for i, name in enumerate(feature_names) if name in wanted]


def make_policy(data: MarketData, hidden: int = 64) -> MarketPolicy:
    return MarketPolicy(len(data.feature_names), temporal_feature_index(data.feature_names),
                        torch.from_numpy(data.mean), torch.from_numpy(data.std), hidden=hidden)


def train(data: MarketData, config: PPOConfig, progress: Callable[[int, int, dict], None] | None = None) -> TrainResult:
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    state = {"progress": 0.0}

    def next_training_episode(_: int):
        return build_episode(data, rng, curriculum_stage(state["progress"]), split="train")

    env = BatchedMarketEnv(data, next_training_episode, config.n_envs, rules=config.rules)
    policy = make_policy(data, config.hidden)
    policy.start_cautious(config.initial_trade_probability)
    warm_start = clone_rule(policy, data, config.teacher, config.warm_start_batches, config.seed, config.rules,
                            seconds=None if config.time_budget_s is None else config.time_budget_s / 2) \
        if config.warm_start_batches > 0 else None
    warm_start_seconds = warm_start["seconds"] if warm_start else 0.0  # the time budget covers both
    clone_state = copy.deepcopy(policy.state_dict()) if warm_start else None
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, eps=1e-5)
    B, T = config.n_envs, config.rollout_steps
    batch = B * T
    minibatch = batch // config.minibatches
    iterations = max(config.total_steps // batch, 1)

    obs, live = env.observe()
    store_obs = torch.zeros((T, *obs.shape))             # [T, B, S, D]
    store_live = torch.zeros((T, *live.shape), dtype=torch.bool)
    store_actions = torch.zeros((T, *live.shape), dtype=torch.long)
    store_actable = torch.zeros((T, *live.shape), dtype=torch.bool)
    store_logprob = torch.zeros((T, B))
    store_reward = torch.zeros((T, B))
    store_done = torch.zeros((T, B))
    store_value = torch.zeros((T, B))
    curves: list[dict] = []
    started = time.perf_counter()
    steps = episodes = 0
    for iteration in range(iterations):
        state["progress"] = iteration / iterations
        elapsed_share = state["progress"] if config.time_budget_s is None else max(
            state["progress"], (time.perf_counter() - started) / max(config.time_budget_s - warm_start_seconds, 1e-9))
        imitation_weight = 0.0 if warm_start is None else \
            config.imitation_coef + (config.imitation_final_coef - config.imitation_coef) * min(elapsed_share, 1.0)
        finished_pnl: list[float] = []
        orders = 0
        for step in range(T):
            actable = env.actable()
            with torch.no_grad():
                logits, value = policy(obs, live)
            dist = Categorical(logits=logits)
            actions = torch.where(actable, dist.sample(), torch.zeros_like(live, dtype=torch.long))
            store_obs[step], store_live[step], store_actions[step] = obs, live, actions
            store_actable[step] = actable
            store_logprob[step] = (dist.log_prob(actions) * actable).sum(-1)
            store_value[step] = value
            reward, done, info = env.step(actions)
            store_reward[step], store_done[step] = reward, done.float()
            finished_pnl += info["episode_pnl_cents"][done].tolist()
            orders += int(info["orders"].sum())
            obs, live = env.observe()
        steps += batch
        episodes += len(finished_pnl)

        with torch.no_grad():
            _, next_value = policy(obs, live)
            advantages = torch.zeros_like(store_reward)
            last_gae = torch.zeros(B)
            for step in reversed(range(T)):
                following = next_value if step == T - 1 else store_value[step + 1]
                not_done = 1.0 - store_done[step]
                delta = store_reward[step] + config.gamma * following * not_done - store_value[step]
                last_gae = delta + config.gamma * config.gae_lambda * not_done * last_gae
                advantages[step] = last_gae
            returns = advantages + store_value

        flat = lambda x: x.reshape(batch, *x.shape[2:])  # noqa: E731
        b_obs, b_live, b_actions, b_actable = flat(store_obs), flat(store_live), flat(store_actions), flat(store_actable)
        b_logprob, b_adv, b_ret = flat(store_logprob), flat(advantages), flat(returns)
        b_teacher = teacher_actions(config.teacher, data.feature_names, b_obs, b_live) if imitation_weight > 0 else None
        clip_fractions, kls = [], []
        for _ in range(config.update_epochs):
            order = torch.randperm(batch)
            for start in range(0, batch, minibatch):
                idx = order[start:start + minibatch]
                logits, value = policy(b_obs[idx], b_live[idx])
                dist = Categorical(logits=logits)
                mask = b_actable[idx].float()
                new_logprob = (dist.log_prob(b_actions[idx]) * mask).sum(-1)
                entropy = (dist.entropy() * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
                log_ratio = new_logprob - b_logprob[idx]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    kls.append(((ratio - 1) - log_ratio).mean().item())
                    clip_fractions.append(((ratio - 1.0).abs() > config.clip).float().mean().item())
                adv = b_adv[idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - config.clip, 1 + config.clip)).mean()
                value_loss = 0.5 * ((value - b_ret[idx]) ** 2).mean()
                loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy.mean()
                if b_teacher is not None:
                    loss = loss + imitation_weight * imitation_loss(logits, b_teacher[idx], b_actable[idx])
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                optimizer.step()

        elapsed = time.perf_counter() - started
        curves.append({
            "iteration": iteration, "steps": steps, "seconds": elapsed,
            "stage": curriculum_stage(state["progress"]).slots[1],
            "episode_pnl_cents": float(np.mean(finished_pnl)) if finished_pnl else float("nan"),
            "episodes": len(finished_pnl), "orders_per_step": orders / batch,
            "policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy.mean().item(),
            "approx_kl": float(np.mean(kls)), "clip_fraction": float(np.mean(clip_fractions)),
            "imitation_weight": imitation_weight,
            "steps_per_second": steps / elapsed,
        })
        if progress:
            progress(iteration + 1, iterations, curves[-1])
        if config.time_budget_s is not None and elapsed > config.time_budget_s - warm_start_seconds:
            break
    policy.eval()
    seconds = time.perf_counter() - started  # PPO only: the warm start and the selection report their own
    selection = None
    if clone_state is not None and config.selection_markets > 0:
        selection = keep_better_of_clone_and_fine_tuned(policy, clone_state, data, config)
    return TrainResult(policy=policy, curves=curves, config=config, warm_start=warm_start, selection=selection,
                       steps=steps, seconds=seconds, episodes=episodes)


def keep_better_of_clone_and_fine_tuned(policy: MarketPolicy, clone_state: dict, data: MarketData,
                                        config: PPOConfig) -> dict:
    """Do no harm: PPO fine-tuning is kept only if its greedy policy makes more money than the clone's on
    a fixed sample of training markets (validation and test markets stay untouched for what comes
    after). Otherwise `policy` is set back to the clone. Returns both scores and the choice."""
    from training.evaluate import play
    from training.policy import GreedyPolicy

    sample = sorted(m.ticker for m in data.of_split("train"))[: config.selection_markets]

    def score() -> int:
        greedy = GreedyPolicy(policy).eval()
        return int(play(data, "train", lambda obs, live, env: greedy(obs, live), config.rules, markets=sample)["pnl_cents"].sum())

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


def save_learning_curves(curves: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [c["steps"] for c in curves]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(steps, [c["episode_pnl_cents"] for c in curves])
    axes[0].set_title("episode P&L (cents, finished episodes)")
    axes[1].plot(steps, [c["entropy"] for c in curves], label="entropy")
    axes[1].plot(steps, [c["orders_per_step"] for c in curves], label="orders / step")
    axes[1].legend()
    axes[1].set_title("exploration")
    axes[2].plot(steps, [c["value_loss"] for c in curves], label="value loss")
    axes[2].plot(steps, [c["approx_kl"] * 100 for c in curves], label="approx KL x100")
    axes[2].legend()
    axes[2].set_title("optimisation")
    for ax in axes:
        ax.set_xlabel("environment steps")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
